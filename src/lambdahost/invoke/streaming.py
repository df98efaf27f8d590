"""Streamed responses on the host: the chunks a runtime posts in streaming mode, as they come.

The agent reports a streamed response as "stream" (its content type), "chunk" frames and the
usual "result" frame (`streamed: true`, see `agent/streaming.py`). While the pool waits for
the result of an invoke it hands those frames to a `ChunkCollector`:
- the base class buffers them, so a plain `Invoke` of a streaming function gets the whole
  response as its payload (capped at the 6 MB synchronous limit, as in Lambda);
- `ResponseStream` passes them on as an async iterator while the invoke runs
  (InvokeWithResponseStream, RESPONSE_STREAM function URLs). Iteration ends when the invoke
  has ended (result, error, timeout, crash) and `result` is then set; a runtime that did not
  stream leaves its whole payload in `result.payload` (`streamed` stays False).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambdahost.invoke.environment import Environment, Message
    from lambdahost.invoke.model import InvokeResult

BUFFERED_MAX = 6291556  # what a buffered response may be (the agent's MAX_RESPONSE_BYTES)
HTTP_INTEGRATION_TYPE = "application/vnd.awslambda.http-integration-response"


class ChunkCollector:
    def __init__(self) -> None:
        self.streamed = False
        self.content_type: str | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    async def await_result(self, env: Environment) -> Message:
        """The environment's next message that is not part of a stream (result, exit, …)."""
        while True:
            message = await env.next_message()
            if message.kind == "stream":
                self.streamed = True
                self.content_type = str(message.header.get("content_type") or "")
                self.started()
            elif message.kind == "chunk":
                self.chunk(message.body)
            else:
                return self.finish(message)

    def started(self) -> None:
        pass

    def chunk(self, data: bytes) -> None:
        self._size += len(data)
        if self._size <= BUFFERED_MAX:
            self._chunks.append(data)

    def finish(self, message: Message) -> Message:
        """The result as a buffered caller sees it: the chunks joined into the payload."""
        header = message.header
        if message.kind != "result" or not header.get("streamed") or not header.get("ok"):
            return message
        from lambdahost.invoke.environment import Message

        if self._size > BUFFERED_MAX:
            error_type = "Function.ResponseSizeTooLarge"
            text = (
                "Response payload size exceeded maximum allowed payload size "
                f"({BUFFERED_MAX} bytes)."
            )
            body = f'{{"errorMessage":"{text}","errorType":"{error_type}"}}'.encode()
            return Message("result", {**header, "ok": False, "error_type": error_type}, body)
        return Message("result", header, b"".join(self._chunks))


class ResponseStream(ChunkCollector):
    """Iterate for the chunks while the invoke runs; then `result` holds its outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.result: InvokeResult | None = None
        self.error: BaseException | None = None  # the invoke could not run at all
        self.head = asyncio.Event()  # set once the content type is known, or at the end
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._discarded = False

    def started(self) -> None:
        self.head.set()

    def chunk(self, data: bytes) -> None:
        if not self._discarded and data:
            self._queue.put_nowait(data)

    def finish(self, message: Message) -> Message:
        return message  # the chunks went out as they came; an error document stays whole

    def end(self, result: InvokeResult | None, error: BaseException | None = None) -> None:
        """Called by whoever ran the invoke, once it is over."""
        self.result, self.error = result, error
        self.head.set()
        self._queue.put_nowait(None)

    def discard(self) -> None:
        """The consumer went away: drop further chunks (the invoke still runs to its end)."""
        self._discarded = True
        while not self._queue.empty():
            self._queue.get_nowait()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (data := await self._queue.get()) is not None:
            yield data
