"""The cgroups of one sandbox, behind one small interface with a v1 and a v2 implementation.

`detect()` finds the host's layout once: cgroup v1 (or hybrid: v1 controllers mounted side by
side as `/sys/fs/cgroup/<controller>`) or cgroup v2 only (one unified tree, where we run in a
delegated subtree: see `cgroups_v2`). A layout names groups relative to its base, e.g.
`lambdahost/<instance>/<sandbox_id>`, and hands out `CgroupSet`s for them.

Everything here is a handful of small reads and writes to cgroupfs (microseconds), so it is
synchronous; only the waits (freezing, emptying a group) are async and poll.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from lambdahost.sandbox.cgroup_base import (
    CGROUP_ROOT,
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

__all__ = [
    "CGROUP_ROOT",
    "CONTROLLERS",
    "CgroupError",
    "CgroupLayout",
    "CgroupSet",
    "LayoutDescription",
    "Limits",
    "V1CgroupSet",
    "V1Layout",
    "check_available",
    "children",
    "detect",
    "from_description",
    "instance_parent",
    "is_unified",
    "limit_parent",
    "remove_if_empty",
]

CONTROLLERS = ("memory", "cpu", "pids", "freezer")


class V1Layout(CgroupLayout):
    version = 1

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root

    def group(self, name: str) -> V1CgroupSet:
        return V1CgroupSet(name, self.root)

    def paths(self, name: str) -> list[Path]:
        return [self.root / controller / name for controller in CONTROLLERS]

    def children(self, parent: str) -> set[str]:
        names: set[str] = set()
        for base in self.paths(parent):
            if base.is_dir():
                names.update(entry.name for entry in base.iterdir() if entry.is_dir())
        return names

    def remove_if_empty(self, name: str) -> None:
        for path in self.paths(name):
            with contextlib.suppress(OSError):
                path.rmdir()

    def limit_parent(self, parent: str, memory_bytes: int, pids_max: int) -> None:
        memory = self.root / "memory" / parent
        pids = self.root / "pids" / parent
        for path in (memory, pids):
            path.mkdir(parents=True, exist_ok=True)
        memsw = memory / "memory.memsw.limit_in_bytes"
        # memsw may never be below the plain limit: raise it first, lower it last.
        _try_write(memsw, memory_bytes)
        _write(memory / "memory.limit_in_bytes", memory_bytes)
        _try_write(memsw, memory_bytes)
        _write(pids / "pids.max", pids_max)

    def describe(self) -> LayoutDescription:
        return {"version": 1, "root": str(self.root)}


class V1CgroupSet(CgroupSet):
    """cgroup v1: the groups named `name` in every controller, side by side."""

    def __init__(self, name: str, root: Path = CGROUP_ROOT) -> None:
        self.name = name
        self.root = root

    def path(self, controller: str) -> Path:
        return self.root / controller / self.name

    def procs_files(self) -> list[Path]:
        return [self.path(c) / "cgroup.procs" for c in CONTROLLERS]

    def join_files(self) -> list[Path]:
        # `tasks`, not `cgroup.procs`: moving only the (single-threaded) caller skips the
        # global threadgroup lock, whose write side waits for an RCU grace period (~10 ms).
        return [self.path(c) / "tasks" for c in CONTROLLERS]

    def exists(self) -> bool:
        return any(self.path(c).is_dir() for c in CONTROLLERS)

    def create(self, limits: Limits) -> None:
        for controller in CONTROLLERS:
            self.path(controller).mkdir(parents=True, exist_ok=True)
        memory = self.path("memory")
        # The plain limit first: the kernel refuses memsw below it.
        _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
        if (memory / "memory.memsw.limit_in_bytes").exists():
            _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
        _try_write(memory / "memory.swappiness", 0)
        _write(self.path("cpu") / "cpu.shares", max(2, limits.cpu_shares))
        _write(self.path("pids") / "pids.max", limits.pids_max)

    def tasks(self) -> set[int]:
        pids: set[int] = set()
        for controller in CONTROLLERS:
            try:
                text = (self.path(controller) / "cgroup.procs").read_text()
            except FileNotFoundError:
                continue
            pids.update(int(line) for line in text.split())
        return pids

    def memory_current(self) -> int:
        return _read_int(self.path("memory") / "memory.usage_in_bytes")

    def memory_peak(self) -> int:
        return _read_int(self.path("memory") / "memory.max_usage_in_bytes")

    def oom_killed(self) -> bool:
        try:
            text = (self.path("memory") / "memory.oom_control").read_text()
        except FileNotFoundError:
            return False
        fields = dict(line.split() for line in text.splitlines() if line.strip())
        if "oom_kill" in fields:
            return int(fields["oom_kill"]) > 0
        # Kernels without the counter: having hit the hard limit is the best signal left.
        return _read_int(self.path("memory") / "memory.failcnt") > 0

    def pids_current(self) -> int:
        return _read_int(self.path("pids") / "pids.current")

    def freezer_state(self) -> str:
        return (self.path("freezer") / "freezer.state").read_text().strip()

    def _request_freeze(self) -> None:
        (self.path("freezer") / "freezer.state").write_text("FROZEN")

    def _can_freeze(self) -> bool:
        return self.path("freezer").is_dir()

    def thaw(self) -> None:
        state_file = self.path("freezer") / "freezer.state"
        try:
            if state_file.read_text().strip() != "THAWED":
                state_file.write_text("THAWED")
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        for controller in CONTROLLERS:
            rmdir_retrying(self.path(controller))


# -- the layout of this host -----------------------------------------------------------------

_layouts: dict[Path, CgroupLayout] = {}


def is_unified(root: Path = CGROUP_ROOT) -> bool:
    """cgroup v2 only: the unified tree is mounted at `root` and no v1 controller is."""
    return (root / "cgroup.controllers").exists() and not (root / "memory" / "tasks").exists()


def detect(root: Path = CGROUP_ROOT) -> CgroupLayout:
    """The layout under `root`, found (and on v2 prepared: see `cgroups_v2.delegate`) once per
    process. Raises CgroupError with one sentence per thing the host lacks."""
    layout = _layouts.get(root)
    if layout is None:
        if is_unified(root):
            from lambdahost.sandbox.cgroups_v2 import delegate

            layout = delegate(root)
        else:
            missing = [c for c in CONTROLLERS if not (root / c / "cgroup.procs").exists()]
            if missing:
                raise CgroupError(
                    f"cgroup v1 controllers not mounted under {root}: {', '.join(missing)}"
                )
            layout = V1Layout(root)
        _layouts[root] = layout
    return layout


def from_description(what: LayoutDescription) -> CgroupLayout:
    """The layout another process detected (`CgroupLayout.describe`), without detecting."""
    if what.get("version", 1) == 1:
        return V1Layout(Path(what["root"]))
    from lambdahost.sandbox.cgroups_v2 import V2Layout

    return V2Layout(Path(what["root"]), what["base"], tuple(what["controllers"]))


def check_available(root: Path = CGROUP_ROOT) -> None:
    """Raise CgroupError unless sandboxes can have cgroups here (v1, or delegated v2)."""
    detect(root)


def instance_parent(state_dir: Path) -> str:
    """The cgroup parent of one backend instance, `lambdahost/<hash of its state dir>`, so
    servers with different data dirs never touch each other's sandboxes."""
    return f"lambdahost/{hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]}"


def children(parent: str, root: Path = CGROUP_ROOT) -> set[str]:
    return detect(root).children(parent)


def limit_parent(parent: str, root: Path, memory_bytes: int, pids_max: int) -> None:
    detect(root).limit_parent(parent, memory_bytes, pids_max)


def remove_if_empty(name: str, root: Path = CGROUP_ROOT) -> None:
    detect(root).remove_if_empty(name)
