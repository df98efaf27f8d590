"""Response streaming: InvokeWithResponseStream through boto3, the Runtime API's streaming
mode (Node's `awslambda.streamifyResponse` and a hand-written custom runtime), and
RESPONSE_STREAM function URLs read incrementally."""

from __future__ import annotations

import base64
import http.client
import json
import time

import pytest
from helpers import Server, create_function, make_public, make_zip, unique, url_id

from lambdahost.api.lambda_ import eventstream

NODE_STREAMER = make_zip(
    {
        "index.mjs": """
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const mode = event.mode ?? event.queryStringParameters?.mode;
  responseStream.setContentType("text/plain");
  if (mode === "error") {
    responseStream.write("partial ");
    await sleep(100);
    throw new TypeError("broke mid-stream");
  }
  if (mode === "big") {
    const block = "x".repeat(1024 * 1024);
    for (let i = 0; i < 21; i++) responseStream.write(block);
    responseStream.end();
    return;
  }
  if (mode === "pipeline") {
    await pipeline(Readable.from(["piped ", "through ", Buffer.from("pipeline")]), responseStream);
    return;
  }
  if (mode === "exit") {
    responseStream.write("before exit");
    await sleep(100);
    process.exit(3);
  }
  if (mode === "http") {
    responseStream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 201,
      headers: { "content-type": "text/event-stream", "x-streamed": "yes" },
      cookies: ["a=1; Path=/"],
    });
  }
  responseStream.write("first ");
  await sleep(event.pause_ms ?? 1000);
  responseStream.write("second ");
  console.log("between chunks", context.awsRequestId);
  responseStream.write(Buffer.from("third"));
  responseStream.end();
});
""",
    }
)

# A custom runtime speaking the streaming mode by hand: raw chunked body, error trailers.
CUSTOM_STREAMER = make_zip(
    {
        "bootstrap": r"""#!/usr/bin/python3.11
import base64, http.client, json, os, socket, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
api = http.client.HTTPConnection(host, int(port))
while True:
    api.request("GET", "/2018-06-01/runtime/invocation/next")
    r = api.getresponse()
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.loads(r.read())
    def open_stream(request_id):
        s = socket.create_connection((host, int(port)))
        s.sendall(
            f"POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n"
            "Host: x\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n"
            "Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n"
            "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
            "\r\n".encode()
        )
        return s
    if event.get("wrong_id"):
        w = open_stream("not-the-request")
        w.sendall(b"3\r\nabc\r\n0\r\n\r\n")
        event["parts"] = [w.recv(65536).split(b"\r\n", 1)[0].decode()]
        w.close()
    s = open_stream(rid)
    for part in event.get("parts", []):
        data = part.encode()
        s.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        time.sleep(event.get("pause", 0))
    trailers = b""
    if event.get("fail"):
        doc = json.dumps({"errorMessage": "custom failure", "errorType": "Custom.Error"})
        trailers = (
            b"Lambda-Runtime-Function-Error-Type: Custom.Error\r\n"
            b"Lambda-Runtime-Function-Error-Body: " + base64.b64encode(doc.encode()) + b"\r\n"
        )
    s.sendall(b"0\r\n" + trailers + b"\r\n")
    reply = s.recv(65536)
    s.close()
    print("runtime got", reply.split(b"\r\n", 1)[0].decode(), flush=True)
""",
    },
    executable=("bootstrap",),
)


def read_stream(response: dict) -> tuple[list[tuple[float, bytes]], dict]:
    """(arrival time, bytes) of each PayloadChunk, and the InvokeComplete event."""
    chunks: list[tuple[float, bytes]] = []
    complete: dict = {}
    for event in response["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.monotonic(), event["PayloadChunk"]["Payload"]))
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    return chunks, complete


@pytest.fixture(scope="module")
def node_streamer(lam) -> str:  # noqa: ANN001
    name = unique("stream-node")
    create_function(
        lam, name, NODE_STREAMER, Runtime="nodejs20.x", Handler="index.handler", Timeout=30
    )
    return name


@pytest.fixture(scope="module")
def custom_streamer(lam) -> str:  # noqa: ANN001
    name = unique("stream-custom")
    create_function(lam, name, CUSTOM_STREAMER, Runtime="provided.al2023", Handler="x")
    return name


def test_event_stream_encoding_decodes_with_botocore() -> None:
    from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

    data = eventstream.payload_chunk(b"\x00bytes\xff") + eventstream.invoke_complete(
        "Error", "boom", None
    )
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    first, second = list(buffer)
    assert first.headers[":event-type"] == "PayloadChunk"
    assert first.payload == b"\x00bytes\xff"
    assert second.headers[":event-type"] == "InvokeComplete"
    assert json.loads(second.payload) == {"ErrorCode": "Error", "ErrorDetails": "boom"}
    # The message CRC covers the whole message: flip a payload byte and botocore refuses it.
    broken = bytearray(data)
    broken[60] ^= 1
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(broken))
    with pytest.raises(ChecksumMismatch):
        list(buffer)


def test_node_chunks_arrive_before_the_function_ends(lam, node_streamer: str) -> None:  # noqa: ANN001
    lam.invoke_with_response_stream(FunctionName=node_streamer, Payload=b'{"pause_ms": 10}')
    started = time.monotonic()
    response = lam.invoke_with_response_stream(
        FunctionName=node_streamer, Payload=b'{"pause_ms": 1500}', LogType="Tail"
    )
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert response["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    chunks, complete = read_stream(response)
    assert b"".join(data for _, data in chunks) == b"first second third"
    assert chunks[0][1] == b"first "
    first_at, last_at = chunks[0][0], chunks[-1][0]
    assert last_at - first_at > 1.0, "the first chunk must arrive well before the second"
    assert first_at - started < 1.2
    assert "ErrorCode" not in complete
    assert "between chunks" in base64.b64decode(complete["LogResult"]).decode()


def test_plain_invoke_of_a_streaming_function_is_buffered(lam, node_streamer: str) -> None:  # noqa: ANN001
    response = lam.invoke(FunctionName=node_streamer, Payload=b'{"pause_ms": 10}')
    assert "FunctionError" not in response
    assert response["Payload"].read() == b"first second third"


def test_error_mid_stream(lam, node_streamer: str) -> None:  # noqa: ANN001
    response = lam.invoke_with_response_stream(
        FunctionName=node_streamer, Payload=b'{"mode": "error"}'
    )
    chunks, complete = read_stream(response)
    assert b"".join(data for _, data in chunks) == b"partial "
    assert complete["ErrorCode"] == "TypeError"
    assert complete["ErrorDetails"] == "broke mid-stream"
    # The environment stays usable.
    again = lam.invoke_with_response_stream(FunctionName=node_streamer, Payload=b'{"pause_ms": 1}')
    chunks, complete = read_stream(again)
    assert b"".join(data for _, data in chunks) == b"first second third"


def test_pipeline_into_the_response_stream(lam, node_streamer: str) -> None:  # noqa: ANN001
    response = lam.invoke_with_response_stream(
        FunctionName=node_streamer, Payload=b'{"mode": "pipeline"}'
    )
    chunks, complete = read_stream(response)
    assert b"".join(data for _, data in chunks) == b"piped through pipeline"
    assert "ErrorCode" not in complete


def test_runtime_exit_mid_stream(lam, node_streamer: str) -> None:  # noqa: ANN001
    response = lam.invoke_with_response_stream(
        FunctionName=node_streamer, Payload=b'{"mode": "exit"}'
    )
    chunks, complete = read_stream(response)
    assert b"".join(data for _, data in chunks) == b"before exit"
    assert complete["ErrorCode"] == "Runtime.ExitError"
    assert "exit status 3" in complete["ErrorDetails"]


def test_the_concurrency_slot_is_held_until_the_stream_ends(lam) -> None:  # noqa: ANN001
    name = unique("stream-slot")
    create_function(
        lam, name, NODE_STREAMER, Runtime="nodejs20.x", Handler="index.handler", Timeout=30
    )
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    response = lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"pause_ms": 2000}')
    events = iter(response["EventStream"])
    assert next(events)["PayloadChunk"]["Payload"] == b"first "
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName=name, Payload=b'{"pause_ms": 1}')
    rest = [event for event in events]
    assert "InvokeComplete" in rest[-1]
    deadline = time.monotonic() + 10
    while True:  # the slot is given back right after the last event is sent
        try:
            lam.invoke(FunctionName=name, Payload=b'{"pause_ms": 1}')
            break
        except lam.exceptions.TooManyRequestsException:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_chunked_decoder_byte_by_byte() -> None:
    from lambdahost.agent.chunked import ChunkedDecoder

    raw = (
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nLambda-Runtime-Function-Error-Type: E\r\n\r\nNEXT"
    )
    decoder, buffer, out = ChunkedDecoder(), bytearray(), []
    for i in range(len(raw)):
        buffer += raw[i : i + 1]
        if not decoder.done:
            out += decoder.feed(buffer)
    assert b"".join(out) == b"hello world"
    assert decoder.trailers == {"lambda-runtime-function-error-type": "E"}
    assert bytes(buffer) == b"NEXT"


def test_streamed_response_over_20_mb_fails(lam, node_streamer: str) -> None:  # noqa: ANN001
    response = lam.invoke_with_response_stream(
        FunctionName=node_streamer, Payload=b'{"mode": "big"}'
    )
    chunks, complete = read_stream(response)
    assert sum(len(data) for _, data in chunks) <= 20 * 1024 * 1024
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge"


def test_buffered_python_function_through_the_stream_api(lam) -> None:  # noqa: ANN001
    name = unique("stream-py")
    create_function(lam, name)
    response = lam.invoke_with_response_stream(FunctionName=name, Payload=b'{"hello": "world"}')
    chunks, complete = read_stream(response)
    assert [data for _, data in chunks] == [b'{"hello": "world"}']
    assert complete == {}
    failing = unique("stream-py-err")
    create_function(
        lam, failing, make_zip({"app.py": "def handler(e, c):\n    raise KeyError('k')\n"})
    )
    chunks, complete = read_stream(lam.invoke_with_response_stream(FunctionName=failing))
    assert chunks == []
    assert complete["ErrorCode"] == "KeyError"
    assert complete["ErrorDetails"] == "'k'"


def test_stream_api_errors_before_the_stream(lam) -> None:  # noqa: ANN001
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName=unique("missing"))
    name = unique("stream-dry")
    create_function(lam, name)
    response = lam.invoke_with_response_stream(FunctionName=name, InvocationType="DryRun")
    assert response["StatusCode"] == 204


def test_custom_runtime_streaming_and_error_trailers(lam, custom_streamer: str) -> None:  # noqa: ANN001
    payload = {"parts": ["one ", "two ", "three"], "pause": 0.6}
    response = lam.invoke_with_response_stream(
        FunctionName=custom_streamer, Payload=json.dumps(payload).encode(), LogType="Tail"
    )
    chunks, complete = read_stream(response)
    assert [data for _, data in chunks] == [b"one ", b"two ", b"three"]
    assert chunks[-1][0] - chunks[0][0] > 0.8
    assert "ErrorCode" not in complete
    logs = base64.b64decode(complete["LogResult"]).decode()
    assert "runtime got HTTP/1.1 202 Accepted" in logs or "END RequestId" in logs
    payload = {"parts": ["half"], "fail": True}
    response = lam.invoke_with_response_stream(
        FunctionName=custom_streamer, Payload=json.dumps(payload).encode()
    )
    chunks, complete = read_stream(response)
    assert [data for _, data in chunks] == [b"half"]
    assert complete["ErrorCode"] == "Custom.Error"
    assert complete["ErrorDetails"] == "custom failure"
    # Invoke (buffered) of the failing stream: the error document, as a function error.
    buffered = lam.invoke(FunctionName=custom_streamer, Payload=json.dumps(payload).encode())
    assert buffered["FunctionError"] == "Unhandled"
    assert json.loads(buffered["Payload"].read())["errorType"] == "Custom.Error"


def test_stream_for_another_request_id_is_refused(lam, custom_streamer: str) -> None:  # noqa: ANN001
    response = lam.invoke_with_response_stream(
        FunctionName=custom_streamer, Payload=b'{"wrong_id": true}'
    )
    chunks, complete = read_stream(response)
    assert [data for _, data in chunks] == [b"HTTP/1.1 400 Bad Request"]
    assert "ErrorCode" not in complete


def test_streaming_timeout_ends_the_stream(lam) -> None:  # noqa: ANN001
    name = unique("stream-timeout")
    create_function(lam, name, CUSTOM_STREAMER, Runtime="provided.al2023", Handler="x", Timeout=2)
    payload = {"parts": ["a", "b", "c", "d"], "pause": 1.0}
    response = lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps(payload).encode()
    )
    chunks, complete = read_stream(response)
    assert 1 <= len(chunks) < 4
    assert complete["ErrorCode"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in complete["ErrorDetails"]


# -- function URLs --------------------------------------------------------------------------


def _read_incrementally(server: Server, path: str) -> tuple[int, dict, list[tuple[float, bytes]]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        pieces = []
        while True:
            data = response.read1(65536)
            if not data:
                break
            pieces.append((time.monotonic(), data))
        return response.status, dict(response.getheaders()), pieces
    finally:
        conn.close()


def test_streaming_function_url(server: Server, lam, node_streamer: str) -> None:  # noqa: ANN001
    config = lam.create_function_url_config(
        FunctionName=node_streamer, AuthType="NONE", InvokeMode="RESPONSE_STREAM"
    )
    make_public(lam, node_streamer)
    uid = url_id(config)
    # A plain streamed response: 200 and the stream's content type.
    status, headers, pieces = _read_incrementally(server, f"/_lambdahost/url/{uid}/")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert b"".join(data for _, data in pieces) == b"first second third"
    assert pieces[-1][0] - pieces[0][0] > 0.8, "the body must arrive as it is written"
    # HttpResponseStream.from: status, headers and cookies from the prelude.
    status, headers, pieces = _read_incrementally(server, f"/_lambdahost/url/{uid}/?mode=http")
    assert status == 201
    assert headers["content-type"] == "text/event-stream"
    assert headers["x-streamed"] == "yes"
    assert headers["set-cookie"] == "a=1; Path=/"
    assert b"".join(data for _, data in pieces) == b"first second third"
    assert pieces[-1][0] - pieces[0][0] > 0.8


def test_buffered_function_behind_a_streaming_url(server: Server, lam) -> None:  # noqa: ANN001
    from test_function_urls import APP

    name = unique("stream-url-py")
    create_function(lam, name, APP)
    config = lam.create_function_url_config(
        FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM"
    )
    make_public(lam, name)
    uid = url_id(config)
    status, headers, pieces = _read_incrementally(server, f"/_lambdahost/url/{uid}/?mode=teapot")
    assert status == 418
    assert b"".join(data for _, data in pieces) == b"short and stout"
    status, _, pieces = _read_incrementally(server, f"/_lambdahost/url/{uid}/?mode=raise")
    assert status == 502
