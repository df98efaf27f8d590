"""Security issue #10, item 6: SigV4 strictness on the live server.

A signature only counts for this endpoint's region and for the service the request is routed
to, must cover the `host` header, and must be dated within AWS's 15-minute window. Each
rejection carries AWS's error code in the envelope of the protocol the client speaks."""

from __future__ import annotations

import datetime
import http.client
import json
from email.message import Message
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers import ACCESS_KEY, REGION, SECRET_KEY, Server

LIST_FUNCTIONS = "/2015-03-31/functions/"


class _NoHostSigV4(SigV4Auth):
    """A correct signature over every header except `host`."""

    def headers_to_sign(self, request: AWSRequest):  # noqa: ANN201
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


def send(
    server: Server,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "lambda",
    region: str = REGION,
    signer: type[SigV4Auth] = SigV4Auth,
) -> tuple[int, Message, bytes]:
    """Sign a request as botocore does and send it over raw HTTP."""
    request = AWSRequest(method=method, url=server.url + path, data=body, headers=headers or {})
    signer(Credentials(ACCESS_KEY, SECRET_KEY), service, region).add_auth(request)
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        target = url.path + (f"?{url.query}" if url.query else "")
        conn.request(method, target, body=body, headers=dict(prepared.headers.items()))
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def lambda_error(status: int, headers: Message, body: bytes) -> tuple[int, str, str]:
    return status, headers.get("x-amzn-ErrorType", ""), json.loads(body)["message"]


@pytest.mark.parametrize("region", ["us-west-2", "eu-central-1"])
def test_wrong_region_scope_is_rejected(server: Server, region: str) -> None:
    status, code, message = lambda_error(*send(server, "GET", LIST_FUNCTIONS, region=region))
    assert (status, code) == (403, "InvalidSignatureException")
    assert message == f"Credential should be scoped to a valid region, not '{region}'."


@pytest.mark.parametrize("service", ["s3", "logs", "sts", "execute-api"])
def test_wrong_service_scope_is_rejected(server: Server, service: str) -> None:
    status, code, message = lambda_error(*send(server, "GET", LIST_FUNCTIONS, service=service))
    assert (status, code) == (403, "InvalidSignatureException")
    assert message == "Credential should be scoped to correct service: 'lambda'."


def test_logs_signature_must_be_scoped_to_logs(server: Server) -> None:
    """A lambda-scoped signature does not open CloudWatch Logs; the error is JSON 1.1."""
    headers = {
        "X-Amz-Target": "Logs_20140328.DescribeLogGroups",
        "Content-Type": "application/x-amz-json-1.1",
    }
    status, _, body = send(server, "POST", "/", body=b"{}", headers=headers, service="lambda")
    error = json.loads(body)
    assert status == 400 and error["__type"] == "InvalidSignatureException"
    assert error["message"] == "Credential should be scoped to correct service: 'logs'."
    ok, _, _ = send(server, "POST", "/", body=b"{}", headers=headers, service="logs")
    assert ok == 200


def test_sts_signature_must_be_scoped_to_sts(server: Server) -> None:
    """The query protocol's own error codes, in its XML envelope."""
    form = b"Action=GetCallerIdentity&Version=2011-06-15"
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    status, _, body = send(server, "POST", "/", body=form, headers=headers, region="ap-south-1")
    assert status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in body
    assert b"Credential should be scoped to a valid region, not 'ap-south-1'." in body
    ok, _, body = send(server, "POST", "/", body=form, headers=headers, service="sts")
    assert ok == 200 and b"<Account>000000000000</Account>" in body


def test_boto3_clients_in_another_region_are_rejected(server: Server) -> None:
    server.client("lambda").list_functions()
    elsewhere = boto3.client(
        "lambda",
        endpoint_url=server.url,
        region_name="us-west-2",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    with pytest.raises(ClientError) as caught:
        elsewhere.list_functions()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_host_must_be_signed(server: Server) -> None:
    status, code, message = lambda_error(*send(server, "GET", LIST_FUNCTIONS, signer=_NoHostSigV4))
    assert (status, code) == (403, "IncompleteSignatureException")
    assert message == "'Host' must be a 'SignedHeader' in the AWS Authorization."


def test_host_must_be_signed_even_with_a_body(server: Server) -> None:
    body = json.dumps({"FunctionName": "never-created"}).encode()
    status, code, _ = lambda_error(
        *send(server, "POST", "/2015-03-31/functions", body=body, signer=_NoHostSigV4)
    )
    assert (status, code) == (403, "IncompleteSignatureException")


@pytest.mark.parametrize(("minutes", "prefix"), [(-16, "Signature expired"), (16, "not yet")])
def test_clock_window_is_fifteen_minutes(
    server: Server, monkeypatch: pytest.MonkeyPatch, minutes: int, prefix: str
) -> None:
    moment = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    moment += datetime.timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: moment)
    status, code, message = lambda_error(*send(server, "GET", LIST_FUNCTIONS))
    assert (status, code) == (403, "InvalidSignatureException")
    assert prefix in message


def test_within_the_window_is_accepted(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    moment -= datetime.timedelta(minutes=14)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: moment)
    status, _, body = send(server, "GET", LIST_FUNCTIONS)
    assert status == 200 and "Functions" in json.loads(body)


def test_payload_hash_header_is_checked_against_the_body(server: Server) -> None:
    """An explicit x-amz-content-sha256 is signed, and the body must match it."""
    body = b'{"FunctionName": "x"}'
    good = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).payload(
        AWSRequest(method="POST", url=server.url, data=body)
    )
    headers = {"X-Amz-Content-SHA256": good}
    status, _, _ = send(server, "GET", LIST_FUNCTIONS, headers=headers, body=body)
    assert status == 200
    request = AWSRequest(
        method="POST", url=server.url + "/2015-03-31/functions", data=body, headers=headers
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(request)
    prepared = request.prepare()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        tampered = b'{"FunctionName": "y"}'  # same length, other bytes
        conn.request("POST", "/2015-03-31/functions", tampered, dict(prepared.headers.items()))
        response = conn.getresponse()
        status, code, _ = lambda_error(response.status, response.headers, response.read())
    finally:
        conn.close()
    assert (status, code) == (403, "InvalidSignatureException")


def test_unsigned_payload_mode_still_works(server: Server) -> None:
    status, _, body = send(
        server, "GET", LIST_FUNCTIONS, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    assert status == 200 and "Functions" in json.loads(body)
