"""Execution environments. `open_backend()` returns the backend this host uses."""

from __future__ import annotations

import pathlib

from lambdahost.sandbox.api import Backend, Mount, Sandbox, SandboxError, SandboxSpec, SandboxStats

__all__ = [
    "Backend",
    "Mount",
    "Sandbox",
    "SandboxError",
    "SandboxSpec",
    "SandboxStats",
    "open_backend",
]


def open_backend(state_dir: pathlib.Path) -> Backend:
    """The sandbox backend for this host; `state_dir` holds its host-side state (created if
    missing). Raises SandboxError when the host cannot run sandboxes (no bwrap, no cgroups)."""
    from lambdahost.sandbox.bwrap import BwrapBackend

    return BwrapBackend(state_dir)
