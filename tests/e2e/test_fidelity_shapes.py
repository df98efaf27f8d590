"""Issue 12: responses shaped as AWS shapes them, through boto3, messages compared exactly.

Where the text comes from: AWS's API reference and guides where they state it, otherwise
responses recorded from AWS in LocalStack's AWS-validated snapshots
(github.com/localstack/localstack, tests/aws/services/lambda_/*.snapshot.json, recorded
November 2025), named at each test."""

from __future__ import annotations

import http.client
import json

import pytest
from helpers import Server, create_function, make_public, unique, url_id


def error(info: pytest.ExceptionInfo) -> dict:  # type: ignore[type-arg]
    response = info.value.response  # type: ignore[attr-defined]
    return {
        "Code": response["Error"]["Code"],
        "Message": response["Error"]["Message"],
        "Type": response.get("Type"),
        "status": response["ResponseMetadata"]["HTTPStatusCode"],
    }


def get(server: Server, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


def revision(lam, name: str, qualifier: str | None = None) -> str:  # noqa: ANN001
    kw = {"Qualifier": qualifier} if qualifier else {}
    return lam.get_function_configuration(FunctionName=name, **kw)["RevisionId"]


# -- item 5: RevisionId -----------------------------------------------------------------------


def test_revision_changes_when_a_change_settles_and_on_tags(lam) -> None:  # noqa: ANN001
    # AWS-validated: test_lambda_api.py::TestLambdaRevisions::test_function_revisions_basic
    # ("rev2: created function becomes active" has a new RevisionId), and
    # https://docs.aws.amazon.com/lambda/latest/api/API_FunctionConfiguration.html (RevisionId:
    # "The latest updated revision of the function or alias").
    name = unique("rev")
    created = create_function(lam, name, wait=False)
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    active = revision(lam, name)
    assert active != created["RevisionId"]
    # The Pending revision is stale now: a guarded update gets 412.
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_configuration(
            FunctionName=name, Description="x", RevisionId=created["RevisionId"]
        )

    updated = lam.update_function_configuration(FunctionName=name, Description="y")
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    successful = revision(lam, name)
    assert successful not in (updated["RevisionId"], active)

    arn = created["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"team": "a"})
    tagged = revision(lam, name)
    assert tagged != successful
    lam.untag_resource(Resource=arn, TagKeys=["team"])
    assert revision(lam, name) != tagged
    # Tags are the function's: a version or alias ARN is refused (recorded AWS answer,
    # test_lambda_api.snapshot.json TestLambdaTags::test_tag_versions).
    for qualified in (f"{arn}:$LATEST", f"{arn}:1"):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
            lam.tag_resource(Resource=qualified, Tags={"a": "b"})
        assert error(info) == {
            "Code": "InvalidParameterValueException",
            "Message": "Tags on function aliases and versions are not supported. Please "
            "specify a function ARN.",
            "Type": "User",
            "status": 400,
        }


def test_add_permission_on_an_alias_checks_the_alias_revision(lam) -> None:  # noqa: ANN001
    # https://docs.aws.amazon.com/lambda/latest/api/API_AddPermission.html (RevisionId: "Update
    # the policy only if the revision ID matches"); AWS-validated:
    # test_lambda_api.py::TestLambdaPermissions::test_add_lambda_permission_aws (the alias's
    # RevisionId is accepted; "wrong" answers this exact 412).
    name = unique("revperm")
    create_function(lam, name)
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    grant = {
        "FunctionName": name,
        "Action": "lambda:InvokeFunction",
        "Principal": "s3.amazonaws.com",
        "Qualifier": "live",
    }
    with pytest.raises(lam.exceptions.PreconditionFailedException) as info:
        lam.add_permission(StatementId="s1", RevisionId="wrong", **grant)
    assert error(info) == {
        "Code": "PreconditionFailedException",
        "Message": "The Revision Id provided does not match the latest Revision Id. Call the "
        "GetPolicy API to retrieve the latest Revision Id",
        "Type": "User",
        "status": 412,
    }
    lam.add_permission(StatementId="s1", RevisionId=alias["RevisionId"], **grant)
    assert json.loads(lam.get_policy(FunctionName=name, Qualifier="live")["Policy"])["Statement"]


# -- item 6: function URL shapes --------------------------------------------------------------


def test_url_invoke_mode_only_when_set(lam) -> None:  # noqa: ANN001
    # Recorded AWS answers (test_lambda_api.snapshot.json test_url_config_lifecycle and
    # test_lambda.snapshot.json test_lambda_update_function_url_config): Create and Update
    # leave InvokeMode out until the caller sets it; Get and List always say it.
    name = unique("urlmode")
    create_function(lam, name)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert "InvokeMode" not in created
    assert lam.get_function_url_config(FunctionName=name)["InvokeMode"] == "BUFFERED"
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["InvokeMode"] for c in listed] == ["BUFFERED"]
    assert "InvokeMode" not in lam.update_function_url_config(FunctionName=name, AuthType="NONE")
    set_ = lam.update_function_url_config(FunctionName=name, InvokeMode="RESPONSE_STREAM")
    assert set_["InvokeMode"] == "RESPONSE_STREAM"
    again = lam.update_function_url_config(FunctionName=name)
    assert again["InvokeMode"] == "RESPONSE_STREAM"
    # The enum in AWS's order (test_lambda.snapshot.json test_lambda_url_invalid_invoke_mode).
    other = unique("urlmode")
    create_function(lam, other, wait=False)
    with pytest.raises(lam.exceptions.ClientError) as info:
        lam.create_function_url_config(FunctionName=other, AuthType="NONE", InvokeMode="UNKNOWN")
    assert error(info)["Code"] == "ValidationException"
    assert error(info)["Message"] == (
        "1 validation error detected: Value 'UNKNOWN' at 'invokeMode' failed to satisfy "
        "constraint: Member must satisfy enum value set: [RESPONSE_STREAM, BUFFERED]"
    )


def test_unknown_url_and_deleted_alias(lam, server: Server) -> None:  # noqa: ANN001
    # Recorded AWS answers: test_lambda.py test_lambda_url_non_existing_url (403, the exact
    # body {"Message":null}, AccessDeniedException) and test_lambda.snapshot.json
    # test_lambda_url_persists_after_alias_delete (403 AccessDeniedException, Forbidden text
    # pointing at https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html).
    status, headers, body = get(server, f"/_lambdahost/url/{'0' * 32}/")
    assert (status, body) == (403, b'{"Message":null}')
    assert headers["content-type"] == "application/json"
    assert headers["x-amzn-errortype"] == "AccessDeniedException"

    name = unique("urlalias")
    create_function(lam, name)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    uid = url_id(
        lam.create_function_url_config(FunctionName=name, AuthType="NONE", Qualifier="live")
    )
    make_public(lam, name, qualifier="live")
    assert get(server, f"/_lambdahost/url/{uid}/")[0] != 403  # let in: the function answers
    lam.delete_alias(FunctionName=name, Name="live")
    status, headers, body = get(server, f"/_lambdahost/url/{uid}/")
    assert status == 403 and headers["x-amzn-errortype"] == "AccessDeniedException"
    assert json.loads(body) == {
        "Message": "Forbidden. For troubleshooting Function URL authorization issues, see: "
        "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
    }


# -- item 7: error wording and codes ----------------------------------------------------------

PARSE = "Could not parse request body into json: Could not parse payload into json: "


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        # As AWS answered it, quoted in
        # https://github.com/alexcasalboni/aws-lambda-power-tuning/issues/148
        (
            b"test data",
            "Unrecognized token 'test': was expecting (JSON String, Number, Array, Object or "
            "token 'null', 'true' or 'false')\n at [Source: (byte[])\"test data\"; line: 1, "
            "column: 6]",
        ),
        (
            b"hello",
            "Unrecognized token 'hello': was expecting (JSON String, Number, Array, Object or "
            "token 'null', 'true' or 'false')\n at [Source: (byte[])\"hello\"; line: 1, "
            "column: 6]",
        ),
        # Jackson's wording for a missing comma (as AWS answered one, quoted in
        # https://github.com/podaac/hydrocron/issues/64).
        (
            b'{"a": 1 "b": 2}',
            "Unexpected character ('\"' (code 34)): was expecting comma to separate Object "
            'entries\n at [Source: (byte[])"{"a": 1 "b": 2}"; line: 1, column: 10]',
        ),
    ],
)
def test_invalid_invoke_payloads(lam, payload: bytes, detail: str) -> None:  # noqa: ANN001
    name = unique("badjson")
    create_function(lam, name)
    with pytest.raises(lam.exceptions.InvalidRequestContentException) as info:
        lam.invoke(FunctionName=name, Payload=payload)
    assert error(info) == {
        "Code": "InvalidRequestContentException",
        "Message": PARSE + detail,
        "Type": "User",
        "status": 400,
    }


def test_size_limits(lam, raw_lam) -> None:  # noqa: ANN001
    # Recorded AWS answers: test_lambda_api.snapshot.json TestLambdaSizeLimits
    # (test_oversized_zipped_create_lambda, test_oversized_request_create_lambda).
    from lambdahost.control.lambda_ import rules

    name = unique("toobig")
    with pytest.raises(raw_lam.exceptions.ClientError) as info:
        create_function(raw_lam, name, zip_bytes=b"\0" * (rules.ZIPPED_MAX + 1), wait=False)
    assert (error(info)["Code"], error(info)["Message"]) == (
        "RequestEntityTooLargeException",
        "Zipped size must be smaller than 52428800 bytes",
    )
    with pytest.raises(raw_lam.exceptions.ClientError) as info:
        create_function(raw_lam, name, zip_bytes=b"\0" * (55 * 1024 * 1024), wait=False)
    assert (error(info)["Code"], error(info)["Message"], error(info)["status"]) == (
        "RequestEntityTooLargeException",
        "Request must be smaller than 70167211 bytes for the CreateFunction operation",
        413,
    )


def test_qualifier_mismatch_and_routing_weights(lam, raw_lam) -> None:  # noqa: ANN001
    name = unique("words")
    create_function(lam, name)
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Description="2")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    # Recorded: test_lambda_api.snapshot.json test_ops_with_arn_qualifier_mismatch.
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
        lam.get_function(FunctionName=f"{name}:1", Qualifier="2")
    assert error(info) == {
        "Code": "InvalidParameterValueException",
        "Message": "The derived qualifier from the function name does not match the "
        "specified qualifier.",
        "Type": "User",
        "status": 400,
    }
    # Recorded: test_lambda_api.snapshot.json test_alias_lifecycle (routing_config_exc_*).
    for weights, part, constraints in [
        (
            {"2": 2.0},
            "value",
            "Member must have value less than or equal to 1.0, Member must have value greater "
            "than or equal to 0.0, Member must not be null",
        ),
        (
            {"2": -1.0},
            "value",
            "Member must have value less than or equal to 1.0, Member must have value greater "
            "than or equal to 0.0, Member must not be null",
        ),
        (
            {"$LATEST": 0.5},
            "keys",
            "Member must have length less than or equal to 1024, Member must have length "
            "greater than or equal to 1, Member must satisfy regular expression pattern: [0-9]+",
        ),
    ]:
        with pytest.raises(raw_lam.exceptions.ClientError) as info:
            raw_lam.create_alias(
                FunctionName=name,
                Name="canary",
                FunctionVersion="1",
                RoutingConfig={"AdditionalVersionWeights": weights},
            )
        ((key, value),) = weights.items()
        assert (error(info)["Code"], error(info)["Message"]) == (
            "ValidationException",
            f"1 validation error detected: Value '{{{key}={value}}}' at "
            "'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map "
            f"{part} must satisfy constraint: [{constraints}]",
        )


def test_concurrency_limit_error_has_no_type(lam) -> None:  # noqa: ANN001
    # Recorded: test_lambda_api.snapshot.json TestLambdaReservedConcurrency::
    # test_function_concurrency_limits (a `message`, no `Type`).
    name = unique("conc")
    create_function(lam, name, wait=False)
    limit = lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=limit)
    assert error(info) == {
        "Code": "InvalidParameterValueException",
        "Message": "Specified ReservedConcurrentExecutions for function decreases account's "
        "UnreservedConcurrentExecution below its minimum value of [100].",
        "Type": None,
        "status": 400,
    }


def test_function_name_length(lam, raw_lam) -> None:  # noqa: ANN001
    # Recorded: test_lambda_api.snapshot.json test_function_name_and_qualifier_validation
    # [function_name_too_long-*] and test_create_lambda_exceptions (long_function_name_exc,
    # long_function_arn_exc).
    long = "a" * 65
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
        create_function(lam, long, wait=False)
    assert error(info) == {
        "Code": "InvalidParameterValueException",
        "Message": f"1 validation error detected: Value '{long}' at 'functionName' failed to "
        "satisfy constraint: Member must have length less than or equal to 64",
        "Type": "User",
        "status": 400,
    }
    for call in (lam.get_function, lam.delete_function):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as info:
            call(FunctionName=long)
        assert error(info)["Message"] == (
            f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{long}"
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=long)
    arn = "arn:aws:lambda:us-east-1:000000000000:function:" + "a" * 94
    with pytest.raises(raw_lam.exceptions.ClientError) as info:
        create_function(raw_lam, arn, wait=False)
    assert (error(info)["Code"], error(info)["Message"]) == (
        "ValidationException",
        f"1 validation error detected: Value '{arn}' at 'functionName' failed to satisfy "
        "constraint: Member must have length less than or equal to 140",
    )
