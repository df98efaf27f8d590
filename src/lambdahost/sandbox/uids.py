"""Host uids for sandboxes: one per live sandbox, from a configured range.

Per-uid kernel limits (inotify instances, RLIMIT_NPROC, user keyrings, signals between
processes of one uid) would couple every function if all ran as one uid: one function holding
128 inotify instances broke `inotify_init1` for all the others. So each sandbox gets a uid no
other live sandbox has, and a uid is handed out again only after the sandbox that had it is
destroyed (its cgroups empty: no process of it is left).

The range is node-local state: `$LAMBDAHOST_SANDBOX_UIDS` (`FIRST-LAST`), by default high
enough to stay clear of users, system accounts and the usual subordinate-id ranges of
rootless containers (100000 + 65536 per user).
"""

from __future__ import annotations

import heapq
import os

from lambdahost.sandbox.api import SandboxError

DEFAULT_RANGE = (1_900_000_000, 1_900_065_535)
ENV = "LAMBDAHOST_SANDBOX_UIDS"


def configured_range() -> tuple[int, int]:
    """(first, last) from $LAMBDAHOST_SANDBOX_UIDS, else the default."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_RANGE
    try:
        first, last = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise SandboxError(f"{ENV} must be FIRST-LAST, not {text!r}") from None
    if not 1000 <= first <= last < 2**31 - 1:
        raise SandboxError(f"{ENV}: need 1000 <= FIRST <= LAST < 2147483647, got {text!r}")
    return first, last


class UidPool:
    """Lowest free uid first, so few distinct uids (and their generated /etc) are in use."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self._free: list[int] = []  # released uids, a heap
        self._next = first  # never handed out at or above this
        self._taken: set[int] = set()

    @classmethod
    def from_environment(cls) -> UidPool:
        return cls(*configured_range())

    def acquire(self) -> int:
        if self._free:
            uid = heapq.heappop(self._free)
        elif self._next <= self.last:
            uid, self._next = self._next, self._next + 1
        else:
            raise SandboxError(f"all {self.last - self.first + 1} sandbox uids are in use")
        self._taken.add(uid)
        return uid

    def release(self, uid: int) -> None:
        """Only once nothing of the sandbox that had `uid` runs any more."""
        if uid in self._taken:
            self._taken.remove(uid)
            heapq.heappush(self._free, uid)

    def __contains__(self, uid: int) -> bool:
        return self.first <= uid <= self.last

    @property
    def in_use(self) -> int:
        return len(self._taken)
