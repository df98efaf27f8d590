"""One execution environment as the host sees it: a sandbox plus the link to its agent.

The link is an asyncio protocol on the host end of the socket pair whose other end the agent
inherited; frames (see `lambdahost.agent.protocol`) resolve one waiter at a time, since an
environment runs one thing at a time (its init, then one invoke after another).

The agent is not trusted (see `agent_limits`): its frames are bounded and its logs capped per
phase on this side, and frames nobody has claimed yet wait in a bounded inbox. When the inbox
is full the link stops reading the socket until it drains, so an agent that outpaces its
consumer (a client reading a stream slowly) blocks in its send instead of growing the
server's memory."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, cast

import lambdahost
from lambdahost.agent.boot import encode_candidates
from lambdahost.agent.protocol import encode
from lambdahost.control.sts.sessions import FunctionCredentials
from lambdahost.invoke.agent_limits import (
    BIG_HEADERS,
    BUFFERED_SIZE_ERROR,
    FRAME_OVERHEAD,
    SIZE_ERROR,
    AgentViolation,
    FrameReader,
    LogBudget,
)
from lambdahost.invoke.model import FunctionSpec, InvokeRequest, LogLine
from lambdahost.invoke.sdks import RuntimeSdks
from lambdahost.runtimes import (
    OPT_DIR,
    PYTHON,
    RUNTIME_DIR,
    RUNTIMES,
    TASK_ROOT,
    bootstrap_candidates,
    environment_for,
    preload_modules,
)
from lambdahost.sandbox.api import (
    Backend,
    BootAgent,
    Mount,
    PreloadedRuntime,
    Provisions,
    Sandbox,
    SandboxSpec,
)

log = logging.getLogger("lambdahost.environment")

# Where every environment sees the agent package (imported as `rapid`: Lambda's init is RAPID).
AGENT_DIR = "/var/rapid"
# The host directory holding `agent/` (mounted at AGENT_DIR) and `runtimes/` (at RUNTIME_DIR).
PACKAGE_ROOT = Path(lambdahost.__file__).parent
SHUTDOWN_BUDGET_MS = 2000  # Lambda's shutdown phase: runtime grace + extensions, in total
PIDS_MAX = 1024
# Unclaimed frames (wire bytes) before the link stops reading; it reads again below half.
INBOX_MAX = 1024 * 1024


@dataclass
class Message:
    """What the agent said: kind is ready | init_error | result | exit | lost (socket closed).
    `dropped`: body bytes the host refused to buffer (over `agent_limits.MAX_BODY`)."""

    kind: str
    header: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""
    dropped: int = 0
    size: int = 0  # what it costs held in the inbox: wire bytes plus FRAME_OVERHEAD

    @property
    def logs(self) -> list[LogLine]:
        try:
            return [(int(stamp), str(text)) for stamp, text in self.header.get("logs", ())]
        except (TypeError, ValueError):
            return []  # not from the link (which checked them): lose the logs, not the platform


def provisions(root: Path = PACKAGE_ROOT) -> Provisions:
    """What the sandbox backend must provide for the registry's runtimes (`runtimes.RUNTIMES`):
    the agent's interpreter, the /etc entries interpreters read, and the code a backend may
    import ahead: the agent, and the Python runtimes it can fork instead of exec'ing."""
    code = Mount(root / "runtimes", RUNTIME_DIR)
    preload = tuple(
        PreloadedRuntime(
            runtime.name,
            code,
            modules=tuple((PurePosixPath(file).stem, file) for file in runtime.preload),
            bootstraps=tuple(
                str(PurePosixPath(argv[-1]).relative_to(RUNTIME_DIR)) for argv in runtime.bootstrap
            ),
        )
        for runtime in RUNTIMES.values()
        if runtime.preload and runtime.interpreter == PYTHON
    )
    return Provisions(
        python=PYTHON,
        python_package=next(
            (r.package for r in RUNTIMES.values() if r.interpreter == PYTHON and r.package), ""
        ),
        etc=tuple(dict.fromkeys(entry for runtime in RUNTIMES.values() for entry in runtime.etc)),
        agent=Mount(root / "agent", AGENT_DIR),
        preload=preload,
    )


def cpu_shares_for(memory_mb: int) -> int:
    """Lambda gives 1,769 MB one vCPU: scale cgroup v1's 1024 shares (= one CPU's weight) the
    same way, with a floor so tiny functions are not starved next to big ones."""
    return max(64, round(memory_mb * 1024 / 1769))


class AgentLink(asyncio.Protocol):
    """The host end of the agent's socket. Delivers one frame at a time and stops between
    frames while `hold()` is in effect (reading from the socket stops too)."""

    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self.frames = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.on_message = on_message
        self.held = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream socket's transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.frames.feed(data)
        self._deliver()

    def _deliver(self) -> None:
        try:
            while not self.held and (frame := self.frames.next()) is not None:
                kind = frame.header["t"]
                size = frame.size + FRAME_OVERHEAD
                self.on_message(Message(kind, frame.header, frame.body, frame.dropped, size))
        except AgentViolation as exc:  # this environment cannot be trusted any more
            log.warning("agent protocol violation: %s; cutting the link", exc)
            self.abort()
        except Exception:  # never into whoever claimed a message (release() runs this too)
            log.exception("cannot take a frame from the agent; cutting the link")
            self.abort()

    def hold(self) -> None:
        """Stop delivering and reading: the agent's further sends wait in the socket."""
        if not self.held:
            self.held = True
            if self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()

    def release(self) -> None:
        if self.held:
            self.held = False
            self._deliver()  # what was read before the hold first
            if not self.held and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def abort(self) -> None:
        self.held = True  # nothing more from this link
        if self.transport is not None:
            self.transport.abort()  # connection_lost() follows and reports it dead

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_message(Message("lost"))

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(header, body))


class Environment:
    """A started sandbox running the agent. `next_message()` awaits the agent's next frame."""

    def __init__(
        self,
        env_id: str,
        spec: FunctionSpec,
        log_stream: str,
        on_death: Callable[[Environment], None] | None = None,
    ) -> None:
        self.id = env_id
        self.spec = spec
        self.key = (spec.arn, spec.version, spec.revision_id)
        self.log_stream = log_stream
        self.sandbox: Sandbox | None = None
        self.link: AgentLink | None = None
        self.dead = False  # the runtime or agent is gone; never reuse
        self.retired = False  # destroy when the current invoke ends
        self.exit: Message | None = None
        self.frozen = False
        self.freezing: asyncio.Task[None] | None = None
        self.freeze_started = False
        self.last_used = 0.0
        self.on_death = on_death  # told once when the runtime or agent dies
        # The execution role's credentials it starts with (set by the pool before `start`):
        # a process's environment cannot change, so the environment is retired before they
        # expire (`EnvironmentPool`).
        self.credentials: FunctionCredentials | None = None
        self._waiter: asyncio.Future[Message] | None = None
        self._inbox: deque[Message] = deque()  # received, not yet claimed by next_message()
        self._inbox_bytes = 0
        self._logs = LogBudget()  # this phase's: init now, then each invoke, then shutdown
        self.extensions = 0  # registered extensions (from "ready"): shutdown has a phase
        self.telemetry = False  # someone subscribed: the agent wants each invoke's report
        self._bye: asyncio.Future[Message] | None = None

    async def start(
        self,
        backend: Backend,
        runtime_root: Path,
        *,
        endpoint_url: str | None = None,
        sdks: RuntimeSdks | None = None,
    ) -> None:
        spec = self.spec
        sdks = sdks or RuntimeSdks()
        host_end, agent_end = socket.socketpair()
        try:
            credentials = self.credentials.variables if self.credentials is not None else None
            env = environment_for(
                spec, self.log_stream, credentials=credentials, endpoint_url=endpoint_url
            )
            env["LAMBDAHOST_AGENT_FD"] = str(agent_end.fileno())
            candidates = bootstrap_candidates(spec.runtime, spec.environment)
            env["LAMBDAHOST_BOOTSTRAP"] = encode_candidates(candidates)
            if preload := preload_modules(spec.runtime):
                env["LAMBDAHOST_PRELOAD"] = ":".join(preload)
            env["LAMBDAHOST_ACCOUNT_ID"] = spec.account_id  # for extensions' registration
            mounts = [
                Mount(spec.code_dir, TASK_ROOT),
                Mount(runtime_root / "runtimes", RUNTIME_DIR),
            ]
            opt = spec.layer_dirs[0] if spec.layer_dirs else None  # the merged layers
            if opt is not None:
                mounts.append(Mount(opt, OPT_DIR))
            mounts += sdks.mounts(spec.runtime)  # below the code and layers, as on AWS
            agent = BootAgent(Mount(runtime_root / "agent", AGENT_DIR), PYTHON, spec.runtime)
            sandbox_spec = SandboxSpec(
                sandbox_id=self.id,
                start=agent,
                env=env,
                mounts=mounts,
                links=sdks.links(spec.runtime, opt),
                cwd=TASK_ROOT,
                memory_mb=spec.memory_mb,
                cpu_shares=cpu_shares_for(spec.memory_mb),
                pids_max=PIDS_MAX,
                tmp_mb=spec.ephemeral_mb,
                pass_fds=(agent_end.fileno(),),
            )
            self.sandbox = await backend.start(sandbox_spec)
        except BaseException:
            host_end.close()
            raise
        finally:
            agent_end.close()
        await self.connect(host_end)

    async def connect(self, host_end: socket.socket) -> None:
        """Talk to the agent at the other end of `host_end` (a connected Unix socket)."""
        loop = asyncio.get_running_loop()
        _, self.link = await loop.create_unix_connection(
            lambda: AgentLink(self._received), sock=host_end
        )

    def condemn(self, reason: str) -> None:
        """The agent broke a limit a healthy agent keeps: never reuse this environment."""
        log.warning("environment %s of %s: %s", self.id, self.spec.name, reason)
        self.dead = True

    def _checked(self, message: Message) -> Message:
        """The host's own caps on what the agent said (see `agent_limits`)."""
        header = message.header
        header["logs"] = self._logs.take(header.get("logs"))
        if message.dropped and message.kind != "init_error":
            # Only an init error's document may be that big (the agent passes it on as is).
            self.condemn(f"a {message.kind} frame with a body of {message.dropped} bytes")
        if message.dropped and message.kind in ("result", "init_error"):
            if message.kind == "result":
                header = {**header, "ok": False, "error_type": SIZE_ERROR}
            return Message(message.kind, header, BUFFERED_SIZE_ERROR, message.dropped, message.size)
        return message

    def _received(self, message: Message) -> None:
        if message.kind != "lost":
            message = self._checked(message)
        if self._bye is not None and message.kind in ("bye", "lost") and not self._bye.done():
            self._bye.set_result(message)
        if message.kind == "bye":
            return
        if message.kind == "ready":
            self.extensions = int(message.header.get("extensions") or 0)
        self.telemetry = self.telemetry or bool(message.header.get("telemetry"))
        if message.kind in ("exit", "lost", "init_error"):
            if message.kind != "lost" or self.exit is None:
                self.exit = self.exit or message
            if not self.dead:
                self.dead = True
                if self.on_death is not None:
                    self.on_death(self)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(message)
        elif message.kind != "lost" and self._bye is None:  # shutting down: nobody will claim
            self._inbox.append(message)
            self._inbox_bytes += message.size
            if self._inbox_bytes > INBOX_MAX and self.link is not None:
                self.link.hold()  # the rest waits in the socket until someone claims these

    def _new_phase(self) -> None:
        """An invoke or the shutdown begins: the per-phase caps start over."""
        self._logs = LogBudget()
        if self.link is not None:
            self.link.frames.big_headers = BIG_HEADERS

    @property
    def inbox_bytes(self) -> int:
        return self._inbox_bytes

    def _drop_inbox(self) -> None:
        self._inbox.clear()
        self._inbox_bytes = 0
        if self.link is not None:
            self.link.release()

    def next_message(self) -> asyncio.Future[Message]:
        future = asyncio.get_running_loop().create_future()
        if self._inbox:
            message = self._inbox.popleft()
            self._inbox_bytes -= message.size
            future.set_result(message)
            if self._inbox_bytes <= INBOX_MAX // 2 and self.link is not None:
                self.link.release()
        elif self.dead:
            future.set_result(self.exit or Message("lost"))
        else:
            self._waiter = future
        return future

    def send_invoke(self, request: InvokeRequest, deadline_ms: int) -> None:
        header = {
            "t": "invoke",
            "id": request.request_id,
            "deadline_ms": deadline_ms,
            "arn": request.invoked_arn,
            "trace": request.trace_id,
            "client_context": request.client_context,
            "identity": request.cognito_identity,
        }
        assert self.link is not None
        self._new_phase()
        self.link.send(header, request.payload)

    async def flush_logs(self, timeout_s: float = 0.25) -> list[tuple[int, str]]:
        """The output captured since the last message (asked for when giving up waiting)."""
        if self.dead or self.link is None:
            return []
        self.link.send({"t": "flush"})
        try:
            async with asyncio.timeout(timeout_s):
                message = await self.next_message()
                while message.kind in ("stream", "chunk"):  # a streamed response in flight
                    message = await self.next_message()
        except TimeoutError:
            return []
        return message.logs

    def send_report(self, record: dict[str, Any]) -> None:
        """An invoke's REPORT for the agent's telemetry subscribers (`platform.report`)."""
        if self.link is not None:
            self.link.send({"t": "report", "record": record})

    async def shut_down(self, reason: str, budget_ms: int = SHUTDOWN_BUDGET_MS) -> list[LogLine]:
        """Lambda's shutdown phase, for environments with extensions: the agent stops the
        runtime, sends SHUTDOWN (reason spindown | timeout | failure) to the extensions that
        want it and answers "bye" with the output of the phase. Returns that output."""
        link = self.link
        if not self.extensions or link is None or link.transport is None:
            return []
        if link.transport.is_closing():
            return []
        self._bye = asyncio.get_running_loop().create_future()
        self._new_phase()
        self._drop_inbox()  # e.g. chunks of a stream that timed out: read on to the "bye"
        link.send({"t": "shutdown", "reason": reason, "budget_ms": budget_ms})
        try:
            async with asyncio.timeout(budget_ms / 1000 + 1.0):
                message = await self._bye
        except TimeoutError:
            return []
        return message.logs

    def max_memory_mb(self) -> int:
        try:
            return self.sandbox.memory_peak_bytes() >> 20 if self.sandbox else 0
        except Exception:
            return 0

    def oom_killed(self) -> bool:
        try:
            return bool(self.sandbox and self.sandbox.stats().oom_killed)
        except Exception:
            return False

    async def destroy(self) -> None:
        self.dead = True
        self._inbox.clear()  # unclaimed frames of a stalled stream, say: free them now
        self._inbox_bytes = 0
        if self.freezing is not None and not self.freezing.done():
            self.freezing.cancel()
        if self.link is not None and self.link.transport is not None:
            self.link.transport.close()
        if self.sandbox is not None:
            await self.sandbox.destroy()
