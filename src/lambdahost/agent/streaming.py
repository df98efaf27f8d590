"""Streamed responses: `POST /runtime/invocation/{id}/response` with
`Lambda-Runtime-Function-Response-Mode: streaming` and a chunked body.

Each chunk goes to the host as it arrives ("stream" once, then "chunk" frames); the end of
the body sends the usual "result" frame (`streamed: true`), failed when the runtime set the
`Lambda-Runtime-Function-Error-Type` / `-Error-Body` (base64) trailers or the body grew past
Lambda's 20 MB streaming limit (the rest is then dropped)."""

from __future__ import annotations

import base64
import binascii

from .http11 import Connection, Request
from .shared import JSON_TYPE, RUNTIME_PREFIX, STATUS_OK, TYPE_CHECKING, error_body

if TYPE_CHECKING:
    from .shared import AgentLike

MAX_STREAMED_BYTES = 20 * 1024 * 1024
ERROR_TYPE = "lambda-runtime-function-error-type"
ERROR_BODY = "lambda-runtime-function-error-body"


class ResponseStream:
    def __init__(self, agent: AgentLike, connection: Connection, request: Request) -> None:
        self.agent = agent
        self.connection = connection
        parts = request.path.split("?", 1)[0].removeprefix(RUNTIME_PREFIX).split("/")
        self.request_id = parts[1] if len(parts) == 3 else ""
        self.valid = (
            request.method == "POST"
            and len(parts) == 3
            and parts[0] == "invocation"
            and parts[2] == "response"
            and self.request_id == agent.current
        )
        self.size = 0
        self.too_large = False
        if self.valid:
            content_type = request.headers.get("content-type", "application/octet-stream")
            agent.send({"t": "stream", "id": self.request_id, "content_type": content_type})

    @property
    def live(self) -> bool:
        # A runtime may give up on a stream and post /error instead: that answer wins.
        return self.valid and self.agent.current == self.request_id

    def chunk(self, data: bytes) -> None:
        if not self.live or self.too_large:
            return
        self.size += len(data)
        if self.size > MAX_STREAMED_BYTES:
            self.too_large = True
            return
        self.agent.send({"t": "chunk", "id": self.request_id}, data)

    def end(self, trailers: dict[str, str]) -> None:
        if not self.live:
            body = error_body("InvalidRequestID", "Invalid request ID")
            return self.connection.respond(400, body, JSON_TYPE)
        self.agent.current = None
        error_type = trailers.get(ERROR_TYPE, "")
        body = b""
        if self.too_large:
            error_type = "Function.ResponseSizeTooLarge"
            message = (
                "Response payload size exceeded maximum allowed payload size "
                f"({MAX_STREAMED_BYTES} bytes)."
            )
            body = error_body(error_type, message)
            self.connection.respond(413, error_body("RequestEntityTooLarge", message), JSON_TYPE)
        else:
            self.connection.respond(202, STATUS_OK, JSON_TYPE)
            if error_type:
                try:
                    body = base64.b64decode(trailers.get(ERROR_BODY, ""), validate=True)
                except (binascii.Error, ValueError):
                    body = b""
                body = body or error_body(error_type, "")
        header: dict[str, object] = {"t": "result", "id": self.request_id, "ok": not error_type}
        header["streamed"] = True
        header["logs"] = self.agent.take_logs()
        if error_type:
            header["error_type"] = error_type
        self.agent.send(header, body)

    def abort(self) -> None:
        """The runtime hung up mid-stream: it is crashing (its exit is reported) or broken
        (the invoke times out), as when it never answers at all."""
