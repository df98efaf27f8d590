"""Cold-start shortcuts: the zygote's pre-forked shells, and the python runtime forked from the
agent on the fresh (bwrap) path too. Both must leave the process state and isolation as the
slow way would (the full isolation checks run on both backends in test_isolation.py)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from agent_harness import make_spec, write
from test_zygote import INSPECT

from lambdahost.invoke.environment import provisions
from lambdahost.invoke.model import InvokeRequest, InvokeResult
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.sandbox import Exec, SandboxSpec, open_backend
from lambdahost.sandbox.zygote import ZygoteBackend
from lambdahost.sandbox.zygote_main import SHELL_SPARES

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def wait_for(predicate, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_zygote_spawns_from_waiting_shells_that_exit_with_it(tmp_path: Path) -> None:
    backend = open_backend(tmp_path / "state", "zygote", provisions=provisions())
    assert isinstance(backend, ZygoteBackend)
    zygote = backend.zygote_pid
    # Idle for a moment: the zygote forks its shells.
    assert wait_for(lambda: len(children(zygote)) >= SHELL_SPARES)
    shells = children(zygote)

    async def run() -> tuple[int, int]:
        spec = SandboxSpec(sandbox_id="from-shell", start=Exec(["/bin/sh", "-c", "exit 7"]), env={})
        sandbox = await backend.start(spec)
        status = await asyncio.wait_for(sandbox.wait(), 10)
        await sandbox.destroy()
        return sandbox.pid, status

    try:
        pid, status = asyncio.run(run())
        assert pid in shells and status == 7
        assert wait_for(lambda: len(children(zygote)) >= SHELL_SPARES)  # refilled
        shells = children(zygote)
    finally:
        backend.cleanup_stale()
        backend.close()
    assert wait_for(lambda: not any(Path(f"/proc/{shell}").exists() for shell in shells))


def test_fresh_path_forks_the_python_runtime_from_the_agent(tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code, "app.py", INSPECT)
    results: list[InvokeResult] = []

    async def main() -> None:
        backend = open_backend(tmp_path / "state", "bwrap", provisions=provisions())
        pool = EnvironmentPool(backend)
        await pool.start()
        try:
            for revision in ("r1", "r2"):  # two cold starts
                spec = make_spec(code, "python3.11", "app.handler", revision_id=revision)
                request = InvokeRequest(str(uuid.uuid4()), b"{}", spec.arn)
                results.append(await pool.invoke(spec, request))
        finally:
            await pool.close()
            backend.close()

    asyncio.run(main())
    first, second = (json.loads(result.payload) for result in results)
    assert results[0].function_error is None, first
    # No second interpreter: the runtime is a fork of the agent (`python3.11 -I -S -c ...`).
    assert first["cmdline"][:4] == ["/usr/bin/python3.11", "-I", "-S", "-c"]
    bootstrap = "/var/runtime/python/bootstrap.py"
    assert first["orig_argv"] == ["/usr/bin/python3.11", "-u", "-S", bootstrap]
    assert first["argv"] == [bootstrap] and first["main"] == bootstrap
    assert first["path"][0] == "/var/task"
    assert first["stdout_write_through"] and first["stdin"] == "/dev/null"
    assert first["session_leader"] and first["ppid"] == 1 and first["pid"] != 1
    assert first["fds"] == [0, 1, 2, 3, 4]
    assert not any(name.startswith("LAMBDAHOST_") for name in first["env"])
    uid = first["agent"]["Uid"].split()[0]
    assert int(uid) >= 1_900_000_000  # a host uid of its own (sandbox/uids.py)
    for process in (first["agent"], first["runtime"]):
        assert process["Uid"].split() == [uid] * 4
        assert int(process["CapEff"], 16) == 0 and int(process["CapBnd"], 16) == 0
        assert process["NoNewPrivs"] == "1" and process["Seccomp"] == "2"
    assert first["random"] != second["random"]
    lines = [text for _, text in results[0].log_lines]
    assert "printed\n" in lines
    assert any(line.startswith("[INFO]") and line.endswith("\tlogged 42\n") for line in lines)
