"""Finding 9 of the red-team pass: sandboxes die with the server. After a kill -9 in the
middle of a load, no sandbox process, /tmp mount or loop device is left within 10 s (busy,
idle and frozen ones alike), and after the restart no cgroup of the old server remains."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from cgroup_paths import instance_groups, mounts_mentioning
from helpers import create_function, make_zip, start_server, unique

SLEEPER = make_zip(
    {"app.py": "import time\ndef handler(event, context):\n    time.sleep(event)\n    return 1\n"}
)


def sandbox_processes(state_dir: Path) -> list[int]:
    """Host pids in any cgroup of this server's sandboxes."""
    marker = "/lambdahost/" + instance_groups_name(state_dir) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cgroup").read_text():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def instance_groups_name(state_dir: Path) -> str:
    import hashlib

    return hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]


def loop_devices_of(directories: list[Path]) -> list[str]:
    devices = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip().startswith(tuple(f"{d}/" for d in directories)):
                devices.append(backing.parent.parent.name)
        except OSError:
            continue
    return devices


@pytest.mark.parametrize("backend", ["zygote", "bwrap"])
def test_sandboxes_die_with_a_killed_server(tmp_path: Path, backend: str) -> None:
    data = (tmp_path / "data").resolve()
    state_dir = data / "sandboxes"
    server = start_server(data, "--sandbox", backend)
    try:
        lam = server.client("lambda")
        names = [unique("death") for _ in range(6)]
        for name in names:
            create_function(lam, name, SLEEPER, wait=False, Timeout=60)
        for name in names:
            lam.get_waiter("function_active_v2").wait(FunctionName=name)
        for name in names[:3]:  # idle, and frozen a moment later
            lam.invoke(FunctionName=name, Payload=b"0")
        busy = [
            threading.Thread(
                target=lambda n=name: _quietly(lambda: lam.invoke(FunctionName=n, Payload=b"30"))
            )
            for name in names[3:]
        ]
        for thread in busy:
            thread.start()
        deadline = time.monotonic() + 30
        while len(instance_groups(state_dir)) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(instance_groups(state_dir)) >= 6
        assert sandbox_processes(state_dir)
        old_volumes = list((state_dir / "tmp").glob("v-*"))  # this server's /tmp volumes
        assert old_volumes
    finally:
        server.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    while sandbox_processes(state_dir) and time.monotonic() - killed_at < 10:
        time.sleep(0.1)
    assert sandbox_processes(state_dir) == [], "sandboxes outlived their server"
    for thread in busy:
        thread.join(60)
    # The watchdog removes their /tmp volumes too (bwrap mounts them on the host).
    while loop_devices_of(old_volumes) and time.monotonic() - killed_at < 10:
        time.sleep(0.1)
    assert loop_devices_of(old_volumes) == []
    assert not [m for m in mounts_mentioning(data) if any(str(v) in m for v in old_volumes)]
    server = start_server(data, "--sandbox", backend)
    try:
        server.client("lambda").list_functions()  # up: its start-up cleanup has run
        assert instance_groups(state_dir) == []
        assert not [m for m in mounts_mentioning(data) if any(str(v) in m for v in old_volumes)]
        assert loop_devices_of(old_volumes) == []
    finally:
        server.kill()


def _quietly(call) -> None:  # noqa: ANN001
    try:
        call()
    except Exception:
        pass  # the server is killed under it
