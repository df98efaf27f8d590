"""What every backend's sandbox does the same way: through its own cgroups."""

from __future__ import annotations

from collections.abc import Callable

from lambdahost.sandbox.api import Sandbox, SandboxError, SandboxStats
from lambdahost.sandbox.cgroups import CgroupSet  # v1 or v2: one interface
from lambdahost.sandbox.network import FunctionNetwork, NetworkLease
from lambdahost.sandbox.uids import UidPool


def releaser(
    uids: UidPool, uid: int, network: FunctionNetwork | None, lease: NetworkLease | None
) -> Callable[[], None]:
    """What a sandbox gives back once nothing of it runs: its uid and its namespace."""

    def release() -> None:
        uids.release(uid)
        if network is not None and lease is not None:
            network.release(lease)

    return release


class CgroupSandbox(Sandbox):
    """Freeze, thaw and statistics via the sandbox's cgroups. Subclasses set `cgroups` and
    `_destroyed`, and may count helper processes that are not the function's."""

    cgroups: CgroupSet
    _destroyed: bool
    helper_pids = 0  # e.g. bwrap's monitor, which sits in the same cgroups
    # Gives back what the sandbox held (its uid, its network namespace) once nothing of it runs.
    on_gone: Callable[[], None] | None = None

    def gone(self) -> None:
        """Called by destroy() once the sandbox's cgroups are empty."""
        on_gone, self.on_gone = self.on_gone, None
        if on_gone is not None:
            on_gone()

    async def freeze(self) -> None:
        self._check_usable()
        try:
            await self.cgroups.freeze()
        except OSError as error:
            raise SandboxError(f"cannot freeze {self.spec.sandbox_id}: {error}") from error

    async def thaw(self) -> None:
        self._check_usable()
        try:
            self.cgroups.thaw()
        except OSError as error:
            raise SandboxError(f"cannot thaw {self.spec.sandbox_id}: {error}") from error

    def memory_peak_bytes(self) -> int:
        return self.cgroups.memory_peak()

    def stats(self) -> SandboxStats:
        pids = self.cgroups.pids_current()
        return SandboxStats(
            memory_current_bytes=self.cgroups.memory_current(),
            memory_peak_bytes=self.cgroups.memory_peak(),
            oom_killed=self.cgroups.oom_killed(),
            pids=max(0, pids - self.helper_pids) if self.alive() else pids,
        )

    def _check_usable(self) -> None:
        if self._destroyed:
            raise SandboxError(f"sandbox {self.spec.sandbox_id} is destroyed")
