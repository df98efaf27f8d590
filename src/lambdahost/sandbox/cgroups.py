"""The cgroups of one sandbox, behind one small interface with a v1 and a v2 implementation.

`detect()` finds the host's layout once: cgroup v1 (or hybrid: v1 controllers mounted side by
side as `/sys/fs/cgroup/<controller>`) or cgroup v2 only (one unified tree, where we run in a
delegated subtree: see `cgroups_v2`). A layout names groups relative to its base, e.g.
`lambdahost/<instance>/<sandbox_id>`, and hands out `CgroupSet`s for them.

Everything here is a handful of small reads and writes to cgroupfs (microseconds), so it is
synchronous; only the waits (freezing, emptying a group) are async and poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "pids", "freezer")


class CgroupError(OSError):
    pass


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu_shares: int  # the v1 unit (2..262144); v2 converts it to cpu.weight
    pids_max: int


class CgroupSet(ABC):
    """The group(s) of one sandbox. `name` is relative to the layout's base."""

    name: str

    @abstractmethod
    def procs_files(self) -> list[Path]:
        """Writing a pid into each of these moves that process into the sandbox's groups."""

    @abstractmethod
    def join_files(self) -> list[Path]:
        """Writing "0" into each of these moves the writer itself (launcher.join_cgroups)."""

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def create(self, limits: Limits) -> None: ...

    @abstractmethod
    def tasks(self) -> set[int]: ...

    @abstractmethod
    def memory_current(self) -> int: ...

    @abstractmethod
    def memory_peak(self) -> int: ...

    @abstractmethod
    def oom_killed(self) -> bool: ...

    @abstractmethod
    def pids_current(self) -> int: ...

    @abstractmethod
    def freezer_state(self) -> str:
        """ "FROZEN", "FREEZING" or "THAWED", as the v1 freezer says it."""

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    def remove(self) -> None:
        """rmdir the (empty) group(s); a group that is already gone is fine."""

    @abstractmethod
    def _request_freeze(self) -> None:
        """Ask the kernel to freeze (v1: again, which retries tasks busy on the last pass)."""

    @abstractmethod
    def _can_freeze(self) -> bool: ...

    def _kill_rest(self) -> None:
        """Kill everything left (v2: cgroup.kill where the kernel has it)."""
        self.kill_once()

    async def freeze(self, timeout: float = 5.0) -> None:
        """Freeze every task; returns once the kernel reports FROZEN."""
        deadline = time.monotonic() + timeout
        delay = 0.0002
        while True:
            self._request_freeze()
            if self.freezer_state() == "FROZEN":
                return
            if time.monotonic() > deadline:
                raise CgroupError(errno.ETIMEDOUT, f"freezing {self.name} timed out")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    def kill_once(self, inner_only: bool = False) -> int:
        """SIGKILL the tasks now in the groups; returns how many were signalled. With
        `inner_only`, spare tasks in our own pid namespace (bwrap's monitor): it then reaps
        the sandbox's PID 1 and exits by itself instead of leaving an orphaned zombie."""
        pids = self.tasks()
        if inner_only:
            ours = os.readlink("/proc/self/ns/pid")
            pids = {pid for pid in pids if _pid_namespace(pid) not in (ours, None)}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    async def kill_all(self, timeout: float = 10.0) -> None:
        """Kill until the groups are empty. Frozen tasks only die once thawed, so freeze first
        (nothing can fork while we signal), signal, then thaw. The first round spares bwrap's
        monitor, which exits once its child is gone; later rounds kill everything."""
        deadline = time.monotonic() + timeout
        rounds = 0
        while self.tasks():
            if self._can_freeze():
                with contextlib.suppress(CgroupError):
                    await self.freeze(timeout=1.0)
            if rounds == 0:
                self.kill_once(inner_only=True)
            else:
                self._kill_rest()
            self.thaw()
            rounds += 1
            wait_until = time.monotonic() + 1.0
            while self.tasks() and time.monotonic() < wait_until:
                await asyncio.sleep(0.002)
            if time.monotonic() > deadline:
                raise CgroupError(errno.EBUSY, f"tasks of {self.name} survive SIGKILL")

    def kill_all_blocking(self, timeout: float = 10.0) -> None:
        """kill_all() for synchronous callers (start-up cleanup, the watchdog)."""
        deadline = time.monotonic() + timeout
        rounds = 0
        while self.tasks():
            with contextlib.suppress(OSError):
                freeze_until = time.monotonic() + 1.0
                self._request_freeze()
                while self.freezer_state() != "FROZEN":
                    if time.monotonic() > freeze_until:
                        break
                    time.sleep(0.001)
                    self._request_freeze()
            if rounds == 0:
                self.kill_once(inner_only=True)
            else:
                self._kill_rest()
            self.thaw()
            rounds += 1
            wait_until = time.monotonic() + 1.0
            while self.tasks() and time.monotonic() < wait_until:
                time.sleep(0.002)
            if time.monotonic() > deadline:
                raise CgroupError(errno.EBUSY, f"tasks of {self.name} survive SIGKILL")


class CgroupLayout(ABC):
    """Where groups live on this host, and the operations on the tree of them."""

    version: int
    root: Path

    @abstractmethod
    def group(self, name: str) -> CgroupSet: ...

    @abstractmethod
    def paths(self, name: str) -> list[Path]:
        """The directories of group `name` (one per controller on v1, one on v2)."""

    @abstractmethod
    def children(self, parent: str) -> set[str]:
        """Names of the groups directly under `parent`."""

    @abstractmethod
    def remove_if_empty(self, name: str) -> None:
        """rmdir group `name` where it has no children and no tasks."""

    @abstractmethod
    def limit_parent(self, parent: str, memory_bytes: int, pids_max: int) -> None:
        """Create a backend's cgroup parent (if missing) and cap what all its sandboxes
        together may use: a host-wide ceiling over the per-sandbox limits, kept by the kernel
        even if the accounting above it is wrong. memory_bytes -1: no memory limit."""

    @abstractmethod
    def describe(self) -> dict:
        """What `from_description` needs to rebuild this layout in another process."""


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

    def describe(self) -> dict:
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


def rmdir_retrying(path: Path) -> None:
    for attempt in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            # EBUSY right after the last task exits, while the kernel finishes it.
            if error.errno != errno.EBUSY or attempt == 49:
                raise CgroupError(error.errno, f"cannot remove {path}: {error}") from None
            time.sleep(0.002)


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


def from_description(what: dict) -> CgroupLayout:
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


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def _write(path: Path, value: int | str) -> None:
    try:
        path.write_text(str(value))
    except OSError as error:
        raise CgroupError(error.errno, f"cannot write {value} to {path}: {error}") from None


def _try_write(path: Path, value: int | str) -> None:
    try:
        path.write_text(str(value))
    except OSError:
        pass
