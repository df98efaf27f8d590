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
from lambdahost.sandbox.network import FunctionNetwork, NetworkSettings

__all__ = [
    "BACKENDS",
    "Backend",
    "BootAgent",
    "Exec",
    "Link",
    "Mount",
    "NetworkSettings",
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
    state_dir: pathlib.Path,
    kind: str | None = None,
    *,
    provisions: Provisions,
    network: NetworkSettings | None = None,
) -> Backend:
    """The sandbox backend for this host; `state_dir` holds its host-side state (created if
    missing), `provisions` what its sandboxes need (`invoke.environment.provisions()`),
    `network` how they reach out (None: `isolated`, only `lo`).
    `kind` is `zygote` (fork from a pre-initialised Python: fast cold starts), `bwrap`
    (bubblewrap: one fresh process tree per sandbox) or `auto`/None: the zygote when it
    works here, else bwrap with the reason logged; None also reads $LAMBDAHOST_SANDBOX.
    Raises SandboxError when the host cannot run sandboxes (or not of the requested kind)."""
    kind = kind or os.environ.get("LAMBDAHOST_SANDBOX") or "auto"
    if kind not in (*BACKENDS, "auto"):
        raise SandboxError(f"unknown sandbox backend {kind!r} (expected one of zygote, bwrap)")
    nat = FunctionNetwork(network) if network is not None and network.mode == "nat" else None
    try:
        return _open(state_dir, kind, provisions, nat)
    except BaseException:
        if nat is not None:
            nat.close()
        raise


def _open(
    state_dir: pathlib.Path, kind: str, provisions: Provisions, network: FunctionNetwork | None
) -> Backend:
    from lambdahost.sandbox.bwrap import BwrapBackend

    if kind != "bwrap":
        from lambdahost.sandbox.zygote import ZygoteBackend

        try:
            backend: Backend = ZygoteBackend(state_dir, provisions, network=network)
            log.info("sandbox backend: zygote")
            return backend
        except SandboxError as error:
            if kind == "zygote":
                raise
            log.warning("zygote sandboxes unavailable, using bwrap: %s", error)
    backend = BwrapBackend(state_dir, provisions, network=network)
    log.info("sandbox backend: bwrap")
    return backend
