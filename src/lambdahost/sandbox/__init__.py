"""Execution environments. `open_backend()` returns the backend this host uses."""

from __future__ import annotations

import logging
import os
import pathlib

from lambdahost.sandbox.api import (
    Backend,
    BootAgent,
    Exec,
    Link,
    Mount,
    PreloadedRuntime,
    Provisions,
    Sandbox,
    SandboxBusyError,
    SandboxError,
    SandboxSpec,
    SandboxStats,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BootAgent",
    "Exec",
    "Link",
    "Mount",
    "PreloadedRuntime",
    "Provisions",
    "Sandbox",
    "SandboxBusyError",
    "SandboxError",
    "SandboxSpec",
    "SandboxStats",
    "open_backend",
]

BACKENDS = ("zygote", "bwrap")
log = logging.getLogger("lambdahost.sandbox")


def open_backend(
    state_dir: pathlib.Path, kind: str | None = None, *, provisions: Provisions
) -> Backend:
    """The sandbox backend for this host; `state_dir` holds its host-side state (created if
    missing), `provisions` what its sandboxes need (`invoke.environment.provisions()`).
    `kind` is `zygote` (fork from a pre-initialised Python: fast cold starts), `bwrap`
    (bubblewrap: one fresh process tree per sandbox) or `auto`/None: the zygote when it
    works here, else bwrap with the reason logged; None also reads $LAMBDAHOST_SANDBOX.
    Raises SandboxError when the host cannot run sandboxes (or not of the requested kind)."""
    from lambdahost.sandbox.bwrap import BwrapBackend

    kind = kind or os.environ.get("LAMBDAHOST_SANDBOX") or "auto"
    if kind not in (*BACKENDS, "auto"):
        raise SandboxError(f"unknown sandbox backend {kind!r} (expected one of zygote, bwrap)")
    if kind != "bwrap":
        from lambdahost.sandbox.zygote import ZygoteBackend

        try:
            backend: Backend = ZygoteBackend(state_dir, provisions)
            log.info("sandbox backend: zygote")
            return backend
        except SandboxError as error:
            if kind == "zygote":
                raise
            log.warning("zygote sandboxes unavailable, using bwrap: %s", error)
    backend = BwrapBackend(state_dir, provisions)
    log.info("sandbox backend: bwrap")
    return backend
