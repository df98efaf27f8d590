"""The sandbox contract: one isolated execution environment on this host.

A sandbox is a process tree confined by namespaces (mount, pid, ipc, uts, net), cgroups
(memory, cpu, pids, freezer), seccomp and an unprivileged uid, seeing a read-only root
assembled from the host's `/usr`, `/lib*`, a minimal `/etc`, plus the mounts in its spec.
Everything here is the contract every backend keeps; `lambdahost.sandbox.open_backend()`
picks the backend.

The spec says what to start: `Exec` an argv, or `BootAgent`, the platform's in-sandbox
agent, which a backend may start faster than an exec. Nothing of this package imports the
layers above it (invoke, runtimes, agent, ...): what it must know of them (interpreters,
/etc entries, the agent's and runtimes' code) comes in through the spec or `Provisions`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TMP_MB = 512  # `SandboxSpec.tmp_mb` unless the spec says otherwise


@dataclass(frozen=True)
class Mount:
    """A read-only bind mount of a host directory at `target` inside the sandbox."""

    source: Path
    target: str


@dataclass(frozen=True)
class Link:
    """A symbolic link at `path` inside the sandbox to `points_to` (a path as the sandbox sees
    it), in the root's own tmpfs: nothing of the host is named or reached through it."""

    path: str
    points_to: str


@dataclass(frozen=True)
class Exec:
    """Start `argv` (argv[0] a path inside the sandbox; no PATH search) as the first process."""

    argv: list[str]


@dataclass(frozen=True)
class BootAgent:
    """Start the agent (`lambdahost/agent`, stdlib only) as the first process: the package in
    host directory `agent.source`, mounted read-only at `agent.target` (its name inside is the
    target's last part), run by `python` as `argv` says. The agent then starts `runtime`.

    The outcome is the same as `Exec(self.argv)` with `agent` mounted; a backend that imported
    this very agent into this very interpreter ahead of time (the zygote, see `Provisions`)
    may run it without exec, and let it fork `runtime` from pre-imported code too."""

    agent: Mount
    python: str  # the interpreter inside (host /usr is the sandbox's)
    runtime: str | None = None  # the runtime the agent will start, by name (e.g. python3.11)

    @property
    def argv(self) -> list[str]:
        return boot_argv(self.python, self.agent.target)


def boot_argv(python: str, package_dir: str) -> list[str]:
    """argv that runs the agent package in `package_dir` (also the agent's tests, on the host):
    its entry point is `<package>.boot.main()`. `-I` (isolated, which in 3.11 also means no
    script dir on sys.path) and `-S` keep start-up lean and deterministic, so the package's
    parent is appended to sys.path by hand."""
    parent, _, name = package_dir.rstrip("/").rpartition("/")
    code = f"import sys;sys.path.append({parent or '/'!r});from {name}.boot import main;main()"
    return [python, "-I", "-S", "-c", code]


@dataclass(frozen=True)
class SandboxSpec:
    """What to run and how to confine it. Built by `invoke/`, consumed by a backend."""

    sandbox_id: str  # unique, [a-z0-9-]; names the cgroups and any host-side state
    start: Exec | BootAgent  # the first process inside; it becomes the sandbox's PID 1
    env: dict[str, str]  # complete environment of it (nothing inherited from the host)
    mounts: list[Mount] = field(default_factory=list)  # e.g. the function's code and layers
    links: tuple[Link, ...] = ()  # symbolic links made in the root, outside every mount
    memory_mb: int = 128  # hard limit, no swap; exceeding it OOM-kills
    cpu_shares: int = 1024  # relative weight; invoke/ scales it with memory
    pids_max: int = 1024
    tmp_mb: int = DEFAULT_TMP_MB  # size of the private tmpfs at /tmp
    # Unprivileged host uid/gid (never root). None: the backend gives the sandbox a uid no
    # other live sandbox has (`uids.py`), the normal case.
    uid: int | None = None
    pass_fds: tuple[int, ...] = ()  # host fds inherited by the first process, same numbers
    cwd: str = "/"  # created empty if no mount provides it
    hostname: str = "localhost"

    @property
    def argv(self) -> list[str]:
        """What an exec of `start` runs."""
        return self.start.argv

    def all_mounts(self) -> list[Mount]:
        """`mounts` plus the agent's, when it boots the agent."""
        if isinstance(self.start, BootAgent):
            return [*self.mounts, self.start.agent]
        return list(self.mounts)


@dataclass(frozen=True)
class PreloadedRuntime:
    """A runtime's Python code a backend may import ahead of time (see `Provisions`)."""

    name: str  # as in `BootAgent.runtime`
    code: Mount  # where specs that boot it mount its code (host dir → dir inside)
    modules: tuple[tuple[str, str], ...]  # (module name, file under `code`) to import ahead
    # Files under `code` the agent runs as `python -u -S <file>`: forked from the
    # pre-imported modules instead of exec'd.
    bootstraps: tuple[str, ...]


@dataclass(frozen=True)
class Provisions:
    """What this server's sandboxes need from the host beyond the base root, given to a
    backend's constructor by the layer that knows the runtimes (`invoke.environment`), so
    that nothing here depends on which runtimes exist.

    A backend that pre-imports (the zygote) runs `python` itself and imports `agent` and
    the `preload` runtimes once; it uses them only for `BootAgent` specs whose agent,
    interpreter and runtime code (as mounted in the spec) are exactly these."""

    python: str  # the interpreter `BootAgent` specs name (Debian's: the same path inside)
    python_package: str = ""  # the Debian package providing it, named when it is missing
    etc: tuple[str, ...] = ()  # host /etc entries the interpreters read, copied into /etc
    agent: Mount | None = None  # the agent package `BootAgent` specs mount
    preload: tuple[PreloadedRuntime, ...] = ()


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
    """Creates sandboxes. One per server process, constructed with the server's `Provisions`
    and network settings (`lambdahost.sandbox.open_backend`).

    Networking: with the `isolated` setting a sandbox's network namespace holds only `lo`.
    With `nat`, it also has `eth0`, a private address and a default route through `gateway`,
    this host as sandboxes see it; through it they reach the outside world (NAT), a DNS
    resolver and the server's API port, and nothing else of the host nor each other."""

    gateway: str | None = None  # None: sandboxes have no network but `lo`

    async def prepare(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called once on the server's event loop before the first start(): start helpers
        that need the loop."""

    @abc.abstractmethod
    async def start(self, spec: SandboxSpec) -> Sandbox:
        """Create the namespaces and cgroups and start `spec.start` inside them: exec its argv
        or, for `BootAgent`, whatever has the same outcome (see there). Returns as soon as the
        process runs; readiness of whatever runs inside is the caller's business.
        Raises SandboxError when the sandbox cannot be created."""

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called after every sandbox was destroyed: stop backend helpers and remove the
        backend's own (now empty) cgroup parents and network state, so a stopped server
        leaves nothing behind."""

    @abc.abstractmethod
    def cleanup_stale(self) -> int:
        """Remove what sandboxes of an earlier server process left behind (processes, cgroups,
        mounts, state dirs). Called once at server start; returns how many were removed."""


class SandboxError(RuntimeError):
    """The sandbox could not be created or controlled."""


class SandboxBusyError(SandboxError):
    """The host could not start the sandbox in time (too many starting at once): a throttle,
    not a failure."""
