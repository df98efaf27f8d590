"""Helpers every tier may import (`from helpers import …`): a real lambdahost server on a free
port driven with boto3, zips and functions. The fixtures built on them are in conftest.py."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

ACCESS_KEY = "AKLHTESTACCESSKEY000"
SECRET_KEY = "lambdahost-test-secret-key-0123456789abc"
REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/lambda-role"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(
        self,
        service: str = "lambda",
        keys: tuple[str, str, str | None] = (ACCESS_KEY, SECRET_KEY, None),
        **config: object,
    ) -> object:
        """A boto3 client of this server; `keys`: access key id, secret and session token."""
        access_key_id, secret_access_key, session_token = keys
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            config=Config(
                retries={"max_attempts": 1, "mode": "standard"},
                read_timeout=120,
                connect_timeout=10,
                **config,  # type: ignore[arg-type]
            ),
        )

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
) -> Server:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    environment = {
        **os.environ,
        "LAMBDAHOST_ACCESS_KEY_ID": ACCESS_KEY,
        "LAMBDAHOST_SECRET_ACCESS_KEY": SECRET_KEY,
        "LAMBDAHOST_TRANSITION_DELAY": "0.3",
        "LAMBDAHOST_ASYNC_TIME_SCALE": "0.01",
        **(env or {}),
    }
    argv = [sys.executable, "-m", "lambdahost.cli.main", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), *extra]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            pass_fds=pass_fds,
        )
    server = Server(f"http://127.0.0.1:{port}", port, data_dir, process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.kill(signal.SIGKILL)
    raise RuntimeError(f"server did not start:\n{server.log()}")


def make_zip(files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            mode = 0o755 if name in executable else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buffer.getvalue()


PY_ECHO = make_zip({"app.py": "def handler(event, context):\n    return event\n"})


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def create_function(lam, name: str, zip_bytes: bytes = PY_ECHO, wait: bool = True, **kw):  # noqa: ANN001, ANN201
    params = {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": zip_bytes},
        **kw,
    }
    response = lam.create_function(**params)
    if wait:
        lam.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    return response


# -- function URLs ---------------------------------------------------------------------------
URL = re.compile(r"^http://([a-z0-9]{32})\.lambda-url\.us-east-1\.localhost:(\d+)/$")


def url_id(config: dict) -> str:
    m = URL.match(config["FunctionUrl"])
    assert m, config["FunctionUrl"]
    return m[1]


def make_public(lam, name: str, qualifier: str | None = None) -> None:  # noqa: ANN001
    extra = {"Qualifier": qualifier} if qualifier else {}
    lam.add_permission(
        FunctionName=name,
        StatementId="url-public",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
        **extra,
    )
    lam.add_permission(
        FunctionName=name,
        StatementId="url-invoke",
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
        **extra,
    )
