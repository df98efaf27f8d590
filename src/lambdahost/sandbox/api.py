"""The sandbox contract: one isolated execution environment on this host.

A sandbox is a process tree confined by namespaces (mount, pid, ipc, uts, net), cgroups
(memory, cpu, pids, freezer), seccomp and an unprivileged uid, seeing a read-only root
assembled from the host's `/usr`, `/lib*`, a minimal `/etc`, plus the mounts in its spec.
Everything here is the contract every backend keeps; `lambdahost.sandbox.open_backend()`
picks the backend.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    """A read-only bind mount of a host directory at `target` inside the sandbox."""

    source: Path
    target: str


@dataclass(frozen=True)
class SandboxSpec:
    """What to run and how to confine it. Built by `invoke/`, consumed by a backend."""

    sandbox_id: str  # unique, [a-z0-9-]; names the cgroups and any host-side state
    argv: list[str]  # first process inside (the agent); it becomes the sandbox's PID 1
    env: dict[str, str]  # complete environment of argv (nothing inherited from the host)
    mounts: list[Mount] = field(default_factory=list)  # e.g. /var/task, /opt, /var/runtime
    memory_mb: int = 128  # hard limit, no swap; exceeding it OOM-kills
    cpu_shares: int = 1024  # relative weight; invoke/ scales it with memory
    pids_max: int = 1024
    tmp_mb: int = 512  # size of the private tmpfs at /tmp
    # Unprivileged host uid/gid (never root). None: the backend gives the sandbox a uid no
    # other live sandbox has (`uids.py`), the normal case.
    uid: int | None = None
    pass_fds: tuple[int, ...] = ()  # host fds inherited by argv, same numbers inside
    cwd: str = "/var/task"
    hostname: str = "localhost"


@dataclass(frozen=True)
class SandboxStats:
    memory_current_bytes: int
    memory_peak_bytes: int  # high-water mark since start (Max Memory Used)
    oom_killed: bool  # the kernel OOM-killed something in this sandbox
    pids: int  # tasks currently in the sandbox


class Sandbox(abc.ABC):
    """A started sandbox. Methods are safe to call in any order and more than once."""

    spec: SandboxSpec
    uid: int  # the host uid its processes run as

    @property
    @abc.abstractmethod
    def pid(self) -> int:
        """Host pid of the sandbox's first process (or of the backend's helper around it)."""

    @abc.abstractmethod
    async def freeze(self) -> None:
        """Stop every task of the sandbox (cgroup freezer). Returns once all are frozen."""

    @abc.abstractmethod
    async def thaw(self) -> None:
        """Resume a frozen sandbox. No-op if not frozen."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for the first process to exit; returns its exit status (negative: signal)."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """True while the first process runs."""

    @abc.abstractmethod
    def stats(self) -> SandboxStats:
        """Cheap cgroup reads; valid until destroy()."""

    def memory_peak_bytes(self) -> int:
        """The memory high-water mark alone; what every invoke's REPORT needs, so backends
        may make it cheaper than a full `stats()`."""
        return self.stats().memory_peak_bytes

    @abc.abstractmethod
    async def destroy(self) -> None:
        """SIGKILL every task in the sandbox's cgroups (thawing first if frozen), reap them,
        remove its cgroups, mounts and host-side state. Idempotent. After it returns nothing
        the sandbox created is left on the host."""


class Backend(abc.ABC):
    """Creates sandboxes. One per server process."""

    @abc.abstractmethod
    async def start(self, spec: SandboxSpec) -> Sandbox:
        """Create the namespaces and cgroups and start `spec.argv` inside them. Returns as soon
        as the process runs; readiness of whatever runs inside is the caller's business.
        Raises SandboxError when the sandbox cannot be created."""

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called after every sandbox was destroyed: stop backend helpers and remove the
        backend's own (now empty) cgroup parents, so a stopped server leaves nothing behind."""

    @abc.abstractmethod
    def cleanup_stale(self) -> int:
        """Remove what sandboxes of an earlier server process left behind (processes, cgroups,
        mounts, state dirs). Called once at server start; returns how many were removed."""


class SandboxError(RuntimeError):
    """The sandbox could not be created or controlled."""


class SandboxBusyError(SandboxError):
    """The host could not start the sandbox in time (too many starting at once): a throttle,
    not a failure."""
