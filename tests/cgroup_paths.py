"""Where tests look for a server's cgroups (on cgroup v1 and v2 hosts alike) and its mounts."""

from __future__ import annotations

import hashlib
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


def instance_parents(state_dir: Path) -> list[Path]:
    instance = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return group_dirs(f"lambdahost/{instance}")


def instance_groups(state_dir: Path) -> list[Path]:
    return [group for p in instance_parents(state_dir) for group in p.iterdir() if group.is_dir()]


def mounts_mentioning(path: Path) -> list[str]:
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line
    ]
