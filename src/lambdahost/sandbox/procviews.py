"""The environment's own view of /proc/meminfo and friends, through lxcfs.

A fresh /proc in a pid namespace still reports the host: all of its RAM in `meminfo` and its
load and uptime. Inside Lambda's microVM the same files describe the environment, and code
sizes itself from them (`free`, psutil, `os.sysconf`-less heap sizing). Debian's lxcfs serves
per-cgroup versions of these files over FUSE: the reader's memory cgroup sets `MemTotal`
(its limit) and `MemFree`. Each backend runs its own lxcfs on a node-local mount point and
the mount plan binds its files over the sandbox's `/proc/<name>`.

Optional: without lxcfs (or /dev/fuse), sandboxes see the kernel's files, as before, and the
reason is logged once. The watchdog unmounts a dead server's instance (`stop_stale`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger("lambdahost.sandbox")

LXCFS = "/usr/bin/lxcfs"
FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "diskstats", "swaps")
START_TIMEOUT = 5.0
_MNT_DETACH = 2


class ProcViews:
    """One lxcfs instance mounted at `<state_dir>/lxcfs`; `files()` is empty when off."""

    def __init__(self, state_dir: Path) -> None:
        self.mount_point = state_dir / "lxcfs"
        self.pidfile = state_dir / "lxcfs.pid"
        self.log_file = state_dir / "lxcfs.log"
        self.process: subprocess.Popen[bytes] | None = None
        reason = self._start()
        if reason:
            log.warning("sandboxes see the host's /proc/meminfo: %s", reason)

    def files(self) -> dict[str, Path]:
        """/proc file name → the host file to bind over it."""
        if self.process is None:
            return {}
        return {name: self.mount_point / "proc" / name for name in FILES}

    def _start(self) -> str | None:
        if not os.access(LXCFS, os.X_OK):
            return f"{LXCFS} is missing (apt-get install lxcfs)"
        if not os.path.exists("/dev/fuse"):
            return "/dev/fuse is missing"
        stop_stale(self.mount_point, self.pidfile)
        self.mount_point.mkdir(mode=0o755, exist_ok=True)
        try:
            with open(self.log_file, "wb") as output:  # a file: a full pipe would block it
                self.process = subprocess.Popen(
                    [LXCFS, "-f", "-l", f"--pidfile={self.pidfile}", str(self.mount_point)],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    start_new_session=True,  # the watchdog stops it if the server dies
                )
        except OSError as error:
            return f"cannot start lxcfs: {error}"
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.mount_point / "proc" / "meminfo").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                detail = self.log_file.read_bytes()[-300:].decode(errors="replace").strip()
                return f"lxcfs did not mount: {detail or 'timed out'}"
            time.sleep(0.01)
        return None

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        _unmount(self.mount_point)
        self.pidfile.unlink(missing_ok=True)


def stop_stale(mount_point: Path, pidfile: Path) -> None:
    """Stop the lxcfs an earlier (dead) server left at `mount_point`, and unmount it."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().split()[0])
        if "lxcfs" in Path(f"/proc/{pid}/comm").read_text():
            os.kill(pid, signal.SIGTERM)
    _unmount(mount_point)
    pidfile.unlink(missing_ok=True)


def _unmount(mount_point: Path) -> None:
    if _is_mounted(mount_point):
        umount = shutil.which("umount") or "/usr/bin/umount"
        subprocess.run([umount, "-l", str(mount_point)], capture_output=True, check=False)


def _is_mounted(path: Path) -> bool:
    text = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ", 5)[4] == text for line in f)
