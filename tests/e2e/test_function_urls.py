"""Function URLs: the config API, and real HTTP requests through a URL to a real function."""

from __future__ import annotations

import base64
import http.client
import json
import re
from email.message import Message

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from helpers import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    URL,
    Server,
    create_function,
    make_public,
    make_zip,
    unique,
    url_id,
)

from lambdahost.api.lambda_.url_responses import FORBIDDEN

APP = make_zip(
    {
        "app.py": """
import base64, json

def handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode", "echo")
    if mode == "echo":
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps(event)}
    if mode == "bare":
        return {"hello": "world"}
    if mode == "string":
        return "just a string"
    if mode == "binary":
        return {"statusCode": 201,
                "headers": {"content-type": "application/octet-stream", "x-custom": "yes",
                            "access-control-allow-origin": "https://evil.example"},
                "body": base64.b64encode(bytes(range(256))).decode(),
                "isBase64Encoded": True, "cookies": ["a=1; Path=/", "b=2; HttpOnly"]}
    if mode == "teapot":
        return {"statusCode": 418, "body": "short and stout"}
    if mode == "invalid":
        return {"statusCode": "not a number"}
    raise RuntimeError("boom")
"""
    }
)


def request(
    server: Server,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def public(lam) -> tuple[str, str]:  # noqa: ANN001
    """A function with a public NONE URL and a CORS config: (function name, url id)."""
    name = unique("url")
    create_function(lam, name, APP)
    config = lam.create_function_url_config(
        FunctionName=name,
        AuthType="NONE",
        Cors={
            "AllowOrigins": ["https://app.example"],
            "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-token", "content-type"],
            "ExposeHeaders": ["x-custom"],
            "MaxAge": 600,
            "AllowCredentials": True,
        },
    )
    make_public(lam, name)
    return name, url_id(config)


def echo(server: Server, uid: str, path: str = "/", **kw) -> dict:  # noqa: ANN003
    status, headers, body = request(
        server, kw.pop("method", "GET"), f"/_lambdahost/url/{uid}{path}", **kw
    )
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


# -- the config API -------------------------------------------------------------------------


def test_config_lifecycle(lam, server: Server) -> None:  # noqa: ANN001
    name = unique("urlcfg")
    create_function(lam, name)
    created = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    uid = url_id(created)
    assert URL.match(created["FunctionUrl"])[2] == str(server.port)
    assert created["FunctionArn"].endswith(f":function:{name}")
    # InvokeMode is left out of Create's answer when the caller did not set it.
    assert created["AuthType"] == "AWS_IAM" and "InvokeMode" not in created
    assert "Cors" not in created and created["CreationTime"]

    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function_url_config(FunctionName=name, AuthType="NONE")

    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == created["FunctionUrl"] and got["InvokeMode"] == "BUFFERED"
    assert got["LastModifiedTime"] == got["CreationTime"]

    updated = lam.update_function_url_config(
        FunctionName=name,
        AuthType="NONE",
        Cors={"AllowOrigins": ["*"], "MaxAge": 60},
        InvokeMode="RESPONSE_STREAM",
    )
    assert updated["AuthType"] == "NONE" and updated["InvokeMode"] == "RESPONSE_STREAM"
    assert updated["Cors"] == {"AllowOrigins": ["*"], "MaxAge": 60}
    assert updated["LastModifiedTime"] >= updated["CreationTime"]

    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    alias_url = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    assert alias_url["FunctionArn"].endswith(f"{name}:live")
    assert url_id(alias_url) != uid
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == sorted(
        [created["FunctionArn"], alias_url["FunctionArn"]]
    )
    page = lam.list_function_url_configs(FunctionName=name, MaxItems=1)
    assert len(page["FunctionUrlConfigs"]) == 1 and page["NextMarker"]

    lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_url_config(FunctionName=name, AuthType="NONE")
    # The id is a function of what the URL points at: re-creating gives the same URL.
    again = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert url_id(again) == uid

    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=name)
    status, _, body = request(server, "GET", f"/_lambdahost/url/{uid}/")
    assert status == 403 and body == b'{"Message":null}'


def test_config_errors(lam, raw_lam) -> None:  # noqa: ANN001
    name = unique("urlerr")
    create_function(lam, name, wait=False)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_function_url_config(FunctionName=unique("missing"), AuthType="NONE")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_function_url_config(FunctionName=name, Qualifier="nosuch", AuthType="NONE")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_function_url_configs(FunctionName=unique("missing"))
    assert lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []
    # Versions cannot have URLs: the qualifier must be an alias.
    for bad in ({"Qualifier": "1"}, {"Qualifier": "$LATEST"}):
        with pytest.raises(raw_lam.exceptions.ClientError) as info:
            raw_lam.create_function_url_config(FunctionName=name, AuthType="NONE", **bad)
        assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(raw_lam.exceptions.ClientError) as info:
        raw_lam.create_function_url_config(FunctionName=name, AuthType="BASIC")
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function_url_config(
            FunctionName=name, AuthType="NONE", Cors={"AllowMethods": ["FETCH"]}
        )


# -- requests through the URL ---------------------------------------------------------------


def test_get_event(server: Server, public: tuple[str, str]) -> None:
    name, uid = public
    event = echo(
        server,
        uid,
        "/some/path?x=1&y=two&x=3&empty=",
        headers={"X-Multi": "a", "Cookie": "c1=v1; c2=v2", "User-Agent": "tests/1.0"},
    )
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/some/path"
    assert event["rawQueryString"] == "x=1&y=two&x=3&empty="
    assert event["queryStringParameters"] == {"x": "1,3", "y": "two", "empty": ""}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in event["headers"] and event["headers"]["x-multi"] == "a"
    assert event["headers"]["user-agent"] == "tests/1.0"
    assert "body" not in event and event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["accountId"] == "anonymous" and ctx["apiId"] == uid
    assert ctx["domainName"] == f"{uid}.lambda-url.us-east-1.localhost"
    assert ctx["domainPrefix"] == uid and ctx["stage"] == "$default"
    assert ctx["http"] == {
        "method": "GET",
        "path": "/some/path",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "tests/1.0",
    }
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", ctx["time"])
    assert isinstance(ctx["timeEpoch"], int) and ctx["requestId"]
    assert "authorizer" not in ctx


def test_post_bodies(server: Server, public: tuple[str, str]) -> None:
    _, uid = public
    text = echo(
        server,
        uid,
        "/",
        method="POST",
        body="héllo".encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert text["body"] == "héllo" and text["isBase64Encoded"] is False
    assert text["requestContext"]["http"]["method"] == "POST"
    as_json = echo(
        server, uid, method="PUT", body=b'{"a": 1}', headers={"Content-Type": "application/json"}
    )
    assert as_json["body"] == '{"a": 1}' and not as_json["isBase64Encoded"]
    blob = bytes(range(256))
    binary = echo(
        server, uid, method="POST", body=blob, headers={"Content-Type": "application/octet-stream"}
    )
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == blob


def test_response_mapping(server: Server, public: tuple[str, str]) -> None:
    _, uid = public
    base = f"/_lambdahost/url/{uid}/"
    status, headers, body = request(server, "GET", base + "?mode=binary")
    assert status == 201 and body == bytes(range(256))
    assert headers["content-type"] == "application/octet-stream" and headers["x-custom"] == "yes"
    assert headers.get_all("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert headers["x-amzn-requestid"]
    # The URL's CORS config replaces CORS headers the function sets (no Origin: none at all).
    assert "access-control-allow-origin" not in headers

    status, headers, body = request(server, "GET", base + "?mode=bare")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"hello": "world"}
    status, _, body = request(server, "GET", base + "?mode=string")
    assert status == 200 and json.loads(body) == "just a string"
    status, headers, body = request(server, "GET", base + "?mode=teapot")
    assert status == 418 and body == b"short and stout"
    assert headers["content-type"] == "application/json"

    status, _, body = request(server, "GET", base + "?mode=fail")
    assert status == 502 and json.loads(body) == {"Message": "Internal Server Error"}
    status, _, body = request(server, "GET", base + "?mode=invalid")
    assert status == 502


def test_host_routing(server: Server, public: tuple[str, str]) -> None:
    _, uid = public
    host = f"{uid}.lambda-url.us-east-1.localhost:{server.port}"
    status, headers, body = request(server, "GET", "/by/host?q=1", headers={"Host": host})
    assert status == 200, body
    event = json.loads(body)
    assert event["rawPath"] == "/by/host" and event["headers"]["host"] == host
    assert event["queryStringParameters"] == {"q": "1"}
    # A URL id nobody created, and another region, are unknown: 403 {"Message":null}.
    for bad in (
        f"{'a' * 32}.lambda-url.us-east-1.localhost",
        f"{uid}.lambda-url.eu-west-1.localhost",
    ):
        status, _, body = request(server, "GET", "/", headers={"Host": bad})
        assert status == 403 and body == b'{"Message":null}'
    # The API itself still answers on the plain host.
    status, _, _ = request(server, "GET", "/2015-03-31/functions/")
    assert status == 403  # unsigned API request


def test_cors(server: Server, public: tuple[str, str]) -> None:
    _, uid = public
    path = f"/_lambdahost/url/{uid}/anything?mode=fail"  # invoking would answer 502
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-token",
    }
    status, headers, body = request(server, "OPTIONS", path, headers=preflight)
    assert status == 200 and body == b""
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-methods"] == "GET,POST"
    assert headers["access-control-allow-headers"] == "x-token,content-type"
    assert headers["access-control-max-age"] == "600"
    assert headers["access-control-allow-credentials"] == "true"

    status, headers, _ = request(
        server, "OPTIONS", path, headers={**preflight, "Origin": "https://other.example"}
    )
    assert status == 200 and "access-control-allow-origin" not in headers

    status, headers, _ = request(
        server,
        "GET",
        f"/_lambdahost/url/{uid}/?mode=binary",
        headers={"Origin": "https://app.example"},
    )
    assert status == 201
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-expose-headers"] == "x-custom"
    assert headers["access-control-allow-credentials"] == "true"
    status, headers, _ = request(
        server,
        "GET",
        f"/_lambdahost/url/{uid}/?mode=bare",
        headers={"Origin": "https://evil.example"},
    )
    assert status == 200 and "access-control-allow-origin" not in headers


def test_none_needs_a_public_policy(lam, server: Server) -> None:  # noqa: ANN001
    name = unique("urlauth")
    create_function(lam, name, APP)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE"))
    path = f"/_lambdahost/url/{uid}/?mode=bare"
    status, _, body = request(server, "GET", path)
    assert status == 403 and json.loads(body) == {"Message": FORBIDDEN}
    lam.add_permission(
        FunctionName=name,
        StatementId="url-public",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
    )
    # Since October 2025 Lambda also wants lambda:InvokeFunction for URL calls.
    assert request(server, "GET", path)[0] == 403
    lam.add_permission(
        FunctionName=name,
        StatementId="url-invoke",
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
    )
    assert request(server, "GET", path)[0] == 200
    # A statement for the other auth type does not open a NONE URL.
    lam.remove_permission(FunctionName=name, StatementId="url-public")
    lam.add_permission(
        FunctionName=name,
        StatementId="url-iam",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="AWS_IAM",
    )
    assert request(server, "GET", path)[0] == 403
    lam.add_permission(
        FunctionName=name, StatementId="everything", Action="lambda:*", Principal="*"
    )
    assert request(server, "GET", path)[0] == 200

    # An alias URL is governed by the alias's own policy.
    alias_uid = url_id(
        lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    )
    alias_path = f"/_lambdahost/url/{alias_uid}/?mode=bare"
    assert request(server, "GET", alias_path)[0] == 403
    make_public(lam, name, "live")
    status, _, body = request(server, "GET", alias_path)
    assert status == 200 and json.loads(body) == {"hello": "world"}


def signed(server: Server, method: str, path: str, body: bytes, secret: str = SECRET_KEY) -> dict:
    aws = AWSRequest(
        method=method, url=server.url + path, data=body, headers={"Content-Type": "text/plain"}
    )
    SigV4Auth(Credentials(ACCESS_KEY, secret), "lambda", REGION).add_auth(aws)
    return dict(aws.headers.items())


def test_aws_iam(lam, server: Server) -> None:  # noqa: ANN001
    name = unique("urliam")
    create_function(lam, name, APP)
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM"))
    path = f"/_lambdahost/url/{uid}/signed/path?a=b"
    status, _, body = request(
        server, "POST", path, body=b"hi", headers={"Content-Type": "text/plain"}
    )
    # Unsigned: the plain "Forbidden" of a request without credentials (unchanged).
    assert status == 403 and json.loads(body) == {"Message": "Forbidden"}
    # A public policy does not open an AWS_IAM URL to anonymous callers.
    make_public(lam, name)
    assert request(server, "POST", path, body=b"hi")[0] == 403

    headers = signed(server, "POST", path, b"hi", secret="wrong-secret")
    assert request(server, "POST", path, body=b"hi", headers=headers)[0] == 403

    headers = signed(server, "POST", path, b"hi")
    status, _, body = request(server, "POST", path, body=b"hi", headers=headers)
    assert status == 200, body
    event = json.loads(body)
    assert event["body"] == "hi" and event["rawPath"] == "/signed/path"
    ctx = event["requestContext"]
    assert ctx["accountId"] == "000000000000"
    assert ctx["authorizer"]["iam"]["accessKey"] == ACCESS_KEY
    assert ctx["authorizer"]["iam"]["userArn"] == "arn:aws:iam::000000000000:root"
