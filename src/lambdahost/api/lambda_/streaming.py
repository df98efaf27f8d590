"""InvokeWithResponseStream: the function's response as an AWS event stream, sent as it comes.

The body is `PayloadChunk` events (raw bytes) and one closing `InvokeComplete` event whose
`ErrorCode` / `ErrorDetails` are the error document's `errorType` / `errorMessage` when the
function failed (an error thrown mid-stream, a timeout, a crash). HTTP status is 200 either
way, as in Lambda: once the stream has begun, failures can only travel inside it. A function
that does not stream still works: its whole payload is one chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from lambdahost.api.lambda_ import eventstream
from lambdahost.api.service import Call, Output, operation
from lambdahost.control import jsontext
from lambdahost.invoke.model import InvokeResult
from lambdahost.invoke.service import Invoker, log_tail
from lambdahost.invoke.streaming import ResponseStream


class StreamingHandlers:
    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker

    @operation("InvokeWithResponseStream")
    async def invoke_with_response_stream(self, call: Call) -> Output:
        p = call.params
        outcome, stream = await self.invoker.invoke_stream(
            p["FunctionName"],
            qualifier=p.get("Qualifier"),
            payload=p.get("Payload") or b"",
            dry_run=p.get("InvocationType") == "DryRun",
            client_context=p.get("ClientContext"),
        )
        call.response_headers["x-amzn-RequestId"] = outcome.request_id
        if stream is None:
            return {"StatusCode": outcome.status}
        headers = {"X-Amz-Executed-Version": outcome.executed_version or "$LATEST"}
        call.raw_response = StreamingResponse(
            events(stream, tail=p.get("LogType") == "Tail"),
            200,
            headers=headers,
            media_type=eventstream.CONTENT_TYPE,
        )
        return {}


async def events(stream: ResponseStream, *, tail: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield eventstream.payload_chunk(chunk)
        result = stream.result
        if result is None:  # the platform could not run it at all (e.g. no sandbox)
            yield eventstream.invoke_complete(
                "ServiceException", "An internal error occurred; see the server log."
            )
            return
        if result.function_error is None and not stream.streamed and result.payload:
            yield eventstream.payload_chunk(result.payload)
        code, details = error_fields(result)
        yield eventstream.invoke_complete(code, details, log_tail(result) if tail else None)
    finally:
        stream.discard()  # the client may have left early; the invoke runs on regardless


def error_fields(result: InvokeResult) -> tuple[str | None, str | None]:
    """(ErrorCode, ErrorDetails) from a failed invoke's error document."""
    if result.function_error is None:
        return None, None
    try:
        document = jsontext.loads(result.payload)  # too deep: a ValueError, as garbage is
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return "Unhandled", result.payload.decode(errors="replace")
    code = str(document.get("errorType") or "Unhandled")
    return code, str(document.get("errorMessage") or "")
