"""How a function URL answers: a function's result mapped to HTTP (payload format 2.0), and
the answers a URL gives without the function. Shared by buffered (`function_urls`) and
streamed (`url_streaming`) URLs."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from lambdahost.control import jsontext
from lambdahost.errors import LambdaError

# Framing headers are the server's business, not the function's.
HOP_BY_HOP = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive"))


# What a URL answers when its policy does not let the caller in, and when the alias it
# pointed at was deleted: 403 with `x-amzn-ErrorType: AccessDeniedException` (recorded AWS
# answers, localstack test_lambda.snapshot.json: test_lambda_permission_url_invocation and
# test_lambda_url_persists_after_alias_delete).
FORBIDDEN = (
    "Forbidden. For troubleshooting Function URL authorization issues, see: "
    "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
)
ACCESS_DENIED = "AccessDeniedException"


class UrlRejection(Exception):
    """A request the URL answers itself, without the function: status and the JSON body
    `{"Message":…}` (null for a URL id nobody created), with `x-amzn-ErrorType` when set."""

    def __init__(self, status: int, message: str | None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


def forbidden() -> UrlRejection:
    return UrlRejection(403, FORBIDDEN, ACCESS_DENIED)


def http_response(payload: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Map a function's result to HTTP as Lambda does for payload format 2.0.

    A JSON object with `statusCode` describes the response; any other result is returned as
    a 200 `application/json` body, unchanged."""
    try:
        value = jsontext.loads(payload) if payload else None
    except ValueError:  # also too-deep nesting
        value = None
    if not isinstance(value, dict) or "statusCode" not in value:
        return 200, [("content-type", "application/json")], payload
    try:
        status = int(value["statusCode"])
        if not 100 <= status <= 599:
            raise ValueError(status)
        headers = [
            (str(k), header_value(v))
            for k, v in (value.get("headers") or {}).items()
            if str(k).lower() not in HOP_BY_HOP
        ]
        cookies = [str(c) for c in value.get("cookies") or []]
        content = _body_bytes(value.get("body"), bool(value.get("isBase64Encoded")))
    except (TypeError, ValueError, AttributeError, binascii.Error):
        raise UrlRejection(502, "Internal Server Error") from None
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    headers += [("set-cookie", cookie) for cookie in cookies]
    return status, headers, content


def header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        raise TypeError("header values must be scalars")
    return str(value)


def _body_bytes(body: Any, is_base64: bool) -> bytes:
    if body is None:
        return b""
    if not isinstance(body, str):
        return json.dumps(body).encode()
    if is_base64:
        return base64.b64decode(body, validate=True)
    return body.encode()


def rejection_for(exc: LambdaError) -> UrlRejection:
    if exc.status == 429:
        return UrlRejection(429, "Rate Exceeded.")
    if exc.status == 413:
        return UrlRejection(413, "Request Entity Too Large")
    if exc.status == 404:
        return UrlRejection(404, "Not Found")
    if exc.status >= 500:
        return UrlRejection(exc.status, "Internal Server Error")
    return UrlRejection(exc.status if exc.status != 409 else 503, exc.message)
