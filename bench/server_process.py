"""Start the real lambdahost server for a benchmark, and make sure it goes away again."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lambda_client import Endpoint

ACCESS_KEY = "AKLHBENCHACCESSKEY00"
SECRET_KEY = "lambdahost-bench-secret-key-0123456789ab"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    endpoint: Endpoint
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def cgroup_instance(self) -> str:
        """`lambdahost/<instance>`: where this server's sandboxes' cgroups live. The bwrap
        backend derives the instance from its state dir (`<data dir>/sandboxes`)."""
        state_dir = (self.data_dir / "sandboxes").resolve()
        return "lambdahost/" + hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]

    def sandbox_cgroups(self, controller: str = "memory") -> list[Path]:
        parent = CGROUP_ROOT / controller / self.cgroup_instance
        if not parent.is_dir():
            return []
        return sorted(path for path in parent.iterdir() if path.is_dir())

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def running_server(
    keepalive_s: float = 900.0, sandbox: str | None = None, network: str | None = None
) -> Iterator[Server]:
    """A server on a free port with a temporary data dir; stopped (SIGTERM, then SIGKILL)
    and cleaned up however the block ends. `network`: `--function-network` (default nat)."""
    work = Path(tempfile.mkdtemp(prefix="lambdahost-bench-"))
    data_dir = work / "data"
    port = free_port()
    environment = {
        **os.environ,
        "LAMBDAHOST_ACCESS_KEY_ID": ACCESS_KEY,
        "LAMBDAHOST_SECRET_ACCESS_KEY": SECRET_KEY,
        "LAMBDAHOST_TRANSITION_DELAY": "0",
        "LAMBDAHOST_KEEPALIVE": str(keepalive_s),
        "LAMBDAHOST_LOG_LEVEL": "warning",
        **({"LAMBDAHOST_SANDBOX": sandbox} if sandbox else {}),
        **({"LAMBDAHOST_FUNCTION_NETWORK": network} if network else {}),
    }
    argv = [sys.executable, "-m", "lambdahost.cli.main", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    log_path = work / "server.log"
    with open(log_path, "wb") as out:
        # Own session: a Ctrl-C at the terminal reaches only us, and we stop the server in order.
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
    server = Server(
        Endpoint("127.0.0.1", port, ACCESS_KEY, SECRET_KEY), data_dir, process, log_path
    )
    try:
        _wait_listening(server)
        yield server
    finally:
        _stop(server)
        shutil.rmtree(work, ignore_errors=True)


def _wait_listening(server: Server, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", server.endpoint.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not start listening:\n{server.log_tail()}")


def _stop(server: Server) -> None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    _kill_leftover_sandboxes(server)


def _kill_leftover_sandboxes(server: Server) -> None:
    """A server killed hard leaves its sandboxes running (see sandbox/bwrap.py); they are
    ours, so end them through this server's own cgroups (thawed first: a frozen process
    does not die until it runs again)."""
    for group in server.sandbox_cgroups("freezer"):
        with contextlib.suppress(OSError):
            (group / "freezer.state").write_text("THAWED")
    for group in server.sandbox_cgroups("pids"):
        with contextlib.suppress(OSError, ValueError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    for controller in ("memory", "cpu", "pids", "freezer"):
        for group in server.sandbox_cgroups(controller):
            for _ in range(100):
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        with contextlib.suppress(OSError):
            (CGROUP_ROOT / controller / server.cgroup_instance).rmdir()
