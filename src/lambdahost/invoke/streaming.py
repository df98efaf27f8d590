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

Memory stays bounded whatever the agent or the client do:
- the host counts the streamed bytes itself: past the agent's 20 MB limit (which a healthy
  agent never relays) the response ends with the agent's own size error and the environment
  is discarded;
- a `ResponseStream` holds at most STREAM_BUFFER bytes the consumer has not taken; while it
  is full the collector stops taking frames, the environment's inbox fills and its link stops
  reading the agent's socket (see `environment`): the agent blocks in its send and the runtime
  in its write, as a slow reader slows a function on AWS. The function's timeout still runs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from lambdahost.agent.main import MAX_RESPONSE_BYTES
from lambdahost.agent.streaming import MAX_STREAMED_BYTES
from lambdahost.invoke.agent_limits import (
    BUFFERED_SIZE_ERROR,
    SIZE_ERROR,
    STREAMED_SIZE_ERROR,
)

if TYPE_CHECKING:
    from lambdahost.invoke.environment import Environment, Message
    from lambdahost.invoke.model import InvokeResult

BUFFERED_MAX = MAX_RESPONSE_BYTES  # what a buffered response may be (6291556 bytes)
HTTP_INTEGRATION_TYPE = "application/vnd.awslambda.http-integration-response"
# Chunks a ResponseStream holds for its consumer. Sockets buffer more on both sides, so a
# reader that keeps up never waits on it; one that stalls costs the server at most this.
STREAM_BUFFER = 1024 * 1024
CHUNK_OVERHEAD = 64  # a queued chunk's Python object, counted so tiny chunks cannot multiply it


class ChunkCollector:
    def __init__(self) -> None:
        self.streamed = False
        self.content_type: str | None = None
        self._chunks: list[bytes] = []
        self._size = 0  # streamed bytes so far (the buffered part is capped at BUFFERED_MAX)

    async def await_result(self, env: Environment) -> Message:
        """The environment's next message that is not part of a stream (result, exit, …)."""
        while True:
            await self.room()
            message = await env.next_message()
            if message.kind == "stream":
                self.streamed = True
                self.content_type = str(message.header.get("content_type") or "")
                self.started()
            elif message.kind == "chunk":
                self._size += len(message.body) + message.dropped
                if self._size > MAX_STREAMED_BYTES or message.dropped:
                    env.condemn(f"streamed {self._size} bytes, past the agent's limit")
                    return self.finish(_too_large(message))
                self.chunk(message.body)
            else:
                return self.finish(message)

    async def room(self) -> None:
        """Wait until the consumer can take another chunk (buffering never waits)."""

    def started(self) -> None:
        pass

    def chunk(self, data: bytes) -> None:
        if self._size <= BUFFERED_MAX:
            self._chunks.append(data)

    def finish(self, message: Message) -> Message:
        """The result as a buffered caller sees it: the chunks joined into the payload."""
        header = message.header
        if message.kind != "result" or not header.get("streamed") or not header.get("ok"):
            return message
        from lambdahost.invoke.environment import Message

        if self._size > BUFFERED_MAX:
            header = {**header, "ok": False, "error_type": SIZE_ERROR}
            return Message("result", header, BUFFERED_SIZE_ERROR)
        return Message("result", header, b"".join(self._chunks))


def _too_large(chunk: Message) -> Message:
    """The result a healthy agent sends when a stream passes 20 MB (see agent/streaming.py)."""
    from lambdahost.invoke.environment import Message

    request_id = chunk.header.get("id") or ""
    header: dict[str, object] = {
        "t": "result",
        "id": request_id,
        "ok": False,
        "streamed": True,
        "logs": [],
    }
    header["error_type"] = SIZE_ERROR
    return Message("result", header, STREAMED_SIZE_ERROR)


class ResponseStream(ChunkCollector):
    """Iterate for the chunks while the invoke runs; then `result` holds its outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.result: InvokeResult | None = None
        self.error: BaseException | None = None  # the invoke could not run at all
        self.head = asyncio.Event()  # set once the content type is known, or at the end
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._ended = False
        self._discarded = False
        self._readable = asyncio.Event()  # a chunk or the end is there for the consumer
        self._writable = asyncio.Event()  # the buffer has room again
        self._writable.set()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken by the consumer (plus CHUNK_OVERHEAD a chunk)."""
        return self._pending_bytes

    async def room(self) -> None:
        while self._pending_bytes >= STREAM_BUFFER and not self._discarded:
            self._writable.clear()
            await self._writable.wait()

    def started(self) -> None:
        self.head.set()

    def chunk(self, data: bytes) -> None:
        if not self._discarded and data:
            self._pending.append(data)
            self._pending_bytes += len(data) + CHUNK_OVERHEAD
            self._readable.set()

    def finish(self, message: Message) -> Message:
        return message  # the chunks went out as they came; an error document stays whole

    def end(self, result: InvokeResult | None, error: BaseException | None = None) -> None:
        """Called by whoever ran the invoke, once it is over."""
        self.result, self.error = result, error
        self.head.set()
        self._ended = True
        self._readable.set()

    def discard(self) -> None:
        """The consumer went away: drop what is buffered and further chunks (the invoke still
        runs to its end, reading the agent at full speed again)."""
        self._discarded = True
        self._pending.clear()
        self._pending_bytes = 0
        self._writable.set()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._pending:
                data = self._pending.popleft()
                self._pending_bytes -= len(data) + CHUNK_OVERHEAD
                if self._pending_bytes < STREAM_BUFFER:
                    self._writable.set()
                yield data
            elif self._ended or self._discarded:
                return
            else:
                self._readable.clear()
                await self._readable.wait()
