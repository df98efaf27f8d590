"""Security issue #10, item 4: hostile input gets AWS's 400s, never a 500.

Deeply nested JSON (`[` x 100,000) used to raise RecursionError on Invoke, CloudWatch Logs,
CreateFunction and UpdateFunctionConfiguration; layer version numbers past 64 bits used to
overflow SQLite on six layer operations. Each case here checks the status and error code, and
that the server logged no traceback while answering."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers import ACCESS_KEY, REGION, ROLE, SECRET_KEY, Server, create_function, unique
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdahost.control import jsontext

DEPTH = 100_000
OPEN = b"[" * DEPTH
NESTED = b"[" * DEPTH + b"]" * DEPTH  # valid JSON, too deep for a recursive parser
HUGE = 2**70
LAYER_ARN = f"arn:aws:lambda:{REGION}:000000000000:layer:sec-layer"
LOGS_JSON = "application/x-amz-json-1.1"


@pytest.fixture(autouse=True)
def no_traceback(server: Server) -> Iterator[None]:
    """Whatever a test sends, the server must not log a traceback answering it."""
    start = server.log_path.stat().st_size
    yield
    with open(server.log_path, "rb") as log:
        log.seek(start)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, written[-3000:]


def send(
    server: Server,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    service: str = "lambda",
) -> tuple[int, str, dict[str, Any]]:
    """A signed raw request; returns the status, the error code and the JSON answer."""
    request = AWSRequest(method=method, url=server.url + path, data=body, headers=headers or {})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, REGION).add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=dict(request.headers.items()))
        response = conn.getresponse()
        answer = json.loads(response.read() or b"{}")
        code = response.headers.get("x-amzn-ErrorType") or answer.get("__type", "")
        return response.status, code, answer
    finally:
        conn.close()


def failure(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


# --- deeply nested JSON ----------------------------------------------------------------------


def test_invoke_with_an_unclosed_deep_payload(raw_lam) -> None:  # noqa: ANN001
    status, code = failure(lambda: raw_lam.invoke(FunctionName=unique("none"), Payload=OPEN))
    assert (status, code) == (400, "InvalidRequestContentException")


def test_invoke_with_a_valid_deep_payload_reaches_the_function(raw_lam) -> None:  # noqa: ANN001
    # Valid JSON passes the payload check, so the missing function is what gets reported.
    status, code = failure(lambda: raw_lam.invoke(FunctionName=unique("none"), Payload=NESTED))
    assert (status, code) == (404, "ResourceNotFoundException")


def test_a_valid_deep_payload_is_handed_to_the_function(lam) -> None:  # noqa: ANN001
    name = unique("sec-deep")
    create_function(lam, name)
    response = lam.invoke(FunctionName=name, Payload=NESTED)
    # The function's own runtime cannot parse it either: that is the function's error.
    assert response["StatusCode"] == 200
    assert response.get("FunctionError") == "Unhandled"


def test_invoke_with_a_deep_client_context(raw_lam) -> None:  # noqa: ANN001
    context = base64.b64encode(b"[" * 2000 + b"]" * 500).decode()
    status, code = failure(
        lambda: raw_lam.invoke(FunctionName=unique("none"), Payload=b"{}", ClientContext=context)
    )
    assert (status, code) == (400, "InvalidParameterValueException")


@pytest.mark.parametrize(
    "body",
    [OPEN, NESTED, b'{"FunctionName": "f", "Environment": {"Variables": ' + OPEN + b"}}"],
    ids=["unclosed", "nested", "member"],
)
def test_create_function_with_a_deep_body(server: Server, body: bytes) -> None:
    status, code, answer = send(server, "POST", "/2015-03-31/functions", body)
    assert (status, code) == (400, "InvalidRequestContentException")
    assert answer["message"].startswith("Could not parse request body into json")


@pytest.mark.parametrize("body", [OPEN, NESTED], ids=["unclosed", "nested"])
def test_update_function_configuration_with_a_deep_body(server: Server, body: bytes) -> None:
    path = f"/2015-03-31/functions/{unique('none')}/configuration"
    status, code, _ = send(server, "PUT", path, body)
    assert (status, code) == (400, "InvalidRequestContentException")


@pytest.mark.parametrize(
    "operation", ["PutLogEvents", "FilterLogEvents", "CreateLogGroup", "GetLogEvents"]
)
@pytest.mark.parametrize(
    "body", [OPEN, NESTED, b'{"logGroupName": ' + OPEN + b"}"], ids=["unclosed", "nested", "member"]
)
def test_logs_with_a_deep_body(server: Server, operation: str, body: bytes) -> None:
    headers = {"X-Amz-Target": f"Logs_20140328.{operation}", "Content-Type": LOGS_JSON}
    status, code, _ = send(server, "POST", "/", body, headers, service="logs")
    assert (status, code) == (400, "SerializationException")


# --- numbers past 64 bits --------------------------------------------------------------------


LAYER_OPERATIONS: dict[str, Callable[[Any, int], object]] = {
    "GetLayerVersion": lambda c, v: c.get_layer_version(LayerName="sec-layer", VersionNumber=v),
    "DeleteLayerVersion": lambda c, v: c.delete_layer_version(
        LayerName="sec-layer", VersionNumber=v
    ),
    "GetLayerVersionPolicy": lambda c, v: c.get_layer_version_policy(
        LayerName="sec-layer", VersionNumber=v
    ),
    "AddLayerVersionPermission": lambda c, v: c.add_layer_version_permission(
        LayerName="sec-layer",
        VersionNumber=v,
        StatementId="s",
        Action="lambda:GetLayerVersion",
        Principal="*",
    ),
    "RemoveLayerVersionPermission": lambda c, v: c.remove_layer_version_permission(
        LayerName="sec-layer", VersionNumber=v, StatementId="s"
    ),
}


@pytest.mark.parametrize("version", [HUGE, 2**63, -(2**70)], ids=["2**70", "2**63", "-2**70"])
@pytest.mark.parametrize("operation", sorted(LAYER_OPERATIONS))
def test_layer_versions_past_a_long(raw_lam, operation: str, version: int) -> None:  # noqa: ANN001
    status, code = failure(lambda: LAYER_OPERATIONS[operation](raw_lam, version))
    assert (status, code) == (400, "ValidationException")


@pytest.mark.parametrize("operation", sorted(LAYER_OPERATIONS))
def test_largest_long_layer_version_is_simply_missing(raw_lam, operation: str) -> None:  # noqa: ANN001
    if operation == "DeleteLayerVersion":  # deleting what does not exist succeeds, as in AWS
        LAYER_OPERATIONS[operation](raw_lam, 2**63 - 1)
        return
    status, code = failure(lambda: LAYER_OPERATIONS[operation](raw_lam, 2**63 - 1))
    assert (status, code) == (404, "ResourceNotFoundException")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (str(HUGE), "InvalidParameterValueException"),
        (str(2**63), "InvalidParameterValueException"),
        ("9" * 5000, "ValidationException"),  # past the model's 140 characters for an ARN
    ],
    ids=["2**70", "2**63", "5000-digits"],
)
def test_layer_version_arn_past_a_long(raw_lam, version: str, expected: str) -> None:  # noqa: ANN001
    arn = f"{LAYER_ARN}:{version}"
    status, code = failure(lambda: raw_lam.get_layer_version_by_arn(Arn=arn))
    assert (status, code) == (400, expected)


def test_function_layers_past_a_long(raw_lam, lam) -> None:  # noqa: ANN001
    layers = [f"{LAYER_ARN}:{HUGE}"]
    status, code = failure(
        lambda: raw_lam.create_function(
            FunctionName=unique("sec-layers"),
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},
            Layers=layers,
        )
    )
    assert (status, code) == (400, "InvalidParameterValueException")
    name = unique("sec-layers")
    create_function(lam, name)
    status, code = failure(
        lambda: raw_lam.update_function_configuration(FunctionName=name, Layers=layers)
    )
    assert (status, code) == (400, "InvalidParameterValueException")


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.list_functions(MaxItems=HUGE),
        lambda c: c.put_function_concurrency(
            FunctionName="sec-none", ReservedConcurrentExecutions=HUGE
        ),
        lambda c: c.list_versions_by_function(FunctionName="sec-none", MaxItems=-HUGE),
        lambda c: c.update_function_configuration(FunctionName="sec-none", MemorySize=HUGE),
    ],
    ids=["query", "body", "negative", "config"],
)
def test_other_numbers_past_their_type(raw_lam, call) -> None:  # noqa: ANN001
    status, code = failure(lambda: call(raw_lam))
    assert (status, code) == (400, "ValidationException")


def test_logs_numbers_past_a_long(server: Server) -> None:
    logs = server.client("logs", parameter_validation=False)
    status, code = failure(
        lambda: logs.get_log_events(logGroupName="g", logStreamName="s", startTime=HUGE)
    )
    assert (status, code) == (400, "InvalidParameterException")


# --- the parser itself -----------------------------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=25,
)


def _json_loads_accepts(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@settings(max_examples=300, derandomize=True, database=None)
@given(_values, st.sampled_from([None, 1]))
def test_check_accepts_what_json_dumps_writes(value: object, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    jsontext.check(text)
    jsontext.check(("[" * 5000) + text + ("]" * 5000))  # the same, past the recursion limit


@settings(max_examples=1500, derandomize=True, database=None)
@given(st.text(alphabet='[]{},:"0123 tnul\\e.-', max_size=24))
def test_the_deep_path_scanner_agrees_with_json_loads(text: str) -> None:
    """`check` falls back to this scanner past the recursion limit; on shallow text the two
    must give the same verdict."""
    assert jsontext._scan(text) == _json_loads_accepts(text)


def test_loads_reports_depth_as_a_value_error() -> None:
    with pytest.raises(ValueError):
        jsontext.loads(OPEN)
    with pytest.raises(ValueError):
        jsontext.loads(NESTED)
    with pytest.raises(ValueError):
        jsontext.check(OPEN)
    jsontext.check(NESTED)
    jsontext.check(b'[{"a": ' * DEPTH + b"1" + b"}]" * DEPTH)
    with pytest.raises(ValueError):
        jsontext.check(b'[{"a": ' * DEPTH + b"1" + b"]}" * DEPTH)


@pytest.mark.parametrize(
    "token", ["a\x1f" + "9" * 25, "a\x1fabc", "a\x1f-5", "9" * 25 + "\x1f1", "1\x1f-" + "9" * 30]
)
def test_forged_logs_paging_tokens(server: Server, token: str) -> None:
    """Paging tokens come back from the client: the numbers in them are input too."""
    logs = server.client("logs")
    group = unique("/sec/tokens")
    logs.create_log_group(logGroupName=group)
    forged = base64.urlsafe_b64encode(token.encode()).decode()
    calls = [
        lambda: logs.describe_log_streams(
            logGroupName=group, orderBy="LastEventTime", nextToken=forged
        ),
        lambda: logs.filter_log_events(logGroupName=group, nextToken=forged),
    ]
    for call in calls:
        try:
            call()
        except ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert error.response["Error"]["Code"] == "InvalidParameterException"
