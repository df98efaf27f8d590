"""The agent's entry point, ordered for cold-start latency: bind the Runtime API socket, start
the runtime, and only then import the rest of the agent (json, selectors, the HTTP code), so
those imports overlap with the runtime's own start-up instead of preceding it. The runtime's
first connection waits in the listen backlog until the loop accepts it."""

from __future__ import annotations

import os
import socket
import time

from .shared import TYPE_CHECKING, launch, set_dumpable

if TYPE_CHECKING:
    from .extensions import Extensions
    from .main import Agent

ARG_SEPARATOR = "\x1f"  # LAMBDAHOST_BOOTSTRAP: argv items joined by US, candidates by RS
CANDIDATE_SEPARATOR = "\x1e"


def encode_candidates(candidates: list[list[str]]) -> str:
    """LAMBDAHOST_BOOTSTRAP's value (plain separators: parsing JSON here would cost imports)."""
    return CANDIDATE_SEPARATOR.join(ARG_SEPARATOR.join(argv) for argv in candidates)


def decode_candidates(value: str) -> list[list[str]]:
    return [item.split(ARG_SEPARATOR) for item in value.split(CANDIDATE_SEPARATOR) if item]


# Set by the zygote to `forkserver.spawn`: starts a pre-imported runtime by fork, or says None.
fork_runtime = None


def preload_runtime(argv: list[str], modules: list[str]) -> None:
    """Outside the zygote, for a runtime whose `modules` (files, from LAMBDAHOST_PRELOAD) the
    host says may be imported ahead: import them here and have `forkserver` fork the runtime
    from the agent, instead of paying for a second interpreter start-up (~15 ms). Same
    process set-up as on the zygote path; any other argv is exec'd."""
    import sys

    from . import forkserver

    if not modules or not forkserver.can_run(argv):
        return
    script = argv[3]
    try:
        with open(script, "rb") as f:
            code = compile(f.read(), script, "exec", dont_inherit=True)
        for module in modules:
            directory, _, file = module.rpartition("/")
            sys.path.insert(0, directory)
            try:
                __import__(file.removesuffix(".py"))
            finally:
                sys.path.remove(directory)
    except Exception:
        return  # exec it then: the runtime reports whatever is wrong as it always did
    forkserver.register(script, code)
    global fork_runtime
    fork_runtime = forkserver.spawn


def spawn(argv: list[str], env: dict[str, str]) -> tuple[int, int, OSError | None]:
    """Start the runtime. Returns (pid, read end of its output pipe, error)."""
    if fork_runtime is not None and (forked := fork_runtime(argv, env)) is not None:
        return forked
    read_fd, write_fd = os.pipe()
    try:
        return launch(argv, env, write_fd), read_fd, None
    except OSError as error:
        return 0, read_fd, error
    finally:
        os.close(write_fd)


def find_extensions(directory: str) -> list[str]:
    """External extensions: every file in /opt/extensions, in name order (as Lambda starts
    them). One failed stat when there are none."""
    try:
        entries = os.scandir(directory)
    except OSError:
        return []
    with entries:
        return sorted(entry.path for entry in entries if entry.is_file())


def extensions_api(agent: Agent) -> Extensions:
    """The agent's Extensions (and Telemetry and Logs APIs): imported on first use only."""
    from .extensions import attach

    return attach(agent)


def main() -> None:
    booted_ms = time.time() * 1000  # diagnostics: when the agent got control
    set_dumpable(False)  # before any process of the function exists
    host_fd = int(os.environ["LAMBDAHOST_AGENT_FD"])
    os.set_inheritable(host_fd, False)
    address, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, int(port)))
    listener.listen(16)
    candidates = decode_candidates(os.environ.get("LAMBDAHOST_BOOTSTRAP", ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAHOST_")}
    task_root = env.get("LAMBDA_TASK_ROOT", "")
    if task_root and os.path.isdir(task_root):
        os.chdir(task_root)
    argv = next((argv for argv in candidates if os.path.exists(argv[0])), None)
    spawned_ns = time.monotonic_ns()
    extensions = find_extensions(os.environ.get("LAMBDAHOST_EXTENSIONS_DIR", "/opt/extensions"))
    if extensions and argv:  # the runtime starts once the extensions registered
        pid, error = 0, None
        output_fd, runtime_fd = os.pipe()
    else:
        if argv and fork_runtime is None:
            preload_runtime(
                argv, [m for m in os.environ.get("LAMBDAHOST_PRELOAD", "").split(":") if m]
            )
        pid, output_fd, error = spawn(argv, env) if argv else (0, -1, None)

    from .main import Agent  # the heavier imports, while the runtime starts

    agent = Agent(socket.socket(fileno=host_fd), listener, pid, output_fd, extensions_api)
    agent.booted_ms, agent.started_ns = booted_ms, spawned_ns
    if extensions and argv:
        extensions_api(agent).start_external(extensions, argv, env, runtime_fd)
    if argv is None:
        names = " ".join(candidate[0] for candidate in candidates)
        agent.init_failed(
            "Runtime.InvalidEntrypoint", f"Couldn't find valid bootstrap(s): [{names}]"
        )
    elif error is not None:
        message = f"fork/exec {argv[0]}: {(error.strerror or str(error)).lower()}"
        agent.init_failed("Runtime.InvalidEntrypoint", message)
    agent.run()
