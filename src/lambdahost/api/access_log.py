"""One line per HTTP request on the `lambdahost.access` logger (INFO), when turned on
(`serve --access-log`, `$LAMBDAHOST_ACCESS_LOG`).

uvicorn's own access log stays off; this one names what an operator needs to find a request
again and nothing a client sent: method, path, status, duration and the request id the
client saw (`x-amzn-RequestId`). The path is logged without its query string, which may hold
presigned credentials (`X-Amz-Credential`, `X-Amz-Signature`) or a function URL's user data;
bodies and headers are never logged. When off, the app is not wrapped at all."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lambdahost.access")
_REQUEST_ID = b"x-amzn-requestid"


class AccessLog:
    """ASGI middleware: `<method> <path> <status> <ms>ms <request id>` once the response
    has been sent (or failed: status 500 when none was started)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        request_id = "-"

        async def sending(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers") or ():
                    if name.lower() == _REQUEST_ID:
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # raw_path is the path as sent (percent-encoded, no query); path as a fallback.
            raw = scope.get("raw_path")
            path = raw.decode("latin-1") if raw else scope.get("path", "")
            log.info(
                "%s %s %d %.1fms %s",
                scope.get("method", "-"),
                path.split("?", 1)[0],
                status or 500,
                (time.perf_counter() - started) * 1000,
                request_id,
            )
