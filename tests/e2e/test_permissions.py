"""Resource-based policies on functions: AddPermission, GetPolicy, RemovePermission."""

from __future__ import annotations

import json

import pytest
from helpers import create_function, unique


@pytest.fixture(scope="module")
def fn(lam) -> str:  # noqa: ANN001
    name = unique("perm")
    create_function(lam, name, wait=False)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return name


def test_round_trip(lam, fn: str) -> None:  # noqa: ANN001
    arn = lam.get_function_configuration(FunctionName=fn)["FunctionArn"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=fn)
    added = lam.add_permission(
        FunctionName=fn,
        StatementId="s3-invoke",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::my-bucket",
        SourceAccount="123456789012",
    )
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    statement = json.loads(added["Statement"])
    assert statement == {
        "Sid": "s3-invoke",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": arn,
        "Condition": {
            "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"},
            "StringEquals": {"AWS:SourceAccount": "123456789012"},
        },
    }
    lam.add_permission(
        FunctionName=fn,
        StatementId="account",
        Action="lambda:GetFunction",
        Principal="111122223333",
    )
    policy = lam.get_policy(FunctionName=fn)
    document = json.loads(policy["Policy"])
    assert document["Version"] == "2012-10-17" and document["Id"] == "default"
    assert [s["Sid"] for s in document["Statement"]] == ["s3-invoke", "account"]
    assert document["Statement"][1]["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}

    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.add_permission(
            FunctionName=fn, StatementId="account", Action="lambda:InvokeFunction", Principal="*"
        )
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_permission(
            FunctionName=fn,
            StatementId="guarded",
            Action="lambda:InvokeFunction",
            Principal="*",
            RevisionId="00000000-0000-0000-0000-000000000000",
        )
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_permission(FunctionName=fn, StatementId="account", RevisionId="stale")
    revision = lam.get_policy(FunctionName=fn)["RevisionId"]
    lam.remove_permission(FunctionName=fn, StatementId="account", RevisionId=revision)
    assert lam.get_policy(FunctionName=fn)["RevisionId"] != revision
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.remove_permission(FunctionName=fn, StatementId="account")
    lam.remove_permission(FunctionName=fn, StatementId="s3-invoke")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=fn)


def test_qualified_policies(lam, fn: str) -> None:  # noqa: ANN001
    added = lam.add_permission(
        FunctionName=fn,
        Qualifier="live",
        StatementId="alias-url",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
    )
    statement = json.loads(added["Statement"])
    assert statement["Resource"].endswith(f"{fn}:live")
    assert statement["Principal"] == "*"
    assert statement["Condition"] == {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}
    # Each qualifier has its own policy.
    assert json.loads(lam.get_policy(FunctionName=f"{fn}:live")["Policy"])["Statement"] == [
        statement
    ]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=fn)
    version = lam.add_permission(
        FunctionName=f"{fn}:1",
        StatementId="via-url",
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
    )
    assert json.loads(version["Statement"])["Condition"] == {
        "Bool": {"lambda:InvokedViaFunctionUrl": "true"}
    }
    lam.remove_permission(FunctionName=fn, Qualifier="1", StatementId="via-url")
    lam.remove_permission(FunctionName=fn, Qualifier="live", StatementId="alias-url")


def test_errors(lam, fn: str) -> None:  # noqa: ANN001
    base = {"StatementId": "x", "Action": "lambda:InvokeFunction", "Principal": "*"}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.add_permission(FunctionName=unique("missing"), **base)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.add_permission(FunctionName=fn, Qualifier="99", **base)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.add_permission(FunctionName=fn, Qualifier="nosuch", **base)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=unique("missing"))
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.add_permission(FunctionName=fn, Qualifier="$LATEST", **base)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.add_permission(FunctionName=fn, FunctionUrlAuthType="NONE", **base)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.add_permission(
            FunctionName=fn,
            StatementId="y",
            Action="lambda:InvokeFunctionUrl",
            Principal="*",
            InvokedViaFunctionUrl=True,
        )
    with pytest.raises(lam.exceptions.ClientError) as info:
        lam.add_permission(FunctionName=fn, StatementId="z", Action="s3:GetObject", Principal="*")
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.add_permission(FunctionName=f"{fn}:live", Qualifier="1", **base)


def test_policy_goes_with_the_function(lam) -> None:  # noqa: ANN001
    name = unique("permdel")
    create_function(lam, name, wait=False)
    lam.add_permission(FunctionName=name, StatementId="a", Action="lambda:*", Principal="*")
    lam.delete_function(FunctionName=name)
    create_function(lam, name, wait=False)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)
