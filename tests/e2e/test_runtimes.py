"""Node.js, custom `bootstrap` and AWS's own runtime client, through the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import create_function, make_zip, unique

WHEELS = Path(__file__).resolve().parents[2] / ".cache" / "wheels"


def invoke(lam, name: str, payload: object) -> tuple[dict, object]:  # noqa: ANN001
    response = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
    return response, json.loads(response["Payload"].read())


def test_node_commonjs_async(lam) -> None:
    name = unique("node-cjs")
    code = (
        "exports.handler = async (event, context) =>\n"
        "  ({got: event, id: context.awsRequestId, fn: context.functionName});\n"
    )
    create_function(
        lam, name, make_zip({"index.js": code}), Runtime="nodejs20.x", Handler="index.handler"
    )
    response, body = invoke(lam, name, {"x": 1})
    assert body["got"] == {"x": 1}
    assert body["fn"] == name
    assert body["id"] == response["ResponseMetadata"]["RequestId"]


def test_node_esm_and_callback(lam) -> None:
    name = unique("node-esm")
    code = "export const handler = async (event) => ({esm: true, n: event.n * 2});\n"
    create_function(
        lam, name, make_zip({"index.mjs": code}), Runtime="nodejs20.x", Handler="index.handler"
    )
    assert invoke(lam, name, {"n": 21})[1] == {"esm": True, "n": 42}
    name = unique("node-callback")
    code = "exports.handler = (event, context, callback) => { callback(null, {cb: event.v}); };\n"
    create_function(
        lam, name, make_zip({"index.js": code}), Runtime="nodejs20.x", Handler="index.handler"
    )
    assert invoke(lam, name, {"v": "yes"})[1] == {"cb": "yes"}


def test_node_error(lam) -> None:
    name = unique("node-error")
    code = "exports.handler = async () => { throw new TypeError('nope'); };\n"
    create_function(
        lam, name, make_zip({"index.js": code}), Runtime="nodejs20.x", Handler="index.handler"
    )
    response, body = invoke(lam, name, {})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "nope"


CUSTOM_RUNTIME = r"""
import http.client, json, os
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
conn = http.client.HTTPConnection(api)
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    event = json.loads(r.read())
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    body = json.dumps({"custom": True, "echo": event, "handler": os.environ["_HANDLER"]})
    conn.request("POST", f"/2018-06-01/runtime/invocation/{rid}/response", body)
    conn.getresponse().read()
"""


def test_custom_bootstrap(lam) -> None:
    name = unique("provided")
    files = {
        "bootstrap": "#!/bin/sh\nexec /usr/bin/python3.11 /var/task/runtime.py\n",
        "runtime.py": CUSTOM_RUNTIME,
    }
    create_function(
        lam,
        name,
        make_zip(files, executable=("bootstrap",)),
        Runtime="provided.al2023",
        Handler="my.handler",
    )
    assert invoke(lam, name, {"a": 1})[1] == {
        "custom": True,
        "echo": {"a": 1},
        "handler": "my.handler",
    }


def awslambdaric_dir(tmp: Path) -> Path | None:
    target = tmp / "ric"
    wheels = sorted(WHEELS.glob("awslambdaric-*.whl")) if WHEELS.exists() else []
    source = ["--no-index", "--find-links", str(WHEELS)] if wheels else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--target",
            str(target),
            *source,
            "--python-version",
            "3.11",
            "--only-binary=:all:",
            "--platform",
            "manylinux2014_x86_64",
            "awslambdaric",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target if result.returncode == 0 else None


def test_awslambdaric_unchanged(lam, tmp_path: Path) -> None:
    ric = awslambdaric_dir(tmp_path)
    if ric is None:
        pytest.skip("awslambdaric could not be installed (no wheel cache, no registry)")
    files: dict[str, str | bytes] = {
        "bootstrap": (
            "#!/bin/sh\ncd /var/task\nexec /usr/bin/python3.11 -m awslambdaric app.handler\n"
        ),
        "app.py": (
            "def handler(event, context):\n"
            "    return {'ric': True, 'id': context.aws_request_id, 'event': event}\n"
        ),
    }
    for path in ric.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            files[str(path.relative_to(ric))] = path.read_bytes()
    name = unique("ric")
    create_function(
        lam,
        name,
        make_zip(files, executable=("bootstrap",)),
        Runtime="provided.al2023",
        Handler="app.handler",
        Timeout=30,
    )
    response, body = invoke(lam, name, {"hello": "ric"})
    assert body == {
        "ric": True,
        "id": response["ResponseMetadata"]["RequestId"],
        "event": {"hello": "ric"},
    }
