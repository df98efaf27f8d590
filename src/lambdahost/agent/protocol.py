"""Framing on the one Unix stream socket between the host (pool) and the agent.

A frame is `!II` (header length, body length), a JSON object header, then raw body bytes:
payloads travel as bytes, never re-encoded. Shared by both ends, so stdlib only and no
imports from the rest of the package (inside the sandbox this package is `rapid`).

Host → agent:
  {"t": "invoke", "id", "deadline_ms", "arn", "trace", "client_context", "identity"} + payload
  {"t": "flush"}                                         answered by "logs" (on timeouts)
Agent → host:
  {"t": "ready", "init_ms", "logs"}                      runtime asked for its first event
  {"t": "init_error", "error_type", "logs"} + error doc  runtime posted /runtime/init/error
  {"t": "result", "id", "ok", "error_type", "logs"} + response or error document
  {"t": "exit", "status", "signal", "logs"}              runtime exited (agent exits after)
  {"t": "logs", "logs"}                                  output so far, answering "flush"
`logs` is a list of [epoch_ms, text] with text ending in a newline.
"""

from __future__ import annotations

import json
import struct

TYPE_CHECKING = False  # no `typing` import at run time (see http11)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

HEADER = struct.Struct("!II")
# Payloads are capped at ~6 MB and logs at 4 MB a phase; anything bigger is not from a healthy
# agent (the function runs as the agent's uid and could reach its socket), so refuse it.
MAX_FRAME = 64 * 1024 * 1024


class FrameError(ValueError):
    pass


def encode(header: Mapping[str, object], body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return HEADER.pack(len(head), len(body)) + head + body


class FrameReader:
    """Incremental decoder: feed bytes, pop complete (header, body) frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            head_len, body_len = HEADER.unpack_from(self._buffer)
            if head_len + body_len > MAX_FRAME:
                raise FrameError(f"frame of {head_len + body_len} bytes")
            end = HEADER.size + head_len + body_len
            if len(self._buffer) < end:
                break
            head = json.loads(self._buffer[HEADER.size : HEADER.size + head_len])
            if not isinstance(head, dict):
                raise FrameError("frame header is not an object")
            frames.append((head, bytes(self._buffer[HEADER.size + head_len : end])))
            del self._buffer[:end]
        return frames
