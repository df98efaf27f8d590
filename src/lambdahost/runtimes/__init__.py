"""Managed runtimes: what to start inside an environment and with which environment variables.

This directory is mounted read-only at `/var/runtime` (`LAMBDA_RUNTIME_DIR`) inside every
sandbox; `python/bootstrap.py` and `nodejs/index.mjs` are our own small runtime loops speaking
the Runtime API, `provided.*` runs the function's own `bootstrap`. Only this module runs on
the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambdahost.invoke.model import FunctionSpec

RUNTIME_API = "127.0.0.1:9001"
TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"
PYTHON = "/usr/bin/python3.11"
NODE = "/usr/bin/node"

# runtime → (candidate bootstrap argvs, AWS_EXECUTION_ENV, INIT_START runtime version)
_RUNTIMES: dict[str, tuple[list[list[str]], str | None, str]] = {
    "python3.11": (
        [[PYTHON, "-u", "-S", f"{RUNTIME_DIR}/python/bootstrap.py"]],
        "AWS_Lambda_python3.11",
        "python:3.11.v1",
    ),
    "nodejs20.x": (
        [[NODE, f"{RUNTIME_DIR}/nodejs/index.mjs"]],
        "AWS_Lambda_nodejs20.x",
        "nodejs:20.v1",
    ),
    "provided.al2023": (
        [[f"{TASK_ROOT}/bootstrap"], ["/opt/bootstrap"]],
        None,
        "provided:al2023.v1",
    ),
    "provided.al2": (
        [[f"{TASK_ROOT}/bootstrap"], ["/opt/bootstrap"]],
        None,
        "provided:al2.v1",
    ),
}
SUPPORTED = tuple(_RUNTIMES)

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
    candidates, execution_env, _ = _RUNTIMES[runtime]
    wrapper = (environment or {}).get("AWS_LAMBDA_EXEC_WRAPPER")
    if wrapper and execution_env is not None:
        return [[wrapper, *argv] for argv in candidates]
    return candidates


def runtime_version(runtime: str) -> str:
    """The `Runtime Version:` of the INIT_START log line."""
    return _RUNTIMES[runtime][2]


def environment_for(
    spec: FunctionSpec, log_stream: str, *, runtime_api: str = RUNTIME_API
) -> dict[str, str]:
    """The complete environment of the runtime process, as Lambda builds it: defaults the
    user may override, the user's variables, then the reserved ones on top."""
    env = {
        "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": (
            "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:"
            "/var/task:/var/task/lib:/opt/lib"
        ),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
    }
    if spec.runtime.startswith("python"):
        env["PYTHONPATH"] = RUNTIME_DIR
    elif spec.runtime.startswith("nodejs"):
        env["NODE_PATH"] = (
            "/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:"
            "/var/runtime/node_modules:/var/runtime:/var/task"
        )
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
    execution_env = _RUNTIMES[spec.runtime][1]
    if execution_env:
        env["AWS_EXECUTION_ENV"] = execution_env
    return env
