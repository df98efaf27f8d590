"""The front door routes every service by protocol, on one endpoint, and answers each in its
own envelope: rest-json by method and path, json by X-Amz-Target, query by a form to `/`."""

from __future__ import annotations

import urllib.error
import urllib.request
from xml.etree import ElementTree

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers import ACCESS_KEY, REGION, SECRET_KEY, Server


def send(
    server: Server,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "lambda",
) -> tuple[int, dict[str, str], bytes]:
    request = AWSRequest(method=method, url=server.url + path, data=body, headers=headers or {})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, REGION).add_auth(request)
    prepared = urllib.request.Request(
        server.url + path, data=body or None, headers=dict(request.headers), method=method
    )
    try:
        with urllib.request.urlopen(prepared, timeout=30) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers), error.read()


def _lower(headers: object) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}  # type: ignore[attr-defined]


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def test_query_unknown_action_is_a_query_error_with_the_request_id(server: Server) -> None:
    status, headers, body = send(
        server, "POST", "/", b"Action=Nope&Version=2011-06-15", FORM, service="sts"
    )
    assert status == 400
    root = ElementTree.fromstring(body)
    ns = {"s": "https://sts.amazonaws.com/doc/2011-06-15/"}
    assert root.findtext("s:Error/s:Code", namespaces=ns) == "InvalidAction"
    assert root.findtext("s:RequestId", namespaces=ns) == headers["x-amzn-requestid"]


def test_query_answer_carries_the_request_id(server: Server) -> None:
    status, headers, body = send(
        server, "POST", "/", b"Action=GetCallerIdentity&Version=2011-06-15", FORM, service="sts"
    )
    assert status == 200
    assert headers["x-amzn-requestid"].encode() in body


def test_query_signed_for_another_service_is_refused_in_query_shape(server: Server) -> None:
    # Routed by its scope to no query service we serve: the default one proves the signature.
    status, _, body = send(
        server, "POST", "/", b"Action=GetCallerIdentity&Version=2011-06-15", FORM, service="rds"
    )
    assert status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in body


def test_json_unknown_operation(server: Server) -> None:
    status, headers, body = send(
        server,
        "POST",
        "/",
        b"{}",
        {"X-Amz-Target": "Logs_20140328.Nope", "Content-Type": "application/x-amz-json-1.1"},
        service="logs",
    )
    assert status == 400
    assert headers["x-amzn-errortype"] == "UnknownOperationException"
    assert b'"__type": "UnknownOperationException"' in body


def test_json_operation_not_built(server: Server) -> None:
    logs = server.client("logs")
    with pytest.raises(ClientError) as info:
        logs.describe_destinations()
    assert info.value.response["Error"]["Code"] == "NotImplementedException"


def test_json_constraint_failure_uses_the_services_code(server: Server) -> None:
    status, headers, _ = send(
        server,
        "POST",
        "/",
        b'{"limit": 0}',
        {"X-Amz-Target": "Logs_20140328.DescribeLogGroups"},
        service="logs",
    )
    assert (status, headers["x-amzn-errortype"]) == (400, "InvalidParameterException")


def test_rest_json_unknown_path_is_404(server: Server) -> None:
    status, headers, body = send(server, "GET", "/2015-03-31/nowhere")
    assert status == 404
    assert headers["x-amzn-errortype"] == "UnknownOperationException"
    assert b"GET /2015-03-31/nowhere" in body
