"""Issue #10, item 3, streams: a function streaming 200 MB to a client that reads nothing for a
while must not grow the server's memory. Streams are back-pressured end to end (the client's
socket, the stream's 1 MiB buffer, the environment's 1 MiB inbox, the agent's socket, the
runtime's write), so the server's RSS stays flat while the client stalls; then the invoke
ends with the 20 MB cap or the function's timeout, and the server stays healthy.

One server of its own, so that its RSS is this module's doing alone."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest
from helpers import Server, create_function, make_public, make_zip, start_server, unique, url_id

RSS_SLACK = 150 * 1024 * 1024  # generous: the buffers above are a few MiB
MAX_STREAMED = 20 * 1024 * 1024

FLOOD = make_zip(
    {
        "index.mjs": """
import { once } from "node:events";

export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const mb = Number(event.mb ?? event.queryStringParameters?.mb ?? 200);
  responseStream.setContentType("application/octet-stream");
  const block = Buffer.alloc(1024 * 1024, 120);
  for (let i = 0; i < mb; i++) {
    if (!responseStream.write(block)) await once(responseStream, "drain");
  }
  responseStream.end();
});
""",
    }
)


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("sec-caps-stream") / "data")
    yield srv
    srv.kill()


def rss(server: Server) -> int:
    """The server process's resident set, in bytes."""
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def watch_rss(server: Server, seconds: float) -> int:
    """The peak RSS over `seconds`, sampled every 0.1 s."""
    peak, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss(server))
        time.sleep(0.1)
    return peak


def flood(lam, timeout: int) -> str:  # noqa: ANN001
    name = unique("sec-caps-flood")
    create_function(
        lam, name, FLOOD, Runtime="nodejs20.x", Handler="index.handler", Timeout=timeout
    )
    return name


def assert_healthy(server: Server, lam) -> None:  # noqa: ANN001
    assert server.process.poll() is None
    name = unique("sec-caps-after")
    create_function(lam, name)
    assert json.loads(lam.invoke(FunctionName=name, Payload=b'{"a": 1}')["Payload"].read()) == {
        "a": 1
    }


def drain_event_stream(events: Iterator[dict]) -> tuple[int, dict]:
    received, complete = 0, {}
    for event in events:
        if "PayloadChunk" in event:
            received += len(event["PayloadChunk"]["Payload"])
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    return received, complete


def test_stalled_event_stream_keeps_the_server_flat(own_server: Server) -> None:
    lam = own_server.client("lambda")
    name = flood(lam, timeout=10)
    warm = lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"mb": 2}')
    assert drain_event_stream(iter(warm["EventStream"])) == (2 * 1024 * 1024, {})
    baseline = rss(own_server)
    response = lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"mb": 200}')
    events = iter(response["EventStream"])
    first = next(events)  # the stream has begun; now read nothing for a while
    peak = watch_rss(own_server, 6.0)
    print(f"\nevent stream: RSS {baseline >> 20} MiB before, {peak >> 20} MiB peak while stalled")
    assert peak - baseline < RSS_SLACK
    received, complete = drain_event_stream(events)
    received += len(first["PayloadChunk"]["Payload"])
    assert received <= MAX_STREAMED
    assert complete.get("ErrorCode") in ("Function.ResponseSizeTooLarge", "Sandbox.Timedout")
    assert_healthy(own_server, lam)


def test_stalled_function_url_stream_times_out_and_frees(own_server: Server) -> None:
    lam = own_server.client("lambda")
    name = flood(lam, timeout=4)
    config = lam.create_function_url_config(
        FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM"
    )
    make_public(lam, name)
    path = f"/_lambdahost/url/{url_id(config)}/?mb=200"
    baseline = rss(own_server)
    conn = http.client.HTTPConnection("127.0.0.1", own_server.port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        # Read nothing past the head, longer than the function may run: it times out.
        peak = watch_rss(own_server, 7.0)
        print(f"\nfunction URL: RSS {baseline >> 20} MiB before, {peak >> 20} MiB peak stalled")
        assert peak - baseline < RSS_SLACK
        body = 0
        while data := response.read1(1 << 20):
            body += len(data)
    finally:
        conn.close()
    assert 0 < body <= MAX_STREAMED  # the body just ends: its status line is long gone
    after = rss(own_server)
    print(f"function URL: RSS {after >> 20} MiB after the stream ended")
    assert after - baseline < RSS_SLACK
    assert_healthy(own_server, lam)


def test_a_client_that_leaves_mid_stream_frees_the_function(own_server: Server) -> None:
    """The stream is dropped when its client goes away: the agent is read at full speed again
    and the function runs to its end (the 20 MB cap) instead of waiting for its timeout."""
    lam = own_server.client("lambda")
    logs = own_server.client("logs")
    name = flood(lam, timeout=60)
    config = lam.create_function_url_config(
        FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM"
    )
    make_public(lam, name)
    conn = http.client.HTTPConnection("127.0.0.1", own_server.port, timeout=60)
    conn.request("GET", f"/_lambdahost/url/{url_id(config)}/?mb=200")
    response = conn.getresponse()
    assert response.status == 200
    response.read1(65536)
    time.sleep(2.0)  # long enough for every buffer to fill and the runtime to block
    left = time.monotonic()
    conn.close()
    report = ""
    while not report:
        assert time.monotonic() - left < 30, "the function ran on as if its client were there"
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            events = []
        report = next((e["message"] for e in events if e["message"].startswith("REPORT")), "")
        time.sleep(0.3)
    text = "".join(e["message"] for e in events)
    assert "Task timed out" not in text
    assert_healthy(own_server, lam)
