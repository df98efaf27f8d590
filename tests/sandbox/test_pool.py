"""EnvironmentPool with real sandboxes: reuse, parallelism, failures, retirement."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from agent_harness import make_spec, write

from lambdahost.invoke.environment import provisions
from lambdahost.invoke.model import FunctionSpec, InvokeRequest, InvokeResult
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.sandbox import SandboxError, open_backend

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")


def run_with_pool(
    tmp_path: Path, body: Callable[[EnvironmentPool], Awaitable[None]], **options: float
) -> None:
    async def main() -> None:
        try:
            backend = open_backend(tmp_path / "state", provisions=provisions())
        except SandboxError as error:
            pytest.skip(f"no sandbox backend here: {error}")
        pool = EnvironmentPool(backend, **options)
        await pool.start()
        try:
            await body(pool)
        finally:
            await pool.close()

    asyncio.run(main())


def code_dir(tmp_path: Path, files: dict[str, str], name: str = "code") -> Path:
    directory = tmp_path / name
    for path, text in files.items():
        write(directory, path, text, 0o755 if path == "bootstrap" else 0o644)
    return directory


async def call(pool: EnvironmentPool, spec: FunctionSpec, event: object = None) -> InvokeResult:
    payload = json.dumps(event if event is not None else {}).encode()
    request = InvokeRequest(str(uuid.uuid4()), payload, spec.arn)
    return await pool.invoke(spec, request)


def texts(result: InvokeResult) -> list[str]:
    return [text for _, text in result.log_lines]


COUNTER = """
import os, threading, time
calls = 0
ticks = 0
def tick():
    global ticks
    while True:
        ticks += 1
        time.sleep(0.01)
threading.Thread(target=tick, daemon=True).start()
print("init output")
def handler(event, context):
    global calls
    calls += 1
    print("call", calls)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"calls": calls, "ticks": ticks, "uid": os.getuid(),
            "stream": context.log_stream_name}
"""


def test_cold_then_warm_reuse_and_logs(tmp_path: Path) -> None:
    spec = make_spec(code_dir(tmp_path, {"app.py": COUNTER}), "python3.11", "app.handler")

    async def body(pool: EnvironmentPool) -> None:
        cold = await call(pool, spec)
        assert cold.function_error is None, cold.payload
        first = json.loads(cold.payload)
        assert first["calls"] == 1 and first["uid"] != 0
        assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", cold.log_stream)
        assert first["stream"] == cold.log_stream
        assert cold.init_duration_ms is not None and cold.init_duration_ms > 0
        lines = texts(cold)
        assert lines[0].startswith("INIT_START Runtime Version: python:3.11.v1\t")
        assert lines[1:] == [
            "init output\n",
            f"START RequestId: {cold.request_id} Version: $LATEST\n",
            "call 1\n",
            f"END RequestId: {cold.request_id}\n",
            lines[-1],
        ]
        assert re.fullmatch(
            rf"REPORT RequestId: {cold.request_id}\tDuration: \d+\.\d\d ms\t"
            r"Billed Duration: \d+ ms\tMemory Size: 128 MB\tMax Memory Used: \d+ MB\t"
            r"Init Duration: \d+\.\d\d ms\t\n",
            lines[-1],
        )
        assert all(text.endswith("\n") for text in lines)
        await asyncio.sleep(0.5)  # frozen while idle: the ticker thread must not run
        warm = await call(pool, spec)
        second = json.loads(warm.payload)
        assert second["calls"] == 2 and warm.log_stream == cold.log_stream
        assert second["ticks"] - first["ticks"] < 20, (first, second)
        assert warm.init_duration_ms is None
        assert "Init Duration" not in texts(warm)[-1]
        assert texts(warm)[0].startswith("START RequestId")

    run_with_pool(tmp_path, body)


def test_parallel_invokes_get_separate_environments(tmp_path: Path) -> None:
    spec = make_spec(code_dir(tmp_path, {"app.py": COUNTER}), "python3.11", "app.handler")

    async def body(pool: EnvironmentPool) -> None:
        results = await asyncio.gather(*(call(pool, spec, {"sleep": 1.0}) for _ in range(3)))
        assert len({result.log_stream for result in results}) == 3
        # They ran at the same time: every one started before any ended (START/END stamps),
        # which holds however slow the host is.
        starts = [_stamp(r, "START RequestId") for r in results]
        ends = [_stamp(r, "END RequestId") for r in results]
        assert max(starts) < min(ends), (starts, ends)
        again = await asyncio.gather(*(call(pool, spec) for _ in range(3)))
        assert {r.log_stream for r in again} == {r.log_stream for r in results}

    run_with_pool(tmp_path, body)


def _stamp(result: InvokeResult, prefix: str) -> int:
    return next(ms for ms, line in result.log_lines if line.startswith(prefix))


def test_timeout_kills_and_next_invoke_works(tmp_path: Path) -> None:
    files = {"app.py": COUNTER}
    spec = make_spec(code_dir(tmp_path, files), "python3.11", "app.handler", timeout_s=1)

    async def body(pool: EnvironmentPool) -> None:
        result = await call(pool, spec, {"sleep": 30})
        assert result.function_error == "Unhandled"
        assert json.loads(result.payload) == {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {result.request_id} Error: "
            "Task timed out after 1.00 seconds",
        }
        lines = texts(result)
        assert re.fullmatch(
            rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z {result.request_id} "
            r"Task timed out after 1\.00 seconds\n",
            lines[-3],
        )
        assert "Status: timeout" in lines[-1] and "Duration: 1000.00 ms" in lines[-1]
        assert "call 1\n" in lines  # printed before the timeout, fetched from the agent
        after = await call(pool, spec)
        assert after.function_error is None and after.log_stream != result.log_stream

    run_with_pool(tmp_path, body)


def test_out_of_memory_and_crash(tmp_path: Path) -> None:
    code = """
import os
def handler(event, context):
    if event.get("oom"):
        hog = bytearray(300 * 1024 * 1024)
        hog[::4096] = b"x" * len(hog[::4096])
    if event.get("crash"):
        os._exit(3)
    return "fine"
"""
    spec = make_spec(code_dir(tmp_path, {"app.py": code}), "python3.11", "app.handler")

    async def body(pool: EnvironmentPool) -> None:
        oom = await call(pool, spec, {"oom": True})
        assert oom.function_error == "Unhandled"
        assert json.loads(oom.payload) == {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {oom.request_id} Error: "
            "Runtime exited with error: signal: killed",
        }
        assert "Runtime.ExitError\n" in texts(oom)
        assert oom.max_memory_used_mb >= 100
        assert (await call(pool, spec)).payload == b'"fine"'
        crash = await call(pool, spec, {"crash": True})
        assert json.loads(crash.payload)["errorMessage"].endswith(
            "Runtime exited with error: exit status 3"
        )
        assert (await call(pool, spec)).payload == b'"fine"'

    run_with_pool(tmp_path, body)


def test_init_error_then_fresh_environment(tmp_path: Path) -> None:
    spec = make_spec(
        code_dir(tmp_path, {"app.py": "import nothere\n"}), "python3.11", "app.handler"
    )

    async def body(pool: EnvironmentPool) -> None:
        first = await call(pool, spec)
        assert first.function_error == "Unhandled"
        error = json.loads(first.payload)
        assert error["errorType"] == "Runtime.ImportModuleError"
        assert error["errorMessage"] == "Unable to import module 'app': No module named 'nothere'"
        lines = texts(first)
        assert lines[1].startswith("[ERROR] Runtime.ImportModuleError")
        assert any(
            line.startswith("INIT_REPORT Init Duration: ") and "Status: error" in line
            for line in lines
        )
        second = await call(pool, spec)
        assert second.log_stream != first.log_stream
        assert json.loads(second.payload)["errorType"] == "Runtime.ImportModuleError"

    run_with_pool(tmp_path, body)


def test_init_exit_without_error_report(tmp_path: Path) -> None:
    files = {"bootstrap": "#!/bin/sh\necho starting\nexit 2\n"}
    spec = make_spec(code_dir(tmp_path, files), "provided.al2023", "x")

    async def body(pool: EnvironmentPool) -> None:
        result = await call(pool, spec)
        error = json.loads(result.payload)
        assert error["errorType"] == "Runtime.ExitError"
        assert error["errorMessage"].endswith("Runtime exited with error: exit status 2")
        assert "starting\n" in texts(result)

    run_with_pool(tmp_path, body)


def test_retire_and_revision_change(tmp_path: Path) -> None:
    spec = make_spec(code_dir(tmp_path, {"app.py": COUNTER}), "python3.11", "app.handler")

    async def body(pool: EnvironmentPool) -> None:
        first = await call(pool, spec)
        assert (await call(pool, spec)).log_stream == first.log_stream
        await pool.retire(spec.arn)
        second = await call(pool, spec)
        assert second.log_stream != first.log_stream and second.init_duration_ms is not None
        changed = make_spec(spec.code_dir, "python3.11", "app.handler", revision_id="r2")
        third = await call(pool, changed)
        assert third.log_stream != second.log_stream
        assert (await call(pool, changed)).log_stream == third.log_stream
        # a busy environment retired mid-invoke is destroyed when its invoke ends
        busy = asyncio.ensure_future(call(pool, changed, {"sleep": 0.5}))
        await asyncio.sleep(0.2)
        await pool.retire(spec.arn, "$LATEST")
        assert (await busy).function_error is None
        assert (await call(pool, changed)).init_duration_ms is not None

    run_with_pool(tmp_path, body)


def test_idle_environments_are_reclaimed(tmp_path: Path) -> None:
    spec = make_spec(code_dir(tmp_path, {"app.py": COUNTER}), "python3.11", "app.handler")

    async def body(pool: EnvironmentPool) -> None:
        first = await call(pool, spec)
        await asyncio.sleep(1.0)
        second = await call(pool, spec)
        assert second.log_stream != first.log_stream

    run_with_pool(tmp_path, body, keepalive_s=0.3)


def test_node_and_provided_in_sandbox(tmp_path: Path) -> None:
    node = make_spec(
        code_dir(tmp_path, {"index.mjs": "export const handler = async (e) => ({n: e.n + 1});\n"}),
        "nodejs20.x",
        "index.handler",
    )
    runtime = """#!/bin/sh
set -e
while true; do  # one short-lived process per event: the Runtime API is what persists
  /usr/bin/python3.11 -S -c '
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
with urllib.request.urlopen(api + "/invocation/next") as r:
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.load(r)
body = json.dumps({"provided": event, "handler": os.environ["_HANDLER"]}).encode()
urllib.request.urlopen(urllib.request.Request(api + f"/invocation/{rid}/response", body))
'
done
"""
    provided = make_spec(
        code_dir(tmp_path, {"bootstrap": runtime}, "provided"), "provided.al2023", "my.handler",
        name="custom", arn="arn:aws:lambda:us-east-1:000000000000:function:custom",
    )  # fmt: skip

    async def body(pool: EnvironmentPool) -> None:
        result = await call(pool, node, {"n": 1})
        assert result.payload == b'{"n":2}', result.payload
        assert texts(result)[0].startswith("INIT_START Runtime Version: nodejs:20.v1")
        result = await call(pool, provided, {"a": 1})
        assert json.loads(result.payload) == {"provided": {"a": 1}, "handler": "my.handler"}
        again = await call(pool, provided, {"a": 2})
        assert json.loads(again.payload)["provided"] == {"a": 2}

    run_with_pool(tmp_path, body)


def test_close_leaves_nothing_behind(tmp_path: Path) -> None:
    spec = make_spec(code_dir(tmp_path, {"app.py": COUNTER}), "python3.11", "app.handler")
    holder: dict[str, object] = {}

    async def body(pool: EnvironmentPool) -> None:
        await asyncio.gather(*(call(pool, spec) for _ in range(2)))
        backend = pool.backend
        holder["cgroup"] = backend.cgroup_layout.paths(backend.cgroup_parent)[0]  # type: ignore[attr-defined]

    run_with_pool(tmp_path, body)
    cgroup = holder["cgroup"]
    assert isinstance(cgroup, Path)
    leftovers = [p for p in cgroup.iterdir() if p.is_dir()] if cgroup.exists() else []
    assert leftovers == []
    assert not any((tmp_path / "state" / "sandboxes").iterdir())
