"""The zygote's contracts, as types: the messages it exchanges with the server (the wire
protocol `zygote_main`'s docstring describes, spoken by `zygote_link`), and what it calls of
the modules it loads by path (the launcher, the agent).

Types only: the zygote runs with nothing of `lambdahost` importable, so it names these for
mypy alone (under TYPE_CHECKING), and so does the server's side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NotRequired, Protocol, TypedDict

if TYPE_CHECKING:
    import types

    from lambdahost.sandbox import launcher as launcher_module
    from lambdahost.sandbox.launcher import SpawnRequest


# -- the messages (see `zygote_main`'s docstring) -----------------------------------------
class AgentCode(TypedDict):
    source: str  # the agent package's host directory
    target: str  # where sandboxes see it


class ConfigMessage(TypedDict):
    t: Literal["config"]
    launcher: str  # host path of launcher.py
    filter: str  # the seccomp program, hex
    agent: NotRequired[AgentCode]  # none: nothing to preload but the stdlib list
    modules: NotRequired[list[list[str]]]  # [module name, host file, sandbox file]
    bootstraps: NotRequired[list[list[str]]]  # [host file, sandbox file]
    # Loopback-only namespaces to keep made (default `zygote_main.NETNS_SPARES`).
    netns_spares: NotRequired[int]


class SpawnHeader(TypedDict):
    t: Literal["spawn"]
    id: int  # then "\n" and the `SpawnRequest`, decoded only by the child
    netns: NotRequired[bool]  # the last descriptor is the network namespace to enter


class ReadyMessage(TypedDict):
    t: Literal["ready"]
    pid: int
    preloaded: list[str]


class FailedMessage(TypedDict):
    t: Literal["failed"]
    error: str


class SpawnedMessage(TypedDict):
    t: Literal["spawned"]
    id: int
    pid: int  # its pidfd rides along


class ErrorMessage(TypedDict):
    t: Literal["error"]
    id: int | None
    error: str


class ExitMessage(TypedDict):
    t: Literal["exit"]
    pid: int
    status: int  # as os.waitstatus_to_exitcode gives it


ServerMessage = ConfigMessage | SpawnHeader
ZygoteMessage = ReadyMessage | FailedMessage | SpawnedMessage | ErrorMessage | ExitMessage


# -- the modules the zygote loads -------------------------------------------------------------
class Launcher(Protocol):
    """What the zygote calls of `launcher`, which it loads by path."""

    CLONE_NEWPID: int

    def unshare(self, flags: int) -> None: ...

    def setns(self, fd: int, nstype: int) -> None: ...

    def pidfd_open(self, pid: int) -> int: ...

    def make_network_namespace(self, home_fd: int) -> int: ...

    def enter(
        self,
        request: SpawnRequest,
        stderr_fd: int,
        received: list[int],
        seccomp_filter: bytes,
        netns_fd: int = -1,
    ) -> None: ...

    def exec_argv(self, argv: list[str], env: dict[str, str]) -> None: ...


if TYPE_CHECKING:
    _launcher_conforms: Launcher = launcher_module  # mypy checks launcher.py against it


class AgentBoot(Protocol):
    """The agent's `boot` module, preloaded (see `run_agent`)."""

    # `forkserver.spawn` when the runtime is preloaded, else None (`boot.spawn` execs it)
    fork_runtime: (
        Callable[[list[str], dict[str, str]], tuple[int, int, OSError | None] | None] | None
    )

    def main(self) -> None: ...


class AgentForkServer(Protocol):
    """The agent's `forkserver` module, preloaded."""

    def register(self, script: str, code: types.CodeType) -> None: ...

    def spawn(
        self, argv: list[str], env: dict[str, str]
    ) -> tuple[int, int, OSError | None] | None: ...
