"""After the server stops, nothing a sandbox created is left on the host."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from cgroup_paths import instance_groups, instance_parents, mounts_mentioning
from helpers import create_function, make_zip, start_server, unique


def test_no_leftovers_after_stop(tmp_path: Path) -> None:
    data = (tmp_path / "data").resolve()
    srv = start_server(data)
    state_dir = data / "sandboxes"
    try:
        lam = srv.client()
        name = unique("leftovers")
        create_function(
            lam, name, make_zip({"app.py": "import time\ndef handler(e, c):\n    return 1\n"})
        )
        for _ in range(3):
            lam.invoke(FunctionName=name, Payload=json.dumps({}))
        assert instance_groups(state_dir), "a warm environment should exist while serving"
    finally:
        assert srv.kill(signal.SIGTERM) is not None
    assert instance_groups(state_dir) == []
    assert instance_parents(state_dir) == []
    assert mounts_mentioning(data) == []
    # Only the shared, read-only base (`rootfs/`) stays; no per-sandbox state.
    per_sandbox = state_dir / "sandboxes"
    assert not per_sandbox.exists() or list(per_sandbox.iterdir()) == []


def test_restart_after_kill_9_cleans_up(tmp_path: Path) -> None:
    data = (tmp_path / "data").resolve()
    srv = start_server(data)
    state_dir = data / "sandboxes"
    try:
        lam = srv.client()
        name = unique("orphans")
        create_function(lam, name, make_zip({"app.py": "def handler(e, c):\n    return 1\n"}))
        lam.invoke(FunctionName=name, Payload=b"{}")
    finally:
        srv.kill(signal.SIGKILL)
    # The sandboxes die with the server (the backend's watchdog), and a zygote sandbox's /tmp
    # is mounted only in its own mount namespace: no host mount outlives the server.
    deadline = time.monotonic() + 10
    while (mounts_mentioning(data) or instance_groups(state_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mounts_mentioning(data) == []
    assert instance_groups(state_dir) == []
    srv = start_server(data)
    try:
        srv.client().list_functions()  # the server is up: start-up cleanup has run
        assert instance_groups(state_dir) == []
    finally:
        srv.kill()
