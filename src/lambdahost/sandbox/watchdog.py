"""Sandboxes die with the server, however it dies.

A sandbox does not depend on the process that started it: the zygote's children outlive the
zygote, and the kernel's parent-death signal cannot help on the bwrap path (bwrap's monitor,
uid 0 without capabilities, may not signal the sandbox's uid). So each backend starts this
small watchdog in a session of its own, holding the read end of a pipe whose only write end
is the server's. When the server exits, by `close()` or by SIGKILL, the pipe reads EOF and the
watchdog kills every sandbox then under the backend's cgroup parent (frozen ones thawed after
the signal, as `CgroupSet.kill_all_blocking` does), removes their groups, then their /tmp
volumes (host mounts, loop devices, images) and the backend's lxcfs (`procviews`). What a
watchdog could not remove is the next start's business (`Backend.cleanup_stale`).

Run as `python -m lambdahost.sandbox.watchdog <JSON>` (see `Watchdog`), stdin the pipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NotRequired, TypedDict

from lambdahost.sandbox import cgroups as cg
from lambdahost.sandbox.api import SandboxError
from lambdahost.sandbox.procviews import ProcViews, stop_stale
from lambdahost.sandbox.tmpvol import remove_instance


class WatchdogConfig(TypedDict):
    """The watchdog's one argument, as JSON: what to clean up when the server is gone."""

    cgroup_parent: str
    cgroup_layout: cg.LayoutDescription
    volumes: NotRequired[str]  # `TmpVolumes.dir`
    lxcfs: NotRequired[str]  # `ProcViews.mount_point`
    lxcfs_pidfile: NotRequired[str]


class Watchdog:
    """The server's end: keep the object; `close()` (or the server's death) ends it."""

    def __init__(
        self,
        cgroup_parent: str,
        layout: cg.CgroupLayout,
        volumes_dir: Path | None = None,
        proc_views: ProcViews | None = None,
    ) -> None:
        # The layout as the server found it: on cgroup v2 we sit in its leaf, not its base.
        what: WatchdogConfig = {"cgroup_parent": cgroup_parent, "cgroup_layout": layout.describe()}
        if volumes_dir is not None:
            what["volumes"] = str(volumes_dir)
        if proc_views is not None:
            what["lxcfs"] = str(proc_views.mount_point)
            what["lxcfs_pidfile"] = str(proc_views.pidfile)
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(what)],
            stdin=subprocess.PIPE,  # the lifeline: non-inheritable, so only we hold it
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a signal to the server's process group spares it
        )

    def close(self, timeout: float = 30.0) -> None:
        """The sandboxes are gone already (Backend.close): the watchdog finds nothing."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def kill_sandboxes(cgroup_parent: str, layout: cg.CgroupLayout, strict: bool = False) -> set[str]:
    """Kill and remove every sandbox group under `cgroup_parent`; returns their names. A group
    that survives raises SandboxError when `strict` (start-up cleanup), else is reported and
    skipped (the watchdog does what it can)."""
    names = layout.children(cgroup_parent)
    for name in names:
        group = layout.group(f"{cgroup_parent}/{name}")
        try:
            group.kill_all_blocking()
            group.remove()
        except OSError as error:
            if strict:
                raise SandboxError(f"cannot remove stale sandbox {name}: {error}") from error
            print(f"lambdahost watchdog: {name}: {error}", file=sys.stderr)
    layout.remove_if_empty(cgroup_parent)
    return names


def main() -> None:
    what: WatchdogConfig = json.loads(sys.argv[1])
    while sys.stdin.buffer.read(4096):
        pass  # nobody writes: this returns at EOF, when no server holds the pipe any more
    kill_sandboxes(what["cgroup_parent"], cg.from_description(what["cgroup_layout"]))
    if "volumes" in what and Path(what["volumes"]).is_dir():
        remove_instance(Path(what["volumes"]))
    if "lxcfs" in what:
        stop_stale(Path(what["lxcfs"]), Path(what["lxcfs_pidfile"]))


if __name__ == "__main__":
    main()
