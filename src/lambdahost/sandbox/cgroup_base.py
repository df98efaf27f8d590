"""What every cgroup layout shares: the interface of one sandbox's groups (`CgroupSet`) and
of a host's layout (`CgroupLayout`), and the small cgroupfs helpers. `cgroups` implements it
for v1 and picks the layout; `cgroups_v2` implements it for the unified tree. Both import
this module, never each other's classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

CGROUP_ROOT = Path("/sys/fs/cgroup")


class CgroupError(OSError):
    pass


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu_shares: int  # the v1 unit (2..262144); v2 converts it to cpu.weight
    pids_max: int


class LayoutDescription(TypedDict):
    """A layout as JSON (`CgroupLayout.describe`), for `cgroups.from_description`."""

    version: int  # 1 or 2
    root: str
    base: NotRequired[str]  # v2: the delegated subtree, relative to root
    controllers: NotRequired[list[str]]  # v2: enabled for sandboxes


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
    def describe(self) -> LayoutDescription:
        """What `from_description` needs to rebuild this layout in another process."""


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
