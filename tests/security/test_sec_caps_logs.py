"""Issue #10, item 3, logs: a function that prints far past the 4 MB log cap gets at most 4 MB
stored for its invoke, and the server stays healthy. The host counts the cap itself (see
`invoke/agent_limits.py`); these outputs also show a healthy agent's frames fit the host's
bounds, including control characters, which JSON escapes to six bytes each."""

from __future__ import annotations

import json
import time

import pytest
from helpers import Server, create_function, make_zip, unique

MAX_LOG_BYTES = 4 * 1024 * 1024
MAX_LINE = 256 * 1024

PRINTER = make_zip(
    {
        "app.py": r"""
import sys


def handler(event, context):
    mode = event["mode"]
    if mode == "lines":  # 50 MiB in lines of 1000 bytes
        line = "x" * 999 + "\n"
        for _ in range(50 * 1024):
            sys.stdout.write(line)
    elif mode == "one-line":  # 50 MiB without a newline
        block = "y" * (1024 * 1024)
        for _ in range(50):
            sys.stdout.write(block)
        sys.stdout.write("\n")
    elif mode == "empty":  # three million empty lines: each is a log event
        sys.stdout.write("\n" * 3_000_000)
    elif mode == "control":  # 5 MiB of control characters and invalid UTF-8
        sys.stdout.flush()
        sys.stdout.buffer.write(b"\x01" * (5 * 1024 * 1024) + b"\n")
        sys.stdout.buffer.write((b"\x02" * 98 + b"\xff\n") * 10_000)
    sys.stdout.flush()
    return {"ok": True, "mode": mode}
""",
    }
)


@pytest.fixture(scope="module")
def printer(lam) -> str:  # noqa: ANN001
    name = unique("sec-caps-logs")
    create_function(lam, name, PRINTER, Timeout=60, MemorySize=512)
    return name


def invoke_logs(server: Server, name: str, request_id: str) -> list[str]:
    """The stored messages of one invoke, START to REPORT (the log writer is asynchronous)."""
    logs = server.client("logs")
    deadline = time.monotonic() + 30
    while True:
        messages: list[str] = []
        pages = logs.get_paginator("filter_log_events").paginate(logGroupName=f"/aws/lambda/{name}")
        try:
            for page in pages:
                messages += [event["message"] for event in page["events"]]
        except logs.exceptions.ResourceNotFoundException:
            pass  # not written yet
        ours = [i for i, m in enumerate(messages) if request_id in m]
        if ours and messages[ours[-1]].startswith("REPORT"):
            start = max(i for i in ours if messages[i].startswith("START"))
            return messages[start : ours[-1] + 1]
        assert time.monotonic() < deadline, "the invoke's REPORT line never arrived"
        time.sleep(0.3)


@pytest.mark.parametrize("mode", ["lines", "one-line", "control"])
def test_output_past_the_cap_is_stored_up_to_4_mb(
    server: Server,
    lam,  # noqa: ANN001
    printer: str,
    mode: str,
) -> None:
    response = lam.invoke(FunctionName=printer, Payload=json.dumps({"mode": mode}).encode())
    assert "FunctionError" not in response, response["Payload"].read()
    assert json.loads(response["Payload"].read()) == {"ok": True, "mode": mode}
    request_id = response["ResponseMetadata"]["RequestId"]
    messages = invoke_logs(server, printer, request_id)
    output = [m for m in messages if not m.startswith(("START", "END", "REPORT"))]
    stored = sum(len(m.encode()) for m in output)
    assert MAX_LOG_BYTES - 2 * MAX_LINE < stored <= MAX_LOG_BYTES, stored
    assert max(len(m.encode()) for m in output) <= MAX_LINE + 1
    assert messages[-1].startswith("REPORT") and messages[-2].startswith("END")
    # The server is healthy: the same environment answers the next invoke.
    again = lam.invoke(FunctionName=printer, Payload=b'{"mode": "quiet"}')
    assert json.loads(again["Payload"].read()) == {"ok": True, "mode": "quiet"}


def test_a_flood_of_empty_lines_is_capped_not_fatal(lam, printer: str) -> None:  # noqa: ANN001
    """Lines count against the cap (newline included): the agent's frame stays within what
    the host accepts, so the invoke succeeds instead of losing its environment."""
    response = lam.invoke(FunctionName=printer, Payload=b'{"mode": "empty"}')
    assert "FunctionError" not in response, response["Payload"].read()
    assert json.loads(response["Payload"].read()) == {"ok": True, "mode": "empty"}
    again = lam.invoke(FunctionName=printer, Payload=b'{"mode": "quiet"}')
    assert json.loads(again["Payload"].read()) == {"ok": True, "mode": "quiet"}
