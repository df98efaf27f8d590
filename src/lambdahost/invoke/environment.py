"""One execution environment as the host sees it: a sandbox plus the link to its agent.

The link is an asyncio protocol on the host end of the socket pair whose other end the agent
inherited; frames (see `lambdahost.agent.protocol`) resolve one waiter at a time, since an
environment runs one thing at a time (its init, then one invoke after another)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lambdahost.agent import command as agent_command
from lambdahost.agent.boot import encode_candidates
from lambdahost.agent.protocol import FrameReader, encode
from lambdahost.invoke.model import FunctionSpec, InvokeRequest, LogLine
from lambdahost.runtimes import bootstrap_candidates, environment_for
from lambdahost.sandbox.api import Backend, Mount, Sandbox, SandboxSpec

AGENT_DIR = "/var/rapid"
SHUTDOWN_BUDGET_MS = 2000  # Lambda's shutdown phase: runtime grace + extensions, in total
PIDS_MAX = 1024


@dataclass
class Message:
    """What the agent said: kind is ready | init_error | result | exit | lost (socket closed)."""

    kind: str
    header: dict = field(default_factory=dict)
    body: bytes = b""

    @property
    def logs(self) -> list[tuple[int, str]]:
        try:
            return [(int(stamp), str(text)) for stamp, text in self.header.get("logs", ())]
        except (TypeError, ValueError):
            return []  # garbage from a tampered-with agent: lose the logs, not the platform


def cpu_shares_for(memory_mb: int) -> int:
    """Lambda gives 1,769 MB one vCPU: scale cgroup v1's 1024 shares (= one CPU's weight) the
    same way, with a floor so tiny functions are not starved next to big ones."""
    return max(64, round(memory_mb * 1024 / 1769))


class AgentLink(asyncio.Protocol):
    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self.frames = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.on_message = on_message

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.frames.feed(data)
        except ValueError:  # FrameError, bad JSON: this environment cannot be trusted
            if self.transport is not None:
                self.transport.abort()  # connection_lost() follows and reports it dead
            return
        for header, body in frames:
            self.on_message(Message(str(header.get("t", "")), header, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_message(Message("lost"))

    def send(self, header: dict, body: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(header, body))


class Environment:
    """A started sandbox running the agent. `next_message()` awaits the agent's next frame."""

    def __init__(self, env_id: str, spec: FunctionSpec, log_stream: str) -> None:
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
        self.on_death: Callable[[Environment], None] | None = None
        self._waiter: asyncio.Future[Message] | None = None
        self._unclaimed: list[Message] = []
        self.extensions = 0  # registered extensions (from "ready"): shutdown has a phase
        self.telemetry = False  # someone subscribed: the agent wants each invoke's report
        self._bye: asyncio.Future[Message] | None = None

    async def start(self, backend: Backend, runtime_root: Path) -> None:
        spec = self.spec
        host_end, agent_end = socket.socketpair()
        try:
            env = environment_for(spec, self.log_stream)
            env["LAMBDAHOST_AGENT_FD"] = str(agent_end.fileno())
            candidates = bootstrap_candidates(spec.runtime, spec.environment)
            env["LAMBDAHOST_BOOTSTRAP"] = encode_candidates(candidates)
            env["LAMBDAHOST_ACCOUNT_ID"] = spec.account_id  # for extensions' registration
            mounts = [
                Mount(spec.code_dir, "/var/task"),
                Mount(runtime_root / "runtimes", "/var/runtime"),
                Mount(runtime_root / "agent", AGENT_DIR),
            ]
            if spec.layer_dirs:
                mounts.append(Mount(spec.layer_dirs[0], "/opt"))  # merging layers comes later
            sandbox_spec = SandboxSpec(
                sandbox_id=self.id,
                argv=agent_command(AGENT_DIR),
                env=env,
                mounts=mounts,
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
        loop = asyncio.get_running_loop()
        _, self.link = await loop.create_unix_connection(
            lambda: AgentLink(self._received), sock=host_end
        )

    def _received(self, message: Message) -> None:
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
        elif message.kind != "lost":
            self._unclaimed.append(message)

    def next_message(self) -> asyncio.Future[Message]:
        future = asyncio.get_running_loop().create_future()
        if self._unclaimed:
            future.set_result(self._unclaimed.pop(0))
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

    def send_report(self, record: dict) -> None:
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
        if self.freezing is not None and not self.freezing.done():
            self.freezing.cancel()
        if self.link is not None and self.link.transport is not None:
            self.link.transport.close()
        if self.sandbox is not None:
            await self.sandbox.destroy()
