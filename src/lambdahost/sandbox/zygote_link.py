"""The server's side of the zygote process: start it, send spawn requests with their
descriptors over one SEQPACKET socket, and route its replies (pids, exits) to sandboxes."""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import logging
import os
import select
import socket
import subprocess
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lambdahost.sandbox.api import SandboxBusyError, SandboxError

if TYPE_CHECKING:
    from lambdahost.sandbox.launcher import SpawnRequest
    from lambdahost.sandbox.zygote_protocol import (
        ConfigMessage,
        ServerMessage,
        SpawnHeader,
        ZygoteMessage,
    )

log = logging.getLogger("lambdahost.sandbox")

HERE = Path(__file__).resolve().parent
ZYGOTE_MAIN = HERE / "zygote_main.py"
LAUNCHER = HERE / "launcher.py"
START_TIMEOUT = 20.0
MAX_MESSAGE = 1 << 16


class LinkedSandbox(Protocol):
    """What the link tells a running sandbox (`zygote.ZygoteSandbox`)."""

    @property
    def pid(self) -> int: ...

    def exited(self, status: int) -> None:
        """The zygote reaped its first process."""

    def orphaned(self) -> None:
        """The zygote died: nobody will report the exit any more."""


class ZygoteLink:
    """One zygote process and the SEQPACKET socket to it. Starting is synchronous (a few
    hundred ms, once); spawning is async on whichever event loop is running. `python`: the
    zygote's interpreter, Debian's (the one sandboxes run), never the venv's or pyenv's."""

    def __init__(self, config: ConfigMessage, python: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The source on stdin (`-`), not a path: every sandbox's /proc/1/cmdline shows
            # the zygote's argv, and host paths are none of a function's business.
            self.process = subprocess.Popen(
                [python, "-I", "-S", "-", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin", "LC_CTYPE": "C.UTF-8"},
                cwd="/",
                start_new_session=True,  # the server's Ctrl-C must not reach it
            )
        except OSError as error:
            ours.close()
            raise SandboxError(f"cannot start the zygote: {error}") from error
        finally:
            theirs.close()
        self.sock = ours
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(ZYGOTE_MAIN.read_bytes())
            self.process.stdin.close()
        except OSError:
            pass  # it died at once: the handshake below says so
        self.lost = False
        self.pid = self.process.pid
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._sandboxes: dict[int, LinkedSandbox] = {}  # pid → running sandbox
        self._early_exits: dict[int, int] = {}  # reported before start() registered them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_lock = asyncio.Lock()
        # Closing our end makes the zygote exit; do it also if the backend is just dropped.
        self._finalizer = weakref.finalize(self, _close_link, self.sock, self.process)
        try:
            self._send(config)
            ready, _ = self._receive_blocking(time.monotonic() + START_TIMEOUT)
        except (OSError, TimeoutError) as error:
            self.close()
            raise SandboxError(f"the zygote did not start: {error}") from error
        if ready["t"] != "ready":
            self.close()
            raise SandboxError(f"the zygote failed to start: {ready.get('error', ready)}")
        self.preloaded: list[str] = ready.get("preloaded", [])

    def close(self) -> None:
        self.lost = True
        self._finalizer()

    # -- messages --------------------------------------------------------------------------
    @staticmethod
    def _encode(message: ServerMessage, body: SpawnRequest | None = None) -> bytes:
        """A header line the zygote reads, then the body only the forked child decodes: the
        zygote must never hold one sandbox's request (its environment) when it forks the
        next, so it never parses one (see `zygote_main`)."""
        data = json.dumps(message, separators=(",", ":")).encode()
        if body is not None:
            data += b"\n" + json.dumps(body, separators=(",", ":")).encode()
        return data

    def _send(
        self,
        message: ServerMessage,
        fds: list[int] | tuple[int, ...] = (),
        body: SpawnRequest | None = None,
    ) -> None:
        """Blocking send (start-up only: the socket is blocking until attach())."""
        self.sock.sendmsg([self._encode(message, body)], _rights(fds))

    async def _send_async(
        self, data: bytes, fds: list[int] | tuple[int, ...], deadline: float
    ) -> None:
        """Send in order, waiting for room while the zygote's queue is full (a burst of cold
        starts), until `deadline`. Only a closed socket means the zygote is gone."""
        loop = asyncio.get_running_loop()
        async with self._send_lock:  # FIFO: requests reach the zygote in arrival order
            while True:
                if self.lost:
                    raise SandboxError("the zygote is gone")
                try:
                    self.sock.sendmsg([data], _rights(fds))
                    return
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as error:
                    self._lose()
                    raise SandboxError(f"the zygote is gone: {error}") from error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxBusyError("the zygote did not take the request in time")
                writable = loop.create_future()
                loop.add_writer(self.sock.fileno(), _set_once, writable)
                try:
                    await asyncio.wait_for(writable, remaining)
                except TimeoutError:
                    pass
                finally:
                    loop.remove_writer(self.sock.fileno())

    def _receive(self, flags: int = 0) -> tuple[ZygoteMessage | None, list[int]]:
        data, ancillary, msg_flags, _ = self.sock.recvmsg(
            MAX_MESSAGE, socket.CMSG_SPACE(4 * 4), flags | socket.MSG_CMSG_CLOEXEC
        )
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if not data:
            return None, fds
        message: ZygoteMessage = json.loads(data)
        return message, fds

    def _receive_blocking(self, deadline: float) -> tuple[ZygoteMessage, list[int]]:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            raise TimeoutError("no answer from the zygote")
        message, fds = self._receive()
        if message is None:
            raise ConnectionResetError("the zygote exited")
        return message, fds

    def spawn_blocking(self, request: SpawnRequest, fds: list[int], timeout: float) -> int:
        """Spawn and wait for the exit, without an event loop (the start-up self-test)."""
        self._send({"t": "spawn", "id": 0}, fds, request)
        deadline = time.monotonic() + timeout
        pid = 0
        while True:
            message, received = self._receive_blocking(deadline)
            for fd in received:
                os.close(fd)
            if message["t"] == "error":
                raise SandboxError(message.get("error", "spawn failed"))
            if message["t"] == "spawned":
                pid = message["pid"]
            elif message["t"] == "exit" and message.get("pid") == pid:
                return int(message["status"])

    # -- async side ----------------------------------------------------------------------------
    def attach(self) -> asyncio.AbstractEventLoop:
        """Read the socket from the running loop (tests run several loops one after another)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self.sock.fileno())
            if not self.lost:
                self.sock.setblocking(False)
                loop.add_reader(self.sock.fileno(), self._on_readable)
            self._loop = loop
            self._send_lock = asyncio.Lock()  # a lock serves the loop it was first used on
        return loop

    async def spawn(
        self,
        request: SpawnRequest,
        fds: list[int],
        timeout: float = START_TIMEOUT,
        netns: int = -1,
    ) -> tuple[int, int]:
        """Returns (host pid, pidfd) of the new sandbox's first process. Waits (in order,
        at most `timeout`) while the zygote is busy; SandboxBusyError if it stays busy.
        `netns`: a network namespace the sandbox enters (else one of its own, `lo` only)."""
        loop = self.attach()
        if self.lost:
            raise SandboxError("the zygote is gone")
        spawn_id = next(self._ids)
        future: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._pending[spawn_id] = future
        deadline = time.monotonic() + timeout
        try:
            header: SpawnHeader = {"t": "spawn", "id": spawn_id}
            if netns >= 0:
                header["netns"] = True
                fds = [*fds, netns]
            await self._send_async(self._encode(header, request), fds, deadline)
        except BaseException:
            self._pending.pop(spawn_id, None)
            raise
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            # The zygote has it: its reply is closed by `_resolve` once it comes.
            self._pending.pop(spawn_id, None)
            future.cancel()
            raise SandboxBusyError("the zygote did not start the sandbox in time") from None

    def register(self, sandbox: LinkedSandbox) -> None:
        status = self._early_exits.pop(sandbox.pid, None)
        if status is not None:
            sandbox.exited(status)
        elif self.lost:
            sandbox.orphaned()
        else:
            self._sandboxes[sandbox.pid] = sandbox

    def _on_readable(self) -> None:
        while True:
            try:
                message, fds = self._receive(socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except (OSError, ValueError):
                message, fds = None, []
            if message is None:
                self._lose()
                return
            if message["t"] == "spawned":
                self._resolve(message.get("id"), (int(message["pid"]), fds[0]) if fds else None)
            elif message["t"] == "error":
                self._resolve(message.get("id"), SandboxError(str(message.get("error"))))
            elif message["t"] == "exit":
                pid, status = int(message["pid"]), int(message["status"])
                sandbox = self._sandboxes.pop(pid, None)
                if sandbox is not None:
                    sandbox.exited(status)
                else:  # its spawn reply is in the same batch: start() registers it next
                    self._early_exits[pid] = status

    def _resolve(
        self, spawn_id: int | None, result: tuple[int, int] | BaseException | None
    ) -> None:
        future = self._pending.pop(spawn_id, None) if spawn_id is not None else None
        if future is None or future.done():
            if isinstance(result, tuple):
                os.close(result[1])
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        elif result is None:
            future.set_exception(SandboxError("the zygote sent no pidfd"))
        else:
            future.set_result(result)

    def _lose(self) -> None:
        """The zygote exited: fail what waits on it, watch running sandboxes by pidfd."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
        self.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxError("the zygote exited"))
        self._pending.clear()
        sandboxes, self._sandboxes = list(self._sandboxes.values()), {}
        for sandbox in sandboxes:
            sandbox.orphaned()


def _rights(fds: list[int] | tuple[int, ...]) -> list[tuple[int, int, array.array[int]]]:
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close_link(sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
    sock.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
