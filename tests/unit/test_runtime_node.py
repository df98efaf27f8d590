"""The nodejs20.x runtime driven by the agent on the host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_harness import AgentProcess, agent_starter, make_spec, write

agents = pytest.fixture(agent_starter, name="agents")


def start(agents, code: Path, handler: str = "index.handler") -> AgentProcess:
    agent = agents(make_spec(code, "nodejs20.x", handler))
    header, body = agent.receive()
    assert header["t"] == "ready", (header, body)
    return agent


def lines(header: dict) -> list[str]:
    return [text for _, text in header["logs"]]


CONTEXT = """
let calls = 0;
exports.handler = async (event, context) => {
  calls += 1;
  console.log("event", event.n);
  return {
    calls,
    id: context.awsRequestId,
    fn: context.functionName,
    version: context.functionVersion,
    arn: context.invokedFunctionArn,
    memory: context.memoryLimitInMB,
    group: context.logGroupName,
    stream: context.logStreamName,
    remaining: context.getRemainingTimeInMillis(),
    custom: context.clientContext && context.clientContext.custom,
    identity: context.identity && context.identity.cognitoIdentityId,
    waits: context.callbackWaitsForEmptyEventLoop,
    trace: process.env._X_AMZN_TRACE_ID,
    env: process.env.AWS_EXECUTION_ENV,
  };
};
"""


def test_commonjs_async_context_and_console(tmp_path: Path, agents) -> None:
    write(tmp_path, "index.js", CONTEXT)
    agent = start(agents, tmp_path)
    context = json.dumps({"custom": {"k": "v"}})
    identity = json.dumps({"cognitoIdentityId": "id-1"})
    request_id = agent.invoke(b'{"n": 7}', client_context=context, identity=identity)
    header, body = agent.receive()
    result = json.loads(body)
    assert header["ok"], body
    assert result["calls"] == 1 and result["id"] == request_id
    assert (result["fn"], result["version"], result["memory"]) == ("fn", "$LATEST", "128")
    assert result["group"] == "/aws/lambda/fn" and result["stream"].endswith("]abc")
    assert 5000 < result["remaining"] <= 10_000
    assert result["custom"] == {"k": "v"} and result["identity"] == "id-1"
    assert result["waits"] is True and result["trace"].startswith("Root=1-")
    assert result["env"] == "AWS_Lambda_nodejs20.x"
    [line] = lines(header)
    stamp, logged_id, level, message = line.split("\t")
    assert (logged_id, level, message) == (request_id, "INFO", "event 7\n")
    assert stamp.endswith("Z")
    assert json.loads(agent.call(b'{"n": 1}')[1])["calls"] == 2


def test_esm_mjs_and_package_type_module(tmp_path: Path, agents) -> None:
    write(tmp_path, "index.mjs", "export const handler = async (e) => ({esm: e.n * 2});\n")
    agent = start(agents, tmp_path)
    assert json.loads(agent.call(b'{"n": 21}')[1]) == {"esm": 42}
    other = tmp_path / "typed"
    write(other, "package.json", '{"type": "module"}')
    write(other, "lib/app.js", "export async function main(e) { return 'module-js'; }\n")
    agent = start(agents, other, "lib/app.main")
    assert agent.call()[1] == b'"module-js"'


def test_esm_with_top_level_await(tmp_path: Path, agents) -> None:
    """An ES module index.js that awaits at its top level (require() refuses those: AWS
    imports it), next to a .cjs handler in the same "type": "module" package."""
    typed = tmp_path / "typed"
    write(typed, "package.json", '{"type": "module"}')
    code = (
        "const ready = await new Promise((done) => setTimeout(() => done('awaited'), 20));\n"
        "export const handler = async () => ({ready, kind: typeof require});\n"
    )
    write(typed, "index.js", code)
    result = json.loads(start(agents, typed).call()[1])
    assert result == {"ready": "awaited", "kind": "undefined"}
    write(typed, "old.cjs", "exports.handler = async () => typeof require;\n")
    assert start(agents, typed, "old.handler").call()[1] == b'"function"'
    # An ES module .js outside any "type": "module" package: Node tells it by its syntax.
    plain = tmp_path / "plain"
    code = "const n = await Promise.resolve(5);\nexport const handler = async () => n;\n"
    write(plain, "index.js", code)
    assert start(agents, plain).call()[1] == b"5"


def test_esm_searches_node_path(tmp_path: Path, agents) -> None:
    """ES modules find packages in NODE_PATH's node_modules directories, in order, after the
    node_modules above them (what AWS's runtime does for layers and its SDK)."""
    first, second = tmp_path / "first" / "node_modules", tmp_path / "second" / "node_modules"
    package = '{"name": "%s", "exports": "./index.js", "type": "module"}'
    write(first / "shared", "package.json", package % "shared")
    write(first / "shared", "index.js", "export const who = 'first';\n")
    write(second / "shared", "package.json", package % "shared")
    write(second / "shared", "index.js", "export const who = 'second';\n")
    write(second / "only2", "package.json", package % "only2")
    write(second / "only2", "index.js", "export const who = 'only2';\n")
    code = tmp_path / "code"
    write(code / "node_modules" / "bundled", "package.json", package % "bundled")
    write(code / "node_modules" / "bundled", "index.js", "export const who = 'bundled';\n")
    write(
        code,
        "index.mjs",
        "import { who as a } from 'shared';\nimport { who as b } from 'only2';\n"
        "import { who as c } from 'bundled';\nexport const handler = async () => [a, b, c];\n",
    )
    spec = make_spec(
        code, "nodejs20.x", "index.handler", environment={"NODE_PATH": f"{first}:{second}"}
    )
    agent = agents(spec)
    assert agent.receive()[0]["t"] == "ready"
    assert json.loads(agent.call()[1]) == ["first", "only2", "bundled"]
    write(code, "missing.mjs", "import 'nowhere-at-all';\nexport const handler = () => 1;\n")
    agent = agents(
        make_spec(code, "nodejs20.x", "missing.handler", environment={"NODE_PATH": str(first)})
    )
    header, body = agent.receive()
    assert header["error_type"] == "Runtime.ImportModuleError"
    assert "Cannot find package 'nowhere-at-all'" in json.loads(body)["errorMessage"]


def test_callback_handlers(tmp_path: Path, agents) -> None:
    code = """
exports.cb = (event, context, callback) => { callback(null, {cb: event.v}); };
exports.waits = (event, context, callback) => {
  setTimeout(() => console.log("timer done"), 50);
  callback(null, "after timer");
};
exports.nowait = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  setTimeout(() => console.log("late timer"), 300);
  callback(null, "immediately");
};
exports.failing = (event, context, callback) => callback(new Error("cb error"));
exports.nested = { deeper: { fn: async () => "nested" } };
"""
    write(tmp_path, "index.js", code)
    assert json.loads(start(agents, tmp_path, "index.cb").call(b'{"v": "yes"}')[1]) == {"cb": "yes"}
    header, body = start(agents, tmp_path, "index.waits").call()
    assert body == b'"after timer"' and "timer done" in "".join(lines(header))
    header, body = start(agents, tmp_path, "index.nowait").call()
    assert body == b'"immediately"' and "late timer" not in "".join(lines(header))
    header, body = start(agents, tmp_path, "index.failing").call()
    assert header["ok"] is False and json.loads(body)["errorMessage"] == "cb error"
    assert start(agents, tmp_path, "index.nested.deeper.fn").call()[1] == b'"nested"'


def test_error_shape(tmp_path: Path, agents) -> None:
    write(tmp_path, "index.js", "exports.handler = async () => { throw new TypeError('nope'); };\n")
    agent = start(agents, tmp_path)
    header, body = agent.call()
    error = json.loads(body)
    assert header["ok"] is False and header["error_type"] == "TypeError"
    assert list(error) == ["errorType", "errorMessage", "trace"]
    assert error["errorMessage"] == "nope" and error["trace"][0] == "TypeError: nope"
    [line] = lines(header)
    assert "\tERROR\tInvoke Error \t" in line and '"stack":["TypeError: nope"' in line


def test_import_errors(tmp_path: Path, agents) -> None:
    agent = agents(make_spec(tmp_path, "nodejs20.x", "missing.handler"))
    header, body = agent.receive()
    assert header["t"] == "init_error" and header["error_type"] == "Runtime.ImportModuleError"
    assert "Cannot find module 'missing'" in json.loads(body)["errorMessage"]
    write(tmp_path, "index.js", "exports.other = 1;\n")
    agent = agents(make_spec(tmp_path, "nodejs20.x", "index.handler"))
    header, body = agent.receive()
    assert header["error_type"] == "Runtime.HandlerNotFound"
    assert json.loads(body)["errorMessage"] == "index.handler is undefined or not exported"
    write(tmp_path, "bad.js", "exports.handler = () => {;\n")
    agent = agents(make_spec(tmp_path, "nodejs20.x", "bad.handler"))
    header, _ = agent.receive()
    assert header["error_type"] == "Runtime.UserCodeSyntaxError"


def test_uncaught_exception_fails_invoke_and_exits(tmp_path: Path, agents) -> None:
    code = (
        "exports.handler = (e, c, cb) => { setTimeout(() => { throw new Error('late'); }, 10); };\n"
    )
    write(tmp_path, "index.js", code)
    agent = start(agents, tmp_path)
    header, body = agent.call()
    assert header["ok"] is False and json.loads(body)["errorMessage"] == "late"
    header, _ = agent.receive()
    assert header["t"] == "exit" and header["status"] == 129
