"""The zygote backend's own promises: python3.11 starts from pre-imported code (agent in-process,
runtime forked) with a process state a freshly exec'd runtime would have; the zygote can die
without taking sandboxes along; `auto` falls back to bwrap with a reason. Isolation itself is
checked on both backends by test_sandbox.py and test_isolation.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from agent_harness import make_spec, write

from lambdahost.invoke.environment import provisions
from lambdahost.invoke.model import InvokeRequest, InvokeResult
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.sandbox import Exec, SandboxError, SandboxSpec, open_backend
from lambdahost.sandbox.bwrap import BwrapBackend
from lambdahost.sandbox.zygote import ZygoteBackend

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

INSPECT = """
import logging, os, random, sys, time
logger = logging.getLogger()
logger.setLevel(logging.INFO)
started = time.time()

def status(pid):
    fields = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status").read().splitlines())
    return {k: fields[k].strip() for k in ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs",
                                           "Seccomp")}

def handler(event, context):
    print("printed")
    logger.info("logged %s", 42)
    return {
        "cmdline": open("/proc/self/cmdline").read().split("\\0"),
        "orig_argv": sys.orig_argv,
        "argv": sys.argv,
        "path": sys.path,
        "main": sys.modules["__main__"].__file__,
        "preloaded": "rapid.boot" in sys.modules,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "agent": status(1),
        "runtime": status("self"),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "env": sorted(os.environ),
        "random": random.random(),
        "stdout_buffered": sys.stdout.line_buffering,
        "stdout_write_through": sys.stdout.write_through,
        "stdin": os.readlink("/proc/self/fd/0"),
        "session_leader": os.getsid(0) == os.getpid(),
    }
"""


def run_pool(tmp_path: Path, body) -> None:  # noqa: ANN001
    async def main() -> None:
        backend = open_backend(tmp_path / "state", "zygote", provisions=provisions())
        pool = EnvironmentPool(backend)
        await pool.start()
        try:
            await body(pool)
        finally:
            await pool.close()
            backend.close()

    asyncio.run(main())


async def invoke(pool: EnvironmentPool, spec, payload: bytes = b"{}") -> InvokeResult:  # noqa: ANN001
    return await pool.invoke(spec, InvokeRequest(str(uuid.uuid4()), payload, spec.arn))


def test_python_starts_from_preloaded_code(tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code, "app.py", INSPECT)
    results: list[InvokeResult] = []

    async def body(pool: EnvironmentPool) -> None:
        for revision in ("r1", "r2"):  # two cold starts
            spec = make_spec(code, "python3.11", "app.handler", revision_id=revision)
            results.append(await invoke(pool, spec))

    run_pool(tmp_path, body)
    first, second = (json.loads(result.payload) for result in results)
    assert results[0].function_error is None, first
    # No exec: the runtime is a fork of the agent, itself forked from the zygote.
    assert first["cmdline"][:4] == ["/usr/bin/python3.11", "-I", "-S", "-"]
    assert first["preloaded"]
    # ... yet it looks like `python3.11 -u -S /var/runtime/python/bootstrap.py` started it.
    bootstrap = "/var/runtime/python/bootstrap.py"
    assert first["orig_argv"] == ["/usr/bin/python3.11", "-u", "-S", bootstrap]
    assert first["argv"] == [bootstrap]
    assert first["main"] == bootstrap
    assert first["path"][0] == "/var/task"
    assert "/var/runtime/python" not in first["path"]
    assert first["stdout_write_through"] and first["stdin"] == "/dev/null"
    assert first["session_leader"] and first["ppid"] == 1 and first["pid"] != 1
    assert first["fds"] == [0, 1, 2, 3, 4]  # stdio, the Runtime API connection, listdir's own
    assert not any(name.startswith("LAMBDAHOST_") for name in first["env"])
    assert "_HANDLER" in first["env"]
    # The agent (PID 1, never exec'd) and the runtime are both unprivileged and filtered.
    uid = first["agent"]["Uid"].split()[0]
    assert int(uid) >= 1_900_000_000  # a host uid of its own (sandbox/uids.py)
    for process in (first["agent"], first["runtime"]):
        assert process["Uid"].split() == [uid] * 4
        assert process["Gid"].split() == [uid] * 4
        assert int(process["CapEff"], 16) == 0 and int(process["CapBnd"], 16) == 0
        assert process["NoNewPrivs"] == "1" and process["Seccomp"] == "2"
    # Forked children reseed: two environments do not share random streams.
    assert first["random"] != second["random"]
    # Logging is AWS-formatted (the runtime's hook saw user code import `logging`).
    lines = [text for _, text in results[0].log_lines]
    assert "printed\n" in lines
    logged = [line for line in lines if line.startswith("[INFO]")]
    assert logged and logged[0].endswith(f"\t{results[0].request_id}\tlogged 42\n")


BOOTSTRAP_PY = """#!/usr/bin/python3.11 -S
import json, os, urllib.request
base = "http://%s/2018-06-01/runtime/invocation" % os.environ["AWS_LAMBDA_RUNTIME_API"]
with urllib.request.urlopen(base + "/next") as response:
    request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
seen = {"cmdline": open("/proc/self/cmdline").read().split("\\0")[:3], "uid": os.getuid()}
urllib.request.urlopen(urllib.request.Request(
    base + "/" + request_id + "/response", json.dumps(seen).encode(), method="POST"))
"""


def test_other_runtimes_are_execd(tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code, "bootstrap", BOOTSTRAP_PY, 0o755)
    results: list[InvokeResult] = []

    async def body(pool: EnvironmentPool) -> None:
        results.append(await invoke(pool, make_spec(code, "provided.al2023", "x.y")))

    run_pool(tmp_path, body)
    assert results[0].function_error is None, results[0].payload
    seen = json.loads(results[0].payload)
    assert seen["cmdline"] == ["/usr/bin/python3.11", "-S", "/var/task/bootstrap"]
    assert seen["uid"] >= 1_900_000_000  # unprivileged, its own (sandbox/uids.py)


def test_sandboxes_survive_the_zygote_and_it_restarts(tmp_path: Path) -> None:
    backend = open_backend(tmp_path / "state", "zygote", provisions=provisions())
    assert isinstance(backend, ZygoteBackend)

    async def run() -> tuple[int, int, int]:
        spec = SandboxSpec(sandbox_id="survivor", start=Exec(["/bin/sleep", "60"]), env={})
        survivor = await backend.start(spec)
        first_zygote = backend.zygote_pid
        os.kill(first_zygote, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert survivor.alive()
        assert survivor.stats().pids == 1
        # The next start notices and starts a new zygote.
        again = await backend.start(
            SandboxSpec(sandbox_id="again", start=Exec(["/bin/true"]), env={})
        )
        assert await asyncio.wait_for(again.wait(), 10) == 0
        await again.destroy()
        # The orphaned sandbox is still controllable; its end is seen through its pidfd.
        waiter = asyncio.ensure_future(survivor.wait())
        await survivor.destroy()
        status = await asyncio.wait_for(waiter, 10)
        return first_zygote, backend.zygote_pid, status

    try:
        first, second, status = asyncio.run(run())
    finally:
        backend.cleanup_stale()
        backend.close()
    assert first != second
    assert status == -9
    assert backend.cleanup_stale() == 0


def test_zygote_exits_with_its_backend(tmp_path: Path) -> None:
    backend = open_backend(tmp_path / "state", "zygote", provisions=provisions())
    assert isinstance(backend, ZygoteBackend)
    pid = backend.zygote_pid
    backend.close()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{pid}").exists()


def test_auto_falls_back_to_bwrap_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing = dataclasses.replace(provisions(), python=str(tmp_path / "no-python"))
    with caplog.at_level(logging.WARNING, logger="lambdahost.sandbox"):
        backend = open_backend(tmp_path / "state", "auto", provisions=missing)
    assert isinstance(backend, BwrapBackend)
    assert "zygote sandboxes unavailable" in caplog.text and "no-python" in caplog.text
    with pytest.raises(SandboxError):
        open_backend(tmp_path / "state", "zygote", provisions=missing)
    with pytest.raises(SandboxError):
        open_backend(tmp_path / "state", "firecracker", provisions=provisions())
    monkeypatch.setenv("LAMBDAHOST_SANDBOX", "bwrap")
    assert isinstance(open_backend(tmp_path / "state", provisions=provisions()), BwrapBackend)
