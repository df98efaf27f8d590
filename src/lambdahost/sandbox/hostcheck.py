"""What this host lacks for sandboxes, as one plain sentence each (no tracebacks at start)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lambdahost.sandbox import cgroups as cg

# Debian's package for each tool a backend runs (interpreters: `Provisions` names theirs).
_PACKAGES = {"bwrap": "bubblewrap", "setpriv": "util-linux", "env": "coreutils"}


def problems(
    tools: tuple[str, ...] = (),
    cgroup_root: Path = cg.CGROUP_ROOT,
    packages: Mapping[str, str] | None = None,
) -> list[str]:
    """Everything missing for a backend that runs `tools`; [] when the host is fit. Detecting
    the cgroup layout prepares it (cgroup v2: our delegated subtree), once per process.
    `packages`: tool path → the Debian package providing it, beyond the backends' own."""
    found: list[str] = []
    root = os.geteuid() == 0
    if not root:
        found.append(
            "lambdahost must run as root to create sandboxes (namespaces, cgroups, mounts);"
            " start it with sudo or as a root service."
        )
        if _read(Path("/proc/sys/user/max_user_namespaces")) == "0":
            found.append(
                "User namespaces are off (user.max_user_namespaces = 0); turn them on with"
                " `sysctl -w user.max_user_namespaces=15000`."
            )
    for tool in tools:
        if not os.access(tool, os.X_OK):
            name = Path(tool).name
            package = (packages or {}).get(tool) or _PACKAGES.get(name, name)
            found.append(f"{tool} is missing; install it with `apt-get install {package}`.")
    if root:
        try:
            cg.detect(cgroup_root)
        except OSError as error:
            message = error.strerror if isinstance(error, cg.CgroupError) else None
            found.append(message or str(error))
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
