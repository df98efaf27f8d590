"""The zygote backend: sandboxes forked from a pre-initialised Python (SOCK, USENIX ATC'18).

A cold start on the bwrap path pays for bwrap, setpriv, env and an interpreter start-up before
the agent runs, then another interpreter for the runtime. Here one root process per backend
(`zygote_main`, on the interpreter `Provisions.python`) has imported the agent, the Python
runtimes of `Provisions.preload` and common stdlib modules once; per sandbox it forks a
child that enters fresh namespaces and the sandbox's cgroups (`launcher`), drops to the
sandbox uid under the same seccomp filter, and runs the already-imported agent, which forks
the already-imported runtime (`agent.forkserver`). Whatever else the spec starts (`Exec`, or
an agent or runtime code other than the imported ones) is exec'd after the same set-up.

    server ──spawn request + fds──▶ zygote ─unshare(pid) + fork─▶ PID 1: cgroups, unshare,
        ◀──pid + pidfd──────────────  │                            root, its uid, seccomp
        ◀──exit status────────────────┘ (reaps)                     └▶ agent ─fork─▶ runtime

Same contract and isolation as bwrap (same root layout: the launcher executes the mount plan
`rootfs.bwrap_mount_args` produces; same cgroup naming, so `cleanup_stale` of either backend
removes the other's leftovers). Sandboxes do not depend on the zygote once started: if it
dies, the next `start()` starts a new one, and earlier sandboxes are watched through their
pidfds (an exit status the dead zygote could not report reads as -9).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
from pathlib import Path
from typing import TYPE_CHECKING

from lambdahost.sandbox import cgroups as cg
from lambdahost.sandbox import hostcheck
from lambdahost.sandbox.api import (
    DEFAULT_TMP_MB,
    Backend,
    BootAgent,
    Exec,
    Link,
    Mount,
    Provisions,
    SandboxError,
    SandboxSpec,
)
from lambdahost.sandbox.bwrap import _validate, remove_stale
from lambdahost.sandbox.controlled import CgroupSandbox, releaser
from lambdahost.sandbox.network import FunctionNetwork, NetworkLease
from lambdahost.sandbox.procviews import ProcViews
from lambdahost.sandbox.rootfs import (
    EtcDirs,
    bwrap_mount_args,
    check_links,
    check_mounts,
    with_tmp_device,
)
from lambdahost.sandbox.seccomp import build_filter
from lambdahost.sandbox.tmpvol import TmpLease, TmpVolumes, lease
from lambdahost.sandbox.uids import UidPool
from lambdahost.sandbox.watchdog import Watchdog
from lambdahost.sandbox.zygote_link import LAUNCHER, START_TIMEOUT, ZygoteLink

if TYPE_CHECKING:
    from lambdahost.sandbox.launcher import SpawnRequest
    from lambdahost.sandbox.zygote_protocol import ConfigMessage

log = logging.getLogger("lambdahost.sandbox")

_STDERR_TAIL_BYTES = 8192
_KILLED = -9


class ZygoteBackend(Backend):
    """Sandboxes forked by a zygote; cgroups under `lambdahost/<instance>/<sandbox_id>` as the
    bwrap backend names them (the instance derived from `state_dir`)."""

    def __init__(
        self,
        state_dir: Path,
        provisions: Provisions,
        cgroup_root: Path = cg.CGROUP_ROOT,
        network: FunctionNetwork | None = None,
    ) -> None:
        # Before any helper starts: on cgroup v2 this may move us into a leaf group.
        python = provisions.python
        problems = hostcheck.problems((python,), cgroup_root, {python: provisions.python_package})
        if problems:
            raise SandboxError("\n".join(problems))
        self.cgroup_layout = cg.detect(cgroup_root)  # found by the check
        self.state_dir = state_dir.resolve()
        self.cgroup_root = cgroup_root
        self.cgroup_parent = cg.instance_parent(self.state_dir)
        self._sandboxes_dir = self.state_dir / "sandboxes"  # bwrap's; this one keeps none
        self._sandboxes_dir.mkdir(parents=True, exist_ok=True)
        self._new_root = self.state_dir / "root"  # only a mount point, inside each sandbox
        self._new_root.mkdir(parents=True, exist_ok=True)
        self._new_root.chmod(0o755)
        self.python = python
        # What the zygote imports, sources resolved: a spec's start runs in-process only when
        # it names this very code (`_in_process`).
        self.agent = _resolved(provisions.agent) if provisions.agent else None
        self.preloaded = {
            runtime.name: (runtime, _resolved(runtime.code)) for runtime in provisions.preload
        }
        self._filter = build_filter()
        self._uids = UidPool.from_environment()
        self.network = network
        self.gateway = network.gateway if network else None
        resolv_conf = network.resolv_conf if network else None
        self._etc = EtcDirs(self.state_dir / "rootfs", provisions.etc, resolv_conf)
        self._etc.for_uid(self._uids.first)
        # (uid, mounts, tmp bytes, cwd, links) → the mount plan
        self._plans: dict[tuple[int, tuple[Mount, ...], int, str, tuple[Link, ...]], list[str]] = {}
        self._proc_views: ProcViews | None = None  # the self-test runs without
        self._link = self._start_link()
        self._self_test()
        self._volumes = TmpVolumes(self.state_dir / "tmp")
        self._volumes.prepare(DEFAULT_TMP_MB << 20)
        self._proc_views = ProcViews(self.state_dir)
        self._plans.clear()
        self._watchdog = Watchdog(
            self.cgroup_parent, self.cgroup_layout, self._volumes.dir, self._proc_views
        )

    # -- the zygote ------------------------------------------------------------------------
    def _config(self) -> ConfigMessage:
        config: ConfigMessage = {
            "t": "config",
            "launcher": str(LAUNCHER),
            "filter": self._filter.hex(),
        }
        if self.network is not None:
            config["netns_spares"] = 0  # spawns bring the function network's namespaces
        if self.agent is None:
            return config  # runtimes are forked by the agent: without it, nothing to import
        modules: list[list[str]] = []
        bootstraps: list[list[str]] = []
        for runtime, code in self.preloaded.values():
            for name, file in runtime.modules:
                modules.append([name, str(code.source / file), f"{code.target}/{file}"])
            for file in runtime.bootstraps:
                bootstraps.append([str(code.source / file), f"{code.target}/{file}"])
        config["agent"] = {"source": str(self.agent.source), "target": self.agent.target}
        config["modules"] = modules
        config["bootstraps"] = bootstraps
        return config

    def _start_link(self) -> ZygoteLink:
        link = ZygoteLink(self._config(), self.python)
        log.debug("zygote %d ready, preloaded %s", link.pid, ", ".join(link.preloaded))
        return link

    def _self_test(self) -> None:
        """Start one trivial sandbox (namespaces, mounts, pivot_root, uid, seccomp, exec): if
        this host cannot do any of it, say so now rather than on the first invoke."""
        spec = SandboxSpec(sandbox_id="self-test", start=Exec(["/bin/true"]), env={})
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            request = self._request(spec, self._uids.first, None, [])
            status = self._link.spawn_blocking(request, [write_end], START_TIMEOUT)
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
        """Stop the zygote and the watchdog (which kills any sandbox still running) and
        remove the cgroup parent."""
        self._link.close()
        if self._proc_views is not None:
            self._proc_views.close()
        self._volumes.close()
        self._watchdog.close()  # last: it finds nothing left to kill or remove
        self.cgroup_layout.remove_if_empty(self.cgroup_parent)
        if self.network is not None:
            self.network.close()

    @property
    def zygote_pid(self) -> int:
        return self._link.pid

    # -- starting sandboxes ----------------------------------------------------------------
    def _mount_plan(
        self, uid: int, mounts: list[Mount], tmp_bytes: int, cwd: str, links: tuple[Link, ...]
    ) -> list[str]:
        """`bwrap_mount_args`, remembered: it resolves every source, on each cold start."""
        key = (uid, tuple(mounts), tmp_bytes, cwd, links)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 1024:
                self._plans.clear()
            plan = bwrap_mount_args(
                self._etc.for_uid(uid),
                mounts,
                tmp_bytes,
                cwd,
                self._proc_views.files() if self._proc_views else None,
                links,
            )
            self._plans[key] = plan
        return plan

    def _request(
        self,
        spec: SandboxSpec,
        uid: int,
        cgroups: cg.CgroupSet | None,
        mounts: list[Mount],
        tmp: TmpLease | None = None,
    ) -> SpawnRequest:
        mount_args = self._mount_plan(uid, mounts, spec.tmp_mb << 20, spec.cwd, spec.links)
        in_process = self._in_process(spec.start)
        return {
            "argv": spec.argv,
            "env": spec.env,
            "cwd": spec.cwd,
            "hostname": spec.hostname,
            "uid": uid,
            # v1: `tasks` (skips the threadgroup lock); v2: cgroup.procs (see join_files).
            "cgroup_tasks": [str(path) for path in cgroups.join_files()] if cgroups else [],
            "new_root": str(self._new_root),
            "mount_args": with_tmp_device(mount_args, tmp.device) if tmp else mount_args,
            "fd_targets": list(spec.pass_fds),
            "in_process": in_process,
            "runtime_preloaded": in_process and self._runtime_preloaded(spec.start, mounts),
        }

    # Only code the zygote imported may stand in for what the sandbox would run.
    def _in_process(self, start: Exec | BootAgent) -> bool:
        """The spec boots the agent the zygote imported, on the zygote's interpreter."""
        return (
            isinstance(start, BootAgent)
            and self.agent is not None
            and start.python == self.python
            and start.agent.target == self.agent.target
            and _same_dir(start.agent.source, self.agent.source)
        )

    def _runtime_preloaded(self, start: Exec | BootAgent, mounts: list[Mount]) -> bool:
        """The agent's runtime is one the zygote imported, and the sandbox shows that code."""
        if not isinstance(start, BootAgent) or start.runtime is None:
            return False
        entry = self.preloaded.get(start.runtime)
        if entry is None:
            return False
        code = entry[1]
        return any(m.target == code.target and _same_dir(m.source, code.source) for m in mounts)

    async def start(self, spec: SandboxSpec) -> ZygoteSandbox:
        _validate(spec)
        cgroups = self.cgroup_layout.group(f"{self.cgroup_parent}/{spec.sandbox_id}")
        if cgroups.exists():
            raise SandboxError(f"sandbox {spec.sandbox_id} already exists")
        mounts = check_mounts(spec.all_mounts())
        check_links(spec.links, mounts)
        if self._link.lost:
            log.warning("the zygote (pid %d) exited; starting a new one", self._link.pid)
            self._link = self._start_link()
        tmp = await lease(self._volumes, spec.tmp_mb << 20, mount=False)
        uid = self._uids.acquire() if spec.uid is None else spec.uid
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        netns: NetworkLease | None = None
        try:
            if self.network is not None:
                netns = await self.network.lease()
            await self._etc.prepare(uid)
            cgroups.create(cg.Limits(spec.memory_mb << 20, spec.cpu_shares, spec.pids_max))
            request = self._request(spec, uid, cgroups, mounts, tmp)
            pid, pidfd = await self._link.spawn(
                request, [stderr_write, *spec.pass_fds], netns=netns.fd if netns else -1
            )
        except BaseException as error:
            os.close(stderr_read)
            if tmp is not None:
                tmp.release()
            await _discard(cgroups)
            releaser(self._uids, uid, self.network, netns)()  # its cgroups are empty now
            if isinstance(error, OSError):
                raise SandboxError(f"cannot start sandbox {spec.sandbox_id}: {error}") from error
            raise
        finally:
            os.close(stderr_write)
        sandbox = ZygoteSandbox(spec, uid, pid, pidfd, cgroups, stderr_read, self._link)
        sandbox.tmp = tmp
        sandbox.on_gone = releaser(self._uids, uid, self.network, netns)
        self._link.register(sandbox)
        return sandbox

    def cleanup_stale(self) -> int:
        removed = remove_stale(self.cgroup_parent, self.cgroup_layout, self._sandboxes_dir)
        self._volumes.cleanup_stale()  # after the processes that used them are gone
        if self.network is not None:
            self.network.cleanup_stale()
        return removed

    async def prepare(self) -> None:
        if self.network is not None:
            await self.network.start()


class ZygoteSandbox(CgroupSandbox):
    tmp: TmpLease | None = None  # the disk-backed /tmp, given back on destroy

    def __init__(
        self,
        spec: SandboxSpec,
        uid: int,
        pid: int,
        pidfd: int,
        cgroups: cg.CgroupSet,
        stderr_fd: int,
        link: ZygoteLink,
    ) -> None:
        self.spec = spec
        self.uid = uid
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
        self._killed = False  # every task SIGKILLed and the cgroups removed
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
        if self._killed:  # with its cgroup, even if its exit report is still on the way
            return False
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
                self._killed = True
                self.gone()
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


def _same_dir(path: Path, resolved: Path) -> bool:
    path = Path(path)
    return path == resolved or path.resolve() == resolved


def _resolved(mount: Mount) -> Mount:
    return Mount(Path(mount.source).resolve(), mount.target)


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
