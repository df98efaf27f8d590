"""The disk-backed /tmp: an ext4 volume per sandbox, exactly `tmp_mb` big, outside memory."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdahost.sandbox import BACKENDS, Backend, Mount, SandboxSpec, open_backend
from lambdahost.sandbox.tmpvol import TmpVolumes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="volumes need root")

PYTHON = "/usr/bin/python3.11"
PROBE = """\
import json, os, sys
result = {}
exec(sys.argv[1])
os.write(int(os.environ["OUT_FD"]), json.dumps(result).encode())
"""
MB = 1 << 20


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    task = tmp_path / "task"
    task.mkdir()
    (task / "probe.py").write_text(PROBE)
    return task


@pytest.fixture(params=BACKENDS)
def backend(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend = open_backend(tmp_path / "state", request.param)
    yield backend
    backend.cleanup_stale()
    backend.close()


async def probe(backend: Backend, task: Path, code: str, **kwargs: object) -> tuple:
    read_end, write_end = os.pipe()
    spec = SandboxSpec(
        sandbox_id="tmpvol",
        argv=[PYTHON, "/var/task/probe.py", textwrap.dedent(code)],
        env={"OUT_FD": str(write_end)},
        mounts=[Mount(task, "/var/task")],
        pass_fds=(write_end,),
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        sandbox = await backend.start(spec)
    finally:
        os.close(write_end)
    try:
        status = await asyncio.wait_for(sandbox.wait(), 120)
        stats = sandbox.stats()
        output = await asyncio.to_thread(_read_all, read_end)
    finally:
        await sandbox.destroy()
    return status, (json.loads(output) if output else {}), stats


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line for line in text.splitlines() if str(path) in line]


def _loops_under(path: Path) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().startswith(str(path)):
                found.append(backing.parent.parent.name)
        except OSError:
            continue
    return found


def test_tmp_is_disk_not_memory(backend: Backend, task_dir: Path) -> None:
    """The AWS case: 128 MB of memory, 512 MB of /tmp. Filling /tmp ends in ENOSPC at its
    size, not in an OOM kill."""
    code = """
    import errno, os
    stat = os.statvfs("/tmp")
    result["free_mb"] = stat.f_bavail * stat.f_frsize / (1 << 20)
    result["listing"] = os.listdir("/tmp")
    result["mode"] = oct(os.stat("/tmp").st_mode & 0o7777)
    written, chunk = 0, b"x" * (1 << 20)
    try:
        with open("/tmp/fill", "wb") as f:
            while written < 2048 * (1 << 20):
                f.write(chunk)
                written += len(chunk)
    except OSError as exc:
        result["errno"] = exc.errno
    result["written_mb"] = written >> 20
    """
    status, result, stats = asyncio.run(probe(backend, task_dir, code, memory_mb=128, tmp_mb=512))
    assert status == 0, result
    assert not stats.oom_killed
    assert result["free_mb"] == 512
    assert result["listing"] == []
    assert result["mode"] == "0o1777"
    assert result["errno"] == 28  # ENOSPC
    assert 500 <= result["written_mb"] <= 512


def test_each_sandbox_gets_a_fresh_volume(backend: Backend, task_dir: Path) -> None:
    write = 'open("/tmp/left-over", "w").write("x"); result["ok"] = True'
    read = 'result["listing"] = os.listdir("/tmp")'
    for _ in range(3):  # more than the pool keeps ready: recycled volumes must be clean too
        assert asyncio.run(probe(backend, task_dir, write))[1] == {"ok": True}
        assert asyncio.run(probe(backend, task_dir, read))[1] == {"listing": []}


def test_other_sizes(backend: Backend, task_dir: Path) -> None:
    code = 'stat = os.statvfs("/tmp"); result["mb"] = stat.f_bavail * stat.f_frsize >> 20'
    for size in (600, 1024):
        assert asyncio.run(probe(backend, task_dir, code, tmp_mb=size))[1] == {"mb": size}


def test_pool_leaves_nothing(tmp_path: Path) -> None:
    pool = TmpVolumes(tmp_path / "tmp")
    assert pool.available, pool.reason
    volumes = [pool.acquire(64 * MB) for _ in range(3)]
    assert all(v.path is not None and v.path.is_dir() for v in volumes)
    assert len(_mounts_under(pool.dir)) == 3
    for volume in volumes:
        pool.release(volume)
    assert _mounts_under(pool.dir) == []  # unmounted at once; images go in the background
    pool.close()
    assert not pool.dir.exists()
    assert _mounts_under(tmp_path) == []
    assert _loops_under(tmp_path) == []


def test_cleanup_stale_removes_a_dead_instance(tmp_path: Path) -> None:
    crashed = TmpVolumes(tmp_path / "tmp")
    left = crashed.acquire(64 * MB)  # never released, as by a server that died
    crashed.prepare(64 * MB)
    fresh = TmpVolumes(tmp_path / "tmp")
    fresh.cleanup_stale()
    assert _mounts_under(crashed.dir) == []
    assert not crashed.dir.exists()
    fresh.close()
    crashed.close()  # what dying does to the process: no refill thread, descriptors closed
    os.close(left.loop_fd)
    assert _loops_under(tmp_path) == []
    assert list((tmp_path / "tmp").iterdir()) == []
