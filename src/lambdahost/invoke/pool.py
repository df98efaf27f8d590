"""The pool of execution environments: cold starts, warm reuse, freezing, reclaiming.

Contract (what `invoke/` relies on):
- `invoke()` runs one request in an environment of exactly that function revision: an idle
  one if there is one (thawed, most recently used first), else a new one; so N concurrent
  invokes run in N environments in parallel. One request at a time per environment.
- Function misbehaviour (errors, crashes, OOM, timeouts, init failures) comes back as an
  `InvokeResult` with `function_error="Unhandled"` and AWS's error document, never as an
  exception; broken environments are discarded and the next invoke starts a fresh one.
  Only a sandbox that cannot be created at all raises (`SandboxError`).
- Idle environments are frozen (cgroup freezer) and destroyed after `keepalive_s` unused.
- Credentials (given a `credentials` issuer): each new environment gets fresh credentials of
  its function's execution role. An environment takes a request only while they outlive the
  request's timeout plus a margin (`FunctionCredentials.renew_by`); past that it is retired
  and the next request gets a new environment, with new credentials. Provisioned ones count
  as provisioned only while they have a margin more, so a replacement starts early.
- Host capacity (see `capacity`): every live environment holds its MemorySize and
  EphemeralStorage against the host's budgets; a cold start that does not fit evicts idle
  environments (least recently used first, never provisioned ones), else raises
  TooManyRequests, as does one that cannot get a cold-start slot in time.
- The pool writes no logs of invokes and no log text: an invoke's lines (composed by
  `reports`) come back with its result, for the invoker to write. Only what environments print
  outside any invoke (extensions at SHUTDOWN) goes straight to the `logs` sink it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from lambdahost.control.sts.sessions import Sessions
from lambdahost.invoke.capacity import (
    HostCapacity,
    Need,
    StartGate,
    StartSlot,
    default_cold_starts,
    host_throttled,
    pick_victims,
)
from lambdahost.invoke.environment import PACKAGE_ROOT, Environment, Message
from lambdahost.invoke.model import FunctionSpec, InvokeRequest, InvokeResult, LogLine, LogSink
from lambdahost.invoke.reports import (
    init_failed,
    init_start_line,
    invoke_ended,
    log_stream_name,
    now_ms,
    prewarm_failed,
    report_record,
    start_line,
)
from lambdahost.invoke.sdks import RuntimeSdks
from lambdahost.invoke.streaming import ChunkCollector
from lambdahost.runtimes import python_runtime_dirs
from lambdahost.sandbox.api import Backend

log = logging.getLogger("lambdahost.pool")

INIT_TIMEOUT_S = 10.0
# A cold start holds its slot at the gate through sandbox creation and runtime start-up (the
# CPU-heavy part), at most this long: a slow init (waiting on the network) must not hold
# back every other cold start on the host.
START_SLOT_S = 1.0
FREEZE_AFTER_S = 0.05
Key = tuple[str, str, str]  # (function arn, version, revision id)


class EnvironmentPool:
    def __init__(
        self,
        backend: Backend,
        *,
        keepalive_s: float = 300.0,
        runtime_root: Path | None = None,
        capacity: HostCapacity | None = None,
        starts: StartGate | None = None,
        logs: LogSink | None = None,
        api_port: int = 0,
        credentials: Sessions | None = None,
        sdks: RuntimeSdks | None = None,
    ) -> None:
        self.backend = backend
        self.credentials = credentials  # issues each new environment's role credentials
        # The platform's API as functions reach it (AWS_ENDPOINT_URL): through the function
        # network's gateway; none when sandboxes have no network.
        self.endpoint_url = (
            f"http://{backend.gateway}:{api_port}" if backend.gateway and api_port else None
        )
        # Output of environments outside any invoke (the SHUTDOWN phase of extensions).
        self.logs = logs
        self.keepalive_s = keepalive_s
        self.capacity = capacity or HostCapacity()  # default: no budgets
        self.starts = starts or StartGate(default_cold_starts(), max_waiting=1000, max_wait_s=60.0)
        self._slots: dict[str, StartSlot] = {}  # admitted, not yet started: its gate slot
        self._measuring: asyncio.Task[None] | None = None
        # Holds `agent/` and `runtimes/` (see `environment.PACKAGE_ROOT`).
        self.runtime_root = runtime_root or PACKAGE_ROOT
        self.sdks = sdks or RuntimeSdks()  # the AWS SDKs the managed runtimes ship (`sdks`)
        self._idle: dict[Key, list[Environment]] = {}
        self._all: set[Environment] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._provisioned: set[Environment] = set()  # kept warm, exempt from keepalive
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.backend.cleanup_stale)
        await self.backend.prepare()
        await asyncio.to_thread(self._precompile)
        self.sdks = await asyncio.to_thread(self.sdks.prepared, self.runtime_root / "runtimes")
        self._reaper = asyncio.create_task(self._reap_idle())
        self._measuring = asyncio.create_task(self.capacity.keep_measuring())

    def _precompile(self) -> None:
        """Bytecode next to the agent's and runtime's sources, so no cold start compiles them
        (inside, the mounts are read-only and Python would compile again every time)."""
        import compileall

        for directory in ("agent", *(f"runtimes/{d}" for d in python_runtime_dirs())):
            with contextlib.suppress(Exception):
                compileall.compile_dir(self.runtime_root / directory, quiet=2)

    async def close(self) -> None:
        self._closed = True
        for task in (self._reaper, self._measuring):
            if task is not None:
                task.cancel()
        environments = list(self._all)
        self._all.clear()
        self._idle.clear()
        await asyncio.gather(*(self._destroy(env) for env in environments))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.to_thread(self.backend.close)

    async def retire(self, function_arn: str, version: str | None = None) -> None:
        doomed = []
        for env in list(self._all):
            if env.spec.arn == function_arn and (version is None or env.spec.version == version):
                env.retired = True
                if self._take_out_of_idle(env):
                    doomed.append(env)
        await asyncio.gather(*(self._discard(env) for env in doomed))

    # -- provisioned concurrency ----------------------------------------------------------
    async def prewarm(self, spec: FunctionSpec) -> tuple[str | None, str, list[LogLine]]:
        """Start and initialise one environment before any request needs it (provisioned
        concurrency). It joins the idle set and is never reclaimed for being idle.
        Returns (failure reason or None, its log stream, the init log lines)."""
        env = await self._admit_new(spec)
        message, lines, init_ms = await self._cold_start(env)
        if message.kind != "ready":
            await self._discard(env)
            reason, report = prewarm_failed(message, init_ms)
            lines.append(report)
            return reason, env.log_stream, lines
        self._provisioned.add(env)
        self._park(env)
        return None, env.log_stream, lines

    def provisioned(self, spec: FunctionSpec) -> int:
        """Live provisioned environments of exactly this function revision."""
        self._provisioned = {env for env in self._provisioned if env in self._all and not env.dead}
        key = (spec.arn, spec.version, spec.revision_id)
        # One whose credentials near their end no longer counts: its replacement starts
        # while it still serves.
        return sum(1 for env in self._provisioned if env.key == key and _fresh(env, early=True))

    async def unprovision(self, spec: FunctionSpec, count: int | None = None) -> None:
        """Stop keeping `count` (default: all) provisioned environments of this function version;
        idle ones are destroyed now, busy ones become ordinary environments."""
        doomed = [env for env in self._provisioned if env.spec.key == spec.key]
        if count is not None:
            doomed = doomed[:count]
        for env in doomed:
            self._provisioned.discard(env)
            if self._take_out_of_idle(env):
                self._spawn(self._discard(env))

    # -- invoke ---------------------------------------------------------------------------
    async def admit(self, spec: FunctionSpec) -> Environment:
        """Where the next request of `spec` runs: a thawed idle environment, else a new one, not
        started yet, that already holds its cold-start slot and its share of the host. Raises
        TooManyRequests when the host cannot take one. Hand the result to `invoke()`, or to
        `abandon()` if the request is dropped."""
        if self._closed:
            raise RuntimeError("the environment pool is closed")
        self._retire_other_revisions(spec)
        env = await self._take_idle(spec)
        return env if env is not None else await self._admit_new(spec, reuse=True)

    def abandon(self, env: Environment) -> None:
        """Give back an admitted environment that will not run the request."""
        if env.sandbox is None:
            slot = self._slots.pop(env.id, None)
            if slot is not None:
                slot.leave()
            self._all.discard(env)
            self.capacity.release(env.id)
        else:
            self._park(env)

    async def invoke(
        self,
        spec: FunctionSpec,
        request: InvokeRequest,
        stream: ChunkCollector | None = None,
        env: Environment | None = None,
    ) -> InvokeResult:
        """`stream` receives a streamed response's chunks as they come (see `streaming`);
        `env` is what `admit()` returned, if the caller admitted the request already."""
        env = env or await self.admit(spec)
        if env.sandbox is not None:
            return await self._run(env, request, [], None, stream)
        message, init_lines, init_ms = await self._cold_start(env)
        if message.kind == "ready":
            return await self._run(env, request, init_lines, init_ms, stream)
        return await self._init_failed(env, request, message, init_lines, init_ms)

    async def _admit_new(self, spec: FunctionSpec, reuse: bool = False) -> Environment:
        need = Need(spec.memory_mb, spec.ephemeral_mb)
        if reason := self.capacity.exceeds_budget(need):
            raise host_throttled(reason)
        slot = await self.starts.enter()
        if reuse and self._idle.get((spec.arn, spec.version, spec.revision_id)):
            # One came free while we waited at the gate: no cold start needed after all.
            try:
                idle = await self._take_idle(spec)
            except BaseException:
                slot.leave()
                raise
            if idle is not None:
                slot.leave()
                return idle
        env_id = secrets.token_hex(16)
        env = Environment(env_id, spec, log_stream_name(spec, env_id), self._on_death)
        try:
            victims = self._make_room(env_id, need)
        except BaseException:
            slot.leave()
            raise
        self._slots[env_id] = slot
        self._all.add(env)
        if victims:
            # Their memory is only free once they are gone; shielded: a caller that leaves
            # must not leave half-destroyed sandboxes behind.
            gone = asyncio.gather(*(self._discard(victim) for victim in victims))
            try:
                await asyncio.shield(gone)
            except BaseException:
                self.abandon(env)
                raise
        return env

    def _make_room(self, env_id: str, need: Need) -> list[Environment]:
        """Reserve `need` for `env_id`, taking idle environments out of service to make room;
        returns them (to be destroyed). Raises TooManyRequests, evicting nothing, if even
        every idle one would not make room."""
        victims: list[Environment] = []
        short = self.capacity.shortfall(need)
        if short.memory_mb or short.disk_mb:
            candidates = [
                (env.last_used, Need(env.spec.memory_mb, env.spec.ephemeral_mb), env)
                for idle in self._idle.values()
                for env in idle
                if env not in self._provisioned
            ]
            found = pick_victims(candidates, short)
            if found is None:
                raise host_throttled("This host has no room for another execution environment.")
            victims = found
            for victim in victims:
                self._take_out_of_idle(victim)
                self.capacity.release(victim.id)  # handed over to the new environment
        self.capacity.hold(env_id, need)
        return victims

    async def _cold_start(self, env: Environment) -> tuple[Message, list[LogLine], float]:
        """Start an admitted environment and wait (at most INIT_TIMEOUT_S) for its init
        outcome: "ready", or the failure message. Returns it with the init log lines and
        duration."""
        slot = self._slots.pop(env.id, None)
        timer = None
        if slot is not None:
            timer = asyncio.get_running_loop().call_later(START_SLOT_S, slot.leave)
        try:
            return await self._start_and_init(env)
        finally:
            if timer is not None:
                timer.cancel()
            if slot is not None:
                slot.leave()

    async def _start_and_init(self, env: Environment) -> tuple[Message, list[LogLine], float]:
        started = time.perf_counter()
        self._all.add(env)
        try:
            if self.credentials is not None:  # microseconds: a sealed token, no I/O
                spec = env.spec
                env.credentials = self.credentials.for_function(
                    spec.account_id, spec.role, spec.name
                )
            await env.start(
                self.backend, self.runtime_root, endpoint_url=self.endpoint_url, sdks=self.sdks
            )
        except BaseException:
            self._all.discard(env)
            await self._destroy(env)
            raise
        lines: list[LogLine] = [(now_ms(), init_start_line(env.spec))]
        try:
            async with asyncio.timeout(INIT_TIMEOUT_S):
                message = await env.next_message()
        except TimeoutError:
            message = Message("timeout", {"logs": await env.flush_logs()})
        lines += message.logs
        return message, lines, (time.perf_counter() - started) * 1000

    async def _run(
        self,
        env: Environment,
        request: InvokeRequest,
        lines: list[LogLine],
        init_ms: float | None,
        stream: ChunkCollector | None = None,
    ) -> InvokeResult:
        spec, request_id = env.spec, request.request_id
        collector = stream or ChunkCollector()
        lines.append(start_line(request_id, spec))
        started = time.perf_counter()
        env.send_invoke(request, now_ms() + spec.timeout_s * 1000)
        try:
            async with asyncio.timeout(spec.timeout_s):
                message = await collector.await_result(env)
        except TimeoutError:
            message = Message("timeout", {"logs": await env.flush_logs()})
        if message.kind == "result" and message.header.get("pending"):
            # As in Lambda, the caller gets the response as soon as the runtime posts it;
            # the environment stays busy until every INVOKE extension called `next` again.
            lines += message.logs
            tail: asyncio.Future[list[LogLine]] = asyncio.get_running_loop().create_future()
            self._spawn(self._after_extensions(env, request, message, started, init_ms, tail))
            return InvokeResult(
                request_id=request_id,
                payload=message.body,
                function_error=None if message.header.get("ok") else "Unhandled",
                log_stream=env.log_stream,
                log_lines=lines,
                duration_ms=(time.perf_counter() - started) * 1000,
                init_duration_ms=init_ms,
                max_memory_used_mb=env.max_memory_mb(),
                log_tail=tail,
            )
        return await self._finish(env, request, message, lines, started, init_ms)

    async def _after_extensions(
        self,
        env: Environment,
        request: InvokeRequest,
        result: Message,
        started: float,
        init_ms: float | None,
        tail: asyncio.Future[list[LogLine]],
    ) -> None:
        """Wait (within the function's timeout) for the extensions' "done", then free the
        environment and resolve `tail` with the invoke's remaining lines: the extensions'
        output, END and REPORT (Duration includes the extensions' time, as billed)."""
        lines: list[LogLine] = []
        try:
            remaining = env.spec.timeout_s - (time.perf_counter() - started)
            try:
                async with asyncio.timeout(max(remaining, 0.001)):
                    message = await env.next_message()
            except TimeoutError:
                message = Message("timeout", {"logs": await env.flush_logs()})
            if message.kind == "done":
                logs = message.header.get("logs", [])
                message = Message("result", {**result.header, "logs": logs})
            await self._finish(env, request, message, lines, started, init_ms)
        except BaseException:
            tail.cancel()  # nothing more will be said about this invoke
            raise
        tail.set_result(lines)

    async def _finish(
        self,
        env: Environment,
        request: InvokeRequest,
        message: Message,
        lines: list[LogLine],
        started: float,
        init_ms: float | None,
    ) -> InvokeResult:
        """Turn the invoke's final message into its result, END and REPORT lines, and park or
        discard the environment."""
        spec = env.spec
        duration_ms = (time.perf_counter() - started) * 1000  # with extensions' time, as billed
        memory_mb = env.max_memory_mb()
        ending = invoke_ended(
            spec, request, message, duration_ms, memory_mb, init_ms, env.oom_killed
        )
        lines += message.logs
        lines += ending.lines
        if message.kind != "result":
            env.dead = True  # timed out, or its runtime exited
        if env.telemetry:
            env.send_report(
                report_record(request, ending.duration_ms, spec, memory_mb, init_ms, message)
            )
        if env.dead:
            if message.kind == "timeout":
                await self._discard(env, "timeout")  # the function must be stopped when we answer
            else:
                self._spawn(self._discard(env, "failure"))
        else:
            self._park(env)
        return InvokeResult(
            request_id=request.request_id,
            payload=ending.payload,
            function_error=ending.function_error,
            log_stream=env.log_stream,
            log_lines=lines,
            duration_ms=ending.duration_ms,
            init_duration_ms=init_ms,
            max_memory_used_mb=memory_mb,
        )

    async def _init_failed(
        self,
        env: Environment,
        request: InvokeRequest,
        message: Message,
        lines: list[LogLine],
        init_ms: float,
    ) -> InvokeResult:
        memory_mb = env.max_memory_mb()
        ending = init_failed(
            env.spec, request, message, init_ms, memory_mb, env.oom_killed, INIT_TIMEOUT_S
        )
        await self._discard(env)
        return InvokeResult(
            request_id=request.request_id,
            payload=ending.payload,
            function_error=ending.function_error,
            log_stream=env.log_stream,
            log_lines=lines + ending.lines,
            duration_ms=ending.duration_ms,
            init_duration_ms=init_ms,
            max_memory_used_mb=memory_mb,
        )

    # -- idle environments ----------------------------------------------------------------
    async def _take_idle(self, spec: FunctionSpec) -> Environment | None:
        idle = self._idle.get((spec.arn, spec.version, spec.revision_id))
        while idle:
            env = idle.pop()  # most recently used: warmest caches
            if not _fresh(env):  # its credentials could expire under this request
                self._spawn(self._discard(env))
                continue
            try:
                await self._resume(env)
            except Exception as error:  # a sandbox that cannot thaw is useless, not fatal
                log.warning("discarding environment %s: %s", env.id, error)
                env.dead = True
            if not env.dead:
                return env
            self._spawn(self._discard(env))
        return None

    async def _resume(self, env: Environment) -> None:
        task, env.freezing = env.freezing, None
        if task is not None and not task.done():
            if not env.freeze_started:
                task.cancel()  # reused before it was frozen: skip freeze and thaw alike
                return
            await task
        if env.frozen and env.sandbox is not None and not env.dead:
            await env.sandbox.thaw()
            env.frozen = False

    def _park(self, env: Environment) -> None:
        if env.retired or self._closed or not _fresh(env):
            self._spawn(self._discard(env))
            return
        env.last_used = time.monotonic()
        env.freeze_started = False
        env.freezing = asyncio.ensure_future(self._freeze(env))
        self._idle.setdefault(env.key, []).append(env)

    async def _freeze(self, env: Environment) -> None:
        # A short grace before freezing: back-to-back invokes (the common hot path) then skip
        # both the freeze and the thaw, each a cgroup write plus polling.
        await asyncio.sleep(FREEZE_AFTER_S)
        env.freeze_started = True
        try:
            if env.sandbox is not None and not env.dead:
                await env.sandbox.freeze()
                env.frozen = True
        except Exception as error:  # e.g. destroyed meanwhile: never reuse it
            log.warning("cannot freeze environment %s: %s", env.id, error)
            env.dead = True

    def _take_out_of_idle(self, env: Environment) -> bool:
        idle = self._idle.get(env.key)
        if idle and env in idle:
            idle.remove(env)
            if not idle:
                del self._idle[env.key]
            return True
        return False

    def _on_death(self, env: Environment) -> None:
        # The runtime died while idle (e.g. crashed after answering): drop it now.
        if self._take_out_of_idle(env):
            self._spawn(self._discard(env))

    def _retire_other_revisions(self, spec: FunctionSpec) -> None:
        stale = [key for key in self._idle if key[:2] == spec.key and key[2] != spec.revision_id]
        for key in stale:
            for env in self._idle.pop(key):
                self._spawn(self._discard(env))
        for env in self._all:
            if env.spec.key == spec.key and env.spec.revision_id != spec.revision_id:
                env.retired = True

    async def _reap_idle(self) -> None:
        interval = max(0.05, min(self.keepalive_s / 2, 30.0))
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self.keepalive_s
            for idle in list(self._idle.values()):
                for env in [
                    env
                    for env in idle
                    if (env.last_used < deadline and env not in self._provisioned)
                    or not _fresh(env)
                ]:
                    self._take_out_of_idle(env)
                    self._spawn(self._discard(env))

    # -- teardown -------------------------------------------------------------------------
    async def _discard(self, env: Environment, reason: str = "spindown") -> None:
        self._all.discard(env)
        self._take_out_of_idle(env)
        await self._destroy(env, reason)

    async def _destroy(self, env: Environment, reason: str = "spindown") -> None:
        try:
            if env.extensions:
                await self._shut_down(env, reason)
            await env.destroy()
        except Exception:
            log.exception("cannot destroy environment %s", env.id)
        finally:
            self.capacity.release(env.id)

    async def _shut_down(self, env: Environment, reason: str) -> None:
        """Extensions get their SHUTDOWN (≤ 2 s) before the sandbox goes; what they print then
        goes to the function's log stream through the `logs` sink."""
        try:
            await self._resume(env)  # a frozen agent cannot run the phase
        except Exception:
            return
        lines = await env.shut_down(reason)
        if lines and self.logs is not None:
            self.logs(env.spec, env.log_stream, lines)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _fresh(env: Environment, early: bool = False) -> bool:
    """Whether `env`'s credentials outlive a request of its function started now (`early`:
    with a renewal margin to spare, the time a replacement has to start)."""
    credentials = env.credentials
    if credentials is None:
        return True
    spare = credentials.expires_at - credentials.renew_by if early else 0.0
    return credentials.outlive(time.time(), env.spec.timeout_s + spare)
