"""Security issue #10, item 4: a fuzz over every operation of botocore's models.

Hypothesis draws inputs from each operation's input shape (Lambda, CloudWatch Logs, STS),
mixed with hostile edge values (numbers past 64 bits, deep JSON, odd strings), and botocore's
own serializers and signer send them to a real server. No answer may be a 5xx other than 501
NotImplementedException for what lambdahost does not build, and the server may log no
traceback.

Budget: about a minute in `make test`. Invokes go to functions that do not exist, so no
sandbox starts. Deeper runs: LAMBDAHOST_FUZZ_EXAMPLES=200 LAMBDAHOST_FUZZ_RANDOM=1."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, HTTPClientError, ParamValidationError
from botocore.model import OperationModel, Shape
from helpers import ROLE, Server, make_zip, start_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdahost.api.wire import service_model

EXAMPLES = int(os.environ.get("LAMBDAHOST_FUZZ_EXAMPLES", "40"))
RANDOM = os.environ.get("LAMBDAHOST_FUZZ_RANDOM") == "1"
SERVICES = ("lambda", "logs", "sts")
FUNCTION = "fuzz-fn"
LAYER = "fuzz-layer"
ACCOUNT_ARN = "arn:aws:lambda:us-east-1:000000000000"
# Operations that would start execution environments for a function that exists.
STARTS_SANDBOXES = frozenset(
    ("Invoke", "InvokeAsync", "InvokeWithResponseStream", "PutProvisionedConcurrencyConfig")
)
HUGE = 2**70

EDGE_INTEGERS = [0, -1, 1, 2**31, -(2**31) - 1, 2**63, -(2**63) - 1, HUGE, -HUGE]
EDGE_STRINGS = [
    "",
    "$LATEST",
    "1",
    "-1",
    str(HUGE),
    "9" * 30,
    "a" * 300,
    "live",
    "%",
    "..",
    "a/b",
    "\x00",
    "\u00e9\u2713",
    "[" * 3000,
    '{"a":' * 200,
    "*",
    f"{ACCOUNT_ARN}:function:none",
    f"{ACCOUNT_ARN}:function:none:{HUGE}",
    f"{ACCOUNT_ARN}:layer:{LAYER}:{HUGE}",
    f"{ACCOUNT_ARN}:layer:{LAYER}:1",
    f"{ACCOUNT_ARN}:layer:{LAYER}",
    "arn:aws:logs:us-east-1:000000000000:log-group:/aws/lambda/none",
]
EXISTING = [FUNCTION, f"{FUNCTION}:live", f"{ACCOUNT_ARN}:function:{FUNCTION}", LAYER]
EDGE_BLOBS = [b"", b"{}", b"[" * 100_000, b"[" * 50_000 + b"]" * 50_000, b"\xff\xfe", b"null"]


def _strings(shape: Shape, existing: bool) -> st.SearchStrategy[str]:
    # Each branch is drawn about as often as the others: names of things that exist get as
    # far as the store, edge values probe the parsers, and text covers the rest.
    options: list[st.SearchStrategy[str]] = [st.sampled_from(EDGE_STRINGS), st.text(max_size=40)]
    if existing:
        options.append(st.sampled_from(EXISTING))
    if shape.enum:
        options.append(st.sampled_from(shape.enum))
    return st.one_of(options)


def strategy(shape: Shape, existing: bool, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of `shape`'s type, valid or not by its constraints (botocore serializes them)."""
    kind = shape.type_name
    if kind == "structure":
        if depth > 5:  # recursive shapes
            return st.just({})
        members = {
            name: strategy(member, existing, depth + 1)
            for name, member in shape.members.items()
            if member.serialization.get("location") != "statusCode"
        }
        required = {k: v for k, v in members.items() if k in shape.required_members}
        optional = {k: v for k, v in members.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "list":
        return st.lists(strategy(shape.member, existing, depth + 1), max_size=3)
    if kind == "map":
        keys = strategy(shape.key, existing, depth + 1)
        return st.dictionaries(keys, strategy(shape.value, existing, depth + 1), max_size=3)
    if kind == "string":
        return _strings(shape, existing)
    if kind in ("integer", "long"):
        return st.one_of(st.sampled_from(EDGE_INTEGERS), st.integers(-1000, 1000), st.integers())
    if kind in ("double", "float"):
        return st.floats()
    if kind == "boolean":
        return st.booleans()
    if kind == "blob":
        return st.one_of(st.sampled_from(EDGE_BLOBS), st.binary(max_size=64))
    if kind == "timestamp":
        return st.datetimes(
            min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2200, 1, 1)
        )
    raise AssertionError(f"no strategy for {kind}")


def _operations() -> list[tuple[str, str]]:
    return [(s, op) for s in SERVICES for op in service_model(s).operation_names]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("fuzz") / "data")
    try:
        lam = server.client("lambda")
        lam.create_function(
            FunctionName=FUNCTION,
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return e\n"})},
        )
        lam.get_waiter("function_active_v2").wait(FunctionName=FUNCTION)
        lam.create_alias(FunctionName=FUNCTION, Name="live", FunctionVersion="$LATEST")
        lam.publish_layer_version(LayerName=LAYER, Content={"ZipFile": make_zip({"a": "b"})})
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def clients(fuzz_server: Server) -> dict[str, Any]:
    return {
        service: fuzz_server.client(service, parameter_validation=False, inject_host_prefix=False)
        for service in SERVICES
    }


def _call(client: Any, operation: OperationModel, params: dict[str, Any]) -> tuple[int, str]:
    """Send one request; (status, error code or "")."""
    python_names = {api: py for py, api in client.meta.method_to_api_mapping.items()}
    method = getattr(client, python_names[operation.name])
    try:
        response = method(**params)
    except ClientError as error:
        meta = error.response["ResponseMetadata"]
        return meta["HTTPStatusCode"], error.response["Error"].get("Code", "")
    except (ParamValidationError, ValueError, TypeError, OverflowError):
        return 0, "client-side"  # botocore itself could not serialize this input
    except HTTPClientError as error:
        if isinstance(error.kwargs.get("error"), ValueError):  # e.g. a newline in a header
            return 0, "client-side"
        raise
    for value in response.values():  # event streams and streaming bodies
        if hasattr(value, "close"):
            value.close()
    return response["ResponseMetadata"]["HTTPStatusCode"], ""


@pytest.mark.parametrize(("service", "name"), _operations(), ids=lambda v: v)
def test_no_operation_answers_5xx(
    fuzz_server: Server, clients: dict[str, Any], service: str, name: str
) -> None:
    client = clients[service]
    operation = service_model(service).operation_model(name)
    shape = operation.input_shape
    inputs = strategy(shape, existing=name not in STARTS_SANDBOXES) if shape else st.just({})
    log_start = fuzz_server.log_path.stat().st_size
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def run(params: dict[str, Any]) -> None:
        status, code = _call(client, operation, params)
        if status >= 500 and not (status == 501 and code == "NotImplementedException"):
            failures.append(f"{status} {code} for {_short(params)}")
            raise AssertionError(failures[-1])

    run()
    with open(fuzz_server.log_path, "rb") as log:
        log.seek(log_start)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, written[-4000:]
    assert fuzz_server.process.poll() is None, "the server died"


def _short(params: dict[str, Any]) -> str:
    text = repr(params)
    return text if len(text) < 600 else text[:600] + "…"
