"""A minimal HTTP/1.1 server connection for the Runtime API: keep-alive, Content-Length and
chunked bodies, `Expect: 100-continue`. Hand-rolled so the agent needs no `http.server`
(heavy imports, a thread per connection, Nagle trap): the agent's one select loop feeds it."""

from __future__ import annotations

import socket

TYPE_CHECKING = False  # `typing` stays unimported: the agent's imports are paid every cold start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from .chunked import ChunkedDecoder

    class StreamSink(Protocol):
        """Takes a streamed request body piece by piece (see `Connection.on_stream`)."""

        def chunk(self, data: bytes) -> None: ...
        def end(self, trailers: dict[str, str]) -> None: ...
        def abort(self) -> None: ...


REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
}
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024  # far above the 6 MB payload limit; beyond it we hang up


class ProtocolError(Exception):
    pass


class Request:
    __slots__ = ("method", "path", "headers", "body")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers  # lower-cased names
        self.body = body


class Connection:
    """One client connection. `receive()` returns complete requests, or None at EOF.

    A chunked request whose head says `Lambda-Runtime-Function-Response-Mode: streaming` is
    not buffered: `on_stream(request)` (body empty) is called as soon as its head is here and
    returns the sink its body is fed to as it arrives."""

    def __init__(
        self, sock: socket.socket, on_stream: Callable[[Request], StreamSink] | None = None
    ) -> None:
        self.sock = sock
        self.on_stream = on_stream
        self._buffer = bytearray()
        self._head: tuple[str, str, dict[str, str]] | None = None
        self._continued = False
        self._stream: tuple[ChunkedDecoder, StreamSink] | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[Request] | None:
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        self._buffer += data
        requests: list[Request] = []
        while True:
            request = self._parse_one()
            if request is None:
                return requests
            requests.append(request)

    def _parse_one(self) -> Request | None:
        while self._stream is not None or self._starts_stream():
            if not self._pump_stream():
                return None
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise ProtocolError("request head too large")
                return None
            self._head = self._parse_head(end)
        method, path, headers = self._head
        body = self._take_body(headers)
        if body is None:
            if not self._continued and headers.get("expect", "").lower() == "100-continue":
                self._continued = True
                self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        self._head = None
        return Request(method, path, headers, body)

    def _starts_stream(self) -> bool:
        """Parse a head if one is here; True when it opened a streamed body."""
        on_stream = self.on_stream
        if on_stream is None:
            return False
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            self._head = self._parse_head(end)
        method, path, headers = self._head
        streaming = (
            headers.get("lambda-runtime-function-response-mode", "").lower() == "streaming"
            and "chunked" in headers.get("transfer-encoding", "").lower()
        )
        if not streaming:
            return False
        from .chunked import ChunkedDecoder  # only streams need it: not paid at start-up

        self._head = None
        sink = on_stream(Request(method, path, headers, b""))
        self._stream = (ChunkedDecoder(), sink)
        return True

    def _pump_stream(self) -> bool:
        """Feed buffered body bytes to the open stream; True once it has ended."""
        from .chunked import ChunkedError

        assert self._stream is not None
        decoder, sink = self._stream
        try:
            pieces = decoder.feed(self._buffer)
        except ChunkedError as exc:
            raise ProtocolError(str(exc)) from None
        for piece in pieces:
            sink.chunk(piece)
        if not decoder.done:
            return False
        self._stream = None
        sink.end(decoder.trailers)
        return True

    def abandon_stream(self) -> None:
        """The client went away: tell an open stream's sink it will not end."""
        if self._stream is not None:
            (_, sink), self._stream = self._stream, None
            sink.abort()

    def _parse_head(self, end: int) -> tuple[str, str, dict[str, str]]:
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        try:
            method, path, _version = lines[0].split(" ", 2)
        except ValueError:
            raise ProtocolError("bad request line") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._continued = False
        return (method, path, headers)

    def _take_body(self, headers: dict[str, str]) -> bytes | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._take_chunked()
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            raise ProtocolError("body too large")
        if len(self._buffer) < length:
            return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    def _take_chunked(self) -> bytes | None:
        # Parse without consuming until the terminating chunk is here; bodies are small and
        # arrive quickly, so re-scanning on each read is cheaper than keeping parser state.
        pos = 0
        parts: list[bytes] = []
        while True:
            eol = self._buffer.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self._buffer[pos:eol]).split(b";")[0] or b"0", 16)
            if size == 0:
                end = self._buffer.find(b"\r\n\r\n", eol)  # after optional trailers
                if end < 0:
                    return None
                del self._buffer[: end + 4]
                return b"".join(parts)
            start = eol + 2
            if len(self._buffer) < start + size + 2:
                return None
            parts.append(bytes(self._buffer[start : start + size]))
            pos = start + size + 2
            if pos > MAX_BODY:
                raise ProtocolError("body too large")

    def respond(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        head.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the client went away; its next read of the selector will see EOF

    def close(self) -> None:
        self.sock.close()
