"""Start a Python runtime by forking the agent instead of exec'ing an interpreter.

On the zygote path (`lambdahost.sandbox.zygote_main`) the agent runs inside a process that had
already imported the runtime module before it was forked into the sandbox, so the runtime can
start as a plain fork of the agent: no interpreter start-up, no imports, only the handler's.
`boot.spawn` asks `spawn()` first; it answers None for any argv it cannot stand in for (other
runtimes, a custom bootstrap), which then start with exec as always. On the fresh (bwrap) path
`boot.preload_runtime` imports the runtime module in the agent itself and uses this module the
same way, saving the second interpreter start-up.

What the child sets up is what `<python> -u -S <bootstrap>` would have: the environment,
argv, sys.path (script directory, PYTHONPATH, stdlib), unbuffered text stdout/stderr on the
output pipe, stdin on /dev/null, a session of its own, no inherited descriptors, a fresh
`__main__` running the bootstrap's code. What differs: `sys.flags` (the zygote's `-I -S`),
the hash seed (shared with the zygote), and modules the zygote imported are already in
`sys.modules`.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import types

from .shared import set_dumpable

# A fork stands in for an exec of this very interpreter only (not a path of our own: the host
# chose the agent's interpreter, and a runtime on another one must really be exec'd).
PYTHON = sys.executable
RUNTIME_OPTIONS = ["-u", "-S"]
# The zygote's own interpreter path (-I -S: just the stdlib), captured before anything
# appends to it.
STDLIB_PATH = [entry for entry in sys.path if entry.startswith(sys.base_prefix)]

_bootstraps: dict[str, types.CodeType] = {}  # script path inside the sandbox → its code


def register(script: str, code: types.CodeType) -> None:
    """Called in the zygote: `script` (a path inside sandboxes) runs `code`, and everything it
    imports is already in sys.modules."""
    _bootstraps[script] = code


def can_run(argv: list[str]) -> bool:
    """argv has the form this module stands in for: [<our python>, -u, -S, <script>]."""
    return len(argv) == 4 and bool(PYTHON) and argv[0] == PYTHON and argv[1:3] == RUNTIME_OPTIONS


def spawn(argv: list[str], env: dict[str, str]) -> tuple[int, int, OSError | None] | None:
    """Like `boot.spawn`, for argv = [<our python>, -u, -S, <registered bootstrap>]; else None."""
    if not can_run(argv):
        return None
    code = _bootstraps.get(argv[3])
    if code is None:
        return None
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError as error:
        os.close(write_fd)
        return 0, read_fd, error
    if pid == 0:
        _run_runtime(argv, env, code, write_fd)  # never returns
    os.close(write_fd)
    return pid, read_fd, None


def _run_runtime(argv: list[str], env: dict[str, str], code: types.CodeType, output: int) -> None:
    status = 1
    try:
        set_dumpable(True)  # the function's own /proc/self, as after an exec
        os.setsid()
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(3, 1 << 20)  # the host socket, the Runtime API listener, the pipe
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.environ.clear()
        os.environ.update(env)
        script = argv[3]
        python_path = [p for p in env.get("PYTHONPATH", "").split(":") if p]
        sys.path[:] = [os.path.dirname(script), *python_path, *STDLIB_PATH]
        sys.argv = [script]
        sys.orig_argv = list(argv)
        sys.stdin = stdin = io.TextIOWrapper(
            io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="strict"
        )
        sys.stdout = stdout = _unbuffered_text(1, "strict")
        sys.stderr = stderr = _unbuffered_text(2, "backslashreplace")
        # The originals too, as in a fresh interpreter. typeshed marks sys.__std*__ Final (a
        # program's constants), which they are not for a process standing in for an exec.
        vars(sys).update(__stdin__=stdin, __stdout__=stdout, __stderr__=stderr)
        main = types.ModuleType("__main__")
        main.__file__ = script
        sys.modules["__main__"] = main
        exec(code, main.__dict__)
        status = 0
    except SystemExit as exit:
        status = _exit_status(exit.code)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        _finish(status)


def _unbuffered_text(fd: int, errors: str) -> io.TextIOWrapper:
    """What `-u` gives: a text layer writing straight through to the descriptor."""
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw, encoding="utf-8", errors=errors, write_through=True)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finish(status: int) -> None:
    """The end of an interpreter's life: non-daemon threads joined, atexit handlers run,
    streams flushed, then _exit (no finalisation of state the process shares with its
    parent)."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()  # joins non-daemon threads
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:
        os._exit(status)
