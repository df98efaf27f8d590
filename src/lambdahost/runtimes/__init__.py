"""Managed runtimes: what to start inside an environment and with which environment variables.

This directory is mounted read-only at `/var/runtime` (`LAMBDA_RUNTIME_DIR`) inside every
sandbox; `python/bootstrap.py` and `nodejs/index.mjs` are our own small runtime loops speaking
the Runtime API, `provided.*` runs the function's own `bootstrap`. Only this module runs on
the host. `RUNTIMES` is the one registry of runtimes: `control/` validates against it,
`invoke/` builds environments and tells the sandbox backend what to provide from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

# The file system a function sees (Lambda's paths); the only place they are spelled.
TASK_ROOT = "/var/task"  # the function's code
RUNTIME_DIR = "/var/runtime"  # this directory
OPT_DIR = "/opt"  # the function's layers
RUNTIME_API = "127.0.0.1:9001"
# Where the managed runtimes' AWS SDKs are, as on AWS (`invoke/sdks.py` mounts them). python3.11
# keeps boto3 in the interpreter's site-packages, searched after /var/task and the layers and
# before /var/runtime; nodejs20.x keeps the JS SDK v3 in /var/runtime/node_modules, on NODE_PATH.
PYTHON_SDK_DIR = "/var/lang/lib/python3.11/site-packages"
NODE_SDK_DIR = f"{RUNTIME_DIR}/node_modules"
# ES modules never search NODE_PATH, only the node_modules of every directory above the
# importing file; AWS patches its Node to search NODE_PATH after those. Here a link at the last
# of them, /node_modules, leads to the SDK, for functions whose layers bring no node_modules
# (with them, the runtime loop adds NODE_PATH to ES module resolution instead; see index.mjs).
NODE_SDK_LINK = "/node_modules"
# Interpreters: Debian's, never a venv's or pyenv's (the pyenv shim costs ~85 ms a start).
# PYTHON also runs the agent (stdlib only), and so the zygote that pre-imports it.
PYTHON = "/usr/bin/python3.11"
NODE = "/usr/bin/node"


@dataclass(frozen=True)
class Runtime:
    """One value of a function's `Runtime`, and everything the platform needs to serve it.

    How to add a runtime: add one `Runtime(...)` to `RUNTIMES` below (and, for a managed
    runtime, its runtime loop under this directory). Nothing else names runtimes:
    CreateFunction accepts what is listed here, environments start its `bootstrap`, the
    sandbox backends are told its interpreter, `/etc` entries and pre-importable modules
    (`invoke.environment.provisions`), and `tests/unit/test_layering.py` checks the entry."""

    name: str  # e.g. python3.11: what CreateFunction's Runtime says
    # argv lists inside the sandbox, tried in order: the first whose program exists runs.
    bootstrap: tuple[tuple[str, ...], ...]
    version: str  # INIT_START's "Runtime Version"
    execution_env: str | None = None  # AWS_EXECUTION_ENV; None: a custom runtime (provided.*)
    interpreter: str | None = None  # absolute path; None: the function brings its own
    package: str | None = None  # the Debian package that provides `interpreter`
    etc: tuple[str, ...] = ()  # host /etc entries the interpreter reads (copied into /etc)
    env: Mapping[str, str] = field(default_factory=dict)  # defaults the user may override
    # Modules (files under RUNTIME_DIR) a backend may import ahead of time so the runtime
    # starts as a fork of the agent (the zygote). Only for runtimes on PYTHON whose
    # bootstrap is `PYTHON -u -S <script>`, the form `agent.forkserver` stands in for.
    preload: tuple[str, ...] = ()
    # May also run older identifiers of its language that nothing nearer serves here
    # (`runtimes.policy`: served by the nearest newer interpreter, and said so).
    serves_older: bool = False
    # Where the AWS SDK this runtime ships is mounted (read-only), if it ships one; see
    # `invoke.sdks` for where it comes from on the host. `sdk_link`: a link to it in the root.
    sdk: str | None = None
    sdk_link: str | None = None

    @property
    def managed(self) -> bool:
        """A runtime of ours (not the function's own bootstrap): honours the exec wrapper."""
        return self.execution_env is not None


def _custom(name: str, version: str) -> Runtime:
    return Runtime(name, ((f"{TASK_ROOT}/bootstrap",), (f"{OPT_DIR}/bootstrap",)), version)


RUNTIMES: dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        Runtime(
            "python3.11",
            ((PYTHON, "-u", "-S", f"{RUNTIME_DIR}/python/bootstrap.py"),),
            "python:3.11.v1",
            execution_env="AWS_Lambda_python3.11",
            interpreter=PYTHON,
            package="python3.11-minimal",
            etc=("python3", "python3.11"),
            env={"PYTHONPATH": RUNTIME_DIR},
            preload=("python/lambdahost_runtime.py",),
            sdk=PYTHON_SDK_DIR,
        ),
        Runtime(
            "nodejs20.x",
            ((NODE, f"{RUNTIME_DIR}/nodejs/index.mjs"),),
            "nodejs:20.v1",
            execution_env="AWS_Lambda_nodejs20.x",
            interpreter=NODE,
            package="nodejs",
            env={
                "NODE_PATH": (
                    f"{OPT_DIR}/nodejs/node20/node_modules:{OPT_DIR}/nodejs/node_modules:"
                    f"{NODE_SDK_DIR}:{RUNTIME_DIR}:{TASK_ROOT}"
                )
            },
            sdk=NODE_SDK_DIR,
            sdk_link=NODE_SDK_LINK,
        ),
        _custom("provided.al2023", "provided:al2023.v1"),
        _custom("provided.al2", "provided:al2.v1"),
    )
}
SUPPORTED = tuple(RUNTIMES)

# Variables the function's configuration may not override (Lambda rejects them on update;
# we also refuse them here so a stale configuration cannot break an environment).
RESERVED = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


def bootstrap_candidates(
    runtime: str, environment: dict[str, str] | None = None
) -> list[list[str]]:
    """argv lists the agent tries in order; the first whose program exists is started.

    `AWS_LAMBDA_EXEC_WRAPPER` in the function's environment runs a managed runtime's
    bootstrap as `<wrapper> <bootstrap argv...>` (custom runtimes ignore it, as in Lambda)."""
    entry = RUNTIMES[runtime]
    candidates = [list(argv) for argv in entry.bootstrap]
    wrapper = (environment or {}).get("AWS_LAMBDA_EXEC_WRAPPER")
    if wrapper and entry.managed:
        return [[wrapper, *argv] for argv in candidates]
    return candidates


def preload_modules(runtime: str) -> list[str]:
    """Paths inside the sandbox of the modules the agent may import ahead of the runtime (see
    `Runtime.preload`); the agent gets them as LAMBDAHOST_PRELOAD."""
    return [f"{RUNTIME_DIR}/{file}" for file in RUNTIMES[runtime].preload]


def python_runtime_dirs() -> list[str]:
    """Directories under RUNTIME_DIR holding the Python runtimes' code (worth precompiling)."""
    dirs = [
        str(PurePosixPath(argv[-1]).parent.relative_to(RUNTIME_DIR))
        for runtime in RUNTIMES.values()
        if runtime.interpreter == PYTHON
        for argv in runtime.bootstrap
    ]
    return list(dict.fromkeys(dirs))


def runtime_version(runtime: str) -> str:
    """The `Runtime Version:` of the INIT_START log line."""
    return RUNTIMES[runtime].version


def runtime_version_arn(runtime: str, region: str) -> str:
    """The one runtime version ARN of a served runtime: INIT_START's `Runtime Version ARN:`
    and every function configuration's `RuntimeVersionConfig.RuntimeVersionArn`."""
    digest = hashlib.sha256(runtime_version(runtime).encode()).hexdigest()
    return f"arn:aws:lambda:{region}::runtime:{digest}"


class FunctionFacts(Protocol):
    """What the runtime environment is built from (`invoke.model.FunctionSpec` has it)."""

    @property
    def runtime(self) -> str: ...
    @property
    def handler(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def initialization_type(self) -> str: ...
    @property
    def log_group(self) -> str: ...
    @property
    def environment(self) -> Mapping[str, str]: ...


def environment_for(
    spec: FunctionFacts,
    log_stream: str,
    *,
    runtime_api: str = RUNTIME_API,
    endpoint_url: str | None = None,
    credentials: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of the runtime process, as Lambda builds it: defaults the
    user may override, the user's variables, then the reserved ones on top, among them the
    execution role's `credentials` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    AWS_SESSION_TOKEN) when there are any.
    `endpoint_url`: the platform's API as the function reaches it; the AWS SDKs send every
    call there (`AWS_ENDPOINT_URL`) unless the function's own environment says otherwise."""
    env = {
        "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": (
            f"/var/lang/lib:/lib64:/usr/lib64:{RUNTIME_DIR}:{RUNTIME_DIR}/lib:"
            f"{TASK_ROOT}:{TASK_ROOT}/lib:{OPT_DIR}/lib"
        ),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
    }
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    runtime = RUNTIMES[spec.runtime]
    env.update(runtime.env)
    env.update({k: v for k, v in spec.environment.items() if k not in RESERVED})
    env.update(
        {
            "_HANDLER": spec.handler,
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
            "AWS_LAMBDA_INITIALIZATION_TYPE": spec.initialization_type,
            "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            "AWS_LAMBDA_RUNTIME_API": runtime_api,
            "LAMBDA_TASK_ROOT": TASK_ROOT,
            "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
        }
    )
    if runtime.execution_env:
        env["AWS_EXECUTION_ENV"] = runtime.execution_env
    if credentials:
        env.update(credentials)
    return env
