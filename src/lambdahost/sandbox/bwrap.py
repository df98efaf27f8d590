"""The bubblewrap backend: one `bwrap` process tree per sandbox, in its own cgroups.

Why bwrap: Debian's bubblewrap is small, audited and already does the fiddly, security-critical
part right (tmpfs root, bind mounts, fresh /proc and /dev, pivot_root, loopback-only netns,
dropping capabilities, loading our seccomp filter last, closing its own fds). It costs ~12 ms
per start here (`python3.11 -c pass` inside in ~15 ms end to end), well under a runtime's own
start-up. A fork-from-a-zygote launcher can later sit behind the same `Backend` interface.

How a sandbox starts (all without `preexec_fn`, the server being a threaded asyncio process):

    server ─exec─▶ bash: close all other fds, write $$ into each cgroup.procs ─exec─▶ bwrap
        └─clone(new mnt, pid, ipc, uts, net, cgroup ns)─▶ setpriv: drop to the sandbox's host uid,
          no caps (bounding set too), no_new_privs ─exec─▶ bash: read spec.env from a pipe
          ─exec─▶ env -i spec.env ─exec─▶ spec.argv

bwrap runs as real root *without* a user namespace on purpose: it can then bind code from
directories the sandbox uid could not traverse (a data dir under /root, pytest's 0700 tmp),
while the sandboxed process still ends up an ordinary unprivileged uid on the host — not
"root in a userns mapped to host root", which is what root-run `bwrap --unshare-user` gives.
`env -i` sets the environment only after privileges are gone, so a user's LD_PRELOAD and
friends never reach the privileged helpers. The first process of argv is PID 1 of the
sandbox's pid namespace (`--as-pid-1`); bwrap itself stays outside as its parent and exits
with its status.

If the server dies, `--die-with-parent` kills the bwrap monitors, but NOT the sandboxed
processes: the kernel sends a parent-death signal only if the parent could kill() the child,
and the monitor (uid 0, capabilities dropped) cannot signal the sandbox's uid. The backend's
`watchdog` kills them through their cgroups; the next server's `cleanup_stale()` removes the
rest (host-side /tmp mounts, state dirs).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TypedDict

from lambdahost.sandbox import cgroups as cg
from lambdahost.sandbox import hostcheck
from lambdahost.sandbox.api import (
    DEFAULT_TMP_MB,
    Backend,
    Mount,
    Provisions,
    SandboxError,
    SandboxSpec,
)
from lambdahost.sandbox.controlled import CgroupSandbox, releaser
from lambdahost.sandbox.network import FunctionNetwork, NetworkLease
from lambdahost.sandbox.procviews import ProcViews
from lambdahost.sandbox.rootfs import (
    EtcDirs,
    bwrap_mount_args,
    check_links,
    check_mounts,
    with_tmp_volume,
)
from lambdahost.sandbox.seccomp import build_filter
from lambdahost.sandbox.tmpvol import TmpLease, TmpVolumes, lease
from lambdahost.sandbox.uids import UidPool
from lambdahost.sandbox.watchdog import Watchdog, kill_sandboxes

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
NSENTER = "/usr/bin/nsenter"
ENV = "/usr/bin/env"
SH = "/bin/bash"  # not dash: it cannot name descriptors above 9
# The launcher, the first program of every sandbox: closes every descriptor but those listed in
# $1 (whatever spawned it: uvloop's subprocess ignores close_fds, and an inherited server fd
# would reach the function through bwrap), joins every cgroup given before `--`, then becomes
# the command after it.
_LAUNCH = (
    'keep=" $1 "; shift; for fd in /proc/$$/fd/*; do fd=${fd##*/}; case $keep in *" $fd "*) ;; '
    '*) eval "exec $fd>&-" 2>/dev/null;; esac; done; '
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)
# After setpriv, as the sandbox's uid: read the environment (NUL-separated NAME=VALUE) from the
# descriptor in $1, close it, then become `env -i NAME=VALUE... -- argv`. The values never sit
# on bwrap's or setpriv's command line, where any host user could read them for the sandbox's
# whole life (they hold the execution role's credentials); only `env` holds them, for the
# instant before it execs argv.
_ENV_FROM_FD = (
    'fd=$1; shift; env=(); while IFS= read -r -d "" kv; do env+=("$kv"); done <&$fd; '
    'eval "exec $fd<&-"; exec ' + ENV + ' -i -- "${env[@]}" "$@"'
)
_SANDBOX_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_HELPER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_STDERR_TAIL_BYTES = 8192
_START_TIMEOUT = 10.0
# What bwrap writes to --info-fd once the sandbox's first process exists (the one key we read).
BwrapInfo = TypedDict("BwrapInfo", {"child-pid": int}, total=False)


class BwrapBackend(Backend):
    """Sandboxes as bwrap process trees; cgroups under `lambdahost/<instance>/<sandbox_id>`,
    where the instance is derived from `state_dir` so that servers with different data dirs
    (and test runs) never touch each other's sandboxes."""

    def __init__(
        self,
        state_dir: Path,
        provisions: Provisions,
        cgroup_root: Path = cg.CGROUP_ROOT,
        network: FunctionNetwork | None = None,
    ) -> None:
        # Before any helper starts: on cgroup v2 this may move us into a leaf group.
        helpers = (BWRAP, SETPRIV, ENV, SH, *((NSENTER,) if network else ()))
        problems = hostcheck.problems(helpers, cgroup_root)
        if problems:
            raise SandboxError("\n".join(problems))
        self.cgroup_layout = cg.detect(cgroup_root)  # found by the check
        self.state_dir = state_dir.resolve()
        self.cgroup_root = cgroup_root
        self.cgroup_parent = cg.instance_parent(self.state_dir)
        self._sandboxes_dir = self.state_dir / "sandboxes"
        self._sandboxes_dir.mkdir(parents=True, exist_ok=True)
        self._filter = build_filter()
        self._uids = UidPool.from_environment()
        self.network = network
        self.gateway = network.gateway if network else None
        resolv_conf = network.resolv_conf if network else None
        self._etc = EtcDirs(self.state_dir / "rootfs", provisions.etc, resolv_conf)
        self._etc.for_uid(self._uids.first)
        self._volumes = TmpVolumes(self.state_dir / "tmp")
        self._volumes.prepare(DEFAULT_TMP_MB << 20)
        self._proc_views = ProcViews(self.state_dir)
        self._watchdog = Watchdog(
            self.cgroup_parent, self.cgroup_layout, self._volumes.dir, self._proc_views
        )

    async def start(self, spec: SandboxSpec) -> BwrapSandbox:
        _validate(spec)
        cgroups = self.cgroup_layout.group(f"{self.cgroup_parent}/{spec.sandbox_id}")
        host_dir = self._sandboxes_dir / spec.sandbox_id
        if cgroups.exists() or host_dir.exists():
            raise SandboxError(f"sandbox {spec.sandbox_id} already exists")
        mounts = check_mounts(spec.all_mounts())  # BootAgent: exec its argv, nothing faster
        check_links(spec.links, mounts)
        tmp = await lease(self._volumes, spec.tmp_mb << 20)
        uid = self._uids.acquire() if spec.uid is None else spec.uid
        netns: NetworkLease | None = None
        try:
            if self.network is not None:
                netns = await self.network.lease()
            await self._etc.prepare(uid)
            host_dir.mkdir()
            cgroups.create(
                cg.Limits(spec.memory_mb << 20, spec.cpu_shares, spec.pids_max + _HELPERS)
            )
            sandbox = await self._spawn(spec, uid, cgroups, mounts, host_dir, tmp, netns)
            sandbox.tmp = tmp
            sandbox.on_gone = releaser(self._uids, uid, self.network, netns)
            return sandbox
        except BaseException as error:
            await _discard(cgroups, host_dir)
            releaser(self._uids, uid, self.network, netns)()  # its cgroups are empty now
            if tmp is not None:
                tmp.release()
            if isinstance(error, OSError):
                raise SandboxError(f"cannot start sandbox {spec.sandbox_id}: {error}") from error
            raise

    def _command(
        self, spec: SandboxSpec, uid: int, cgroups: cg.CgroupSet, mounts: list[Mount],
        seccomp_fd: int, info_fd: int, env_fd: int, tmp: TmpLease | None = None,
        netns: NetworkLease | None = None,
    ) -> list[str]:  # fmt: skip
        privileges = [
            SETPRIV,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        mount_args = bwrap_mount_args(
            self._etc.for_uid(uid),
            mounts,
            spec.tmp_mb << 20,
            spec.cwd,
            self._proc_views.files(),
            spec.links,
        )
        if tmp is not None:
            mount_args = with_tmp_volume(mount_args, tmp.path)
        environment = [SH, "-c", _ENV_FROM_FD, "environment", str(env_fd)]
        # The function network's namespace, entered by path (so no descriptor of it is
        # inherited); else bwrap makes a new one and brings up `lo` in it, nothing else.
        enter = [NSENTER, f"--net=/proc/{os.getpid()}/fd/{netns.fd}", "--"] if netns else []
        bwrap = [
            *enter,
            BWRAP,
            *([] if netns else ["--unshare-net"]),
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
            "--hostname",
            spec.hostname,
            "--die-with-parent",
            "--new-session",  # no controlling tty: TIOCSTI cannot reach a host terminal
            "--as-pid-1",
            "--cap-add",
            "CAP_SETUID,CAP_SETGID,CAP_SETPCAP",  # only for setpriv, which drops them all
            *mount_args,
            "--clearenv",
            "--chdir",
            spec.cwd,
            "--seccomp",
            str(seccomp_fd),
            "--info-fd",
            str(info_fd),
            "--",
        ]
        procs = [str(path) for path in cgroups.procs_files()]
        keep = " ".join(str(fd) for fd in (0, 1, 2, seccomp_fd, info_fd, env_fd, *spec.pass_fds))
        return [SH, "-c", _LAUNCH, "launch", keep, *procs, "--", *bwrap, *privileges,
                *environment, *spec.argv]  # fmt: skip

    async def _spawn(
        self,
        spec: SandboxSpec,
        uid: int,
        cgroups: cg.CgroupSet,
        mounts: list[Mount],
        host_dir: Path,
        tmp: TmpLease | None,
        netns: NetworkLease | None,
    ) -> BwrapSandbox:
        seccomp_read, seccomp_write = os.pipe()
        info_read, info_write = os.pipe()
        env_read, env_write = os.pipe()
        try:
            os.write(seccomp_write, self._filter)  # < 1 KiB: fits the pipe buffer
            os.close(seccomp_write)
            _write_environment(env_write, spec.env)
            command = self._command(
                spec, uid, cgroups, mounts, seccomp_read, info_write, env_read, tmp, netns
            )
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(seccomp_read, info_write, env_read, *spec.pass_fds),
                env=_HELPER_ENV,
                cwd="/",
                start_new_session=True,  # the server's Ctrl-C must not reach sandboxes
            )
        except BaseException:
            os.close(info_read)
            raise
        finally:
            os.close(seccomp_read)
            os.close(info_write)
            os.close(env_read)
        sandbox = BwrapSandbox(spec, uid, process, cgroups, host_dir)
        info = await _read_json(info_read, _START_TIMEOUT)
        if "child-pid" not in info:
            status = await sandbox.wait()
            await sandbox.destroy()
            detail = sandbox.stderr_tail().strip() or f"exit status {status}"
            raise SandboxError(f"cannot start sandbox {spec.sandbox_id}: {detail}")
        sandbox.child_pid = int(info["child-pid"])
        (host_dir / "sandbox.json").write_text(
            json.dumps({"monitor_pid": process.pid, "pid": sandbox.child_pid})
        )
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

    def close(self) -> None:
        self._proc_views.close()
        self._volumes.close()
        self._watchdog.close()  # last: it finds nothing left to kill or remove
        self.cgroup_layout.remove_if_empty(self.cgroup_parent)
        if self.network is not None:
            self.network.close()


def _write_environment(fd: int, env: dict[str, str]) -> None:
    """NUL-separated NAME=VALUE into a fresh pipe (closed after), read once the sandbox runs:
    the pipe grows to hold it all (a few KiB: Lambda allows 4 KB of the user's variables)."""
    try:
        data = b"".join(f"{name}={value}".encode() + b"\0" for name, value in env.items())
        if len(data) > 65536:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, len(data))  # OSError past pipe-max-size
        os.write(fd, data)
    finally:
        os.close(fd)


# bwrap (the monitor sh became) is in the sandbox's pids cgroup: don't charge it to the function.
_HELPERS = 1


class BwrapSandbox(CgroupSandbox):
    helper_pids = _HELPERS
    tmp: TmpLease | None = None  # the disk-backed /tmp, given back on destroy

    def __init__(
        self,
        spec: SandboxSpec,
        uid: int,
        process: asyncio.subprocess.Process,
        cgroups: cg.CgroupSet,
        host_dir: Path,
    ) -> None:
        self.spec = spec
        self.uid = uid
        self.cgroups = cgroups
        self.child_pid = 0
        self._process = process
        self._host_dir = host_dir
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._drain = asyncio.ensure_future(self._drain_stderr())
        self._destroy_lock = asyncio.Lock()
        self._destroyed = False

    @property
    def pid(self) -> int:
        """Host pid of argv's process (PID 1 inside); bwrap's own is `monitor_pid`."""
        return self.child_pid or self._process.pid

    @property
    def monitor_pid(self) -> int:
        return self._process.pid

    async def wait(self) -> int:
        status = await self._process.wait()
        # bwrap reports "killed by signal N" as 128 + N; the contract says -N.
        return -(status - 128) if 128 < status < 128 + 65 else status

    def alive(self) -> bool:
        return self._process.returncode is None

    def stderr_tail(self) -> str:
        """The last few KiB the sandbox's first process (or bwrap) wrote to stderr."""
        return b"".join(self._stderr).decode(errors="replace")

    async def destroy(self) -> None:
        async with self._destroy_lock:
            if self._destroyed:
                return
            await _discard(self.cgroups, self._host_dir)
            self.gone()
            if self._process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()  # only if it somehow left its cgroups
            await self._process.wait()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drain), 1.0)
            self._drain.cancel()
            self._destroyed = True
            if self.tmp is not None:
                await asyncio.to_thread(self.tmp.release)  # unmounting: off the event loop

    async def _drain_stderr(self) -> None:
        stream = self._process.stderr
        assert stream is not None
        while chunk := await stream.read(4096):
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size - len(self._stderr[0]) >= _STDERR_TAIL_BYTES:
                self._stderr_size -= len(self._stderr.popleft())


def remove_stale(cgroup_parent: str, layout: cg.CgroupLayout, sandboxes_dir: Path) -> int:
    """Kill and remove every sandbox under `cgroup_parent` and the state dirs in
    `sandboxes_dir` (shared by the backends: both name their cgroups this way)."""
    names = kill_sandboxes(cgroup_parent, layout, strict=True)  # start() re-creates the parent
    if sandboxes_dir.is_dir():
        for entry in sandboxes_dir.iterdir():
            names.add(entry.name)
            shutil.rmtree(entry, ignore_errors=True)
    return len(names)


def _validate(spec: SandboxSpec) -> None:
    if not _SANDBOX_ID.fullmatch(spec.sandbox_id):
        raise SandboxError(f"invalid sandbox id: {spec.sandbox_id!r}")
    if not spec.argv or "=" in spec.argv[0]:  # `env` would take NAME=VALUE for a variable
        raise SandboxError(f"invalid argv: {spec.argv!r}")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SandboxError(f"invalid environment variable name: {key!r}")
    if (
        (spec.uid is not None and spec.uid <= 0)
        or spec.memory_mb <= 0
        or spec.tmp_mb <= 0
        or spec.pids_max <= 0
    ):
        raise SandboxError("uid, memory_mb, tmp_mb and pids_max must be positive")
    for fd in spec.pass_fds:
        try:
            os.fstat(fd)
        except OSError:
            raise SandboxError(f"pass_fds: {fd} is not an open descriptor") from None


async def _discard(cgroups: cg.CgroupSet, host_dir: Path) -> None:
    """Kill whatever runs in the groups and remove them and the host-side state."""
    try:
        await cgroups.kill_all()
        cgroups.remove()
    except cg.CgroupError as error:
        raise SandboxError(str(error)) from error
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


async def _read_json(fd: int, timeout: float) -> BwrapInfo:
    """Read `fd` to EOF without blocking the loop; {} if it closed without a JSON object."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    closed = loop.create_future()

    def on_readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as error:
            data = b""
            if error.errno != errno.EIO:
                raise
        if data:
            chunks.append(data)
        elif not closed.done():
            closed.set_result(None)

    loop.add_reader(fd, on_readable)
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(closed, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    try:
        info: BwrapInfo = json.loads(b"".join(chunks))
    except ValueError:
        return {}
    return info
