"""Where tests look for a server's cgroups, on cgroup v1 and v2 hosts alike."""

from __future__ import annotations

import os
from pathlib import Path

from lambdahost.sandbox.cgroups import CGROUP_ROOT, CONTROLLERS, is_unified


def group_dirs(name: str) -> list[Path]:
    """Existing directories of the group `name` (e.g. `lambdahost/<instance>`) of any server:
    v1, one per controller; v2, under whichever delegated base that server found."""
    if not is_unified(CGROUP_ROOT):
        return [p for p in (CGROUP_ROOT / c / name for c in CONTROLLERS) if p.is_dir()]
    found = []
    for top, dirs, _ in os.walk(CGROUP_ROOT):
        path = Path(top)
        if path.name == "lambdahost":
            dirs[:] = []  # sandboxes below: not a base
            candidate = path.parent / name
            if candidate.is_dir():
                found.append(candidate)
    return found
