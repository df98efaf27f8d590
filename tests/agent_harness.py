"""The agent as a plain host process, outside any sandbox: the harness of the agent, runtime and
extension tests (`from agent_harness import …`)."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import lambdahost
from lambdahost.agent.boot import encode_candidates
from lambdahost.agent.protocol import FrameReader, encode
from lambdahost.invoke.model import FunctionSpec
from lambdahost.runtimes import (
    PYTHON,
    RUNTIME_DIR,
    TASK_ROOT,
    bootstrap_candidates,
    environment_for,
    preload_modules,
)
from lambdahost.sandbox.api import boot_argv

PACKAGE = Path(lambdahost.__file__).parent
RUNTIMES = str(PACKAGE / "runtimes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_spec(code_dir: Path, runtime: str, handler: str, **changes: object) -> FunctionSpec:
    values: dict = dict(
        name="fn",
        arn="arn:aws:lambda:us-east-1:000000000000:function:fn",
        version="$LATEST",
        revision_id="r1",
        runtime=runtime,
        handler=handler,
        code_dir=code_dir,
        memory_mb=128,
        timeout_s=3,
    )
    values.update(changes)
    return FunctionSpec(**values)


class AgentProcess:
    """Runs the agent on the host with paths remapped from /var/task, /var/runtime."""

    def __init__(self, spec: FunctionSpec, bootstrap: list[list[str]] | None = None) -> None:
        self.port = free_port()
        env = environment_for(spec, "2024/01/01/[$LATEST]abc", runtime_api=f"127.0.0.1:{self.port}")
        env["LAMBDA_TASK_ROOT"] = str(spec.code_dir)
        if "NODE_PATH" in env:
            env["NODE_PATH"] += f":{spec.code_dir}"
        if bootstrap is None:
            bootstrap = [
                [part.replace(RUNTIME_DIR, RUNTIMES).replace(TASK_ROOT, str(spec.code_dir))
                 for part in argv]
                for argv in bootstrap_candidates(spec.runtime)
            ]  # fmt: skip
        self.host, child = socket.socketpair()
        env["LAMBDAHOST_AGENT_FD"] = str(child.fileno())
        env["LAMBDAHOST_BOOTSTRAP"] = encode_candidates(bootstrap)
        preload = [path.replace(RUNTIME_DIR, RUNTIMES) for path in preload_modules(spec.runtime)]
        env["LAMBDAHOST_PRELOAD"] = ":".join(preload)
        self.process = subprocess.Popen(
            boot_argv(PYTHON, str(PACKAGE / "agent")),
            env=env,
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.frames = FrameReader()
        self.queue: list[tuple[dict, bytes]] = []

    def receive(self, timeout: float = 10.0) -> tuple[dict, bytes]:
        self.host.settimeout(timeout)
        while not self.queue:
            data = self.host.recv(1 << 20)
            if not data:
                raise EOFError("agent closed the socket")
            self.queue.extend(self.frames.feed(data))
        return self.queue.pop(0)

    def invoke(self, payload: bytes = b"{}", *, timeout_s: float = 10.0, **fields: str) -> str:
        request_id = fields.pop("request_id", None) or str(uuid.uuid4())
        header = {
            "t": "invoke",
            "id": request_id,
            "deadline_ms": int(time.time() * 1000 + timeout_s * 1000),
            "arn": "arn:aws:lambda:us-east-1:000000000000:function:fn",
            "trace": "Root=1-5e1b4151-5ac6c58f3b2f4c1e9d6e2a11",
            **fields,
        }
        self.host.sendall(encode(header, payload))
        return request_id

    def call(self, payload: bytes = b"{}", **fields: str) -> tuple[dict, bytes]:
        self.invoke(payload, **fields)
        return self.receive()

    def close(self) -> None:
        self.host.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def agent_starter():
    """Fixture body: start agents, close them all at teardown."""
    started: list[AgentProcess] = []

    def start(spec: FunctionSpec, bootstrap: list[list[str]] | None = None) -> AgentProcess:
        agent = AgentProcess(spec, bootstrap)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


def write(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path
