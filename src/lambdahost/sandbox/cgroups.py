"""cgroup v1 groups of one sandbox: memory, cpu, pids and freezer, created side by side as
`/sys/fs/cgroup/<controller>/<name>`.

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
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "pids", "freezer")


class CgroupError(OSError):
    pass


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu_shares: int
    pids_max: int


def check_available(root: Path = CGROUP_ROOT) -> None:
    """Raise CgroupError unless every controller we use is mounted as cgroup v1."""
    missing = [c for c in CONTROLLERS if not (root / c / "cgroup.procs").exists()]
    if missing:
        raise CgroupError(f"cgroup v1 controllers not mounted under {root}: {', '.join(missing)}")


class CgroupSet:
    """The groups named `name` (a relative path, e.g. `lambdahost/<instance>/<sandbox_id>`)
    in every controller."""

    def __init__(self, name: str, root: Path = CGROUP_ROOT) -> None:
        self.name = name
        self.root = root

    def path(self, controller: str) -> Path:
        return self.root / controller / self.name

    def procs_files(self) -> list[Path]:
        """Writing a pid into each of these moves that process into the sandbox's groups."""
        return [self.path(c) / "cgroup.procs" for c in CONTROLLERS]

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

    # -- reading ---------------------------------------------------------------------------

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

    # -- controlling -----------------------------------------------------------------------

    async def freeze(self, timeout: float = 5.0) -> None:
        """Freeze every task; returns once the kernel reports FROZEN."""
        state_file = self.path("freezer") / "freezer.state"
        deadline = time.monotonic() + timeout
        delay = 0.0002
        while True:
            # Re-writing FROZEN makes the kernel retry tasks that were busy on the last pass.
            state_file.write_text("FROZEN")
            if state_file.read_text().strip() == "FROZEN":
                return
            if time.monotonic() > deadline:
                raise CgroupError(errno.ETIMEDOUT, f"freezing {self.name} timed out")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    def thaw(self) -> None:
        state_file = self.path("freezer") / "freezer.state"
        try:
            if state_file.read_text().strip() != "THAWED":
                state_file.write_text("THAWED")
        except FileNotFoundError:
            pass

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
            if self.path("freezer").is_dir():
                with contextlib.suppress(CgroupError):
                    await self.freeze(timeout=1.0)
            self.kill_once(inner_only=rounds == 0)
            self.thaw()
            rounds += 1
            wait_until = time.monotonic() + 1.0
            while self.tasks() and time.monotonic() < wait_until:
                await asyncio.sleep(0.002)
            if time.monotonic() > deadline:
                raise CgroupError(errno.EBUSY, f"tasks of {self.name} survive SIGKILL")

    def kill_all_blocking(self, timeout: float = 10.0) -> None:
        """kill_all() for synchronous callers (start-up cleanup)."""
        deadline = time.monotonic() + timeout
        state_file = self.path("freezer") / "freezer.state"
        rounds = 0
        while self.tasks():
            with contextlib.suppress(OSError):
                freeze_until = time.monotonic() + 1.0
                state_file.write_text("FROZEN")
                while state_file.read_text().strip() != "FROZEN":
                    if time.monotonic() > freeze_until:
                        break
                    time.sleep(0.001)
                    state_file.write_text("FROZEN")
            self.kill_once(inner_only=rounds == 0)
            self.thaw()
            rounds += 1
            wait_until = time.monotonic() + 1.0
            while self.tasks() and time.monotonic() < wait_until:
                time.sleep(0.002)
            if time.monotonic() > deadline:
                raise CgroupError(errno.EBUSY, f"tasks of {self.name} survive SIGKILL")

    def remove(self) -> None:
        """rmdir the (empty) groups; a group that is already gone is fine."""
        for controller in CONTROLLERS:
            path = self.path(controller)
            for attempt in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    # EBUSY right after the last task exits, while the kernel finishes it.
                    if error.errno != errno.EBUSY or attempt == 49:
                        raise CgroupError(error.errno, f"cannot remove {path}: {error}") from None
                    time.sleep(0.002)


def children(parent: str, root: Path = CGROUP_ROOT) -> set[str]:
    """Names of the groups directly under `parent` in any controller."""
    names: set[str] = set()
    for controller in CONTROLLERS:
        base = root / controller / parent
        if base.is_dir():
            names.update(entry.name for entry in base.iterdir() if entry.is_dir())
    return names


def instance_parent(state_dir: Path) -> str:
    """The cgroup parent of one backend instance, `lambdahost/<hash of its state dir>`, so
    servers with different data dirs never touch each other's sandboxes."""
    return f"lambdahost/{hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]}"


def limit_parent(parent: str, root: Path, memory_bytes: int, pids_max: int) -> None:
    """Create a backend's cgroup parent (if missing) and cap what all its sandboxes together
    may use: a host-wide ceiling over the per-sandbox limits, kept by the kernel even if the
    accounting above it is wrong."""
    memory = root / "memory" / parent
    pids = root / "pids" / parent
    for path in (memory, pids):
        path.mkdir(parents=True, exist_ok=True)
    memsw = memory / "memory.memsw.limit_in_bytes"
    # memsw may never be below the plain limit: raise it first, lower it last.
    _try_write(memsw, memory_bytes)
    _write(memory / "memory.limit_in_bytes", memory_bytes)
    _try_write(memsw, memory_bytes)
    _write(pids / "pids.max", pids_max)


def remove_if_empty(name: str, root: Path = CGROUP_ROOT) -> None:
    """rmdir the group `name` in every controller where it has no children and no tasks."""
    for controller in CONTROLLERS:
        with contextlib.suppress(OSError):
            (root / controller / name).rmdir()


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
