"""The python3.11 runtime (and AWS's own awslambdaric) driven by the agent on the host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from agent_harness import AgentProcess, agent_starter, make_spec, write

agents = pytest.fixture(agent_starter, name="agents")


def start(agents, code: Path, handler: str = "app.handler", **changes) -> AgentProcess:
    agent = agents(make_spec(code, "python3.11", handler, **changes))
    header, _ = agent.receive()
    assert header["t"] == "ready", header
    return agent


def lines(header: dict) -> list[str]:
    return [text for _, text in header["logs"]]


def test_handler_context_and_warm_state(tmp_path: Path, agents) -> None:
    write(
        tmp_path,
        "app.py",
        """
import os, sys
print("cold import")
calls = 0
def handler(event, context):
    global calls
    calls += 1
    print("event", event["n"])
    return {
        "calls": calls,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "group": context.log_group_name,
        "stream": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "custom": context.client_context.custom if context.client_context else None,
        "identity": context.identity.cognito_identity_id,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
        "path0": sys.path[0],
    }
""",
    )
    agent = agents(make_spec(tmp_path, "python3.11", "app.handler", environment={"A": "1"}))
    header, _ = agent.receive()
    assert header["t"] == "ready" and lines(header) == ["cold import\n"]
    context = json.dumps({"custom": {"k": "v"}})
    identity = json.dumps({"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool"})
    request_id = agent.invoke(b'{"n": 1}', client_context=context, identity=identity)
    header, body = agent.receive()
    result = json.loads(body)
    assert header["ok"] and lines(header) == ["event 1\n"]
    assert result["calls"] == 1 and result["request_id"] == request_id
    assert result["function_name"] == "fn" and result["function_version"] == "$LATEST"
    assert result["memory"] == "128"  # a string in AWS's runtime too
    assert result["group"] == "/aws/lambda/fn" and result["stream"] == "2024/01/01/[$LATEST]abc"
    assert 5000 < result["remaining"] <= 10_000
    assert result["custom"] == {"k": "v"} and result["identity"] == "id-1"
    assert result["trace"].startswith("Root=1-")
    assert result["execution_env"] == "AWS_Lambda_python3.11"
    assert result["path0"] == str(tmp_path)
    header, body = agent.call(b'{"n": 2}')
    assert json.loads(body)["calls"] == 2  # globals survive between invokes


def test_nested_handlers(tmp_path: Path, agents) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/mod.py", "def fn(e, c):\n    return 'pkg'\n")
    write(tmp_path, "src/lambda/main.py", "def fn(e, c):\n    return 'dir'\n")
    agent = start(agents, tmp_path, "pkg.mod.fn")
    assert agent.call()[1] == b'"pkg"'
    agent = start(agents, tmp_path, "src/lambda/main.fn")
    assert agent.call()[1] == b'"dir"'


def test_handler_exception(tmp_path: Path, agents) -> None:
    write(tmp_path, "app.py", "def handler(e, c):\n    raise ValueError('boom')\n")
    agent = start(agents, tmp_path)
    request_id = agent.invoke()
    header, body = agent.receive()
    assert header["ok"] is False and header["error_type"] == "ValueError"
    error = json.loads(body)
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["errorMessage"] == "boom" and error["requestId"] == request_id
    assert error["stackTrace"] == [
        f"  File \"{tmp_path}/app.py\", line 2, in handler\n    raise ValueError('boom')\n"
    ]
    assert lines(header) == [  # one event, lines joined by \r as AWS's runtime logs it
        "[ERROR] ValueError: boom\rTraceback (most recent call last):\r"
        f'\xa0\xa0File "{tmp_path}/app.py", line 2, in handler\r'
        "\xa0\xa0\xa0\xa0raise ValueError('boom')\n"
    ]
    assert agent.call()[0]["ok"] is False  # still serving


def test_import_error_is_init_error(tmp_path: Path, agents) -> None:
    write(tmp_path, "app.py", "import nothere\n")
    agent = agents(make_spec(tmp_path, "python3.11", "app.handler"))
    header, body = agent.receive()
    assert header["t"] == "init_error" and header["error_type"] == "Runtime.ImportModuleError"
    assert json.loads(body) == {
        "errorMessage": "Unable to import module 'app': No module named 'nothere'",
        "errorType": "Runtime.ImportModuleError",
        "requestId": "",
        "stackTrace": [],
    }
    assert lines(header)[0].startswith("[ERROR] Runtime.ImportModuleError: Unable to import")


def test_syntax_error(tmp_path: Path, agents) -> None:
    write(tmp_path, "app.py", "def handler(:\n")
    agent = agents(make_spec(tmp_path, "python3.11", "app.handler"))
    header, body = agent.receive()
    assert header["t"] == "init_error" and header["error_type"] == "Runtime.UserCodeSyntaxError"
    assert json.loads(body)["errorMessage"].startswith("Syntax error in module 'app': ")


def test_handler_missing_is_init_error(tmp_path: Path, agents) -> None:
    write(tmp_path, "app.py", "x = 1\n")
    agent = agents(make_spec(tmp_path, "python3.11", "app.nope"))
    header, body = agent.receive()
    assert header["t"] == "init_error" and header["error_type"] == "Runtime.HandlerNotFound"
    assert json.loads(body)["errorMessage"] == "Handler 'nope' missing on module 'app'"


def test_logging_configured_as_aws(tmp_path: Path, agents) -> None:
    code = """
import logging
logging.basicConfig(level=logging.DEBUG)  # a no-op in Lambda: root already has a handler
logger = logging.getLogger()
logger.setLevel(logging.INFO)
def handler(e, c):
    logger.info("in %s", "handler")
    logger.debug("hidden")
    return len(logger.handlers)
"""
    write(tmp_path, "app.py", code)
    agent = start(agents, tmp_path)
    request_id = agent.invoke()
    header, body = agent.receive()
    assert body == b"1"
    [line] = lines(header)
    level, stamp, logged_id, message = line.split("\t")
    assert (level, logged_id, message) == ("[INFO]", request_id, "in handler\n")
    assert stamp.endswith("Z") and len(stamp) == 24


def test_marshal_error(tmp_path: Path, agents) -> None:
    write(tmp_path, "app.py", "def handler(e, c):\n    return {1, 2}\n")
    agent = start(agents, tmp_path)
    header, body = agent.call()
    assert header["error_type"] == "Runtime.MarshalError"
    assert json.loads(body)["errorMessage"] == (
        "Unable to marshal response: Object of type set is not JSON serializable"
    )


def test_crash_reports_exit_status(tmp_path: Path, agents) -> None:
    write(
        tmp_path, "app.py", "import os\ndef handler(e, c):\n    print('dying')\n    os._exit(3)\n"
    )
    agent = start(agents, tmp_path)
    agent.invoke()
    header, _ = agent.receive()
    assert header["t"] == "exit" and header["status"] == 3 and lines(header) == ["dying\n"]


@pytest.fixture(scope="session")
def awslambdaric_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("ric")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target)]
    command += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    command += ["--platform", "manylinux2014_x86_64", "awslambdaric"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        if "Could not find" in result.stderr or "connection" in result.stderr.lower():
            pytest.skip(f"cannot fetch awslambdaric: {result.stderr[-300:]}")
        raise AssertionError(result.stderr)
    return target


def test_awslambdaric_unchanged(tmp_path: Path, agents, awslambdaric_dir: Path) -> None:
    subprocess.run(["cp", "-a", f"{awslambdaric_dir}/.", str(tmp_path)], check=True)
    handler = """
def handler(event, context):
    print('ric', context.aws_request_id)
    return {'echo': event, 'fn': context.function_name}
"""
    write(tmp_path, "app.py", handler)
    bootstrap = "#!/bin/sh\nexec /usr/bin/python3.11 -m awslambdaric app.handler\n"
    write(tmp_path, "bootstrap", bootstrap, 0o755)
    agent = agents(make_spec(tmp_path, "provided.al2023", "app.handler"))
    header, _ = agent.receive(timeout=30)
    assert header["t"] == "ready", header
    request_id = agent.invoke(b'{"a": 1}')
    header, body = agent.receive()
    assert header["ok"], (header, body)
    assert json.loads(body) == {"echo": {"a": 1}, "fn": "fn"}
    assert any(f"ric {request_id}" in line for line in lines(header))
    write(tmp_path, "app2.py", "def handler(event, context):\n    raise KeyError('k')\n")
    header, body = agent.call(b"{}")  # same handler again, warm
    assert header["ok"]
