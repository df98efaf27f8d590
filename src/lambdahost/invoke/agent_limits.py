"""What the host accepts from an agent: the agent's own caps, enforced again on the host.

The agent runs inside the sandbox next to the function, so the host must assume it may be
compromised (issue #10, item 3: a function rewrote its agent's caps through /proc/1/mem).
Everything here bounds what the server spends on one environment, whatever its agent sends:
- frames: a header of at most MAX_HEADER bytes, parsed only once whole; a body over MAX_BODY is
  skipped as it arrives, never buffered (the message says how many bytes were dropped);
- logs: per phase (init, one invoke, shutdown) at most MAX_LOG_BYTES and MAX_LOG_EVENTS lines,
  each at most MAX_LINE bytes; beyond that they are dropped, as the agent drops them;
- a `logs` field that is not the agent's [[epoch_ms, text], ...] is a protocol violation.

Bounds (why these numbers):
- MAX_BODY: the largest body a healthy agent sends is a buffered response of 6291556 bytes
  (bigger ones it replaces by an error document); its stream chunks are one socket read
  (≤ 256 KiB). An init error document may be bigger (the agent takes the runtime's body as
  is); the host replaces it.
- MAX_HEADER: the logs dominate. 4 MiB of output escapes to at most 6 bytes a byte in JSON
  (control characters and invalid UTF-8 become `\\u0001` / `\\ufffd`): 24 MiB, plus ~21
  bytes a line. 32 MiB leaves 8 MiB for line overhead (~400,000 lines); a healthy agent
  counts newlines and stops at MAX_LOG_EVENTS lines too, so only a hostile one exceeds it
  (the link is then cut, as for any oversized frame).
- BIG_HEADERS: parsing a 32 MiB header made of tiny JSON values costs ~0.5 GB and ~0.6 s of
  the event loop. A healthy agent sends logs in at most a few frames a phase (result, "done"
  after extensions, exit; ready or init_error; bye), so headers over BIG_HEADER are allowed
  BIG_HEADERS times a phase; one more cuts the link before it is parsed.
- FRAME_OVERHEAD: what a delivered frame costs in Python objects beyond its bytes; counted
  in the inbox's bound so that a flood of tiny frames cannot multiply it.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lambdahost.agent.main import MAX_LOG_BYTES, MAX_LOG_LINES, MAX_RESPONSE_BYTES
from lambdahost.agent.protocol import HEADER, FrameError
from lambdahost.agent.shared import MAX_LINE, error_body
from lambdahost.agent.streaming import MAX_STREAMED_BYTES

MAX_BODY = MAX_RESPONSE_BYTES
MAX_HEADER = 32 * 1024 * 1024
MAX_LOG_EVENTS = MAX_LOG_LINES  # a phase's lines, as the agent counts them
MAX_FIELD = 64 * 1024  # a string header field (error type, content type): the agent's MAX_HEAD
BIG_HEADER = 1024 * 1024  # parsed with the cyclic GC paused (it would rescan every new list)
BIG_HEADERS = 4  # a phase's headers over BIG_HEADER
FRAME_OVERHEAD = 512
SIZE_ERROR = "Function.ResponseSizeTooLarge"
# Header fields the host computes with, and their type from a healthy agent.
FIELD_TYPES: dict[str, type] = {
    "id": str,
    "error_type": str,
    "content_type": str,
    "status": int,
    "signal": int,
    "extensions": int,
}

LogLine = tuple[int, str]


class AgentViolation(FrameError):
    """The agent sent what a healthy agent never sends: the environment cannot be trusted."""


def size_error(limit: int) -> bytes:
    """The error document the agent answers an oversized response with (same bytes)."""
    message = f"Response payload size exceeded maximum allowed payload size ({limit} bytes)."
    return error_body(SIZE_ERROR, message)


BUFFERED_SIZE_ERROR = size_error(MAX_RESPONSE_BYTES)
STREAMED_SIZE_ERROR = size_error(MAX_STREAMED_BYTES)


@dataclass
class Frame:
    header: dict[str, Any]
    body: bytes
    dropped: int  # body bytes skipped (the body was over MAX_BODY); then `body` is empty
    size: int  # bytes the frame took on the wire


class FrameReader:
    """The host's decoder of the agent's frames, one at a time.

    `feed` whatever the socket gave, then call `next()` until it returns None. The buffer holds
    at most one frame beyond what was delivered, plus one socket read: a link that stops calling
    `next()` must stop reading its socket too (the kernel's buffer then holds the rest, and the
    agent blocks in its send)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip = 0  # body bytes still to be dropped as they arrive
        self._held: Frame | None = None  # its body is being skipped
        self.big_headers = BIG_HEADERS  # left this phase: the environment resets it

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self._skip:
            take = min(self._skip, len(data))
            self._skip -= take
            data = data[take:]
        if data:
            self._buffer += data

    def next(self) -> Frame | None:
        if self._held is not None:
            if self._skip:
                return None
            frame, self._held = self._held, None
            return frame
        buffer = self._buffer
        if len(buffer) < HEADER.size:
            return None
        head_len, body_len = HEADER.unpack_from(buffer)
        if head_len > MAX_HEADER:
            raise AgentViolation(f"frame header of {head_len} bytes")
        big = head_len > BIG_HEADER
        if big and not self.big_headers:  # refused before it is even buffered
            raise AgentViolation(f"more than {BIG_HEADERS} headers over 1 MiB in a phase")
        head_end = HEADER.size + head_len
        oversized = body_len > MAX_BODY
        end = head_end if oversized else head_end + body_len
        if len(buffer) < end:
            return None
        self.big_headers -= big
        header = parse_header(bytes(buffer[HEADER.size : head_end]))
        if not oversized:
            body = bytes(buffer[head_end:end])
            del buffer[:end]
            return Frame(header, body, 0, end)
        del buffer[:head_end]
        take = min(body_len, len(buffer))
        del buffer[:take]
        self._skip = body_len - take
        frame = Frame(header, b"", body_len, head_end + body_len)
        if self._skip:
            self._held = frame
            return None
        return frame


def parse_header(raw: bytes) -> dict[str, Any]:
    paused = len(raw) > BIG_HEADER and gc.isenabled()
    if paused:
        gc.disable()  # a 32 MiB header of tiny lists parses in 0.6 s instead of 4 s
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, nesting, huge ints
        raise AgentViolation(f"frame header is not JSON: {exc.__class__.__name__}") from None
    finally:
        if paused:
            gc.enable()
    if not isinstance(header, dict):
        raise AgentViolation("frame header is not an object")
    kind = header.get("t")
    if not isinstance(kind, str):
        raise AgentViolation("frame header has no type")
    for name, value in header.items():
        wanted = FIELD_TYPES.get(name)
        if wanted is not None and value is not None and type(value) is not wanted:
            raise AgentViolation(f"frame header field {name} is not {wanted.__name__}")
        if name != "logs" and isinstance(value, str) and len(value) > MAX_FIELD:
            header[name] = value[:MAX_FIELD]
    return header


class LogBudget:
    """One phase's output as the host keeps it: the agent's caps, counted again on the host
    (newlines included, so at most MAX_LOG_BYTES of text is ever stored for a phase)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.events = 0
        self.full = False

    def take(self, entries: object) -> list[LogLine]:
        """The lines of a message's `logs` field this phase may still keep."""
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise AgentViolation("logs is not a list")
        kept: list[LogLine] = []
        for entry in entries:
            if self.full:
                break  # the rest is dropped unread: no work for output nobody keeps
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and type(entry[0]) is int
                and isinstance(entry[1], str)
            ):
                raise AgentViolation("a log entry is not [epoch_ms, text]")
            stamp, text = entry
            if not 0 <= stamp < 1 << 53:
                stamp = time.time_ns() // 1_000_000  # the store keeps 64-bit integers
            for line, size in split_line(text):
                if self.bytes + size > MAX_LOG_BYTES or self.events >= MAX_LOG_EVENTS:
                    self.full = True
                    break
                self.bytes += size
                self.events += 1
                kept.append((stamp, line))
        return kept


def split_line(text: str) -> Iterator[tuple[str, int]]:
    """(line, its size in UTF-8) pieces of at most MAX_LINE bytes each plus a newline, as the
    agent splits long lines. Lone surrogates (possible in JSON, never from a healthy agent)
    become "?": the log store could not encode them."""
    body = text[:-1] if text.endswith("\n") else text
    if body.isascii():
        if len(body) <= MAX_LINE:
            yield body + "\n", len(body) + 1
            return
        for start in range(0, len(body), MAX_LINE):
            piece = body[start : start + MAX_LINE]
            yield piece + "\n", len(piece) + 1
        return
    raw = body.encode("utf-8", "replace")  # valid UTF-8 now: cuts can avoid characters
    start = 0
    while start < len(raw):
        end = min(start + MAX_LINE, len(raw))
        while end < len(raw) and raw[end] & 0xC0 == 0x80:
            end -= 1  # a continuation byte: cut before its character
        yield raw[start:end].decode() + "\n", end - start + 1
        start = end
