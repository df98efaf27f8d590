"""The wire protocols against botocore itself: what botocore's serializers write, our
protocols parse back to the same members; what our protocols write, botocore's parsers read
back to the same output. No server: pure translation."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore import parsers, serialize

from lambdahost.api.protocols.base import Resolved
from lambdahost.api.protocols.json_rpc import JsonRpc
from lambdahost.api.protocols.query import Query
from lambdahost.api.protocols.rest_json import RestJson
from lambdahost.api.wire import Head, service_model
from lambdahost.errors import LambdaError, NotImplementedOperation, ValidationError


def _query_request(service: str, operation: str, params: dict[str, Any]) -> tuple[Head, bytes]:
    model = service_model(service)
    request = serialize.create_serializer(model.protocol).serialize_to_request(
        params, model.operation_model(operation)
    )
    body = urlencode(request["body"]).encode()
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    return Head("POST", "/", {}, headers), body


def _parsed(service: str, operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    model = service_model(service)
    parser = parsers.create_parser(model.protocol)
    shape = model.operation_model(operation).output_shape
    parsed = parser.parse({"body": body, "headers": {}, "status_code": status}, shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


QUERY_INPUTS = [
    (
        "sts",
        "AssumeRole",
        {
            "RoleArn": "arn:aws:iam::000000000000:role/r1234567890",
            "RoleSessionName": "session",
            "PolicyArns": [{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccessX"}],
            "Tags": [{"Key": "team", "Value": "a"}, {"Key": "env", "Value": "b"}],
            "TransitiveTagKeys": ["team"],
            "DurationSeconds": 900,
        },
    ),
    (
        "rds",
        "CreateDBInstance",
        {
            "DBInstanceIdentifier": "db1",
            "DBInstanceClass": "db.t3.micro",
            "Engine": "postgres",
            "AllocatedStorage": 20,
            "VpcSecurityGroupIds": ["sg-1", "sg-2"],
            "MultiAZ": False,
            "Tags": [{"Key": "k", "Value": "v"}],
        },
    ),
    (
        "ec2",
        "DescribeVpcs",
        {
            "VpcIds": ["vpc-1", "vpc-2"],
            "Filters": [{"Name": "tag:env", "Values": ["a", "b"]}, {"Name": "state"}],
            "MaxResults": 5,
        },
    ),
    (
        "ec2",
        "AuthorizeSecurityGroupIngress",
        {
            "GroupId": "sg-1",
            "IpPermissions": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 5432,
                    "ToPort": 5432,
                    "IpRanges": [{"CidrIp": "10.0.0.0/16", "Description": "db"}],
                    "UserIdGroupPairs": [{"GroupId": "sg-2"}],
                }
            ],
        },
    ),
]


@pytest.mark.parametrize(("service", "operation", "params"), QUERY_INPUTS)
def test_query_parses_what_botocore_serialises(
    service: str, operation: str, params: dict[str, Any]
) -> None:
    model = service_model(service)
    head, body = _query_request(service, operation, params)
    query = Query(model, frozenset([operation]))
    name, parsed = query.parse(query.resolve(head), head, body)
    assert name == operation
    assert parsed == params


def test_query_refuses_what_is_not_built_before_validating() -> None:
    model = service_model("sts")
    head, body = _query_request("sts", "GetCallerIdentity", {})
    with pytest.raises(NotImplementedOperation):
        query = Query(model, frozenset())
        query.parse(query.resolve(head), head, body)


def test_query_unknown_and_missing_actions() -> None:
    query = Query(service_model("sts"), frozenset(["GetCallerIdentity"]))
    head = Head("POST", "/", {}, {})
    with pytest.raises(LambdaError) as missing:
        query.parse(query.resolve(head), head, b"Version=2011-06-15")
    assert missing.value.code == "MissingAction"
    with pytest.raises(LambdaError) as unknown:
        query.parse(query.resolve(head), head, b"Action=Nope&Version=2011-06-15")
    assert unknown.value.code == "InvalidAction"


def test_query_validates_against_the_model() -> None:
    model = service_model("sts")
    query = Query(model, frozenset(["AssumeRole"]))
    head = Head("POST", "/", {}, {})
    with pytest.raises(ValidationError) as info:
        query.parse(query.resolve(head), head, b"Action=AssumeRole&RoleArn=short")
    assert "roleSessionName" in info.value.message


QUERY_OUTPUTS = [
    (
        "sts",
        "GetCallerIdentity",
        {"UserId": "000000000000", "Account": "000000000000", "Arn": "arn:aws:iam::0:root"},
    ),
    (
        "rds",
        "DescribeDBInstances",
        {
            "Marker": "m",
            "DBInstances": [
                {
                    "DBInstanceIdentifier": "db1",
                    "Engine": "postgres",
                    "DBInstanceStatus": "available",
                    "Endpoint": {"Address": "127.0.0.1", "Port": 5432},
                    "MultiAZ": False,
                    "AllocatedStorage": 20,
                    "InstanceCreateTime": datetime.datetime(2026, 11, 29, tzinfo=datetime.UTC),
                    "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-1", "Status": "active"}],
                    "TagList": [{"Key": "k", "Value": "v & <w>"}],
                }
            ],
        },
    ),
    (
        "ec2",
        "DescribeVpcs",
        {
            "Vpcs": [
                {
                    "VpcId": "vpc-1",
                    "CidrBlock": "10.0.0.0/16",
                    "State": "available",
                    "IsDefault": True,
                    "Tags": [{"Key": "Name", "Value": "main"}],
                }
            ]
        },
    ),
]


@pytest.mark.parametrize(("service", "operation", "output"), QUERY_OUTPUTS)
def test_botocore_parses_what_query_serialises(
    service: str, operation: str, output: dict[str, Any]
) -> None:
    wire = Query(service_model(service), frozenset([operation])).serialize(
        operation, _timestamps_as_epoch(output), "rid-1"
    )
    assert wire.status == 200
    assert _parsed(service, operation, wire.body) == output


def _timestamps_as_epoch(value: Any) -> Any:
    """Handlers hand timestamps over as epoch seconds, as the control plane keeps them."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _timestamps_as_epoch(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_timestamps_as_epoch(v) for v in value]
    return value


@pytest.mark.parametrize("service", ["sts", "ec2"])
def test_botocore_reads_query_errors(service: str) -> None:
    query = Query(service_model(service), frozenset())
    error = LambdaError("bad \x1f <thing>", code="InvalidParameterValue")
    wire = query.error(error, "rid-2")
    parser = parsers.create_parser(service_model(service).protocol)
    parsed = parser.parse({"body": wire.body, "headers": {}, "status_code": 400}, None)
    assert parsed["Error"]["Code"] == "InvalidParameterValue"
    assert parsed["Error"]["Message"] == "bad \ufffd <thing>"
    assert parsed["ResponseMetadata"]["RequestId"] == "rid-2"


def test_query_names_auth_failures_as_query_services_do() -> None:
    wire = Query(service_model("sts"), frozenset()).error(
        LambdaError("nope", code="InvalidSignatureException", status=403)
    )
    assert b"<Code>SignatureDoesNotMatch</Code>" in wire.body


def test_json_round_trip_and_errors() -> None:
    model = service_model("logs")
    request = serialize.create_serializer("json").serialize_to_request(
        {"logGroupName": "g", "logStreamNames": ["a", "b"], "limit": 5},
        model.operation_model("FilterLogEvents"),
    )
    headers = {k.lower(): v for k, v in request["headers"].items()}
    head = Head("POST", "/", {}, headers)
    rpc = JsonRpc(
        model, frozenset(["FilterLogEvents"]), validation_code="InvalidParameterException"
    )
    resolved = rpc.resolve(head)
    assert resolved is not None
    name, params = rpc.parse(resolved, head, request["body"])
    assert (name, params) == (
        "FilterLogEvents",
        {"logGroupName": "g", "logStreamNames": ["a", "b"], "limit": 5},
    )
    with pytest.raises(LambdaError) as invalid:
        rpc.parse(resolved, head, b'{"logGroupName": "g", "limit": 0}')
    assert invalid.value.code == "InvalidParameterException"
    wire = rpc.error(LambdaError("gone", code="ResourceNotFoundException"))
    parsed = parsers.create_parser("json").parse(
        {"body": wire.body, "headers": wire.headers, "status_code": wire.status}, None
    )
    assert parsed["Error"] == {"Code": "ResourceNotFoundException", "Message": "gone"}


def test_json_resolves_only_its_own_target() -> None:
    rpc = JsonRpc(service_model("logs"), frozenset())
    assert rpc.resolve(Head("POST", "/", {}, {"x-amz-target": "AmazonSQS.SendMessage"})) is None
    with pytest.raises(LambdaError) as unknown:
        head = Head("POST", "/", {}, {"x-amz-target": "Logs_20140328.Nope"})
        rpc.parse(Resolved("Nope"), head, b"{}")
    assert unknown.value.code == "UnknownOperationException"


def test_rest_json_routes_by_method_and_path() -> None:
    rest = RestJson(service_model("lambda"), frozenset(["GetFunction"]))
    head = Head("GET", "/2015-03-31/functions/f%3A1", {"Qualifier": ["2"]}, {})
    resolved = rest.resolve(head)
    assert resolved is not None
    assert rest.parse(resolved, head, b"") == (
        "GetFunction",
        {"FunctionName": "f:1", "Qualifier": "2"},
    )
    assert rest.resolve(Head("GET", "/nowhere", {}, {})) is None
