"""AWS event-stream encoding (`application/vnd.amazon.eventstream`), the framing of
InvokeWithResponseStream's body.

A message is a prelude (total length, headers length, CRC32 of those 8 bytes), the headers,
the payload and a CRC32 of everything before it; all integers big-endian. Each header is a
1-byte name length, the name, a type byte (7 = string), a 2-byte value length and the value.
Only string headers are needed here. botocore's `botocore.eventstream` is the decoder."""

from __future__ import annotations

import json
import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_PRELUDE = struct.Struct("!II")
_CRC = struct.Struct("!I")
_STRING = 7


def encode_headers(headers: dict[str, str]) -> bytes:
    parts = []
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        parts.append(
            struct.pack("!B", len(raw_name))
            + raw_name
            + struct.pack("!BH", _STRING, len(raw_value))
            + raw_value
        )
    return b"".join(parts)


def encode_message(headers: dict[str, str], payload: bytes = b"") -> bytes:
    head = encode_headers(headers)
    total = _PRELUDE.size + _CRC.size + len(head) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(head))
    prelude += _CRC.pack(zlib.crc32(prelude))
    message = prelude + head + payload
    return message + _CRC.pack(zlib.crc32(message))


def event(event_type: str, payload: bytes, content_type: str) -> bytes:
    return encode_message(
        {
            ":event-type": event_type,
            ":content-type": content_type,
            ":message-type": "event",
        },
        payload,
    )


def payload_chunk(data: bytes) -> bytes:
    """A `PayloadChunk` event carrying raw response bytes."""
    return event("PayloadChunk", data, "application/octet-stream")


def invoke_complete(
    error_code: str | None = None, error_details: str | None = None, log_result: str | None = None
) -> bytes:
    """The `InvokeComplete` event that ends every stream; members left out when None."""
    members = {"ErrorCode": error_code, "ErrorDetails": error_details, "LogResult": log_result}
    body = {name: value for name, value in members.items() if value is not None}
    return event("InvokeComplete", json.dumps(body).encode(), "application/json")
