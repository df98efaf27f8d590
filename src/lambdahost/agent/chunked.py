"""An incremental decoder for HTTP/1.1 chunked bodies, with trailers.

Used for streamed responses (`Lambda-Runtime-Function-Response-Mode: streaming`), whose
chunks must be passed on as they arrive rather than once the body is complete."""

from __future__ import annotations

MAX_LINE = 8 * 1024  # a chunk-size line or a trailer line


class ChunkedError(ValueError):
    pass


class ChunkedDecoder:
    """Feed it the connection's buffer; it consumes what it can and returns the data.

    `done` turns True after the last chunk and the trailers; `trailers` has lower-cased names.
    """

    def __init__(self) -> None:
        self.remaining = 0  # bytes of the current chunk still to come
        self.in_data = False
        self.in_trailers = False
        self.done = False
        self.trailers: dict[str, str] = {}

    def feed(self, buffer: bytearray) -> list[bytes]:
        pieces: list[bytes] = []
        while not self.done and buffer:
            if self.in_data:
                if self.remaining:
                    take = min(self.remaining, len(buffer))
                    pieces.append(bytes(buffer[:take]))
                    del buffer[:take]
                    self.remaining -= take
                    continue
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise ChunkedError("chunk not followed by CRLF")
                del buffer[:2]
                self.in_data = False
                continue
            line = self._line(buffer)
            if line is None:
                break
            if self.in_trailers:
                if not line:
                    self.done = True
                else:
                    name, _, value = line.decode("latin-1").partition(":")
                    self.trailers[name.strip().lower()] = value.strip()
                continue
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                raise ChunkedError("bad chunk size") from None
            if size == 0:
                self.in_trailers = True
            else:
                self.remaining, self.in_data = size, True
        return pieces

    @staticmethod
    def _line(buffer: bytearray) -> bytes | None:
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > MAX_LINE:
                raise ChunkedError("line too long")
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line
