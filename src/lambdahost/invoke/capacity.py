"""Host capacity: how much this host holds at once, and how fast it may add to it.

Node-local, like the pool it serves. Two budgets:
- memory: the MemorySize of every live environment (starting, busy, idle, provisioned) adds up
  to at most `memory_mb` (default 80 % of MemTotal);
- disk: their EphemeralStorage (disk-backed `/tmp` volumes, sparse images on the data dir's file
  system) adds up to at most `disk_mb` (default 80 % of the free space there, re-measured).
A cold start reserves both before its sandbox exists and gives them back when the environment
is destroyed. One that does not fit lets the pool evict idle environments (least recently used
first); if it still does not fit it is refused with AWS's throttle, never started.

And one gate (`StartGate`): at most `limit` cold starts run at once, since each costs CPU
(sandbox, runtime start-up, init code) and a hundred at once only thrash a small host. The rest
wait in FIFO order, at most `max_waiting` of them and each at most `max_wait_s`; past either
bound they are refused with the same throttle.

Everything runs on the event loop: check-and-reserve is atomic without locks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lambdahost.errors import TooManyRequests

log = logging.getLogger("lambdahost.capacity")

RETRY_AFTER_S = 1
# The host-wide throttle: from the caller's side this host's capacity is the account's pool
# of concurrent executions (no function's own reservation is what ran out).
REASON = "ConcurrentInvocationLimitExceeded"
DISK_REFRESH_S = 30.0
PARENT_MARGIN_MB = 256
T = TypeVar("T")


def host_throttled(detail: str) -> TooManyRequests:
    """AWS's throttle (429 TooManyRequestsException with a Reason, Retry-After): SDKs retry it,
    the async queue retries it without using an attempt."""
    return TooManyRequests(
        f"Rate Exceeded. {detail}",
        headers={"Retry-After": str(RETRY_AFTER_S)},
        extra={"Reason": REASON, "retryAfterSeconds": str(RETRY_AFTER_S)},
    )


# -- measuring the host -------------------------------------------------------------------------
def memory_total_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError("no MemTotal in /proc/meminfo")


def disk_free_mb(path: Path) -> int:
    """Space an unprivileged writer could still use on `path`'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize >> 20


def allocated_mb(directory: Path) -> int:
    """Blocks the files under `directory` occupy on its own file system (mounts inside it,
    e.g. a volume mounted on the host, are not entered)."""
    try:
        device = directory.stat().st_dev
    except FileNotFoundError:
        return 0
    total = 0
    for root, dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if st.st_dev == device:
                    total += st.st_blocks * 512
        dirs[:] = [d for d in dirs if _same_device(os.path.join(root, d), device)]
    return total >> 20


def _same_device(path: str, device: int) -> bool:
    try:
        return os.lstat(path).st_dev == device
    except OSError:
        return False


def budget_mb(text: str, measure: Callable[[], int]) -> tuple[int, float | None]:
    """A budget written as "<MB>" or "<percent>%" of what `measure()` returns (MB).
    Returns (MB, the share, or None for an absolute budget)."""
    text = text.strip()
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        return int(measure() * share), share
    return int(text), None


def default_pids_budget() -> int:
    """Half the host's pids: 1,024 per sandbox would exhaust a default pid_max (32,768) with
    32 busy sandboxes, and the host itself must still be able to fork."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) // 2
    except (OSError, ValueError):
        return 16384


def default_cold_starts() -> int:
    return 2 * (os.cpu_count() or 1)


def limit_backend_parent(backend: object, memory_mb: int | None, pids_max: int) -> None:
    """Put the memory budget (plus a margin for what the accounting does not see: kernel
    memory, a sandbox being torn down) and the pids budget on the cgroup parent of every
    sandbox of this backend. Blocking (cgroupfs writes)."""
    from lambdahost.sandbox import cgroups

    parent = getattr(backend, "cgroup_parent", None)
    if parent is None:
        return
    memory_bytes = (memory_mb + PARENT_MARGIN_MB) << 20 if memory_mb is not None else -1
    try:
        layout = getattr(backend, "cgroup_layout", None) or cgroups.detect(
            getattr(backend, "cgroup_root", cgroups.CGROUP_ROOT)
        )
        layout.limit_parent(parent, memory_bytes, pids_max)
    except OSError as error:  # the per-sandbox limits still hold
        log.warning("cannot limit the sandboxes' parent cgroup %s: %s", parent, error)


# -- the budgets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Need:
    """What one environment reserves while it lives."""

    memory_mb: int
    disk_mb: int


class HostCapacity:
    """Reservations of live environments against the host's memory and disk budgets.
    A budget of None is unlimited (the default for a pool made without one)."""

    def __init__(
        self,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        *,
        disk_share: float | None = None,
        disk_dirs: tuple[Path, Path] | None = None,
    ) -> None:
        self.memory_mb = memory_mb
        self.disk_mb = disk_mb
        # With a share: re-measure free space at disk_dirs[0], counting back what our own
        # volumes under disk_dirs[1] occupy (they are ours to reuse, not someone else's).
        self.disk_share = disk_share
        self.disk_dirs = disk_dirs
        self.memory_held = 0
        self.disk_held = 0
        self._holds: dict[str, Need] = {}

    @classmethod
    def from_settings(
        cls, memory_budget: str, disk_budget: str, data_dir: Path, volumes_dir: Path
    ) -> HostCapacity:
        memory_mb, _ = budget_mb(memory_budget, memory_total_mb)
        disk_mb, share = budget_mb(disk_budget, lambda: disk_free_mb(data_dir))
        dirs = (data_dir, volumes_dir) if share is not None else None
        return cls(memory_mb, disk_mb, disk_share=share, disk_dirs=dirs)

    def shortfall(self, need: Need) -> Need:
        """How much must be freed before `need` fits (zero in both: it fits now)."""
        memory = 0 if self.memory_mb is None else self.memory_held + need.memory_mb - self.memory_mb
        disk = 0 if self.disk_mb is None else self.disk_held + need.disk_mb - self.disk_mb
        return Need(max(memory, 0), max(disk, 0))

    def exceeds_budget(self, need: Need) -> str | None:
        """Why `need` can never fit, even on an empty host; None if it can."""
        if self.memory_mb is not None and need.memory_mb > self.memory_mb:
            return f"{need.memory_mb} MB of memory is more than this host's budget."
        if self.disk_mb is not None and need.disk_mb > self.disk_mb:
            return f"{need.disk_mb} MB of ephemeral storage is more than this host's budget."
        return None

    def hold(self, key: str, need: Need) -> None:
        """Reserve `need` for `key` (an environment id), whether it fits or not."""
        self.release(key)
        self._holds[key] = need
        self.memory_held += need.memory_mb
        self.disk_held += need.disk_mb

    def release(self, key: str) -> None:
        """Give back what `key` holds; a no-op if it holds nothing (safe to call twice)."""
        need = self._holds.pop(key, None)
        if need is not None:
            self.memory_held -= need.memory_mb
            self.disk_held -= need.disk_mb

    def measure_disk(self) -> int | None:
        """The disk budget as the file system stands now (blocking: run it in a thread)."""
        if self.disk_share is None or self.disk_dirs is None:
            return self.disk_mb
        data_dir, volumes_dir = self.disk_dirs
        return int((disk_free_mb(data_dir) + allocated_mb(volumes_dir)) * self.disk_share)

    async def keep_measuring(self, interval_s: float = DISK_REFRESH_S) -> None:
        """Follow the free disk space (other processes fill and empty the disk too)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.disk_mb = await asyncio.to_thread(self.measure_disk)
            except OSError as error:
                log.warning("cannot measure free disk space: %s", error)


def pick_victims(candidates: Iterable[tuple[float, Need, T]], short: Need) -> list[T] | None:
    """Idle environments (last used, what each holds, itself) to evict, least recently used
    first, skipping those that free nothing still short; None if all of them are not enough."""
    memory, disk = short.memory_mb, short.disk_mb
    victims: list[T] = []
    for _, need, item in sorted(candidates, key=lambda candidate: candidate[0]):
        if memory <= 0 and disk <= 0:
            break
        if (memory > 0 and need.memory_mb > 0) or (disk > 0 and need.disk_mb > 0):
            victims.append(item)
            memory -= need.memory_mb
            disk -= need.disk_mb
    return victims if memory <= 0 and disk <= 0 else None


# -- the cold-start gate --------------------------------------------------------------------------
class StartSlot:
    """One running cold start's place at the gate; `leave()` is idempotent."""

    def __init__(self, gate: StartGate) -> None:
        self._gate: StartGate | None = gate

    def leave(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.pass_on()


class StartGate:
    def __init__(self, limit: int, max_waiting: int, max_wait_s: float) -> None:
        self.limit = max(1, limit)
        self.max_waiting = max(0, max_waiting)
        self.max_wait_s = max_wait_s
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def enter(self) -> StartSlot:
        """A slot now, or after the cold starts queued before this one; TooManyRequests when
        the queue is full or the wait exceeds `max_wait_s`."""
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return StartSlot(self)
        if len(self._waiters) >= self.max_waiting:
            raise host_throttled("Too many execution environments are starting on this host.")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            async with asyncio.timeout(self.max_wait_s):
                await future
        except BaseException as error:
            if future.done() and not future.cancelled():
                self.pass_on()  # handed a slot just as we gave up: hand it on
            else:
                future.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            if isinstance(error, TimeoutError):
                raise host_throttled(
                    "No execution environment could be started on this host in time."
                ) from None
            raise
        return StartSlot(self)

    def pass_on(self) -> None:
        """A slot is free: the longest waiter gets it (FIFO, no barging), else it is free."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.running -= 1
