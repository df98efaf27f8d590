"""Function URLs in RESPONSE_STREAM mode: the function's chunks go to the client as they come.

What the HTTP response looks like depends on what the function streams:
- `application/vnd.awslambda.http-integration-response` (Node's `HttpResponseStream.from`):
  a JSON prelude `{statusCode, headers, cookies}`, 8 NUL bytes, then the body;
- any other content type: status 200 with that content type, the stream as the body;
- no stream at all (a buffered handler): its result mapped as for a BUFFERED URL.
A function that fails before its response begins gets Lambda's 502; one that fails mid-stream
just ends the body (the status line is long gone)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from lambdahost.api.lambda_ import url_responses as urls
from lambdahost.control import jsontext
from lambdahost.control.lambda_.urls import FunctionUrl
from lambdahost.errors import LambdaError
from lambdahost.invoke.service import Invoker
from lambdahost.invoke.streaming import HTTP_INTEGRATION_TYPE, ResponseStream

DELIMITER = b"\x00" * 8
PRELUDE_MAX = 16 * 1024  # API Gateway's bound on the metadata; plenty for headers and cookies

Head = tuple[int, list[tuple[str, str]]]


async def invoke_streaming(
    invoker: Invoker, url: FunctionUrl, event: dict[str, Any]
) -> tuple[int, list[tuple[str, str]], bytes | AsyncIterator[bytes], str]:
    """(status, headers, body bytes or an async iterator of them, request id)."""
    try:
        outcome, stream = await invoker.invoke_stream(
            url.function_name, qualifier=url.qualifier or None, payload=json.dumps(event).encode()
        )
    except LambdaError as exc:
        raise urls.rejection_for(exc) from None
    assert stream is not None
    try:
        await stream.head.wait()
        if not stream.streamed:
            result = stream.result
            if result is None or result.function_error:
                raise urls.UrlRejection(502, "Internal Server Error")
            status, headers, content = urls.http_response(result.payload)
            return status, headers, content, outcome.request_id
        chunks = aiter(stream)
        if stream.content_type == HTTP_INTEGRATION_TYPE:
            (status, headers), rest = await _prelude(chunks, stream)
        else:
            status, rest = 200, b""
            headers = [("content-type", stream.content_type or "application/octet-stream")]
    except BaseException:
        stream.discard()
        raise
    return status, headers, _body(rest, chunks, stream), outcome.request_id


async def _prelude(chunks: AsyncIterator[bytes], stream: ResponseStream) -> tuple[Head, bytes]:
    """Read up to the NUL delimiter: the response head, and the body bytes already read."""
    buffer = b""
    while (end := buffer.find(DELIMITER)) < 0:
        if len(buffer) > PRELUDE_MAX:
            raise urls.UrlRejection(502, "Internal Server Error")
        try:
            buffer += await anext(chunks)
        except StopAsyncIteration:
            if stream.result is not None and not stream.result.function_error and not buffer:
                return (200, [("content-type", "application/octet-stream")]), b""
            raise urls.UrlRejection(502, "Internal Server Error") from None
    try:
        metadata = jsontext.loads(buffer[:end])  # too deep: a ValueError, as garbage is
        status = int(metadata.get("statusCode", 200))
        if not 100 <= status <= 599:
            raise ValueError(status)
        headers = [
            (str(k), urls.header_value(v))
            for k, v in (metadata.get("headers") or {}).items()
            if str(k).lower() not in urls.HOP_BY_HOP
        ]
        cookies = [str(cookie) for cookie in metadata.get("cookies") or []]
    except (ValueError, TypeError, AttributeError):
        raise urls.UrlRejection(502, "Internal Server Error") from None
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/octet-stream"))
    headers += [("set-cookie", cookie) for cookie in cookies]
    return (status, headers), buffer[end + len(DELIMITER) :]


async def _body(
    first: bytes, chunks: AsyncIterator[bytes], stream: ResponseStream
) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk
    finally:
        stream.discard()
