"""SigV4 verification against botocore's own signers (header form, presigned, real clients)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from lambdahost.api.sigv4 import AuthError, SignedRequest, verify

ACCESS_KEY = "AKIDLAMBDAHOSTTEST01"
SECRET = "s3cr3t/with+symbols=="
SECRETS = {ACCESS_KEY: SECRET}
ENDPOINT = "http://127.0.0.1:9000"
MISMATCH = "The request signature we calculated does not match the signature you provided."


def secret_for(access_key: str) -> str | None:
    return SECRETS.get(access_key)


def wire(request: AWSRequest) -> SignedRequest:
    """What the server receives for a botocore request: raw path, raw query, headers, body."""
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    headers = [(name, value) for name, value in prepared.headers.items()]
    if not any(name.lower() == "host" for name, _ in headers):
        headers.append(("Host", url.netloc))  # added by the HTTP client on the wire
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    return SignedRequest(prepared.method, url.path, url.query, headers, body)


def signed(
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "lambda",
    region: str = "us-east-1",
    secret: str = SECRET,
) -> SignedRequest:
    request = AWSRequest(
        method=method, url=ENDPOINT + path, params=params or {}, data=body, headers=headers
    )
    SigV4Auth(Credentials(ACCESS_KEY, secret), service, region).add_auth(request)
    return wire(request)


def presigned(path: str, *, params: dict[str, str] | None = None, expires: int = 3600):
    request = AWSRequest(method="GET", url=ENDPOINT + path, params=params or {})
    SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET), "lambda", "us-east-1", expires).add_auth(
        request
    )
    return wire(request)


def reject(request: SignedRequest, code: str, **kwargs: object) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verify(request, secret_for, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.status == 403
    return caught.value


def replace_header(request: SignedRequest, name: str, value: str) -> SignedRequest:
    headers = [(n, v) for n, v in request.headers if n.lower() != name.lower()]
    return SignedRequest(
        request.method, request.path, request.query, [*headers, (name, value)], request.body
    )


# --- accepted -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/2015-03-31/functions/", {"MaxItems": "50", "Marker": "a b+c/=&"}, b""),
        ("GET", "/2015-03-31/functions/my-fn/configuration", {"Qualifier": "$LATEST"}, b""),
        (
            "GET",
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af",
            {},
            b"",
        ),
        ("GET", "/2015-03-31/functions/f%3A%24LATEST/policy", {}, b""),
        ("POST", "/2015-03-31/functions/f/invocations", {}, b'{"k": "v\xc3\xa9"}'),
        ("POST", "/2015-03-31/functions", {}, b""),
        ("PUT", "/2015-03-31/functions/f/code", {}, b'{"ZipFile": "UEsDBA=="}'),
        ("DELETE", "/2015-03-31/functions/f", {"Qualifier": "1"}, b""),
        ("GET", "/2017-03-31/tags/arn%3Aaws%3Alambda%3A%3A%3Afunction%3Af%20g", {}, b""),
        ("GET", "/2015-03-31/functions/caf%C3%A9/%E2%9C%93", {"q": "\u00e9\u2713"}, b""),
        ("GET", "/a//b/./c/../d/", {"empty": "", "repeat": "2"}, b""),
    ],
)
def test_botocore_header_signatures_verify(
    method: str, path: str, params: dict[str, str], body: bytes
) -> None:
    request = signed(method, path, params=params, body=body)
    assert verify(request, secret_for) == ACCESS_KEY


@pytest.mark.parametrize("service", ["lambda", "logs", "sts", "anything"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3", "local"])
def test_any_region_and_service(service: str, region: str) -> None:
    request = signed("POST", "/", body=b"{}", service=service, region=region)
    assert verify(request, secret_for) == ACCESS_KEY


def test_repeated_headers_and_mixed_case_names() -> None:
    request = AWSRequest(method="GET", url=ENDPOINT + "/x", headers={"X-Custom": "a   b  "})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET), "lambda", "us-east-1").add_auth(request)
    sent = wire(request)
    lowered = SignedRequest(
        sent.method, sent.path, sent.query, [(n.upper(), v) for n, v in sent.headers], sent.body
    )
    assert verify(lowered, secret_for) == ACCESS_KEY


def test_unsigned_payload_and_explicit_content_sha256() -> None:
    unsigned = signed(
        "POST", "/f", body=b"payload", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    assert verify(unsigned, secret_for) == ACCESS_KEY
    digest = hashlib.sha256(b"payload").hexdigest()
    explicit = signed("POST", "/f", body=b"payload", headers={"X-Amz-Content-SHA256": digest})
    assert verify(explicit, secret_for) == ACCESS_KEY
    tampered = SignedRequest(
        explicit.method, explicit.path, explicit.query, explicit.headers, b"other"
    )
    reject(tampered, "InvalidSignatureException")


def test_date_header_instead_of_x_amz_date() -> None:
    request = AWSRequest(
        method="GET", url=ENDPOINT + "/x", headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"}
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET), "lambda", "us-east-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers
    assert verify(wire(request), secret_for) == ACCESS_KEY


def test_presigned_urls_verify() -> None:
    plain = presigned("/2015-03-31/functions/f%3A%24LATEST/url", params={"a": "b c"})
    assert "X-Amz-Signature=" in plain.query
    assert not any(name.lower() == "authorization" for name, _ in plain.headers)
    assert verify(plain, secret_for) == ACCESS_KEY
    late = datetime.now(UTC) + timedelta(seconds=3000)
    assert verify(plain, secret_for, now=late) == ACCESS_KEY


# --- rejected -----------------------------------------------------------------------------


def test_missing_authentication() -> None:
    bare = SignedRequest("GET", "/2015-03-31/functions/", "", [("Host", "x")], b"")
    error = reject(bare, "MissingAuthenticationTokenException")
    assert error.message == "Missing Authentication Token"


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/lambda/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/aws4_request, "
        "SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/lambda/aws4_request, "
        "SignedHeaders=Host;X-Amz-Date, Signature=00",
        "AWS AKID:signature",
        "AWS4-HMAC-SHA256 Credential=AKIDLAMBDAHOSTTEST01/20240101/us-east-1/lambda/aws4_request"
        ", SignedHeaders=host, Signature=",
        "Bearer token",
        "",
    ],
)
def test_malformed_authorization_header(authorization: str) -> None:
    request = replace_header(signed("GET", "/x"), "Authorization", authorization)
    reject(request, "IncompleteSignatureException")


def test_missing_date_is_incomplete() -> None:
    request = signed("GET", "/x")
    headers = [(n, v) for n, v in request.headers if n.lower() != "x-amz-date"]
    stripped = SignedRequest(request.method, request.path, request.query, headers, request.body)
    error = reject(stripped, "IncompleteSignatureException")
    assert "'X-Amz-Date' or a 'Date' header" in error.message


def test_bad_date_format_is_incomplete() -> None:
    request = replace_header(signed("GET", "/x"), "X-Amz-Date", "2024-01-01T00:00:00Z")
    reject(request, "IncompleteSignatureException")


def test_unknown_access_key() -> None:
    request = signed("GET", "/x")
    with pytest.raises(AuthError) as caught:
        verify(request, lambda _key: None)
    assert caught.value.code == "UnrecognizedClientException"
    assert caught.value.message == "The security token included in the request is invalid."


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: SignedRequest(r.method, r.path, r.query, r.headers, r.body + b" "),
        lambda r: SignedRequest("PUT", r.path, r.query, r.headers, r.body),
        lambda r: SignedRequest(r.method, r.path + "x", r.query, r.headers, r.body),
        lambda r: SignedRequest(r.method, r.path, r.query + "&x=1", r.headers, r.body),
        lambda r: replace_header(r, "Host", "evil.example"),
    ],
    ids=["body", "method", "path", "query", "host"],
)
def test_tampered_requests_do_not_verify(tamper) -> None:
    request = tamper(signed("POST", "/2015-03-31/functions/f/invocations", body=b"{}"))
    error = reject(request, "InvalidSignatureException")
    assert error.message.startswith(MISMATCH)
    assert "Consult the service documentation for details." in error.message


def test_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    request = signed("GET", "/x")
    auth = dict(request.headers)["Authorization"]
    forged = replace_header(request, "Authorization", auth[:-4] + "\u00e9\u00e9\u00e9\u00e9")
    reject(forged, "InvalidSignatureException")


def test_wrong_secret_does_not_leak_expected_signature() -> None:
    request = signed("GET", "/x", secret="wrong")
    error = reject(request, "InvalidSignatureException")
    assert "AWS4-HMAC-SHA256" not in error.message and "\n" not in error.message


@pytest.mark.parametrize("content_sha", ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "0" * 64, "zz"])
def test_unsupported_or_wrong_content_sha256(content_sha: str) -> None:
    request = signed("POST", "/f", body=b"data", headers={"X-Amz-Content-SHA256": content_sha})
    reject(request, "InvalidSignatureException")


def test_clock_skew_past_and_future() -> None:
    request = signed("GET", "/x")
    signed_at = datetime.now(UTC)
    assert verify(request, secret_for, now=signed_at + timedelta(minutes=14)) == ACCESS_KEY
    error = reject(request, "InvalidSignatureException", now=signed_at + timedelta(minutes=16))
    assert error.message.startswith("Signature expired: ")
    assert "is now earlier than" in error.message and "- 15 min.)" in error.message
    error = reject(request, "InvalidSignatureException", now=signed_at - timedelta(minutes=16))
    assert error.message.startswith("Signature not yet current: ")


def test_credential_date_must_match_request_date() -> None:
    request = signed("GET", "/x")
    auth = dict(request.headers)["Authorization"]
    date = auth.split("Credential=")[1].split("/")[1]
    forged = replace_header(request, "Authorization", auth.replace(date, "19990101"))
    error = reject(forged, "InvalidSignatureException")
    assert "Date in Credential scope does not match" in error.message


def test_presigned_expired_and_tampered() -> None:
    request = presigned("/fn", expires=60)
    error = reject(request, "InvalidSignatureException", now=datetime.now(UTC) + timedelta(120))
    assert error.message.startswith("Signature expired")
    tampered = SignedRequest(
        request.method,
        request.path,
        request.query.replace("X-Amz-Expires=60", "X-Amz-Expires=99"),
        request.headers,
        request.body,
    )
    reject(tampered, "InvalidSignatureException")
    other_path = SignedRequest("GET", "/other", request.query, request.headers, b"")
    reject(other_path, "InvalidSignatureException")


def test_presigned_missing_parameters() -> None:
    request = presigned("/fn")
    query = "&".join(p for p in request.query.split("&") if not p.startswith("X-Amz-Date="))
    partial = SignedRequest("GET", request.path, query, request.headers, b"")
    error = reject(partial, "IncompleteSignatureException")
    assert "X-Amz-Date" in error.message
    bad_algo = SignedRequest(
        "GET",
        request.path,
        request.query.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
        request.headers,
        b"",
    )
    reject(bad_algo, "IncompleteSignatureException")


def test_verify_is_cheap() -> None:
    request = signed("POST", "/2015-03-31/functions/f/invocations", body=b'{"a": 1}' * 100)
    verify(request, secret_for)
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        verify(request, secret_for)
    per_verify = (time.perf_counter() - started) / rounds
    print(f"verify: {per_verify * 1e6:.1f} µs")
    assert per_verify < 0.001  # generous: it measures ~20-40 µs on the reference machine


# --- real clients over HTTP ---------------------------------------------------------------


STS_RESPONSE = b"<GetCallerIdentityResponse><GetCallerIdentityResult/></GetCallerIdentityResponse>"


class _VerifyingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    seen: list[str] = []

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        self.seen.append(self.path)
        request = SignedRequest(self.command, path, query, list(self.headers.items()), body)
        try:
            verify(request, secret_for)
        except AuthError as error:
            payload = json.dumps({"Type": "User", "message": error.message}).encode()
            self.send_response(error.status)
            self.send_header("x-amzn-ErrorType", error.code)
        else:
            payload = b"{}"
            if self.headers.get("Content-Type", "").startswith("application/x-www-form"):
                payload = STS_RESPONSE
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VerifyingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client(endpoint: str, service: str, secret: str = SECRET):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def test_boto3_clients_over_http(endpoint: str) -> None:
    lam = _client(endpoint, "lambda")
    arn = "arn:aws:lambda:us-east-1:000000000000:function:my-fn"
    lam.get_function(FunctionName=arn, Qualifier="$LATEST")
    lam.get_function_configuration(FunctionName="my-fn:$LATEST")
    lam.invoke(FunctionName=arn, Qualifier="live", Payload=b'{"h\xc3\xa9": "\xe2\x9c\x93"}')
    lam.list_functions(MaxItems=10, Marker="a b/c+d")
    lam.delete_function(FunctionName="f g")
    lam.list_tags(Resource=arn)
    _client(endpoint, "sts").get_caller_identity()
    _client(endpoint, "logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")
    assert any("%3A" in seen for seen in _VerifyingHandler.seen)
    assert any("%24LATEST" in seen for seen in _VerifyingHandler.seen)


def test_boto3_wrong_secret_gets_invalid_signature(endpoint: str) -> None:
    with pytest.raises(ClientError) as caught:
        _client(endpoint, "lambda", secret="nope").list_functions()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
