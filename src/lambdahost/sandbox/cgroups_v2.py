"""cgroup v2 (unified) groups, and the delegated subtree they live in.

On a v2-only host the sandboxes' groups are `<base>/lambdahost/<instance>/<sandbox_id>`, where
`<base>` is a cgroup we may manage: under systemd a unit with `Delegate=yes`, or a transient
scope of our own that we ask systemd for; elsewhere (containers, a plain init) the cgroup we
were started in. v2's "no internal processes" rule means a group that hands controllers to
children may hold no processes: so if `<base>` holds some (us, our parent shell, ...), they all
move into the leaf `<base>/server` first, before any helper (zygote, watchdog, lxcfs) starts,
and `lambdahost/` and each instance parent only ever hold child groups.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import time
from pathlib import Path

from lambdahost.sandbox.cgroup_base import (
    CgroupError,
    CgroupLayout,
    CgroupSet,
    LayoutDescription,
    Limits,
    _read_int,
    _try_write,
    _write,
    rmdir_retrying,
)

log = logging.getLogger("lambdahost.sandbox")

REQUIRED = ("memory", "pids")
WANTED = ("memory", "pids", "cpu")
SERVER_LEAF = "server"
_SYSTEMD = Path("/run/systemd/system")


def cpu_weight(shares: int) -> int:
    """v1 cpu.shares (2..262144, default 1024) as v2 cpu.weight (1..10000, default 100): the
    conversion the kernel and systemd use."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


class V2Layout(CgroupLayout):
    version = 2

    def __init__(self, root: Path, base: str, controllers: tuple[str, ...]) -> None:
        self.root = root
        self.base = base.strip("/")  # "" for the root cgroup
        self.controllers = controllers  # what we enable for sandboxes
        self._ready: set[str] = set()  # parents whose subtree_control we have set

    def path(self, name: str) -> Path:
        return self.root / self.base / name if self.base else self.root / name

    def group(self, name: str) -> V2CgroupSet:
        return V2CgroupSet(name, self)

    def paths(self, name: str) -> list[Path]:
        return [self.path(name)]

    def children(self, parent: str) -> set[str]:
        base = self.path(parent)
        if not base.is_dir():
            return set()
        return {entry.name for entry in base.iterdir() if entry.is_dir()}

    def remove_if_empty(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self.path(name).rmdir()
        self._ready.discard(name)

    def ensure_parent(self, parent: str) -> None:
        """mkdir `parent` (and the levels above it) with our controllers enabled for children;
        these inner nodes never hold processes."""
        if parent in self._ready and self.path(parent).is_dir():
            return
        name = ""
        for part in parent.strip("/").split("/"):
            name = f"{name}/{part}" if name else part
            path = self.path(name)
            path.mkdir(exist_ok=True)
            enable(path, self.controllers)
        self._ready.add(parent)

    def limit_parent(self, parent: str, memory_bytes: int, pids_max: int) -> None:
        self.ensure_parent(parent)
        path = self.path(parent)
        _write(path / "memory.max", "max" if memory_bytes < 0 else memory_bytes)
        _try_write(path / "memory.swap.max", 0)
        _write(path / "pids.max", pids_max)

    def describe(self) -> LayoutDescription:
        return {
            "version": 2,
            "root": str(self.root),
            "base": self.base,
            "controllers": list(self.controllers),
        }


class V2CgroupSet(CgroupSet):
    """cgroup v2: one group with every controller."""

    def __init__(self, name: str, layout: V2Layout) -> None:
        self.name = name
        self.layout = layout
        self.dir = layout.path(name)
        self._peak_seen = 0  # kernels without memory.peak (< 5.19): the highest sample

    def path(self, controller: str | None = None) -> Path:
        """The group's directory (the same for every controller: for tests written for v1)."""
        return self.dir

    def procs_files(self) -> list[Path]:
        return [self.dir / "cgroup.procs"]

    def join_files(self) -> list[Path]:
        # v2 has no per-thread `tasks` in domain groups: "0" into cgroup.procs moves the
        # writer's whole (single-threaded) process.
        return [self.dir / "cgroup.procs"]

    def exists(self) -> bool:
        return self.dir.is_dir()

    def create(self, limits: Limits) -> None:
        parent = self.name.rpartition("/")[0]
        if parent:
            self.layout.ensure_parent(parent)
        self.dir.mkdir(exist_ok=True)
        _write(self.dir / "memory.max", limits.memory_bytes)
        # No swap, as v1's memsw limit = memory limit says (absent without swap accounting).
        _try_write(self.dir / "memory.swap.max", 0)
        _write(self.dir / "pids.max", limits.pids_max)
        if "cpu" in self.layout.controllers:
            _write(self.dir / "cpu.weight", cpu_weight(limits.cpu_shares))

    def tasks(self) -> set[int]:
        try:
            text = (self.dir / "cgroup.procs").read_text()
        except FileNotFoundError:
            return set()
        return {int(line) for line in text.split()}

    def memory_current(self) -> int:
        current = _read_int(self.dir / "memory.current")
        self._peak_seen = max(self._peak_seen, current)
        return current

    def memory_peak(self) -> int:
        peak = self.dir / "memory.peak"
        if peak.exists():
            return _read_int(peak)
        return max(self._peak_seen, self.memory_current())

    def oom_killed(self) -> bool:
        return _keyed(self.dir / "memory.events").get("oom_kill", 0) > 0

    def pids_current(self) -> int:
        return _read_int(self.dir / "pids.current")

    def freezer_state(self) -> str:
        if _keyed(self.dir / "cgroup.events").get("frozen") == 1:
            return "FROZEN"
        if _read_int(self.dir / "cgroup.freeze") == 1:
            return "FREEZING"
        return "THAWED"

    def _request_freeze(self) -> None:
        (self.dir / "cgroup.freeze").write_text("1")

    def _can_freeze(self) -> bool:
        return (self.dir / "cgroup.freeze").exists()

    def thaw(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "cgroup.freeze").write_text("0")

    def _kill_rest(self) -> None:
        try:
            (self.dir / "cgroup.kill").write_text("1")  # kernels >= 5.14: all, atomically
        except FileNotFoundError:
            self.kill_once()
        except OSError as error:
            if error.errno != errno.ENOENT:
                self.kill_once()

    def remove(self) -> None:
        rmdir_retrying(self.dir)


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (`memory.events`, `cgroup.events`) as a dict."""
    try:
        text = path.read_text()
    except (FileNotFoundError, OSError):
        return {}
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            fields[key] = int(value)
    return fields


def enable(path: Path, controllers: tuple[str, ...]) -> None:
    """Enable `controllers` for the children of `path` (each alone: one refused must not
    hide the others' errors)."""
    enabled = set((path / "cgroup.subtree_control").read_text().split())
    for controller in controllers:
        if controller not in enabled:
            _write(path / "cgroup.subtree_control", f"+{controller}")


# -- finding and preparing the delegated subtree ----------------------------------------------


def own_cgroup(pid: int | str = "self") -> str:
    """The v2 path of a process's cgroup ("0::/path" in /proc/<pid>/cgroup)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    raise CgroupError(errno.ENOENT, "cgroup v2: this process is in no cgroup v2 group")


def _delegated(path: Path) -> bool:
    """systemd (>= 251) marks the cgroups of units with Delegate=yes with this xattr."""
    for name in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(path, name) == b"1":
                return True
    return False


def _own_scope() -> bool:
    """Ask systemd for a transient scope with Delegate=yes holding this process (what
    `systemd-run --scope -p Delegate=yes` does for a new command). True once we are in it."""
    before = own_cgroup()
    unit = f"lambdahost-{os.getpid()}-{int(time.time())}.scope"
    call = [
        "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
        unit, "fail", "3", "PIDs", "au", "1", str(os.getpid()), "Delegate", "b", "true",
        "Description", "s", "lambdahost sandboxes", "0",
    ]  # fmt: skip
    # systemd's private socket first (root only; needs no D-Bus daemon), then the system bus.
    for bus in ("--address=unix:path=/run/systemd/private", "--system"):
        try:
            subprocess.run(
                ["busctl", "call", "--quiet", bus, *call],
                check=True,
                capture_output=True,
                timeout=30,
            )
            break
        except (OSError, subprocess.SubprocessError) as error:
            log.debug("cannot get a systemd scope over %s: %s", bus, error)
    else:
        return False
    deadline = time.monotonic() + 5
    while own_cgroup() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    return own_cgroup() != before


def _move_to_leaf(ours: Path) -> None:
    """Empty `ours` into its leaf `server` (the whole processes: cgroup.procs)."""
    leaf = ours / SERVER_LEAF
    leaf.mkdir(exist_ok=True)
    for _ in range(20):
        pids = (ours / "cgroup.procs").read_text().split()
        if not pids:
            return
        for pid in pids:
            try:
                (leaf / "cgroup.procs").write_text(pid)
            except OSError as error:
                if error.errno != errno.ESRCH:  # gone meanwhile
                    raise CgroupError(
                        error.errno, f"cgroup v2: cannot move process {pid} to {leaf}: {error}"
                    ) from None
    raise CgroupError(errno.EBUSY, f"cgroup v2: processes keep appearing in {ours}")


def delegate(root: Path) -> V2Layout:
    """Find (or ask systemd for) a cgroup we may manage, and prepare it: our processes in a
    leaf, our controllers enabled for children. Raises CgroupError with one sentence per
    controller that is not delegated to us."""
    own = own_cgroup()
    ours = root / own.lstrip("/")
    available = set((ours / "cgroup.controllers").read_text().split())
    if (
        own != "/"
        and _SYSTEMD.is_dir()
        and os.geteuid() == 0
        and (not _delegated(ours) or not set(WANTED) <= available)
        and _own_scope()
    ):
        own = own_cgroup()
        ours = root / own.lstrip("/")
        available = set((ours / "cgroup.controllers").read_text().split())
        log.info("cgroup v2: running in our own systemd scope %s", own)
    missing = [c for c in REQUIRED if c not in available]
    if missing:
        raise CgroupError(
            errno.EPERM,
            " ".join(
                f"cgroup v2: the {c} controller is not delegated to {own}; run lambdahost in a"
                " unit with Delegate=yes, or as `systemd-run --scope -p Delegate=yes lambdahost"
                " serve …`."
                for c in missing
            ),
        )
    controllers = tuple(c for c in WANTED if c in available)
    if "cpu" not in controllers:
        log.warning(
            "cgroup v2: the cpu controller is not delegated to %s; sandboxes get no CPU weight",
            own,
        )
    try:
        enable(ours, controllers)
    except CgroupError as error:
        if error.errno != errno.EBUSY:  # anything but "this group holds processes"
            raise
        _move_to_leaf(ours)
        enable(ours, controllers)
    return V2Layout(root, own, controllers)
