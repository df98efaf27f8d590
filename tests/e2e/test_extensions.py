"""The Extensions API and exec wrappers: in the agent on the host, and through the server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from agent_harness import AgentProcess, agent_starter, make_spec, write
from helpers import create_function, make_zip, start_server, unique

agents = pytest.fixture(agent_starter, name="agents")

# An external extension: registers for INVOKE and SHUTDOWN, prints every event it gets (so
# its output lands in the function's log), can be slowed down or made to fail its init.
EXTENSION = r"""#!/usr/bin/python3.11
import http.client, json, os, sys, time
name = os.path.basename(sys.argv[0])
api = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
events = json.loads(os.environ.get("EXT_EVENTS", '["INVOKE", "SHUTDOWN"]'))
api.request("POST", "/2020-01-01/extension/register", json.dumps({"events": events}),
            {"Lambda-Extension-Name": name, "Lambda-Extension-Accept-Feature": "accountId"})
response = api.getresponse()
ext_id = response.getheader("Lambda-Extension-Identifier")
print(name, "registered", response.status, response.read().decode(), flush=True)
if os.environ.get("EXT_INIT_ERROR"):
    api.request("POST", "/2020-01-01/extension/init/error",
                json.dumps({"errorMessage": "no config", "errorType": "Extension.ConfigMissing"}),
                {"Lambda-Extension-Identifier": ext_id,
                 "Lambda-Extension-Function-Error-Type": "Extension.ConfigMissing"})
    api.getresponse().read()
    time.sleep(5)
while True:
    api.request("GET", "/2020-01-01/extension/event/next",
                headers={"Lambda-Extension-Identifier": ext_id})
    event = json.loads(api.getresponse().read())
    if event["eventType"] == "SHUTDOWN":
        print(name, "SHUTDOWN", event["shutdownReason"], flush=True)
        sys.exit(0)
    print(name, "INVOKE", event["requestId"], event["invokedFunctionArn"], flush=True)
    time.sleep(float(os.environ.get("EXT_SLEEP", "0")))
    print(name, "finished", event["requestId"], flush=True)
"""

RUNTIME = r"""#!/usr/bin/python3.11
import http.client, json, os
api = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
print("runtime up", flush=True)
while True:
    api.request("GET", "/2018-06-01/runtime/invocation/next")
    response = api.getresponse()
    rid = response.getheader("Lambda-Runtime-Aws-Request-Id")
    body = response.read()
    api.request("POST", f"/2018-06-01/runtime/invocation/{rid}/response", body)
    api.getresponse().read()
"""


def texts(header: dict) -> list[str]:
    return [line for _, line in header["logs"]]


def start_with_extension(tmp_path: Path, agents, **environment: str) -> AgentProcess:
    (tmp_path / "code").mkdir()
    write(tmp_path / "code", "bootstrap", RUNTIME, 0o755)
    write(tmp_path / "opt" / "extensions", "probe", EXTENSION, 0o755)
    environment["LAMBDAHOST_EXTENSIONS_DIR"] = str(tmp_path / "opt" / "extensions")
    spec = make_spec(tmp_path / "code", "provided.al2023", "x", environment=environment)
    return agents(spec)


def test_agent_extension_lifecycle(tmp_path: Path, agents) -> None:
    agent = start_with_extension(tmp_path, agents)
    ready, _ = agent.receive()
    assert ready["t"] == "ready" and ready["extensions"] == 1
    lines = texts(ready)
    registered = next(line for line in lines if "registered" in line)
    assert registered.startswith("probe registered 200 ")
    assert json.loads(registered.split(" ", 3)[3]) == {
        "functionName": "fn",
        "functionVersion": "$LATEST",
        "handler": "x",
        "accountId": "000000000000",
    }
    # The runtime starts only after the extension registered.
    assert lines.index(registered) < lines.index("runtime up\n")
    for _ in range(2):
        request_id = agent.invoke(b'{"n": 1}')
        header, body = agent.receive()
        assert header["t"] == "result" and body == b'{"n": 1}'
        logs = texts(header)
        if header.get("pending"):
            done, _ = agent.receive()
            assert done["t"] == "done" and done["id"] == request_id
            logs += texts(done)
        assert any(line.startswith(f"probe INVOKE {request_id} arn:aws:") for line in logs)
    agent.host.sendall(encode_frame({"t": "shutdown", "reason": "spindown", "budget_ms": 2000}))
    bye, _ = agent.receive()
    assert bye["t"] == "bye"
    assert "probe SHUTDOWN spindown\n" in texts(bye)
    assert agent.process.wait(5) == 0


def test_agent_waits_for_slow_extension(tmp_path: Path, agents) -> None:
    agent = start_with_extension(tmp_path, agents, EXT_SLEEP="0.4")
    assert agent.receive()[0]["t"] == "ready"
    started = time.monotonic()
    request_id = agent.invoke(b"{}")
    header, _ = agent.receive()
    answered = time.monotonic() - started
    assert header["t"] == "result" and header["pending"] is True
    done, _ = agent.receive()
    assert done["t"] == "done" and done["id"] == request_id
    assert done["extensions_ms"] > 300 and answered < 0.35
    assert f"probe finished {request_id}\n" in texts(done)


def test_agent_extension_init_error(tmp_path: Path, agents) -> None:
    agent = start_with_extension(tmp_path, agents, EXT_INIT_ERROR="1")
    header, body = agent.receive()
    assert header["t"] == "init_error" and header["error_type"] == "Extension.ConfigMissing"
    assert json.loads(body)["errorMessage"] == "no config"


def test_agent_extension_crash_during_init(tmp_path: Path, agents) -> None:
    (tmp_path / "code").mkdir()
    write(tmp_path / "code", "bootstrap", RUNTIME, 0o755)
    write(tmp_path / "ext", "broken", "#!/bin/sh\necho broken; exit 3\n", 0o755)
    spec = make_spec(
        tmp_path / "code",
        "provided.al2023",
        "x",
        environment={"LAMBDAHOST_EXTENSIONS_DIR": str(tmp_path / "ext")},
    )
    header, body = agents(spec).receive()
    assert header["t"] == "init_error" and header["error_type"] == "Extension.Crash"
    assert "exit status 3" in json.loads(body)["errorMessage"]


def encode_frame(header: dict) -> bytes:
    from lambdahost.agent.protocol import encode

    return encode(header)


# -- through the server: extensions from layers ---------------------------------------------
def publish_extension(lam, name: str, files: dict[str, str]) -> str:  # noqa: ANN001
    executable = tuple(path for path in files if path.startswith("extensions/"))
    content = make_zip(files, executable=executable)
    layer = lam.publish_layer_version(LayerName=unique(name), Content={"ZipFile": content})
    return layer["LayerVersionArn"]


ECHO_ID = make_zip({"app.py": "def handler(event, context):\n    return context.aws_request_id\n"})


def log_text(server, function_name: str, needle: str, timeout: float = 15.0) -> str:  # noqa: ANN001
    logs = server.client("logs")
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{function_name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            events = []
        text = "".join(event["message"] for event in events)
        if needle in text:
            return text
        time.sleep(0.3)
    return text


def invoke_id(lam, name: str, payload: bytes = b"{}") -> str:  # noqa: ANN001
    response = lam.invoke(FunctionName=name, Payload=payload)
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def test_extension_sees_invokes_and_shutdown_on_update(server, lam) -> None:  # noqa: ANN001
    layer = publish_extension(lam, "ext", {"extensions/probe": EXTENSION})
    name = unique("with-ext")
    create_function(lam, name, ECHO_ID, Layers=[layer], Timeout=10)
    ids = [invoke_id(lam, name) for _ in range(3)]
    for request_id in ids:
        assert f"probe INVOKE {request_id}" in log_text(server, name, f"probe INVOKE {request_id}")
    lam.update_function_configuration(FunctionName=name, Description="retire the env")
    text = log_text(server, name, "probe SHUTDOWN spindown")
    assert "probe SHUTDOWN spindown" in text
    assert "probe registered 200" in text


def test_extension_shutdown_when_idle_reclaimed(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"LAMBDAHOST_KEEPALIVE": "1"})
    try:
        lam = server.client("lambda")
        layer = publish_extension(lam, "ext", {"extensions/probe": EXTENSION})
        name = unique("idle-ext")
        create_function(lam, name, ECHO_ID, Layers=[layer])
        request_id = invoke_id(lam, name)
        text = log_text(server, name, "probe SHUTDOWN spindown")
        assert f"probe INVOKE {request_id}" in text and "probe SHUTDOWN spindown" in text
    finally:
        server.kill()


def test_extension_init_error_fails_the_invoke(lam) -> None:  # noqa: ANN001
    layer = publish_extension(lam, "ext", {"extensions/probe": EXTENSION})
    name = unique("ext-init-error")
    create_function(
        lam, name, ECHO_ID, Layers=[layer], Environment={"Variables": {"EXT_INIT_ERROR": "1"}}
    )
    response = lam.invoke(FunctionName=name, Payload=b"{}")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Extension.ConfigMissing"


def test_exec_wrapper_changes_the_environment(lam) -> None:  # noqa: ANN001
    code = make_zip(
        {
            "app.py": "import os, sys\n"
            "def handler(event, context):\n"
            "    return [os.environ.get('WRAPPED'), os.environ.get('AWS_LAMBDA_EXEC_WRAPPER')]\n",
            "wrapper.sh": '#!/bin/sh\nexport WRAPPED="yes $#"\nexec "$@"\n',
        },
        executable=("wrapper.sh",),
    )
    name = unique("wrapped")
    wrapper = "/var/task/wrapper.sh"
    create_function(
        lam, name, code, Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": wrapper}}
    )
    response = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(response["Payload"].read()) == ["yes 4", wrapper]


def test_response_does_not_wait_for_extensions(server, lam) -> None:  # noqa: ANN001
    layer = publish_extension(lam, "slow-ext", {"extensions/slow": EXTENSION})
    name = unique("slow-ext")
    create_function(
        lam,
        name,
        ECHO_ID,
        Layers=[layer],
        Timeout=10,
        Environment={"Variables": {"EXT_SLEEP": "2"}},
    )
    invoke_id(lam, name)  # cold start
    time.sleep(2.5)  # let the first invoke's extension work finish
    started = time.monotonic()
    request_id = invoke_id(lam, name)
    assert time.monotonic() - started < 1.5  # the extension still works for 2 s after this
    text = log_text(server, name, f"slow finished {request_id}")
    report = next(
        line for line in text.splitlines() if line.startswith(f"REPORT RequestId: {request_id}")
    )
    duration = float(report.split("Duration: ")[1].split(" ms")[0])
    assert duration >= 2000  # billed with the extension's time, as AWS does
