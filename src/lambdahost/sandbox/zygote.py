"""The zygote backend: sandboxes forked from a pre-initialised Python (SOCK, USENIX ATC'18).

A cold start on the bwrap path pays for bwrap, setpriv, env and an interpreter start-up before
the agent runs, then another interpreter for the runtime. Here one root process per backend
(`zygote_main`, Debian's python3.11) has imported the agent, the python runtime and common
stdlib modules once; per sandbox it forks a child that enters fresh namespaces and the
sandbox's cgroups (`launcher`), drops to the sandbox uid under the same seccomp filter, and
runs the already-imported agent, which forks the already-imported runtime (`agent.forkserver`).
Other argv (node, custom runtimes, tests' probes) are exec'd after the same set-up.

    server ──spawn request + fds──▶ zygote ─unshare(pid) + fork─▶ PID 1: cgroups, unshare,
        ◀──pid + pidfd──────────────  │                            root, uid 993, seccomp
        ◀──exit status────────────────┘ (reaps)                     └▶ agent ─fork─▶ runtime

Same contract and isolation as bwrap (same root layout: the launcher executes the mount plan
`rootfs.bwrap_mount_args` produces; same cgroup naming, so `cleanup_stale` of either backend
removes the other's leftovers). Sandboxes do not depend on the zygote once started: if it
dies, the next `start()` starts a new one, and earlier sandboxes are watched through their
pidfds (an exit status the dead zygote could not report reads as -9).
"""

from __future__ import annotations

import array
import asyncio
import collections
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

import lambdahost
from lambdahost.agent import command as agent_command
from lambdahost.runtimes import RUNTIME_DIR
from lambdahost.sandbox import cgroups as cg
from lambdahost.sandbox.api import Backend, Mount, SandboxError, SandboxSpec
from lambdahost.sandbox.bwrap import _validate, remove_stale
from lambdahost.sandbox.controlled import CgroupSandbox
from lambdahost.sandbox.rootfs import build_etc, bwrap_mount_args, check_mounts, with_tmp_volume
from lambdahost.sandbox.seccomp import build_filter
from lambdahost.sandbox.tmpvol import TmpLease, TmpVolumes, lease

log = logging.getLogger("lambdahost.sandbox")

PYTHON = "/usr/bin/python3.11"  # Debian's: what sandboxes run, never the venv's or pyenv's
HERE = Path(__file__).resolve().parent
ZYGOTE_MAIN = HERE / "zygote_main.py"
LAUNCHER = HERE / "launcher.py"
AGENT_TARGET = "/var/rapid"  # where invoke/ mounts the agent (environment.AGENT_DIR)
_START_TIMEOUT = 20.0
_MAX_MESSAGE = 1 << 16
_STDERR_TAIL_BYTES = 8192
_KILLED = -9


class ZygoteLink:
    """One zygote process and the SEQPACKET socket to it. Starting is synchronous (a few
    hundred ms, once); spawning is async on whichever event loop is running."""

    def __init__(self, config: dict) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The source on stdin (`-`), not a path: every sandbox's /proc/1/cmdline shows
            # the zygote's argv, and host paths are none of a function's business.
            self.process = subprocess.Popen(
                [PYTHON, "-I", "-S", "-", str(theirs.fileno())],
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
        self._sandboxes: dict[int, ZygoteSandbox] = {}  # pid → running sandbox
        self._early_exits: dict[int, int] = {}  # reported before start() registered them
        self._loop: asyncio.AbstractEventLoop | None = None
        # Closing our end makes the zygote exit; do it also if the backend is just dropped.
        self._finalizer = weakref.finalize(self, _close_link, self.sock, self.process)
        try:
            self._send(config)
            ready, _ = self._receive_blocking(time.monotonic() + _START_TIMEOUT)
        except (OSError, TimeoutError) as error:
            self.close()
            raise SandboxError(f"the zygote did not start: {error}") from error
        if ready.get("t") != "ready":
            self.close()
            raise SandboxError(f"the zygote failed to start: {ready.get('error', ready)}")
        self.preloaded: list[str] = ready.get("preloaded", [])

    def close(self) -> None:
        self.lost = True
        self._finalizer()

    # -- messages --------------------------------------------------------------------------
    def _send(self, message: dict, fds: list[int] | tuple[int, ...] = ()) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        self.sock.sendmsg([data], ancillary)  # blocks only while the zygote's queue is full

    def _receive(self, flags: int = 0) -> tuple[dict | None, list[int]]:
        data, ancillary, msg_flags, _ = self.sock.recvmsg(
            _MAX_MESSAGE, socket.CMSG_SPACE(4 * 4), flags | socket.MSG_CMSG_CLOEXEC
        )
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if not data:
            return None, fds
        return json.loads(data), fds

    def _receive_blocking(self, deadline: float) -> tuple[dict, list[int]]:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            raise TimeoutError("no answer from the zygote")
        message, fds = self._receive()
        if message is None:
            raise ConnectionResetError("the zygote exited")
        return message, fds

    def spawn_blocking(self, request: dict, fds: list[int], timeout: float) -> int:
        """Spawn and wait for the exit, without an event loop (the start-up self-test)."""
        self._send({**request, "t": "spawn", "id": 0}, fds)
        deadline = time.monotonic() + timeout
        pid = 0
        while True:
            message, received = self._receive_blocking(deadline)
            for fd in received:
                os.close(fd)
            if message.get("t") == "error":
                raise SandboxError(message.get("error", "spawn failed"))
            if message.get("t") == "spawned":
                pid = message["pid"]
            elif message.get("t") == "exit" and message.get("pid") == pid:
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
                loop.add_reader(self.sock.fileno(), self._on_readable)
            self._loop = loop
        return loop

    async def spawn(self, request: dict, fds: list[int]) -> tuple[int, int]:
        """Returns (host pid, pidfd) of the new sandbox's first process."""
        loop = self.attach()
        if self.lost:
            raise SandboxError("the zygote is gone")
        spawn_id = next(self._ids)
        future: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._pending[spawn_id] = future
        try:
            self._send({**request, "t": "spawn", "id": spawn_id}, fds)
        except OSError as error:
            self._pending.pop(spawn_id, None)
            self._lose()
            raise SandboxError(f"the zygote is gone: {error}") from error
        return await future

    def register(self, sandbox: ZygoteSandbox) -> None:
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
            kind = message.get("t")
            if kind == "spawned":
                self._resolve(message.get("id"), (int(message["pid"]), fds[0]) if fds else None)
            elif kind == "error":
                self._resolve(message.get("id"), SandboxError(str(message.get("error"))))
            elif kind == "exit":
                pid, status = int(message["pid"]), int(message["status"])
                sandbox = self._sandboxes.pop(pid, None)
                if sandbox is not None:
                    sandbox.exited(status)
                else:  # its spawn reply is in the same batch: start() registers it next
                    self._early_exits[pid] = status

    def _resolve(self, spawn_id: object, result: object) -> None:
        future = self._pending.pop(spawn_id, None)  # type: ignore[arg-type]
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


def _close_link(sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
    sock.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ZygoteBackend(Backend):
    """Sandboxes forked by a zygote; cgroups under `lambdahost/<instance>/<sandbox_id>` as the
    bwrap backend names them (the instance derived from `state_dir`)."""

    def __init__(
        self,
        state_dir: Path,
        cgroup_root: Path = cg.CGROUP_ROOT,
        package_dir: Path | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise SandboxError("the zygote sandbox backend must run as root")
        if not os.access(PYTHON, os.X_OK):
            raise SandboxError(f"the zygote needs {PYTHON}")
        try:
            cg.check_available(cgroup_root)
        except cg.CgroupError as error:
            raise SandboxError(str(error)) from None
        self.state_dir = state_dir.resolve()
        self.cgroup_root = cgroup_root
        self.cgroup_parent = cg.instance_parent(self.state_dir)
        self._sandboxes_dir = self.state_dir / "sandboxes"  # bwrap's; this one keeps none
        self._sandboxes_dir.mkdir(parents=True, exist_ok=True)
        self._new_root = self.state_dir / "root"  # only a mount point, inside each sandbox
        self._new_root.mkdir(parents=True, exist_ok=True)
        self._new_root.chmod(0o755)
        package = (package_dir or Path(lambdahost.__file__).parent).resolve()
        self.agent_dir = package / "agent"
        self.runtimes_dir = package / "runtimes"
        self._filter = build_filter()
        self._etc_dirs: dict[int, Path] = {}
        self._etc_for(SandboxSpec.__dataclass_fields__["uid"].default)
        self._plans: dict[tuple, list[str]] = {}
        self._agent_argv = agent_command(AGENT_TARGET)
        self._link = self._start_link()
        self._self_test()
        self._volumes = TmpVolumes(self.state_dir / "tmp")
        self._volumes.prepare(SandboxSpec.__dataclass_fields__["tmp_mb"].default << 20)

    # -- the zygote ------------------------------------------------------------------------
    def _config(self) -> dict:
        python = self.runtimes_dir / "python"
        inside = f"{RUNTIME_DIR}/python"
        return {
            "t": "config",
            "launcher": str(LAUNCHER),
            "filter": self._filter.hex(),
            "agent": {"source": str(self.agent_dir), "target": AGENT_TARGET},
            "modules": [
                [
                    "lambdahost_runtime",
                    str(python / "lambdahost_runtime.py"),
                    f"{inside}/lambdahost_runtime.py",
                ]
            ],
            "bootstraps": [[str(python / "bootstrap.py"), f"{inside}/bootstrap.py"]],
        }

    def _start_link(self) -> ZygoteLink:
        link = ZygoteLink(self._config())
        log.debug("zygote %d ready, preloaded %s", link.pid, ", ".join(link.preloaded))
        return link

    def _self_test(self) -> None:
        """Start one trivial sandbox (namespaces, mounts, pivot_root, uid, seccomp, exec): if
        this host cannot do any of it, say so now rather than on the first invoke."""
        spec = SandboxSpec(sandbox_id="self-test", argv=["/bin/true"], env={})
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            request = self._request(spec, None, [])
            status = self._link.spawn_blocking(request, [write_end], _START_TIMEOUT)
        except (OSError, TimeoutError, SandboxError) as error:
            self._link.close()
            raise SandboxError(f"the zygote cannot start sandboxes here: {error}") from error
        finally:
            os.close(write_end)
            os.set_blocking(read_end, False)
            try:
                detail = os.read(read_end, 4096).decode(errors="replace").strip()
            except BlockingIOError:
                detail = ""
            os.close(read_end)
        if status != 0:
            self._link.close()
            reason = detail or f"exit status {status}"
            raise SandboxError(f"the zygote cannot start sandboxes here: {reason}")

    def close(self) -> None:
        """Stop the zygote (running sandboxes are not affected) and remove the cgroup parent
        if no sandbox is left in it."""
        self._link.close()
        self._volumes.close()
        cg.remove_if_empty(self.cgroup_parent, self.cgroup_root)

    @property
    def zygote_pid(self) -> int:
        return self._link.pid

    # -- starting sandboxes ----------------------------------------------------------------
    def _etc_for(self, uid: int) -> Path:
        if uid not in self._etc_dirs:
            self._etc_dirs[uid] = build_etc(self.state_dir / "rootfs" / f"etc-{uid}", uid)
        return self._etc_dirs[uid]

    def _mount_plan(self, uid: int, mounts: list[Mount], tmp_bytes: int, cwd: str) -> list[str]:
        """`bwrap_mount_args`, remembered: it resolves every source, on each cold start."""
        key = (uid, tuple(mounts), tmp_bytes, cwd)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 1024:
                self._plans.clear()
            plan = bwrap_mount_args(self._etc_for(uid), mounts, tmp_bytes, cwd)
            self._plans[key] = plan
        return plan

    def _request(
        self,
        spec: SandboxSpec,
        cgroups: cg.CgroupSet | None,
        mounts: list[Mount],
        tmp: TmpLease | None = None,
    ) -> dict:
        sources = {m.target: Path(m.source) for m in mounts}
        mount_args = self._mount_plan(spec.uid, mounts, spec.tmp_mb << 20, spec.cwd)
        return {
            "argv": spec.argv,
            "env": spec.env,
            "cwd": spec.cwd,
            "hostname": spec.hostname,
            "uid": spec.uid,
            # `tasks`, not `cgroup.procs`: moving only the (single-threaded) caller skips the
            # global threadgroup lock, whose write side waits for an RCU grace period (~10 ms).
            "cgroup_tasks": [str(p.with_name("tasks")) for p in cgroups.procs_files()]
            if cgroups
            else [],
            "new_root": str(self._new_root),
            "mount_args": with_tmp_volume(mount_args, tmp.path) if tmp else mount_args,
            "fd_targets": list(spec.pass_fds),
            # Only code the zygote imported may stand in for what the sandbox would run.
            "in_process": _same_dir(sources.get(AGENT_TARGET), self.agent_dir)
            and spec.argv == self._agent_argv,
            "runtime_preloaded": _same_dir(sources.get(RUNTIME_DIR), self.runtimes_dir),
        }

    async def start(self, spec: SandboxSpec) -> ZygoteSandbox:
        _validate(spec)
        cgroups = cg.CgroupSet(f"{self.cgroup_parent}/{spec.sandbox_id}", self.cgroup_root)
        if cgroups.exists():
            raise SandboxError(f"sandbox {spec.sandbox_id} already exists")
        mounts = check_mounts(spec.mounts)
        if self._link.lost:
            log.warning("the zygote (pid %d) exited; starting a new one", self._link.pid)
            self._link = self._start_link()
        tmp = await lease(self._volumes, spec.tmp_mb << 20)
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        try:
            cgroups.create(cg.Limits(spec.memory_mb << 20, spec.cpu_shares, spec.pids_max))
            request = self._request(spec, cgroups, mounts, tmp)
            pid, pidfd = await self._link.spawn(request, [stderr_write, *spec.pass_fds])
        except BaseException as error:
            os.close(stderr_read)
            if tmp is not None:
                tmp.release()
            await _discard(cgroups)
            if isinstance(error, OSError):
                raise SandboxError(f"cannot start sandbox {spec.sandbox_id}: {error}") from error
            raise
        finally:
            os.close(stderr_write)
        sandbox = ZygoteSandbox(spec, pid, pidfd, cgroups, stderr_read, self._link)
        sandbox.tmp = tmp
        self._link.register(sandbox)
        return sandbox

    def cleanup_stale(self) -> int:
        removed = remove_stale(self.cgroup_parent, self.cgroup_root, self._sandboxes_dir)
        self._volumes.cleanup_stale()  # after the processes that used them are gone
        return removed


class ZygoteSandbox(CgroupSandbox):
    tmp: TmpLease | None = None  # the disk-backed /tmp, given back on destroy

    def __init__(
        self,
        spec: SandboxSpec,
        pid: int,
        pidfd: int,
        cgroups: cg.CgroupSet,
        stderr_fd: int,
        link: ZygoteLink,
    ) -> None:
        self.spec = spec
        self.cgroups = cgroups
        self.status: int | None = None
        self._pid = pid
        self._pidfd = pidfd
        self._link = link
        self._orphan = False  # the zygote died before reporting our exit
        self._pidfd_loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[int]] = []
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stderr_fd = stderr_fd
        self._loop = asyncio.get_running_loop()
        os.set_blocking(stderr_fd, False)
        self._loop.add_reader(stderr_fd, self._read_stderr)
        self._destroyed = False
        self._destroy_lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        """Host pid of argv's process (PID 1 inside)."""
        return self._pid

    # -- exit ----------------------------------------------------------------------------------
    def exited(self, status: int) -> None:
        """The zygote reaped our first process (or, orphaned, the pidfd said it is gone)."""
        if self.status is not None:
            return
        self.status = status
        self._unwatch_pidfd()
        for waiter in self._waiters:
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(status)
        self._waiters.clear()

    def orphaned(self) -> None:
        """The zygote died: nobody will report our exit any more, so watch the pidfd."""
        self._orphan = True
        for waiter in self._waiters:
            if not waiter.get_loop().is_closed():
                self._watch_pidfd(waiter.get_loop())

    def _watch_pidfd(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pidfd < 0 or _pidfd_exited(self._pidfd):
            self.exited(_KILLED)
        elif self._pidfd_loop is None:
            loop.add_reader(self._pidfd, self.exited, _KILLED)
            self._pidfd_loop = loop

    def _unwatch_pidfd(self) -> None:
        loop, self._pidfd_loop = self._pidfd_loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._pidfd)

    async def wait(self) -> int:
        if self.status is None:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[int] = loop.create_future()
            self._waiters.append(waiter)
            if self._orphan:
                self._watch_pidfd(loop)
            elif not self._link.lost:
                self._link.attach()  # the exit report arrives on this loop
            await waiter
        assert self.status is not None
        return self.status

    def alive(self) -> bool:
        return self.status is None and not (self._pidfd >= 0 and _pidfd_exited(self._pidfd))

    # -- control -------------------------------------------------------------------------------
    def stderr_tail(self) -> str:
        """The last few KiB the sandbox's first process (or its set-up) wrote to stderr."""
        self._read_stderr()
        return b"".join(self._stderr).decode(errors="replace")

    async def destroy(self) -> None:
        async with self._destroy_lock:
            if self._destroyed:
                return
            try:
                await _discard(self.cgroups)
            finally:
                self._destroyed = True
                if self.status is None and self._pidfd >= 0:
                    # The zygote reaps it in a moment; wait so nothing is left afterwards.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_pidfd(), 5.0)
                self._close_fds()
                if self.tmp is not None:
                    # Unmounting takes a millisecond or more: not on the event loop, where a
                    # cold start may be waiting.
                    await asyncio.to_thread(self.tmp.release)

    async def _wait_pidfd(self) -> None:
        while not _pidfd_exited(self._pidfd):
            await asyncio.sleep(0.002)

    def _close_fds(self) -> None:
        self._unwatch_pidfd()
        self._read_stderr()
        if self._stderr_fd >= 0:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._stderr_fd)
            os.close(self._stderr_fd)
            self._stderr_fd = -1
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def _read_stderr(self) -> None:
        if self._stderr_fd < 0:
            return
        while True:
            try:
                chunk = os.read(self._stderr_fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                if not self._loop.is_closed():
                    self._loop.remove_reader(self._stderr_fd)
                os.close(self._stderr_fd)
                self._stderr_fd = -1
                return
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size - len(self._stderr[0]) >= _STDERR_TAIL_BYTES:
                self._stderr_size -= len(self._stderr.popleft())

    def __del__(self) -> None:
        for fd in (self._pidfd, self._stderr_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _same_dir(path: Path | None, resolved: Path) -> bool:
    return path is not None and (path == resolved or path.resolve() == resolved)


def _pidfd_exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


async def _discard(cgroups: cg.CgroupSet) -> None:
    """Kill whatever runs in the groups and remove them."""
    try:
        await cgroups.kill_all()
        cgroups.remove()
    except cg.CgroupError as error:
        raise SandboxError(str(error)) from error
