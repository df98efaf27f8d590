"""EnvironmentPool on a fake backend (fake_backend.py): where requests run, reuse of warm
environments, freezing, keepalive, retirement and the host's capacity. The same pool on real
sandboxes is tests/sandbox/test_pool.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from fake_backend import FakeBackend

from lambdahost.control.sts.sessions import Sessions
from lambdahost.control.sts.tokens import TokenKey
from lambdahost.errors import TooManyRequests
from lambdahost.invoke import pool as pool_module
from lambdahost.invoke.capacity import HostCapacity
from lambdahost.invoke.model import FunctionSpec, InvokeRequest, InvokeResult
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.sandbox.api import SandboxError


def spec(tmp_path: Path, name: str = "fn", memory_mb: int = 128, **changes: object) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
        version="$LATEST",
        revision_id="r1",
        runtime="python3.11",
        handler="app.handler",
        code_dir=tmp_path,
        memory_mb=memory_mb,
        **{"timeout_s": 3, **changes},  # type: ignore[arg-type]
    )


def run(
    backend: FakeBackend,
    tmp_path: Path,
    body: Callable[[EnvironmentPool], Awaitable[None]],
    **options: object,
) -> None:
    async def main() -> None:
        # runtime_root: nothing to precompile, and the fake backend mounts nothing anyway.
        pool = EnvironmentPool(backend, runtime_root=tmp_path, **options)  # type: ignore[arg-type]
        await pool.start()
        try:
            await asyncio.wait_for(body(pool), 20)
        finally:
            await pool.close()

    asyncio.run(main())


async def call(pool: EnvironmentPool, fn: FunctionSpec, event: object = None) -> dict:
    result = await invoke(pool, fn, event)
    assert result.function_error is None, result.payload
    return json.loads(result.payload)


async def invoke(pool: EnvironmentPool, fn: FunctionSpec, event: object = None) -> InvokeResult:
    request = InvokeRequest(str(uuid.uuid4()), json.dumps(event).encode(), fn.arn)
    return await pool.invoke(fn, request)


def texts(result: InvokeResult) -> list[str]:
    return [text.split(" RequestId")[0].split(":")[0] for _, text in result.log_lines]


def test_cold_start_then_warm_reuse(backend: FakeBackend, tmp_path: Path) -> None:
    fn = spec(tmp_path)

    async def body(pool: EnvironmentPool) -> None:
        cold = await invoke(pool, fn, {"n": 1})
        assert cold.init_duration_ms is not None
        assert json.loads(cold.payload)["event"] == {"n": 1}
        assert "INIT_START Runtime Version" in texts(cold) and "fake init\n" in texts(cold)
        warm = await invoke(pool, fn, {"n": 2})
        assert warm.init_duration_ms is None and warm.log_stream == cold.log_stream
        assert json.loads(warm.payload)["invokes"] == 2
        assert texts(warm)[0] == "START" and texts(warm)[-2:] == ["END", "REPORT"]

    run(backend, tmp_path, body)
    assert len(backend.started) == 1 and backend.started[0].destroyed and backend.closed
    assert backend.stale_cleaned == 1  # start() cleans up after an earlier server first


def test_concurrent_requests_get_their_own_environments(
    backend: FakeBackend, tmp_path: Path
) -> None:
    fn = spec(tmp_path)

    async def body(pool: EnvironmentPool) -> None:
        answers = await asyncio.gather(*(call(pool, fn, i) for i in range(4)))
        assert len({a["sandbox"] for a in answers}) == 4
        assert pool.capacity.memory_held == 4 * 128
        # Then the warm ones serve, most recently used first, and no new one starts.
        again = await asyncio.gather(*(call(pool, fn, i) for i in range(4)))
        assert {a["sandbox"] for a in again} == {a["sandbox"] for a in answers}

    run(backend, tmp_path, body)
    assert len(backend.started) == 4


def test_environments_are_per_function_version_and_revision(
    backend: FakeBackend, tmp_path: Path
) -> None:
    fn = spec(tmp_path)

    async def body(pool: EnvironmentPool) -> None:
        first = await call(pool, fn)
        other = await call(pool, spec(tmp_path, "other"))
        published = await call(pool, replace(fn, version="1"))
        assert len({first["sandbox"], other["sandbox"], published["sandbox"]}) == 3
        changed = await call(pool, replace(fn, revision_id="r2"))  # a new configuration
        assert changed["sandbox"] != first["sandbox"]
        await asyncio.sleep(0.05)  # the old revision's environment is discarded meanwhile
        assert backend.started[0].destroyed
        assert not backend.started[1].destroyed and not backend.started[2].destroyed

    run(backend, tmp_path, body)


def test_idle_environments_are_frozen_and_thawed_for_reuse(
    backend: FakeBackend, tmp_path: Path
) -> None:
    fn = spec(tmp_path)

    async def body(pool: EnvironmentPool) -> None:
        await call(pool, fn)
        sandbox = backend.started[0]
        await asyncio.sleep(pool_module.FREEZE_AFTER_S * 4)
        assert sandbox.frozen
        await call(pool, fn)
        assert not sandbox.frozen and len(backend.started) == 1

    run(backend, tmp_path, body)


def test_keepalive_reclaims_idle_environments(backend: FakeBackend, tmp_path: Path) -> None:
    fn = spec(tmp_path)

    async def body(pool: EnvironmentPool) -> None:
        await call(pool, fn)
        deadline = time.monotonic() + 15  # the reaper runs on a loaded host's schedule
        # The sandbox is destroyed a moment before the pool gives its memory back: wait for both.
        while time.monotonic() < deadline and not (
            backend.started[0].destroyed and pool.capacity.memory_held == 0
        ):
            await asyncio.sleep(0.02)
        assert backend.started[0].destroyed and pool.capacity.memory_held == 0
        await call(pool, fn)  # and the next request simply starts a new one
        assert len(backend.started) == 2

    run(backend, tmp_path, body, keepalive_s=0.1)


def test_retire_destroys_a_functions_idle_environments(
    backend: FakeBackend, tmp_path: Path
) -> None:
    fn, other = spec(tmp_path), spec(tmp_path, "other")

    async def body(pool: EnvironmentPool) -> None:
        await asyncio.gather(call(pool, fn), call(pool, fn), call(pool, other))
        await pool.retire(fn.arn)
        assert [s.spec.env["AWS_LAMBDA_FUNCTION_NAME"] for s in backend.live] == ["other"]

    run(backend, tmp_path, body)


def test_capacity_evicts_the_least_recently_used_idle_environment(
    backend: FakeBackend, tmp_path: Path
) -> None:
    a, b, c = (spec(tmp_path, name) for name in "abc")

    async def body(pool: EnvironmentPool) -> None:
        await call(pool, a)
        await call(pool, b)  # a is now the least recently used
        await call(pool, c)  # needs room: a goes
        live = [s.spec.env["AWS_LAMBDA_FUNCTION_NAME"] for s in backend.live]
        assert sorted(live) == ["b", "c"]
        assert pool.capacity.memory_held == 256

    run(backend, tmp_path, body, capacity=HostCapacity(memory_mb=256))


def test_capacity_throttles_when_nothing_can_make_room(
    backend: FakeBackend, tmp_path: Path
) -> None:
    async def body(pool: EnvironmentPool) -> None:
        with pytest.raises(TooManyRequests, match="more than this host's budget") as caught:
            await call(pool, spec(tmp_path, "huge", memory_mb=512))
        assert caught.value.status == 429 and caught.value.headers["Retry-After"]
        busy = [await pool.admit(spec(tmp_path, name)) for name in "ab"]  # both in use
        with pytest.raises(TooManyRequests, match="no room"):
            await pool.admit(spec(tmp_path, "c"))
        for env in busy:
            pool.abandon(env)
        assert pool.capacity.memory_held == 0  # never started: nothing held any more
        await call(pool, spec(tmp_path, "c"))

    run(backend, tmp_path, body, capacity=HostCapacity(memory_mb=256))
    assert len(backend.started) == 1


def test_a_sandbox_that_cannot_start_raises_and_holds_nothing(
    backend: FakeBackend, tmp_path: Path
) -> None:
    backend.fail_with = SandboxError("no namespaces here")

    async def body(pool: EnvironmentPool) -> None:
        with pytest.raises(SandboxError, match="no namespaces"):
            await call(pool, spec(tmp_path))
        assert pool.capacity.memory_held == 0
        backend.fail_with = None
        await call(pool, spec(tmp_path))

    run(backend, tmp_path, body, capacity=HostCapacity(memory_mb=128))


@pytest.mark.parametrize(
    "mode, error_type", [("crash", "Runtime.ExitError"), ("init_error", "Runtime.Fake")]
)
def test_a_broken_environment_is_never_reused(
    backend: FakeBackend, tmp_path: Path, mode: str, error_type: str
) -> None:
    fn = spec(tmp_path, environment={"FAKE_MODE": mode})

    async def body(pool: EnvironmentPool) -> None:
        for _ in range(2):
            result = await invoke(pool, fn)
            assert result.function_error == "Unhandled"
            assert json.loads(result.payload)["errorType"] == error_type
        await asyncio.sleep(0.05)
        assert backend.live == [] and pool.capacity.memory_held == 0

    run(backend, tmp_path, body)
    assert len(backend.started) == 2  # one per request: the broken one was discarded


def test_environments_are_replaced_before_their_credentials_expire(
    backend: FakeBackend, tmp_path: Path
) -> None:
    # 2 s credentials, a 0.2 s margin and a 1 s timeout: reusable for 0.8 s after issue.
    sessions = Sessions(TokenKey(b"k" * 32), function_lifetime_s=2.0)
    fn = spec(tmp_path, role="arn:aws:iam::000000000000:role/worker", timeout_s=1)

    async def body(pool: EnvironmentPool) -> None:
        first = await call(pool, fn)
        keys = [s.spec.env["AWS_ACCESS_KEY_ID"] for s in backend.started]
        assert len(keys) == 1 and keys[0].startswith("ASIA")
        assert backend.started[0].spec.env["AWS_SESSION_TOKEN"]
        assert (await call(pool, fn))["sandbox"] == first["sandbox"]  # fresh: reused
        await asyncio.sleep(0.9)
        renewed = await call(pool, fn)
        assert renewed["sandbox"] != first["sandbox"]
        assert backend.started[1].spec.env["AWS_ACCESS_KEY_ID"] != keys[0]
        await asyncio.sleep(0.05)
        assert backend.started[0].destroyed  # taken out, not parked again

    run(backend, tmp_path, body, credentials=sessions)


def test_provisioned_environments_are_replaced_early(backend: FakeBackend, tmp_path: Path) -> None:
    sessions = Sessions(TokenKey(b"k" * 32), function_lifetime_s=2.0)
    fn = spec(tmp_path, role="arn:aws:iam::000000000000:role/worker", timeout_s=1)

    async def body(pool: EnvironmentPool) -> None:
        failure, _, _ = await pool.prewarm(fn)
        assert failure is None and pool.provisioned(fn) == 1
        # A margin before it stops taking requests (0.8 s) it no longer counts (0.6 s), so
        # provisioned concurrency starts its replacement while it still serves.
        await asyncio.sleep(0.65)
        assert pool.provisioned(fn) == 0 and not backend.started[0].destroyed
        deadline = time.monotonic() + 10  # then the reaper takes it, provisioned or not
        while not backend.started[0].destroyed and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert backend.started[0].destroyed

    run(backend, tmp_path, body, credentials=sessions, keepalive_s=0.2)


def test_a_function_without_a_role_of_its_account_gets_no_credentials(
    backend: FakeBackend, tmp_path: Path
) -> None:
    sessions = Sessions(TokenKey(b"k" * 32), function_lifetime_s=2.0)
    other_account = spec(tmp_path, role="arn:aws:iam::000000000009:role/theirs")

    async def body(pool: EnvironmentPool) -> None:
        await call(pool, other_account)
        assert "AWS_ACCESS_KEY_ID" not in backend.started[0].spec.env

    run(backend, tmp_path, body, credentials=sessions)
