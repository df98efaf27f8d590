"""A function calls the platform with the SDK its runtime ships, exactly as on AWS: no
endpoint and no keys in its code. `AWS_ENDPOINT_URL` points the SDK at lambdahost through the
function network, and the execution role's credentials sign the calls (the session's server,
whose functions have networking by default)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import ROLE, Server, create_function, make_zip, unique

CALLER_PY = """
import json
import boto3

lam = boto3.client("lambda")

def handler(event, context):
    if event.get("whoami"):
        return boto3.client("sts").get_caller_identity()["Arn"]
    response = lam.invoke(FunctionName=event["target"], Payload=json.dumps(event["payload"]))
    return {"status": response["StatusCode"], "result": json.loads(response["Payload"].read())}
"""

CALLER_NODE_CJS = """
const { LambdaClient, InvokeCommand } = require("@aws-sdk/client-lambda");
const client = new LambdaClient({});
exports.handler = async (event) => {
  const out = await client.send(new InvokeCommand({
    FunctionName: event.target, Payload: JSON.stringify(event.payload),
  }));
  return { status: out.StatusCode, result: JSON.parse(Buffer.from(out.Payload).toString()) };
};
"""

CALLER_NODE_ESM = """
import { LambdaClient, InvokeCommand } from "@aws-sdk/client-lambda";
import { STSClient, GetCallerIdentityCommand } from "@aws-sdk/client-sts";
const client = new LambdaClient({});
const me = await new STSClient({}).send(new GetCallerIdentityCommand({}));  // top-level await
export const handler = async (event) => {
  const out = await client.send(new InvokeCommand({
    FunctionName: event.target, Payload: JSON.stringify(event.payload),
  }));
  return { me: me.Arn, result: JSON.parse(Buffer.from(out.Payload).toString()) };
};
"""

TARGET = "def handler(event, context):\n    return {'doubled': event['n'] * 2}\n"


@pytest.fixture(scope="module")
def target(server: Server) -> str:
    name = unique("target")
    create_function(server.client(), name, make_zip({"app.py": TARGET}))
    return name


def invoke(lam: Any, name: str, event: dict[str, Any]) -> Any:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload


def test_python_function_invokes_another_with_boto3(server: Server, target: str) -> None:
    lam = server.client()
    name = unique("caller-py")
    create_function(lam, name, make_zip({"app.py": CALLER_PY}), Timeout=30)
    result = invoke(lam, name, {"target": target, "payload": {"n": 21}})
    assert result == {"status": 200, "result": {"doubled": 42}}
    # ... signed with its execution role's credentials: STS sees the role session.
    role_name = ROLE.rsplit("/", 1)[1]
    assert invoke(lam, name, {"whoami": True}) == (
        f"arn:aws:sts::000000000000:assumed-role/{role_name}/{name}"
    )


def test_nodejs_function_invokes_another_with_the_js_sdk(server: Server, target: str) -> None:
    lam = server.client()
    name = unique("caller-node")
    create_function(
        lam, name, make_zip({"index.js": CALLER_NODE_CJS}),
        Runtime="nodejs20.x", Handler="index.handler", Timeout=30,
    )  # fmt: skip
    result = invoke(lam, name, {"target": target, "payload": {"n": 5}})
    assert result == {"status": 200, "result": {"doubled": 10}}


def test_es_module_with_top_level_await_calls_the_platform(server: Server, target: str) -> None:
    lam = server.client()
    name = unique("caller-esm")
    files = {"index.js": CALLER_NODE_ESM, "package.json": '{"type": "module"}'}
    create_function(
        lam, name, make_zip(files), Runtime="nodejs20.x", Handler="index.handler", Timeout=30
    )
    result = invoke(lam, name, {"target": target, "payload": {"n": 1}})
    assert result["result"] == {"doubled": 2}
    assert result["me"].endswith(f":assumed-role/{ROLE.rsplit('/', 1)[1]}/{name}")


def test_the_functions_own_endpoint_setting_wins(server: Server, target: str) -> None:
    lam = server.client()
    name = unique("caller-own")
    create_function(
        lam, name, make_zip({"app.py": CALLER_PY}), Timeout=10,
        Environment={"Variables": {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}},
    )  # fmt: skip
    response = lam.invoke(FunctionName=name, Payload=json.dumps({"whoami": True}))
    payload = json.loads(response["Payload"].read())
    assert response.get("FunctionError") == "Unhandled"  # it tried its own (dead) endpoint
    assert "127.0.0.1:1" in payload["errorMessage"]
