"""Issue #10, item 3: the host enforces the agent's caps itself, as if the agent were hostile.

Each test plays a compromised agent on the other end of a real Unix socket pair connected to a
real `Environment` (the link the pool uses), on both event loops the server may run (asyncio's
and uvloop's): oversized frames, responses and logs, malformed headers, a stream past 20 MB,
and a stream pushed at a consumer that does not read."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from lambdahost.agent.main import OutputCapture
from lambdahost.agent.protocol import HEADER, encode
from lambdahost.invoke.agent_limits import (
    BIG_HEADERS,
    BUFFERED_SIZE_ERROR,
    FRAME_OVERHEAD,
    MAX_BODY,
    MAX_HEADER,
    MAX_LINE,
    MAX_LOG_BYTES,
    MAX_LOG_EVENTS,
    MAX_STREAMED_BYTES,
    SIZE_ERROR,
    STREAMED_SIZE_ERROR,
    FrameReader,
)
from lambdahost.invoke.environment import INBOX_MAX, Environment
from lambdahost.invoke.model import FunctionSpec, InvokeRequest
from lambdahost.invoke.streaming import STREAM_BUFFER, ChunkCollector, ResponseStream

SPEC = FunctionSpec(
    name="hostile",
    arn="arn:aws:lambda:us-east-1:000000000000:function:hostile",
    version="$LATEST",
    revision_id="r1",
    runtime="python3.11",
    handler="app.handler",
    code_dir=Path("/nonexistent"),
    memory_mb=128,
    timeout_s=3,
)
CHUNK = 256 * 1024  # what a healthy agent relays per socket read

LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(uvloop.new_event_loop, id="uvloop"),
]


def run(loop_factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine) -> Any:  # noqa: ANN401
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(asyncio.wait_for(coro, 60))


class HostileAgent:
    """The agent's end of the socket, written by one thread with blocking sends (as the agent
    writes), in the order frames were queued: `sent` shows how far the host let it get."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0
        self.error: OSError | None = None
        self._queue: queue.Queue[Iterable[bytes]] = queue.Queue()
        threading.Thread(target=self._work, daemon=True).start()

    def _work(self) -> None:
        while True:
            frames = self._queue.get()
            try:
                for frame in frames:
                    if self.error is None:
                        self.sock.sendall(frame)
                        self.sent += len(frame)
            except OSError as error:  # the host cut the link
                self.error = error
            finally:
                self._queue.task_done()

    def put(self, *frames: bytes) -> None:
        """Queue frames to send; returns at once (the host reads them on the event loop)."""
        self._queue.put(frames)

    def pump(self, frames: Callable[[], Iterable[bytes]]) -> None:
        """Queue every frame `frames()` yields."""
        self._queue.put(frames())

    async def join(self, timeout: float = 30) -> None:
        """Wait until everything queued is sent (or failed); the event loop reads meanwhile."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            assert time.monotonic() < deadline, "the agent is still blocked in its send"
            await asyncio.sleep(0.01)

    async def stalled(self, quiet_s: float = 0.5, limit_s: float = 20) -> int:
        """Wait until sending has made no progress for `quiet_s`; returns the bytes sent."""
        deadline = time.monotonic() + limit_s
        last, since = self.sent, time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return last
        raise AssertionError("the agent was never blocked")


async def linked() -> tuple[Environment, HostileAgent]:
    host_end, agent_end = socket.socketpair()
    env = Environment("0" * 32, SPEC, "2024/01/01/[$LATEST]" + "0" * 32)
    await env.connect(host_end)
    return env, HostileAgent(agent_end)


def chunks(total: int, size: int = CHUNK, then: bytes = b"") -> Callable[[], Iterable[bytes]]:
    def frames() -> Iterable[bytes]:
        yield encode({"t": "stream", "id": "r", "content_type": "application/octet-stream"})
        block = b"x" * size
        for _ in range(total // size):
            yield encode({"t": "chunk", "id": "r"}, block)
        if then:
            yield then

    return frames


def result(ok: bool = True, logs: list | None = None, **extra: object) -> bytes:
    header = {"t": "result", "id": "r", "ok": ok, "logs": logs or [], **extra}
    return encode(header)


def text_size(lines: list[tuple[int, str]]) -> int:
    return sum(len(text.encode()) for _, text in lines)


# -- frames and buffered responses ----------------------------------------------------------


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_oversized_response_is_the_size_error_and_never_buffered(loop_factory) -> None:  # noqa: ANN001
    async def scenario() -> None:
        env, agent = await linked()
        body = 64 * 1024 * 1024  # the whole protocol's MAX_FRAME, ten times the host's MAX_BODY
        head = json.dumps({"t": "result", "id": "r", "ok": True, "logs": []}).encode()

        def frames() -> Iterable[bytes]:
            yield HEADER.pack(len(head), body) + head
            block = b"y" * (1024 * 1024)
            for _ in range(body // len(block)):
                yield block
            yield result(logs=[[1, "still reading\n"]])

        tracemalloc.start()
        try:
            agent.pump(frames)
            message = await env.next_message()
            while not env.inbox_bytes:  # the link reads on past the skipped body
                await asyncio.sleep(0.01)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await agent.join()
        assert message.kind == "result"
        assert message.header["ok"] is False
        assert message.header["error_type"] == SIZE_ERROR
        assert message.body == BUFFERED_SIZE_ERROR
        assert json.loads(message.body) == {
            "errorMessage": "Response payload size exceeded maximum allowed payload size "
            "(6291556 bytes).",
            "errorType": "Function.ResponseSizeTooLarge",
        }
        assert env.dead, "an agent that sends what it must not is never reused"
        assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated for a skipped 64 MiB body"
        await env.destroy()

    run(loop_factory, scenario())


def test_frame_reader_skips_big_bodies_in_any_pieces() -> None:
    big = encode({"t": "chunk", "id": "r"}, b"z" * (MAX_BODY + 5))
    small = encode({"t": "result", "id": "r", "ok": True}, b"fine")
    data = big + small
    for step in (1 << 20, 7919, len(data)):
        reader, frames = FrameReader(), []
        for start in range(0, len(data), step):
            reader.feed(data[start : start + step])
            while (frame := reader.next()) is not None:
                frames.append(frame)
            assert reader.buffered <= step + len(small)
        assert [(f.header["t"], f.body, f.dropped) for f in frames] == [
            ("chunk", b"", MAX_BODY + 5),
            ("result", b"fine", 0),
        ]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(HEADER.pack(MAX_HEADER + 1, 0), id="header-too-long"),
        pytest.param(HEADER.pack(5, 0) + b"{x:1}", id="not-json"),
        pytest.param(HEADER.pack(2, 0) + b"[]", id="not-an-object"),
        pytest.param(HEADER.pack(1, 0) + b"\xff", id="not-utf8"),
        pytest.param(HEADER.pack(3000, 0) + b"[" * 3000, id="nested"),
        pytest.param(HEADER.pack(9000, 0) + b"9" * 9000, id="huge-int"),
        pytest.param(encode({"id": "r"}), id="no-type"),
        pytest.param(result(logs="text"), id="logs-not-a-list"),  # type: ignore[arg-type]
        pytest.param(result(logs=[["1", "x"]]), id="stamp-not-int"),
        pytest.param(result(logs=[[1, "x", 2]]), id="entry-not-a-pair"),
        pytest.param(encode({"t": "exit", "signal": [9]}), id="signal-not-int"),
        pytest.param(result(ok=False, error_type={"a": 1}), id="error-type-not-str"),
    ],
)
def test_malformed_frames_cut_the_link(frame: bytes) -> None:
    async def scenario() -> None:
        env, agent = await linked()
        agent.put(frame)
        message = await env.next_message()
        assert message.kind == "lost"
        assert env.dead
        await env.destroy()

    run(asyncio.new_event_loop, scenario())


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_flood_of_tiny_frames_is_bounded_by_count_too(loop_factory) -> None:  # noqa: ANN001
    """Frames of a few bytes cost hundreds in Python objects: the inbox counts that."""

    async def scenario() -> None:
        env, agent = await linked()
        tiny = encode({"t": "x"})
        agent.pump(lambda: (tiny for _ in range(1_000_000)))
        sent = await agent.stalled()
        assert sent < 1_000_000 * len(tiny) // 2
        assert len(env._inbox) <= INBOX_MAX // FRAME_OVERHEAD + 1
        await env.destroy()
        await agent.join()

    run(loop_factory, scenario())


def test_big_headers_are_limited_per_phase() -> None:
    """Parsing a big header is costly: a healthy agent sends a few a phase, never more."""
    logs = [[1, "b" * 1000 + "\n"]] * 1500  # a 1.5 MB header
    big = result(logs=logs)

    async def scenario() -> None:
        env, agent = await linked()
        for phase in range(2):
            agent.put(*[big] * BIG_HEADERS)
            for _ in range(BIG_HEADERS):
                assert (await env.next_message()).kind == "result"
            env.send_invoke(InvokeRequest(f"r{phase}", b"{}", SPEC.arn), 0)  # a new phase
        agent.put(*[big] * (BIG_HEADERS + 1))
        kinds = [(await env.next_message()).kind for _ in range(BIG_HEADERS + 1)]
        assert kinds == ["result"] * BIG_HEADERS + ["lost"]
        await env.destroy()

    run(asyncio.new_event_loop, scenario())


# -- logs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_logs_are_capped_per_phase(loop_factory) -> None:  # noqa: ANN001
    async def scenario() -> None:
        env, agent = await linked()
        megabyte = "m" * (1024 * 1024) + "\n"
        # Init phase: 10 lines of 1 MiB: split at MAX_LINE, kept up to MAX_LOG_BYTES.
        agent.put(encode({"t": "ready", "logs": [[1, megabyte]] * 10}))
        ready = await env.next_message()
        assert ready.kind == "ready"
        assert all(len(text) <= MAX_LINE + 1 and text.endswith("\n") for _, text in ready.logs)
        assert MAX_LOG_BYTES - MAX_LINE < text_size(ready.logs) <= MAX_LOG_BYTES
        # An invoke: the budget is new, and shared by every message of the phase.
        env.send_invoke(InvokeRequest("r", b"{}", SPEC.arn), 0)
        three = [[2, "t" * 1000 + "\n"]] * 3000
        agent.put(result(logs=three, pending=True))
        agent.put(encode({"t": "done", "id": "r", "logs": three}))
        first, done = await env.next_message(), await env.next_message()
        assert text_size(first.logs) == 3000 * 1001
        assert text_size(first.logs) + text_size(done.logs) <= MAX_LOG_BYTES
        # Many tiny lines: at most MAX_LOG_EVENTS a phase.
        env.send_invoke(InvokeRequest("r2", b"{}", SPEC.arn), 0)
        agent.put(result(logs=[[3, "\n"]] * (MAX_LOG_EVENTS * 2)))
        assert len((await env.next_message()).logs) == MAX_LOG_EVENTS
        # What the log store could not keep is made storable.
        env.send_invoke(InvokeRequest("r3", b"{}", SPEC.arn), 0)
        agent.put(result(logs=[[10**30, "lone \ud800 surrogate"], [-5, "no newline"]]))
        lines = (await env.next_message()).logs
        assert [text for _, text in lines] == ["lone ? surrogate\n", "no newline\n"]
        assert all(0 <= stamp < 1 << 53 for stamp, _ in lines)
        assert not env.dead, "output over the caps is dropped, as the agent drops it"
        await env.destroy()

    run(loop_factory, scenario())


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(b"\x01" * (5 * 1024 * 1024), id="one-long-line"),  # split by the agent
        pytest.param((b"\x02" * 99 + b"\xff\n") * 50_000, id="lines-of-100-bytes"),
    ],
)
def test_a_healthy_agents_worst_logs_fit_in_a_frame(output: bytes) -> None:
    """4+ MiB of control characters or invalid UTF-8: each byte escapes to six bytes of JSON
    (`\\u0001`, `\\ufffd`). The agent's own capture and encoding make the frame."""
    read_end, write_end = os.pipe()
    try:
        capture = OutputCapture(read_end)
        capture._add(output)
        logs = capture.take()
    finally:
        os.close(read_end)
        os.close(write_end)
    frame = encode({"t": "result", "id": "r", "ok": True, "logs": logs}, b"x" * MAX_BODY)
    head_len, body_len = HEADER.unpack_from(frame)
    assert 22 * 1024 * 1024 < head_len <= MAX_HEADER  # near the worst a healthy agent makes
    assert body_len == MAX_BODY

    async def scenario() -> None:
        env, agent = await linked()
        agent.pump(lambda: iter([frame]))
        message = await env.next_message()
        await agent.join()
        assert message.kind == "result" and message.header["ok"] is True
        assert len(message.body) == MAX_BODY
        assert MAX_LOG_BYTES - MAX_LINE < text_size(message.logs) <= MAX_LOG_BYTES
        assert not env.dead
        await env.destroy()

    run(asyncio.new_event_loop, scenario())


# -- streams ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_stream_past_20_mb_ends_with_the_agents_error(loop_factory) -> None:  # noqa: ANN001
    async def scenario() -> None:
        # Buffered (Invoke of a streaming function) and streamed (a consumer reading it all).
        for collector in (ChunkCollector(), ResponseStream()):
            env, agent = await linked()
            agent.pump(chunks(30 * 1024 * 1024, then=result(streamed=True)))
            received = 0

            async def consume(stream: ResponseStream) -> None:
                nonlocal received
                async for data in stream:
                    received += len(data)

            reader = None
            if isinstance(collector, ResponseStream):
                reader = asyncio.ensure_future(consume(collector))
            message = await collector.await_result(env)
            assert message.kind == "result"
            assert message.header["ok"] is False
            assert message.header["error_type"] == SIZE_ERROR
            if isinstance(collector, ResponseStream):
                collector.end(None)
                await reader
                assert 20 * 1024 * 1024 - CHUNK < received <= MAX_STREAMED_BYTES
            assert message.body == STREAMED_SIZE_ERROR
            assert env.dead
            await env.destroy()
            await agent.join()  # the destroyed link ends the agent's sends

    run(loop_factory, scenario())


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_consumer_that_does_not_read_blocks_the_agent(loop_factory) -> None:  # noqa: ANN001
    async def scenario() -> None:
        env, agent = await linked()
        stream = ResponseStream()
        total = MAX_STREAMED_BYTES  # as much as a healthy agent may stream
        agent.pump(chunks(total, then=result(streamed=True, logs=[[1, "done\n"]])))
        collecting = asyncio.ensure_future(stream.await_result(env))
        sent = await agent.stalled()
        # Held on the host: the stream's buffer, the inbox, the reader's partial frame.
        assert stream.buffered <= STREAM_BUFFER + CHUNK + 1024
        assert env.inbox_bytes <= INBOX_MAX + CHUNK + 1024
        assert env.link is not None and env.link.frames.buffered <= 2 * CHUNK + 64
        assert sent < total // 2, f"the agent got {sent} bytes out to a consumer not reading"
        # The consumer reads a little: the agent moves on by about as much.
        taken = 0
        iterator = aiter(stream)
        while taken < 4 * 1024 * 1024:
            taken += len(await anext(iterator))
        assert await agent.stalled() > sent + 2 * 1024 * 1024
        # It goes away: the rest is read and dropped, the invoke ends normally.
        stream.discard()
        message = await collecting
        await agent.join()
        assert message.kind == "result" and message.header["ok"] is True
        assert message.logs == [(1, "done\n")]
        assert stream.buffered == 0 and env.inbox_bytes == 0
        assert not env.dead
        await env.destroy()

    run(loop_factory, scenario())


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_stalled_stream_times_out_with_bounded_memory(loop_factory) -> None:  # noqa: ANN001
    """An agent pushing 1 GB at a consumer that never reads: memory stays bounded until the
    function's timeout, and destroying the environment frees it all and stops the agent."""

    async def scenario() -> None:
        env, agent = await linked()
        stream = ResponseStream()
        tracemalloc.start()
        try:
            agent.pump(chunks(1024 * 1024 * 1024, size=1024 * 1024))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(2):
                    await stream.await_result(env)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert agent.sent < 16 * 1024 * 1024
        assert peak < 24 * 1024 * 1024, f"{peak} bytes allocated for a stalled stream"
        await env.destroy()
        await agent.join()
        assert agent.error is not None, "the agent's send fails once the link is gone"
        stream.end(None)
        assert sum([len(data) async for data in stream]) <= STREAM_BUFFER + 1024 * 1024

    run(loop_factory, scenario())


def test_timeout_flush_reads_past_a_held_stream() -> None:
    """The pool's timeout path: `flush_logs` must reach the agent's answer behind a full inbox
    (it drops the chunks), and a shutdown must not wait behind one either."""

    async def scenario() -> None:
        env, agent = await linked()
        agent.pump(chunks(8 * 1024 * 1024, then=encode({"t": "logs", "logs": [[1, "late\n"]]})))
        await agent.stalled()
        assert env.link is not None and env.link.held
        assert await env.flush_logs(timeout_s=5) == [(1, "late\n")]
        await agent.join()
        await env.destroy()

    run(asyncio.new_event_loop, scenario())


def test_lost_link_still_delivers_what_came_before() -> None:
    async def scenario() -> None:
        env, agent = await linked()
        agent.put(result(logs=[[1, "bye\n"]]))
        await agent.join()
        agent.sock.close()
        message = await env.next_message()
        assert message.kind == "result" and message.logs == [(1, "bye\n")]
        assert (await env.next_message()).kind == "lost"
        await env.destroy()

    run(asyncio.new_event_loop, scenario())
