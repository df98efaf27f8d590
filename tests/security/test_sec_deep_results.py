"""Never a 500 (issue 10, item 4), on the way out too: a function whose error document nests
100,000 deep gets the usual answers, not a RecursionError."""

from __future__ import annotations

from helpers import Server, create_function, make_zip, unique

# A custom runtime that answers every invoke with an error document nested 100,000 deep.
DEEP_ERROR = make_zip(
    {
        "bootstrap": """#!/usr/bin/python3.11 -S
import os, urllib.request
base = "http://%s/2018-06-01/runtime/invocation" % os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(base + "/next") as response:
        request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
    body = b"[" * 100_000 + b"]" * 100_000
    urllib.request.urlopen(urllib.request.Request(
        base + "/" + request_id + "/error", body, method="POST"))
"""
    },
    executable=("bootstrap",),
)


def test_deep_error_document_through_the_stream_api(server: Server, lam) -> None:  # noqa: ANN001
    name = unique("deep-error")
    create_function(lam, name, DEEP_ERROR, Runtime="provided.al2023", Handler="x")
    plain = lam.invoke(FunctionName=name)
    assert plain["FunctionError"] == "Unhandled"
    streamed = lam.invoke_with_response_stream(FunctionName=name)
    events = list(streamed["EventStream"])
    assert "InvokeComplete" in events[-1]
    assert events[-1]["InvokeComplete"]["ErrorCode"] == "Unhandled"
    assert "Traceback" not in server.log()
