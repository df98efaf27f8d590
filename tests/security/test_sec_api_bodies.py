"""Security issue #10, item 5: request bodies are read only after the signed head checks out,
never past the operation's limit, and a flood of large unauthenticated requests leaves the
server's memory where it was."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from helpers import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    Server,
    create_function,
    start_server,
    unique,
)

from lambdahost.api.bodies import UnverifiedBodies
from lambdahost.api.lambda_.url_responses import FORBIDDEN
from lambdahost.errors import TooManyRequests

MB = 1024 * 1024
FLOOD_SIZE = 70 * MB
FLOOD_COUNT = 40
RSS_GROWTH_MAX = 300 * MB


@pytest.fixture(scope="module")
def lone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own, so its memory reflects only what these tests send."""
    server = start_server(tmp_path_factory.mktemp("bodies") / "data")
    try:
        yield server
    finally:
        server.kill()


def rss(server: Server, field: str = "VmRSS") -> int:
    """The server's resident memory now, or at its peak (VmHWM)."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def signed_head(
    server: Server, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> dict[str, str]:
    """The headers botocore signs for a request with this body (Host and Content-Length are
    the HTTP client's, added by `raw_head`)."""
    request = AWSRequest(method=method, url=server.url + path, data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(request)
    return dict(request.headers.items())


def blast(server: Server, head: bytes, size: int) -> bytes:
    """Send `head` announcing a `size`-byte body, then push the whole body regardless of
    any early answer (as an attacker would), and return what the server said."""
    chunk = b"\0" * MB
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < size:
                sent += sock.send(chunk[: min(MB, size - sent)])
        except OSError:
            pass  # the server may close once it has answered
        sock.settimeout(30)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
                answer += data
        except OSError:
            pass
        return answer


def raw_head(
    server: Server, method: str, path: str, size: int, headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines.append(f"Content-Length: {size}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items() if k.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def flood(server: Server, head: bytes, size: int, count: int) -> list[bytes]:
    answers: list[bytes] = [b""] * count

    def one(i: int) -> None:
        answers[i] = blast(server, head, size)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return answers


def test_unsigned_flood_does_not_grow_memory(lone_server: Server) -> None:
    lone_server.client("lambda").list_functions()  # warm: imports and first allocations done
    before = rss(lone_server)
    head = raw_head(lone_server, "POST", "/2015-03-31/functions", FLOOD_SIZE)
    started = time.monotonic()
    answers = flood(lone_server, head, FLOOD_SIZE, FLOOD_COUNT)
    elapsed = time.monotonic() - started
    after, peak = rss(lone_server), rss(lone_server, "VmHWM")
    print(f"RSS before {before / MB:.0f} MB, after {after / MB:.0f} MB, peak {peak / MB:.0f} MB")
    print(f"{FLOOD_COUNT} x {FLOOD_SIZE // MB} MB unsigned in {elapsed:.1f} s")
    assert all(answer.startswith(b"HTTP/1.1 403") for answer in answers), answers[:3]
    assert peak - before < RSS_GROWTH_MAX
    assert lone_server.process.poll() is None


def test_flood_with_a_valid_head_but_forged_signature_is_bounded(lone_server: Server) -> None:
    """Knowing the access key id gets a body read, but only under the shared bound."""
    before = rss(lone_server)
    headers = signed_head(lone_server, "POST", "/2015-03-31/functions", b"")
    headers["Authorization"] = headers["Authorization"][:-8] + "00000000"
    size = 66 * MB  # under CreateFunction's limit, so each body is read
    head = raw_head(lone_server, "POST", "/2015-03-31/functions", size, headers)
    answers = flood(lone_server, head, size, FLOOD_COUNT)
    after, peak = rss(lone_server), rss(lone_server, "VmHWM")
    print(f"RSS before {before / MB:.0f} MB, after {after / MB:.0f} MB, peak {peak / MB:.0f} MB")
    statuses = {answer.split(b" ", 2)[1] for answer in answers if answer}
    assert statuses <= {b"403", b"429"}, answers[:3]
    # The shared bound: 192 MB announced at once; a forged body is never joined into a copy.
    assert peak - before < RSS_GROWTH_MAX
    assert lone_server.process.poll() is None


def _answer(server: Server, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        conn.sock.sendall(head + body)
        response = http.client.HTTPResponse(conn.sock, method="POST")
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_announced_size_past_the_limit_is_refused_before_reading(lone_server: Server) -> None:
    """A signed CreateFunction announcing more than 70,167,211 bytes gets AWS's 413 at once."""
    unsigned = {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    signed = signed_head(lone_server, "POST", "/2015-03-31/functions", b"", unsigned)
    status, headers, body = _answer(
        lone_server, raw_head(lone_server, "POST", "/2015-03-31/functions", 80 * MB, signed)
    )
    assert status == 413
    assert headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    assert json.loads(body)["message"] == (
        "Request must be smaller than 70167211 bytes for the CreateFunction operation"
    )


def test_invoke_body_past_six_mb_is_refused(lone_server: Server) -> None:
    lam = lone_server.client("lambda")
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        lam.invoke(FunctionName="no-such-fn", Payload=b"x" * (6 * MB + 1))
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Code"] == "RequestTooLargeException"
    assert error["Error"]["Message"] == (
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    )


def test_small_operations_take_small_bodies(lone_server: Server) -> None:
    """Configuration calls are JSON documents of a few KB: 1 MB is their ceiling."""
    body = json.dumps({"Description": "x" * (2 * MB)}).encode()
    path = "/2015-03-31/functions/no-such-fn/configuration"
    status, headers, answer = _answer(
        lone_server,
        raw_head(lone_server, "PUT", path, len(body), signed_head(lone_server, "PUT", path, body)),
    )
    assert status == 413
    assert headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    assert "UpdateFunctionConfiguration" in json.loads(answer)["message"]


def test_chunked_bodies_are_bounded_too(lone_server: Server) -> None:
    """No Content-Length: the limit still stops the read."""
    path = "/2015-03-31/functions/no-such-fn/invocations"
    unsigned = {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    signed = signed_head(lone_server, "POST", path, b"", unsigned)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{lone_server.port}"]
    lines.append("Transfer-Encoding: chunked")
    lines += [f"{k}: {v}" for k, v in signed.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    piece = b"x" * MB
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with socket.create_connection(("127.0.0.1", lone_server.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for _ in range(8):
                sock.sendall(chunk)
        except OSError:
            pass
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"RequestTooLargeException" in answer


def test_signed_requests_still_work_with_bodies(lone_server: Server) -> None:
    """The ordinary path: botocore signs the body's hash; the server checks it after reading."""
    logs = lone_server.client("logs")
    logs.create_log_group(logGroupName="/sec/bodies")
    logs.create_log_stream(logGroupName="/sec/bodies", logStreamName="s")
    events = [{"timestamp": int(time.time() * 1000), "message": "m" * 200_000}] * 4
    logs.put_log_events(logGroupName="/sec/bodies", logStreamName="s", logEvents=events)
    found = logs.get_log_events(logGroupName="/sec/bodies", logStreamName="s")["events"]
    assert len(found) == 4


def test_admission_bounds_slots_and_bytes() -> None:
    async def scenario() -> None:
        bodies = UnverifiedBodies(slots=2, budget=100, wait=0.2)
        async with bodies.admit(60):
            # Bytes: 60 + 60 > 100, so the second waits, then is throttled.
            with pytest.raises(TooManyRequests):
                async with bodies.admit(60):
                    pass
            async with bodies.admit(40):
                assert bodies.held == 100
                # Slots: both taken.
                with pytest.raises(TooManyRequests):
                    async with bodies.admit(1):
                        pass
        assert bodies.held == 0
        async with bodies.admit(10**9):  # larger than the budget: admitted alone
            assert bodies.held == 100

    asyncio.run(scenario())


# --- function URLs ---------------------------------------------------------------------------


def _url_path(lam, auth_type: str, public: bool = False) -> str:  # noqa: ANN001
    name = unique("sec-url")
    create_function(lam, name, wait=False)
    config = lam.create_function_url_config(FunctionName=name, AuthType=auth_type)
    if public:
        for sid, action, extra in (
            ("url-public", "lambda:InvokeFunctionUrl", {"FunctionUrlAuthType": "NONE"}),
            ("url-invoke", "lambda:InvokeFunction", {"InvokedViaFunctionUrl": True}),
        ):
            lam.add_permission(
                FunctionName=name, StatementId=sid, Action=action, Principal="*", **extra
            )
    url_id = config["FunctionUrl"].split("//", 1)[1].split(".", 1)[0]
    return f"/_lambdahost/url/{url_id}/"


def test_function_url_bodies_are_capped_at_six_mb(lone_server: Server) -> None:
    """A public URL reads bodies by design, but never past AWS's 6 MB request payload."""
    path = _url_path(lone_server.client("lambda"), "NONE", public=True)
    status, _, body = _answer(lone_server, raw_head(lone_server, "POST", path, 7 * MB))
    assert status == 413 and json.loads(body) == {"Message": "Request Entity Too Large"}


def test_a_private_none_url_refuses_before_reading(lone_server: Server) -> None:
    """Without a public policy the answer comes before the (here never sent) body."""
    path = _url_path(lone_server.client("lambda"), "NONE")
    status, _, body = _answer(lone_server, raw_head(lone_server, "POST", path, 6 * MB))
    assert status == 403 and json.loads(body) == {"Message": FORBIDDEN}


def test_an_iam_url_checks_the_signed_head_before_reading(lone_server: Server) -> None:
    path = _url_path(lone_server.client("lambda"), "AWS_IAM")
    request = AWSRequest(method="POST", url=lone_server.url + path, data=b"")
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", "eu-west-1").add_auth(request)
    signed = dict(request.headers.items())
    status, _, body = _answer(lone_server, raw_head(lone_server, "POST", path, 6 * MB, signed))
    assert status == 403
    assert json.loads(body)["Message"] == (
        "Credential should be scoped to a valid region, not 'eu-west-1'."
    )
