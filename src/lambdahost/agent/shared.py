"""What the agent's modules share: constants and small helpers, stdlib only and cheap to
import (`boot` imports this before the runtime starts), so the modules import it instead of
each other.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # no `typing` import at run time (see http11)

MAX_LINE = 256 * 1024  # CloudWatch's event size limit
RUNTIME_PREFIX = "/2018-06-01/runtime/"
JSON_TYPE = {"Content-Type": "application/json"}
STATUS_OK = b'{"status":"OK"}'


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def error_body(error_type: str, message: str) -> bytes:
    import json  # already loaded by main, which is what calls this

    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def launch(argv: list[str], env: dict[str, str], output_fd: int) -> int:
    """Start a process with stdout and stderr on output_fd (one pipe, so their order
    survives) and stdin on /dev/null, in its own session so it can be killed as a group."""
    return os.posix_spawn(
        argv[0],
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, output_fd, 1),
            (os.POSIX_SPAWN_DUP2, output_fd, 2),
        ],
        setsid=True,
    )


PR_SET_DUMPABLE = 4


def set_dumpable(dumpable: bool) -> None:
    """The agent runs as the function's uid: non-dumpable, the function can neither ptrace it
    nor open its /proc/1/mem, environ or fds (it would need CAP_SYS_PTRACE). Children undo it
    (exec does by itself; `forkserver` children call this). ctypes: the zygote preloaded it;
    on the fresh path it costs ~2.5 ms, before anything of the function runs."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_DUMPABLE): {os.strerror(code)}")


if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Protocol

    from .http11 import Connection, Request

    # Typing-only names (annotations are strings: `from __future__ import annotations`).
    JSONObject = dict[str, Any]  # a decoded JSON object: a host frame's header, a request body
    LogLine = list[int | str]  # [epoch_ms, text]: one item of a frame's `logs` (see protocol)

    class AgentLike(Protocol):
        """What a streamed response needs of the agent (`main.Agent`)."""

        current: str | None

        def take_logs(self) -> list[LogLine]: ...
        def send(self, header: Mapping[str, object], body: bytes = b"") -> None: ...

    class ExtensionsHook(Protocol):
        """What the agent's loop asks of the Extensions API once extensions exist
        (`extensions.Extensions`); a protocol, so `main` does not import `extensions`."""

        shutting_down: bool

        def handle(self, connection: Connection, request: Request, path: str) -> None: ...
        def forget(self, connection: Connection) -> None: ...
        def on_invoke(self, header: JSONObject) -> None: ...
        def on_result(self, header: JSONObject, body: bytes) -> None: ...
        def on_report(self, header: JSONObject) -> None: ...
        def on_runtime_ready(self) -> None: ...
        def child_exited(self, pid: int, status: int) -> None: ...
        def keeps_running(self) -> bool: ...
        def shutdown(self, reason: str, budget_ms: int) -> None: ...
        def kill_all(self) -> None: ...
