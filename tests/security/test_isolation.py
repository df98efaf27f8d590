"""What a function can see and do inside its execution environment."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from helpers import Server, create_function, make_zip, start_server, unique

PROBE_PY = r"""
import errno, os, subprocess

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return f"error: {exc.errno}"

def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        return True
    except OSError:
        return False

def handler(event, context):
    what = event["probe"]
    if what == "view":
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        return {
            "pids": pids,
            "uid": os.getuid(),
            "task_writable": writable("/var/task"),
            "root_writable": writable("/"),
            "tmp_writable": writable("/tmp"),
            "exists": {p: os.path.exists(p) for p in event["paths"]},
            "status": [l for l in read("/proc/self/status").splitlines()
                       if l.startswith(("CapEff", "NoNewPrivs", "Seccomp"))],
            "interfaces": (
                sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else None
            ),
        }
    if what == "unshare":
        return subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode
    if what == "write_tmp":
        with open("/tmp/secret", "w") as f:
            f.write(event["value"])
        return "written"
    if what == "read_tmp":
        return read("/tmp/secret")
    if what == "fill_tmp":
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                while written < 2048 * 1024 * 1024:
                    f.write(b"\0" * (1 << 20))
                    written += 1 << 20
                    f.flush()
        except OSError as exc:
            os.unlink("/tmp/fill")
            return {"errno": exc.errno, "written_mb": written >> 20}
        return {"errno": None, "written_mb": written >> 20}
    if what == "fork_bomb":
        children = 0
        try:
            for _ in range(5000):
                if os.fork() == 0:
                    import time
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError as exc:
            return {"children": children, "errno": exc.errno}
        return {"children": children, "errno": None}
    return None
"""


@pytest.fixture(scope="module", params=["zygote", "bwrap"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Every test here runs against a server on each sandbox backend (overrides conftest's)."""
    data_dir = tmp_path_factory.mktemp(f"lambdahost-{request.param}") / "data"
    srv = start_server(data_dir, "--sandbox", request.param)
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def lam(server: Server):  # noqa: ANN201 - a botocore client
    return server.client("lambda")


@pytest.fixture(scope="module")
def probe(lam) -> str:
    name = unique("probe")
    create_function(lam, name, make_zip({"app.py": PROBE_PY}), Timeout=30, MemorySize=512)
    return name


def call(lam, name: str, event: dict) -> object:  # noqa: ANN001
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    body = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, body
    return body


def test_environment_view(lam, server, probe: str) -> None:
    paths = [
        "/root",
        "/home",
        "/work",
        str(server.data_dir),
        "/var/task/app.py",
        "/usr/bin/python3.11",
    ]
    view = call(lam, probe, {"probe": "view", "paths": paths})
    assert len(view["pids"]) < 10, view["pids"]
    assert view["uid"] != 0
    assert not view["task_writable"]
    assert not view["root_writable"]
    assert view["tmp_writable"]
    exists = view["exists"]
    assert not exists["/root"] and not exists["/home"] and not exists["/work"]
    assert not exists[str(server.data_dir)]
    assert exists["/var/task/app.py"] and exists["/usr/bin/python3.11"]
    status = dict(line.split(":\t") for line in view["status"])
    assert int(status["CapEff"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    if view["interfaces"] is not None:
        assert view["interfaces"] == ["lo"]


def test_namespaces_denied(lam, probe: str) -> None:
    assert call(lam, probe, {"probe": "unshare"}) != 0


def test_tmp_is_private_per_function(lam, probe: str) -> None:
    other = unique("probe-other")
    create_function(lam, other, make_zip({"app.py": PROBE_PY}), Timeout=30)
    assert call(lam, probe, {"probe": "write_tmp", "value": "mine"}) == "written"
    assert call(lam, probe, {"probe": "read_tmp"}) == "mine"
    assert str(call(lam, other, {"probe": "read_tmp"})).startswith("error")


def test_tmp_fills_up_at_its_size(lam) -> None:
    # As on AWS, /tmp is disk, not memory: 128 MB of memory fills a 512 MB /tmp to ENOSPC.
    name = unique("fill-tmp")
    create_function(
        lam, name, make_zip({"app.py": PROBE_PY}), Timeout=60, MemorySize=128,
        EphemeralStorage={"Size": 512},
    )  # fmt: skip
    result = call(lam, name, {"probe": "fill_tmp"})
    assert result["errno"] == 28  # ENOSPC
    assert 500 <= result["written_mb"] <= 512


def test_fork_bomb_is_contained(lam) -> None:
    name = unique("forkbomb")
    create_function(lam, name, make_zip({"app.py": PROBE_PY}), Timeout=30, MemorySize=1024)
    result = call(lam, name, {"probe": "fork_bomb"})
    assert result["children"] < 1100
    assert result["errno"] is not None
    # The function and the platform keep working.
    assert call(lam, name, {"probe": "read_tmp"}) is not None
