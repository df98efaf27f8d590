"""The agent as a plain host process (no sandbox): Runtime API, host framing, output capture.

`AgentProcess` is also the harness of the runtime tests (`test_runtime_*.py`)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import lambdahost
from lambdahost.agent.boot import encode_candidates
from lambdahost.agent.protocol import MAX_FRAME, FrameError, FrameReader, encode
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


agents = pytest.fixture(agent_starter, name="agents")


def write(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


# A custom runtime in Python that drives the Runtime API by hand, so the agent's answers to
# odd requests can be checked from the runtime's side and reported through the response.
PROBE = r"""#!/usr/bin/python3.11
import http.client, json, os, sys
api = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
def call(method, path, body=None, headers={}):
    api.request(method, "/2018-06-01/runtime" + path, body, headers)
    r = api.getresponse()
    return r.status, dict(r.headers), r.read()
print("init line", flush=True)
while True:
    status, headers, body = call("GET", "/invocation/next")
    rid = headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.loads(body)
    print("got", rid, flush=True)
    if event.get("action") == "probe":
        report = {
            "headers": headers,
            "wrong_id": call("POST", "/invocation/nope/response", b"{}")[::2],
            "next_again": call("GET", "/invocation/next")[::2],
            "init_error": call("POST", "/init/error", b"{}")[::2],
        }
        report = json.loads(json.dumps(report, default=lambda b: b.decode()))
        status = call("POST", f"/invocation/{rid}/response", json.dumps(report).encode())[0]
    elif event.get("action") == "big":
        status, _, body = call("POST", f"/invocation/{rid}/response", b"x" * 6291557)
        print("big", status, body.decode(), flush=True)
    elif event.get("action") == "fail":
        call("POST", f"/invocation/{rid}/error", b'{"errorMessage":"bad","errorType":"Bad"}',
             {"Lambda-Runtime-Function-Error-Type": "Bad"})
    elif event.get("action") == "exit":
        print("bye", flush=True)
        sys.exit(7)
    else:
        call("POST", f"/invocation/{rid}/response", body)
"""


@pytest.fixture
def probe(tmp_path: Path, agents):
    write(tmp_path, "bootstrap", PROBE, 0o755)
    agent = agents(make_spec(tmp_path, "provided.al2023", "x"))
    header, _ = agent.receive()
    assert header["t"] == "ready"
    assert [line for _, line in header["logs"]] == ["init line\n"]
    return agent


def test_echo_and_logs(probe: AgentProcess) -> None:
    request_id = probe.invoke(b'{"hello": "world"}')
    header, body = probe.receive()
    assert header == {"t": "result", "id": request_id, "ok": True, "logs": header["logs"]}
    assert json.loads(body) == {"hello": "world"}
    assert [line for _, line in header["logs"]] == [f"got {request_id}\n"]
    stamp = header["logs"][0][0]
    assert abs(stamp - time.time() * 1000) < 10_000


def test_runtime_api_headers_and_state_errors(probe: AgentProcess) -> None:
    context = json.dumps({"custom": {"a": 1}})
    request_id = probe.invoke(b'{"action": "probe"}', client_context=context)
    header, body = probe.receive()
    report = json.loads(body)
    headers = report["headers"]
    assert headers["Lambda-Runtime-Aws-Request-Id"] == request_id
    assert abs(int(headers["Lambda-Runtime-Deadline-Ms"]) - time.time() * 1000 - 10_000) < 5000
    assert headers["Lambda-Runtime-Invoked-Function-Arn"].endswith(":function:fn")
    assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    assert json.loads(headers["Lambda-Runtime-Client-Context"]) == {"custom": {"a": 1}}
    status, body = report["wrong_id"]
    assert status == 400 and json.loads(body)["errorType"] == "InvalidRequestID"
    assert report["next_again"][0] == 403
    assert report["init_error"][0] == 403


def test_error_result(probe: AgentProcess) -> None:
    header, body = probe.call(b'{"action": "fail"}')
    assert header["ok"] is False and header["error_type"] == "Bad"
    assert json.loads(body) == {"errorMessage": "bad", "errorType": "Bad"}
    header, body = probe.call(b'{"again": 1}')  # the environment stays usable
    assert header["ok"] is True and json.loads(body) == {"again": 1}


def test_response_too_large(probe: AgentProcess) -> None:
    header, body = probe.call(b'{"action": "big"}')
    assert header["ok"] is False
    assert header["error_type"] == "Function.ResponseSizeTooLarge"
    assert json.loads(body) == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size "
        "(6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    # The probe prints the 413 it got after posting: that line lands in this invoke's logs
    # or, if the runtime is slower than the agent, in the next one's.
    following, _ = probe.call(b"{}")
    lines = [line for _, line in header["logs"] + following["logs"]]
    assert any("big 413" in line for line in lines)


def test_runtime_exit_is_reported(probe: AgentProcess) -> None:
    probe.invoke(b'{"action": "exit"}')
    header, _ = probe.receive()
    assert header["t"] == "exit" and header["status"] == 7 and header["signal"] == 0
    assert [line for _, line in header["logs"]][-1] == "bye\n"
    with pytest.raises(EOFError):
        probe.receive()


def test_missing_bootstrap(tmp_path: Path, agents) -> None:
    agent = agents(make_spec(tmp_path, "provided.al2023", "x"))
    header, body = agent.receive()
    assert header["t"] == "init_error"
    assert json.loads(body) == {
        "errorMessage": f"Couldn't find valid bootstrap(s): [{tmp_path}/bootstrap /opt/bootstrap]",
        "errorType": "Runtime.InvalidEntrypoint",
    }


def test_keep_alive_without_nagle_stall(tmp_path: Path, agents) -> None:
    # A runtime doing many tiny round trips must not pay 40 ms delayed-ACK stalls.
    write(tmp_path, "bootstrap", PROBE, 0o755)
    agent = agents(make_spec(tmp_path, "provided.al2023", "x"))
    agent.receive()
    started = time.perf_counter()
    for _ in range(50):
        header, _ = agent.call(b'{"n": 1}')
        assert header["ok"]
    per_call_ms = (time.perf_counter() - started) * 1000 / 50
    assert per_call_ms < 20, per_call_ms


def test_chunked_and_expect_continue(tmp_path: Path, agents) -> None:
    script = r"""#!/usr/bin/python3.11
import os, socket
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
s = socket.create_connection((host, int(port)))
s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data:
    data += s.recv(65536)
rid = [l.split(b": ")[1] for l in data.split(b"\r\n") if l.lower().startswith(b"lambda-runtime-aws-request-id")][0]
s.sendall(b"POST /2018-06-01/runtime/invocation/" + rid + b"/response HTTP/1.1\r\nHost: x\r\n"
          b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
s.sendall(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
assert b" 202 " in s.recv(1000)
s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
s.recv(1000)
"""  # noqa: E501
    write(tmp_path, "bootstrap", script, 0o755)
    agent = agents(make_spec(tmp_path, "provided.al2023", "x"))
    assert agent.receive()[0]["t"] == "ready"
    header, body = agent.call(b"{}")
    assert header["ok"] is True and body == b"abcdefg"


def test_host_gone_stops_agent_and_runtime(probe: AgentProcess) -> None:
    probe.host.close()
    assert probe.process.wait(5) == 0


def test_frame_reader_splits_and_refuses_garbage() -> None:
    data = encode({"t": "a"}, b"one") + encode({"t": "b"})
    reader = FrameReader()
    assert reader.feed(data[:5]) == []
    assert reader.feed(data[5:]) == [({"t": "a"}, b"one"), ({"t": "b"}, b"")]
    with pytest.raises(FrameError):
        FrameReader().feed((MAX_FRAME).to_bytes(4, "big") + (1).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        FrameReader().feed(b"\0\0\0\x02\0\0\0\0[]")
    with pytest.raises(ValueError):
        FrameReader().feed(b"\0\0\0\x02\0\0\0\0{x")
