"""The in-environment agent: PID 1 of every sandbox (Lambda calls theirs RAPID).

It serves the Lambda Runtime API, starts the runtime's bootstrap, captures its output and
talks to the host over one inherited Unix socket (see `protocol`). Stdlib only and cheap to
import: it runs on every cold start. Inside the sandbox this directory is mounted at
`invoke.environment.AGENT_DIR` and imported under that directory's name (`rapid`), so modules
here import each other relatively and nothing from the rest of `lambdahost`. The sandbox
starts it (`sandbox.api.BootAgent`) by calling `boot.main()`.

Environment of the agent (stripped before the runtime starts):
  LAMBDAHOST_AGENT_FD    fd number of the connected host socket
  LAMBDAHOST_BOOTSTRAP   candidate argv lists (`boot.encode_candidates`); the first whose
                         program exists runs
  LAMBDAHOST_PRELOAD     `:`-separated module files the runtime imports that the agent may
                         import itself, then fork the runtime instead of exec'ing it
Everything else is the runtime's environment, including AWS_LAMBDA_RUNTIME_API (host:port the
agent listens on).
"""
