"""Synchronous invoke through boto3, in real sandboxes."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from helpers import create_function, make_zip, unique

CONTEXT_PY = """
import json, os, time
COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    print("hello from", context.function_name)
    return {
        "event": event,
        "count": COUNT,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "client_context": getattr(context.client_context, "custom", None),
        "env": {k: v for k, v in os.environ.items()},
        "uid": os.getuid(),
    }
"""


def invoke(lam, name: str, payload: object = None, **kw):  # noqa: ANN001, ANN201
    response = lam.invoke(
        FunctionName=name, Payload=json.dumps(payload if payload is not None else {}), **kw
    )
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


@pytest.fixture(scope="module")
def context_fn(lam) -> str:
    name = unique("context")
    create_function(
        lam,
        name,
        make_zip({"app.py": CONTEXT_PY}),
        MemorySize=256,
        Timeout=10,
        Environment={"Variables": {"GREETING": "hello"}},
    )
    return name


def test_invoke_returns_result_and_context(lam, context_fn: str) -> None:
    context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    response, body = invoke(lam, context_fn, {"a": 1}, ClientContext=context)
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert body["event"] == {"a": 1}
    assert response["ResponseMetadata"]["RequestId"] == body["request_id"]
    assert body["function_name"] == context_fn
    assert body["function_version"] == "$LATEST"
    assert body["invoked_function_arn"].endswith(f":function:{context_fn}")
    assert int(body["memory_limit_in_mb"]) == 256
    assert body["log_group_name"] == f"/aws/lambda/{context_fn}"
    assert "[$LATEST]" in body["log_stream_name"]
    assert 0 < body["remaining"] <= 10_000
    assert body["client_context"] == {"k": "v"}
    env = body["env"]
    assert env["GREETING"] == "hello"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == context_fn
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["TZ"] == ":UTC"
    assert env["_HANDLER"] == "app.handler"
    assert body["uid"] != 0


def test_warm_environment_is_reused(lam, context_fn: str) -> None:
    _, first = invoke(lam, context_fn)
    _, second = invoke(lam, context_fn)
    assert second["count"] == first["count"] + 1
    assert second["log_stream_name"] == first["log_stream_name"]


def test_qualified_invoke(lam, context_fn: str) -> None:
    response, body = invoke(lam, f"{context_fn}:$LATEST")
    assert body["invoked_function_arn"].endswith(f":function:{context_fn}:$LATEST")
    response, body = invoke(lam, context_fn, Qualifier="$LATEST")
    assert response["ExecutedVersion"] == "$LATEST"


def test_log_tail_has_start_end_report(lam) -> None:
    name = unique("tail")
    create_function(lam, name, make_zip({"app.py": CONTEXT_PY}))
    response, body = invoke(lam, name, LogType="Tail")
    tail = base64.b64decode(response["LogResult"]).decode()
    rid = body["request_id"]
    assert f"START RequestId: {rid} Version: $LATEST" in tail
    assert f"END RequestId: {rid}" in tail
    assert f"REPORT RequestId: {rid}" in tail
    assert "Init Duration" in tail
    assert "hello from" in tail
    assert "Max Memory Used" in tail and "Billed Duration" in tail
    response, body = invoke(lam, name, LogType="Tail")
    assert "Init Duration" not in base64.b64decode(response["LogResult"]).decode()


def test_dry_run_and_event(lam, context_fn: str) -> None:
    response = lam.invoke(FunctionName=context_fn, InvocationType="DryRun")
    assert response["StatusCode"] == 204
    response = lam.invoke(FunctionName=context_fn, InvocationType="Event", Payload=b"{}")
    assert response["StatusCode"] == 202


def test_payload_limits_and_invalid_json(lam, context_fn: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=context_fn, Payload=b"x" * (6 * 1024 * 1024 + 10))
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert exc.value.response["Error"]["Code"] == "RequestTooLargeException"
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=context_fn, Payload=b"{not json")
    assert exc.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_missing_function(lam) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="nope-nothing-here")


ERRORS_PY = """
import os, time

def raise_error(event, context):
    raise ValueError("bad value")

def big_response(event, context):
    return "x" * (7 * 1024 * 1024)

def crash(event, context):
    os._exit(3)

def sleep(event, context):
    time.sleep(event.get("seconds", 5))
    return "slept"

def ok(event, context):
    return "ok"

def hog(event, context):
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(16 * 1024 * 1024))
    return len(blocks)
"""


@pytest.fixture(scope="module")
def errors_zip() -> bytes:
    return make_zip({"app.py": ERRORS_PY})


def make_errors_fn(lam, errors_zip: bytes, handler: str, **kw) -> str:  # noqa: ANN001
    name = unique(handler.replace("_", "-"))
    create_function(lam, name, errors_zip, Handler=f"app.{handler}", **kw)
    return name


def test_handler_error(lam, errors_zip: bytes) -> None:
    name = make_errors_fn(lam, errors_zip, "raise_error")
    response, body = invoke(lam, name)
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "bad value"
    assert isinstance(body["stackTrace"], list)


def test_response_too_large_is_a_function_error(lam, errors_zip: bytes) -> None:
    name = make_errors_fn(lam, errors_zip, "big_response")
    response, body = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert "payload size exceeded" in body["errorMessage"].lower()


def test_crash_then_recovers(lam, errors_zip: bytes) -> None:
    name = make_errors_fn(lam, errors_zip, "crash")
    response, body = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    response, body = invoke(lam, name)
    assert body["errorType"] == "Runtime.ExitError"


def test_timeout_kills_and_next_invoke_works(lam, errors_zip: bytes) -> None:
    name = make_errors_fn(lam, errors_zip, "sleep", Timeout=1)
    started = time.monotonic()
    response, body = invoke(lam, name, {"seconds": 30}, LogType="Tail")
    assert time.monotonic() - started < 15
    assert response["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert "Task timed out after 1.00 seconds" in base64.b64decode(response["LogResult"]).decode()
    response, body = invoke(lam, name, {"seconds": 0})
    assert body == "slept"


def test_out_of_memory(lam, errors_zip: bytes) -> None:
    name = make_errors_fn(lam, errors_zip, "hog", MemorySize=128)
    response, body = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "signal: killed" in body["errorMessage"]


def test_import_error_and_missing_handler(lam) -> None:
    name = unique("import-error")
    create_function(lam, name, make_zip({"app.py": "import not_a_module\n"}))
    response, body = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'app'" in body["errorMessage"]
    name = unique("no-handler")
    create_function(lam, name, make_zip({"app.py": "x = 1\n"}), Handler="app.missing")
    response, body = invoke(lam, name)
    assert body["errorType"] == "Runtime.HandlerNotFound"


def test_parallel_invokes_run_in_parallel(lam, errors_zip: bytes) -> None:
    name = make_errors_fn(lam, errors_zip, "sleep", Timeout=30)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: invoke(lam, name, {"seconds": 1})[1], range(8)))
    elapsed = time.monotonic() - started
    assert results == ["slept"] * 8
    assert elapsed < 6, f"8 parallel 1-second invokes took {elapsed:.1f}s"


def test_update_replaces_environments(lam) -> None:
    name = unique("replace")
    create_function(lam, name, make_zip({"app.py": "def handler(e, c):\n    return 'v1'\n"}))
    assert invoke(lam, name)[1] == "v1"
    lam.update_function_code(
        FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    assert invoke(lam, name)[1] == "v2"
