"""Turn a freshly forked process into a sandbox, in-process: what bwrap + setpriv + env do on
the bwrap path, as ~40 system calls made through ctypes. Used by the zygote (`zygote_main`).

Stdlib only and importable without the rest of `lambdahost`: the zygote runs it under its
interpreter (`Provisions.python`, `-I -S`), loaded by file path.

The caller forks after `unshare(CLONE_NEWPID)`, so the child is PID 1 of a new pid namespace
and still root on the host; `enter()` then, in this order (each step needs the one before):

1. joins the sandbox's cgroups (so everything after, memory included, is charged there);
2. unshares mount, ipc, uts, net and cgroup namespaces (or enters a network namespace the
   zygote made ahead: creating one costs ~0.5 ms), makes every mount private;
3. builds the root on a tmpfs from the same mount plan bwrap gets (`rootfs.bwrap_mount_args`,
   interpreted here), then `pivot_root`s into it and detaches the host's tree;
4. sets the hostname, starts a new session, puts the spec's descriptors at
   their numbers (stdin/stdout on /dev/null, stderr on the host's pipe) and closes the rest;
5. drops to the sandbox uid: bounding set, groups, gids, uids, every capability set, ambient
   caps; `no_new_privs`; loads the seccomp filter last (it denies mount, unshare, ...).

Then the caller either execs argv (`exec_argv`) or runs already-imported code (the agent).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
from typing import TypedDict

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SANDBOX_NAMESPACES = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWCGROUP

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

SYS_PIVOT_ROOT = 155
SYS_CAPSET = 126
SYS_PIDFD_OPEN = 434
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

# Device nodes bwrap's `--dev` binds from the host, and its symlinks.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
    "core": "/proc/kcore",
}
# Host kernel knobs under /proc that stay read-only, as bwrap's `--proc` leaves them.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]  # fmt: skip
_libc.syscall.restype = ctypes.c_long


class SpawnRequest(TypedDict):
    """One sandbox, as the host sends it (`zygote.ZygoteBackend._request`): JSON, decoded
    only in the forked child (see `zygote_main`)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    hostname: str
    uid: int  # also the gid
    cgroup_tasks: list[str]  # `CgroupSet.join_files()`
    new_root: str  # the (empty) mount point the root is built on
    mount_args: list[str]  # bwrap's syntax: `rootfs.bwrap_mount_args`
    fd_targets: list[int]  # where each passed descriptor goes (`SandboxSpec.pass_fds`)
    in_process: bool  # run the zygote's agent (`api.BootAgent`) rather than exec argv
    runtime_preloaded: bool  # ... and let it fork the zygote's runtime


class LaunchError(OSError):
    """A step of entering the sandbox failed (the message names the step)."""


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise LaunchError(code, f"{what}: {os.strerror(code)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def pidfd_open(pid: int) -> int:
    return _check(_libc.syscall(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0)), "pidfd_open")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    encoded = [s.encode() if s is not None else None for s in (source, target, fstype, data)]
    result = _libc.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3] or None)
    _check(result, f"mount {source or fstype or ''} on {target}")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


# -- 1-2: cgroups and namespaces -------------------------------------------------------------


def join_cgroups(tasks_files: list[str]) -> None:
    for path in tasks_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            # "0" moves the writer itself: its thread (v1 `tasks`), its process (v2 cgroup.procs)
            os.write(fd, b"0")
        finally:
            os.close(fd)


# -- 3: the root file system -----------------------------------------------------------------


class RootBuilder:
    """Executes bwrap's file-system options (the subset `rootfs.bwrap_mount_args` emits) on a
    tmpfs mounted at `new_root`, a directory on the host that only serves as a mount point."""

    def __init__(self, new_root: str) -> None:
        self.new_root = new_root.rstrip("/")
        self.read_only_root = False
        self._perms: int | None = None
        self._size: int | None = None

    def inside(self, path: str) -> str:
        return self.new_root + "/" + path.lstrip("/")

    def run(self, args: list[str]) -> None:
        mount("tmpfs", self.new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        items = iter(args)
        for option in items:
            if option == "--perms":
                self._perms = int(next(items), 8)
            elif option == "--size":
                self._size = int(next(items))
            elif option in ("--ro-bind", "--ro-bind-try"):
                source, target = next(items), next(items)
                self.bind(source, target, must_exist=option == "--ro-bind")
            elif option == "--bind":  # read-write: the disk-backed /tmp volume
                source, target = next(items), next(items)
                self.bind(source, target, read_only=False)
            elif option == "--ext4":  # the disk-backed /tmp, mounted in this namespace only
                device, target = next(items), next(items)
                full = self.mkdirs(target)
                mount(device, full, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME)
            elif option == "--symlink":
                points_to, link = next(items), next(items)
                os.symlink(points_to, self.inside(link))
            elif option == "--dir":
                self.mkdirs(next(items), self._take_perms(0o755))
            elif option == "--tmpfs":
                self.tmpfs(next(items))
            elif option == "--proc":
                self.proc(next(items))
            elif option == "--dev":
                self.dev(next(items))
            elif option == "--remount-ro":
                if next(items) != "/":
                    raise LaunchError(errno.EINVAL, "--remount-ro is only supported for /")
                self.read_only_root = True
            else:
                raise LaunchError(errno.EINVAL, f"unsupported mount option {option}")

    def _take_perms(self, default: int) -> int:
        perms, self._perms = self._perms, None
        return default if perms is None else perms

    def mkdirs(self, path: str, mode: int = 0o755) -> str:
        """mkdir -p inside the new root; the last component gets `mode` (umask ignored)."""
        full = self.inside(path)
        parent = os.path.dirname(full)
        if not os.path.isdir(parent):
            self.mkdirs(os.path.dirname(path.rstrip("/")) or "/")
        try:
            os.mkdir(full)
        except FileExistsError:
            return full
        os.chmod(full, mode)
        return full

    def bind(
        self, source: str, target: str, must_exist: bool = True, read_only: bool = True
    ) -> None:
        try:
            is_dir = os.path.isdir(source)
            if not is_dir and not os.path.exists(source):
                raise FileNotFoundError(errno.ENOENT, "no such file or directory")
        except OSError as error:
            if must_exist:
                raise LaunchError(error.errno or errno.ENOENT, f"bind {source}: {error}") from None
            return
        full = self.inside(target)
        if is_dir:
            self.mkdirs(target)
        elif not os.path.exists(full):  # e.g. /proc/meminfo exists: bound over as it is
            self.mkdirs(os.path.dirname(target) or "/")
            os.close(os.open(full, os.O_WRONLY | os.O_CREAT, 0o644))
        mount(source, full, None, MS_BIND | MS_REC)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
        mount(None, full, None, flags)

    def tmpfs(self, target: str) -> None:
        full = self.mkdirs(target)
        options = f"mode={self._take_perms(0o755):o}"
        if self._size is not None:
            options += f",size={self._size}"
            self._size = None
        mount("tmpfs", full, "tmpfs", MS_NOSUID | MS_NODEV, options)

    def proc(self, target: str) -> None:
        full = self.mkdirs(target)
        mount("proc", full, "proc", PROC_FLAGS)
        for name in PROC_READ_ONLY:
            path = f"{full}/{name}"
            if os.path.exists(path):
                mount(path, path, None, MS_BIND | MS_REC)
                mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | PROC_FLAGS)

    def dev(self, target: str) -> None:
        full = self.mkdirs(target)
        mount("tmpfs", full, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        for name in DEVICES:
            node = f"{full}/{name}"
            os.close(os.open(node, os.O_WRONLY | os.O_CREAT, 0o644))
            mount(f"/dev/{name}", node, None, MS_BIND)
            mount(None, node, None, MS_REMOUNT | MS_BIND | MS_NOSUID)  # a bind ignores flags
        for name, points_to in DEV_LINKS.items():
            os.symlink(points_to, f"{full}/{name}")
        os.mkdir(f"{full}/shm", 0o755)
        os.mkdir(f"{full}/pts", 0o755)
        mount("devpts", f"{full}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=620")  # fmt: skip

    def pivot(self) -> None:
        """Make the new root `/` and drop every host mount from this namespace."""
        os.chdir(self.new_root)
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir("/")
        if self.read_only_root:
            mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


# -- 4: host name, network, descriptors ------------------------------------------------------


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def arrange_fds(stderr_fd: int, received: list[int], targets: list[int]) -> None:
    """stdin/stdout on /dev/null, stderr on `stderr_fd`, each `received[i]` at `targets[i]`
    (inheritable), every other descriptor closed."""
    keep = {0, 1, 2, *targets}
    floor = max(keep) + 1
    # Out of the way first, so no dup2 below overwrites a descriptor still to be placed.
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in (stderr_fd, *received)]
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(moved[0], 2)
    for fd, target in zip(moved[1:], targets, strict=True):
        os.dup2(fd, target)
    low = 3
    for fd in sorted(keep - {0, 1, 2}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


# -- 5: privileges ---------------------------------------------------------------------------


def drop_privileges(uid: int, gid: int) -> None:
    with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        prctl(PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # clears permitted and effective, not inheritable
    header = struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two __user_cap_data_struct, all zero
    _check(_libc.syscall(SYS_CAPSET, header, data), "capset")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    # setuid() left us non-dumpable, which is what the in-process agent wants (it keeps the
    # function out of /proc/1/mem); exec makes argv dumpable again.
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def load_seccomp(program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buffer))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog_buffer))


# -- all of it -------------------------------------------------------------------------------


def make_network_namespace(home_fd: int) -> int:
    """A fresh network namespace with `lo` up, held by the returned descriptor; the caller
    (the zygote, between spawns) returns to the namespace `home_fd` refers to."""
    unshare(CLONE_NEWNET)
    try:
        fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        loopback_up()
    finally:
        setns(home_fd, CLONE_NEWNET)
    return fd


def enter(
    request: SpawnRequest,
    stderr_fd: int,
    received: list[int],
    seccomp_filter: bytes,
    netns_fd: int = -1,
) -> None:
    """Steps 1-5 (see the module docstring) for one spawn request from the host. `netns_fd`:
    a network namespace made ahead of time (`make_network_namespace`), else a new one."""
    join_cgroups(request["cgroup_tasks"])
    if netns_fd >= 0:
        setns(netns_fd, CLONE_NEWNET)
        unshare(SANDBOX_NAMESPACES & ~CLONE_NEWNET)
    else:
        unshare(SANDBOX_NAMESPACES)
        loopback_up()
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = RootBuilder(request["new_root"])
    root.run(request["mount_args"])
    root.pivot()
    socket.sethostname(request["hostname"])
    os.setsid()  # no controlling terminal: TIOCSTI cannot reach a host tty
    arrange_fds(stderr_fd, received, request["fd_targets"])
    os.chdir(request["cwd"])
    drop_privileges(request["uid"], request["uid"])
    load_seccomp(seccomp_filter)
    os.environ.clear()
    os.environ.update(request["env"])


def reset_signals() -> None:
    """Dispositions and mask as a freshly exec'd program expects them (Python ignores
    SIGPIPE and SIGXFSZ; exec keeps ignored signals ignored)."""
    for number in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def exec_argv(argv: list[str], env: dict[str, str]) -> None:
    """execvp as `env -i` does it: PATH from the new environment; exit 127/126 on failure."""
    reset_signals()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:
        sys.stderr.write(f"lambdahost: cannot run {argv[0]}: {error.strerror}\n")
        sys.stderr.flush()
        os._exit(126 if error.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else 127)
