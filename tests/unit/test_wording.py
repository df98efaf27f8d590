"""Pure pieces of issue 12: Jackson's wording of bad JSON, and the access log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lambdahost.api.access_log import AccessLog
from lambdahost.control import jackson


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # As AWS answered it (https://github.com/alexcasalboni/aws-lambda-power-tuning/issues/148).
        (
            b"test data",
            f"Unrecognized token 'test': was expecting {jackson.VALUES}\n"
            ' at [Source: (byte[])"test data"; line: 1, column: 6]',
        ),
        # As AWS answered it (https://github.com/ballerina-platform/module-ballerina-c2c/issues/15).
        (
            b"0D",
            "Unexpected character ('D' (code 68)): Expected space separating root-level values\n"
            ' at [Source: (byte[])"0D"; line: 1, column: 3]',
        ),
        (
            b'{"a":1',
            "Unexpected end-of-input: expected close marker for Object (start marker at "
            '[Source: (byte[])"{"a":1"; line: 1, column: 1])\n'
            ' at [Source: (byte[])"{"a":1"; line: 1, column: 7]',
        ),
        (
            b"[\n1 2]",
            "Unexpected character ('2' (code 50)): was expecting comma to separate Array "
            'entries\n at [Source: (byte[])"[\n1 2]"; line: 2, column: 4]',
        ),
    ],
)
def test_jackson_wording(data: bytes, expected: str) -> None:
    assert jackson.describe(data) == expected


def test_jackson_truncates_the_source() -> None:
    text = jackson.describe(b"x" * 600)
    assert text.endswith('"[truncated 100 bytes]; line: 1, column: 601]')
    assert "Unrecognized token '" + "x" * 256 + "...'" in text


def test_access_log_line_without_query(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope, receive, send) -> None:  # noqa: ANN001
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"x-amzn-RequestId", b"req-1")],
            }
        )
        await send({"type": "http.response.body", "body": b"secret body"})

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message) -> None:  # noqa: ANN001
        pass

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/_lambdahost/code/abc",
        "raw_path": b"/_lambdahost/code/abc",
        "query_string": b"X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA",
        "headers": [(b"authorization", b"AWS4-HMAC-SHA256 Credential=AKIA")],
    }
    with caplog.at_level(logging.INFO, logger="lambdahost.access"):
        asyncio.run(AccessLog(app)(scope, receive, send))
    (record,) = [r for r in caplog.records if r.name == "lambdahost.access"]
    line = record.getMessage()
    assert line.startswith("GET /_lambdahost/code/abc 503 ") and line.endswith("ms req-1")
    for secret in ("deadbeef", "AKIA", "secret body", "X-Amz"):
        assert secret not in line
