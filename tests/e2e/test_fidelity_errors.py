"""Fidelity to AWS (issue 12): the runtime policy, not-found errors as AWS sends them, and the
runtime version ARN, through boto3 against the real server. Messages are compared exactly."""

from __future__ import annotations

import json
import re
import time

import pytest
from botocore.exceptions import ClientError
from helpers import PY_ECHO, ROLE, create_function, make_zip, unique

ACCOUNT, REGION = "000000000000", "us-east-1"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:"
SERVED = "python3.11, nodejs20.x, provided.al2023, provided.al2"


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def create_params(name: str, **extra: object) -> dict:
    return {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": PY_ECHO},
        **extra,
    }


@pytest.fixture(scope="module")
def fn(lam) -> str:  # noqa: ANN001
    """One function with version 1 and an alias `live` pointing to it."""
    name = unique("fid")
    create_function(lam, name)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return name


# -- 1. the runtime policy ----------------------------------------------------------------


# AWS refuses runtimes past their "Block function create" date with this message (the
# deprecated runtimes of https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html);
# the runtime it recommends is the language's newest.
@pytest.mark.parametrize(
    "runtime, newer",
    [
        ("nodejs14.x", "nodejs24.x"),
        ("nodejs8.10", "nodejs24.x"),
        ("python3.7", "python3.14"),
        ("python2.7", "python3.14"),
        ("java8", "java25"),
        ("dotnetcore3.1", "dotnet10"),
        ("ruby2.7", "ruby3.4"),
        ("go1.x", "provided.al2023"),
        ("provided", "provided.al2023"),
    ],
)
def test_runtimes_aws_blocks_are_refused_with_awss_message(lam, runtime: str, newer: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.create_function(**create_params(unique("blocked"), Runtime=runtime))
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        f"The runtime parameter of {runtime} is no longer supported for creating or updating "
        f"AWS Lambda functions. We recommend you use the new runtime ({newer}) while creating "
        "or updating functions.",
    )


@pytest.mark.parametrize("runtime", ["java21", "ruby3.3", "dotnet8", "python3.12", "nodejs22.x"])
def test_runtimes_not_served_here_are_refused_naming_what_is(lam, runtime: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.create_function(**create_params(unique("other"), Runtime=runtime))
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        f"The runtime parameter of {runtime} is not supported by lambdahost. "
        f"Supported runtimes: {SERVED}.",
    )


def test_update_configuration_applies_the_same_policy(lam, fn: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=fn, Runtime="python3.6")
    assert error(exc)[2] == (
        "The runtime parameter of python3.6 is no longer supported for creating or updating "
        "AWS Lambda functions. We recommend you use the new runtime (python3.14) while creating "
        "or updating functions."
    )


def test_zip_size_comes_before_the_runtime(raw_lam) -> None:
    with pytest.raises(ClientError) as exc:
        raw_lam.create_function(
            **create_params(
                unique("huge"),
                Runtime="java8",
                Code={"ZipFile": b"PK" + b"\0" * (51 * 1024 * 1024)},
            )
        )
    status, code, _ = error(exc)
    assert (status, code) == (413, "RequestEntityTooLargeException")


def test_environment_size_comes_before_the_runtime(lam) -> None:
    variables = {"BIG": "x" * 5000}
    with pytest.raises(ClientError) as exc:
        lam.create_function(
            **create_params(
                unique("env"), Runtime="nodejs14.x", Environment={"Variables": variables}
            )
        )
    status, code, message = error(exc)
    assert (status, code) == (400, "InvalidParameterValueException")
    assert message.startswith(
        "Lambda was unable to configure your environment variables because the environment "
        "variables you have provided exceeded the 4KB limit."
    )


def test_layer_count_comes_before_the_runtime(lam) -> None:
    layers = [f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:l{i}:1" for i in range(6)]
    with pytest.raises(ClientError) as exc:
        lam.create_function(**create_params(unique("layers"), Runtime="ruby2.7", Layers=layers))
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        "Cannot reference more than 5 layers.",
    )


def test_layers_take_every_runtime_of_the_model(lam) -> None:
    name = unique("anyrt")
    runtimes = ["java21", "ruby3.4", "nodejs14.x", "dotnet8", "python3.11"]
    published = lam.publish_layer_version(
        LayerName=name, Content={"ZipFile": make_zip({"a.txt": "a"})}, CompatibleRuntimes=runtimes
    )
    assert published["CompatibleRuntimes"] == runtimes
    listed = lam.list_layers(CompatibleRuntime="java21")["Layers"]
    assert name in [layer["LayerName"] for layer in listed]
    versions = lam.list_layer_versions(LayerName=name, CompatibleRuntime="ruby3.4")
    assert [v["Version"] for v in versions["LayerVersions"]] == [published["Version"]]
    assert (
        lam.list_layer_versions(LayerName=name, CompatibleRuntime="java17")["LayerVersions"] == []
    )


# -- 2. not-found errors as AWS sends them ------------------------------------------------


def raw_error_body(client, call) -> dict:  # noqa: ANN001
    """The error's JSON body as it came over the wire (botocore reads both spellings)."""
    seen: list[bytes] = []

    def keep(response_dict: dict, **_: object) -> None:
        seen.append(response_dict["body"])

    client.meta.events.register("before-parse.lambda.*", keep)
    try:
        with pytest.raises(ClientError):
            call()
    finally:
        client.meta.events.unregister("before-parse.lambda.*", keep)
    return json.loads(seen[-1])


def test_the_message_key_is_the_one_the_error_shape_declares(lam) -> None:
    # botocore's Lambda model: ResourceNotFoundException has `Message`,
    # InvalidParameterValueException `message` (both with `Type`).
    missing = unique("missing")
    body = raw_error_body(lam, lambda: lam.get_function(FunctionName=missing))
    assert body == {"Type": "User", "Message": f"Function not found: {ARN}{missing}"}
    body = raw_error_body(
        lam, lambda: lam.create_function(**create_params(unique("k"), Runtime="java21"))
    )
    assert set(body) == {"Type", "message"}


def test_invoke_names_the_qualified_arn(lam, fn: str) -> None:
    # https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html#API_Invoke_Errors
    missing = unique("missing")
    cases = [
        ({"FunctionName": missing}, f"{ARN}{missing}:$LATEST"),
        ({"FunctionName": fn, "Qualifier": "9"}, f"{ARN}{fn}:9"),
        ({"FunctionName": f"{fn}:9"}, f"{ARN}{fn}:9"),
        ({"FunctionName": fn, "Qualifier": "nope"}, f"{ARN}{fn}:nope"),
        ({"FunctionName": missing, "Qualifier": "live"}, f"{ARN}{missing}:live"),
    ]
    for params, arn in cases:
        with pytest.raises(ClientError) as exc:
            lam.invoke(**params)
        assert error(exc) == (404, "ResourceNotFoundException", f"Function not found: {arn}")


def test_get_function_names_the_arn_it_was_asked_for(lam, fn: str) -> None:
    # https://docs.aws.amazon.com/lambda/latest/api/API_GetFunction.html#API_GetFunction_Errors
    missing = unique("missing")
    cases = [
        ({"FunctionName": missing}, f"{ARN}{missing}"),
        ({"FunctionName": f"{ARN}{missing}"}, f"{ARN}{missing}"),
        ({"FunctionName": fn, "Qualifier": "7"}, f"{ARN}{fn}:7"),
        ({"FunctionName": f"{ARN}{fn}:7"}, f"{ARN}{fn}:7"),
        ({"FunctionName": fn, "Qualifier": "nope"}, f"{ARN}{fn}:nope"),
    ]
    for params, arn in cases:
        with pytest.raises(ClientError) as exc:
            lam.get_function(**params)
        assert error(exc) == (404, "ResourceNotFoundException", f"Function not found: {arn}")


def test_missing_alias(lam, fn: str) -> None:
    # https://docs.aws.amazon.com/lambda/latest/api/API_GetAlias.html#API_GetAlias_Errors
    with pytest.raises(ClientError) as exc:
        lam.get_alias(FunctionName=fn, Name="nope")
    assert error(exc) == (
        404,
        "ResourceNotFoundException",
        f"Cannot find alias arn: {ARN}{fn}:nope",
    )


def test_missing_url_configs(lam, fn: str) -> None:
    # https://docs.aws.amazon.com/lambda/latest/api/API_GetFunctionUrlConfig.html
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=unique("missing"))
    assert error(exc) == (404, "ResourceNotFoundException", "Function does not exist")
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=fn, Qualifier="nope")
    assert error(exc) == (404, "ResourceNotFoundException", "Function does not exist")
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=fn)
    assert error(exc) == (
        404,
        "ResourceNotFoundException",
        "The resource you requested does not exist.",
    )


def test_missing_event_invoke_config(lam, fn: str) -> None:
    # https://docs.aws.amazon.com/lambda/latest/api/API_GetFunctionEventInvokeConfig.html
    missing = unique("missing")
    cases = [
        ({"FunctionName": fn}, f"{ARN}{fn}:$LATEST"),
        ({"FunctionName": fn, "Qualifier": "live"}, f"{ARN}{fn}:live"),
        ({"FunctionName": missing}, f"{ARN}{missing}:$LATEST"),
    ]
    for params, arn in cases:
        with pytest.raises(ClientError) as exc:
            lam.get_function_event_invoke_config(**params)
        assert error(exc) == (
            404,
            "ResourceNotFoundException",
            f"The function {arn} doesn't have an EventInvokeConfig",
        )


def test_an_arn_of_another_region_is_not_reachable(lam) -> None:
    arn = f"arn:aws:lambda:us-west-2:{ACCOUNT}:function:{unique('west')}"
    for call in (lambda: lam.get_function(FunctionName=arn), lambda: lam.invoke(FunctionName=arn)):
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc) == (
            404,
            "ResourceNotFoundException",
            "Functions from 'us-west-2' are not reachable in this region ('us-east-1')",
        )


def test_an_arn_of_another_account_is_denied(lam, fn: str) -> None:
    # https://docs.aws.amazon.com/lambda/latest/dg/access-control-resource-based.html: without
    # a resource-based policy granting it, a call on another account's function is denied.
    arn = f"arn:aws:lambda:{REGION}:111111111111:function:{fn}"
    cases = [
        (lambda: lam.get_function(FunctionName=arn), "lambda:GetFunction", arn),
        (lambda: lam.invoke(FunctionName=arn), "lambda:InvokeFunction", arn),
        (lambda: lam.invoke(FunctionName=f"{arn}:1"), "lambda:InvokeFunction", f"{arn}:1"),
        (lambda: lam.delete_function(FunctionName=arn), "lambda:DeleteFunction", arn),
    ]
    for call, action, resource in cases:
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc) == (
            403,
            "AccessDeniedException",
            f"User: arn:aws:iam::{ACCOUNT}:root is not authorized to perform: {action} on "
            f"resource: {resource} because no resource-based policy allows the {action} action",
        )
    assert lam.get_function(FunctionName=fn)["Configuration"]["FunctionName"] == fn


def test_deleting_a_missing_version_of_an_existing_function_is_a_no_op(lam) -> None:
    # https://docs.aws.amazon.com/lambda/latest/api/API_DeleteFunction.html
    name = unique("delver")
    create_function(lam, name)
    deleted = lam.delete_function(FunctionName=name, Qualifier="5")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.get_function(FunctionName=name)["Configuration"]["Version"] == "$LATEST"
    lam.delete_function(FunctionName=name)
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=name, Qualifier="5")
    assert error(exc) == (404, "ResourceNotFoundException", f"Function not found: {ARN}{name}")


# -- 3. the runtime version ARN -------------------------------------------------------------


def test_runtime_version_arn_is_in_every_configuration_and_on_init_start(lam, server) -> None:  # noqa: ANN001
    # https://docs.aws.amazon.com/lambda/latest/api/API_RuntimeVersionConfig.html
    name = unique("rtv")
    created = create_function(lam, name, wait=False)
    arn = created["RuntimeVersionConfig"]["RuntimeVersionArn"]
    assert re.fullmatch(rf"arn:aws:lambda:{REGION}::runtime:[0-9a-f]{{64}}", arn)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    published = lam.publish_version(FunctionName=name)
    configs = [
        lam.get_function(FunctionName=name)["Configuration"],
        lam.get_function_configuration(FunctionName=name),
        published,
        lam.get_function_configuration(FunctionName=name, Qualifier="1"),
    ]
    assert [c["RuntimeVersionConfig"] for c in configs] == [{"RuntimeVersionArn": arn}] * 4
    # Listings leave it out, with the state fields (recorded AWS answers, localstack
    # test_lambda_api.snapshot.json: test_list_functions list_all, list_versions_result).
    listed = [
        *lam.list_versions_by_function(FunctionName=name)["Versions"],
        *[
            c
            for c in lam.list_functions(FunctionVersion="ALL")["Functions"]
            if c["FunctionName"] == name
        ],
    ]
    assert len(listed) == 4  # $LATEST and version 1 in each listing
    assert not any("RuntimeVersionConfig" in c for c in listed)

    node = unique("rtvnode")
    other = create_function(
        lam,
        node,
        make_zip({"index.mjs": "export const handler = async () => 1;\n"}),
        Runtime="nodejs20.x",
        Handler="index.handler",
    )["RuntimeVersionConfig"]["RuntimeVersionArn"]
    assert other != arn

    lam.invoke(FunctionName=name, Payload=b"{}")
    logs = server.client("logs")
    deadline, lines = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except ClientError:  # the group appears with the first lines
            events = []
        lines = [e["message"] for e in events if e["message"].startswith("INIT_START")]
        if lines:
            break
        time.sleep(0.2)
    assert lines and lines[0].rstrip("\n").endswith(f"\tRuntime Version ARN: {arn}")
