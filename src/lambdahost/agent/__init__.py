"""The in-environment agent: PID 1 of every sandbox (Lambda calls theirs RAPID).

It serves the Lambda Runtime API, starts the runtime's bootstrap, captures its output and
talks to the host over one inherited Unix socket (see `protocol`). Stdlib only and cheap to
import: it runs on every cold start. Inside the sandbox this directory is mounted at
`/var/rapid` and imported as the package `rapid`, so modules here import each other
relatively and nothing from the rest of `lambdahost`.

Environment of the agent (stripped before the runtime starts):
  LAMBDAHOST_AGENT_FD    fd number of the connected host socket
  LAMBDAHOST_BOOTSTRAP   candidate argv lists (`boot.encode_candidates`); the first whose
                         program exists runs
Everything else is the runtime's environment, including AWS_LAMBDA_RUNTIME_API (host:port the
agent listens on).
"""


def command(package_dir: str, python: str = "/usr/bin/python3.11") -> list[str]:
    """argv that runs the agent whose package directory is `package_dir` (e.g. /var/rapid).

    `-I` (isolated, which in 3.11 also means no script dir on sys.path) and `-S` keep start-up
    lean and deterministic, so the package's parent is appended to sys.path by hand."""
    parent, _, name = package_dir.rstrip("/").rpartition("/")
    code = f"import sys;sys.path.append({parent or '/'!r});from {name}.boot import main;main()"
    return [python, "-I", "-S", "-c", code]
