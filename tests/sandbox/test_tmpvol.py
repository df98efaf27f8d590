"""The disk-backed /tmp: an ext4 volume per sandbox, exactly `tmp_mb` big, outside memory."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import stat
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lambdahost.invoke.environment import provisions
from lambdahost.runtimes import PYTHON
from lambdahost.sandbox import (
    BACKENDS,
    Backend,
    Exec,
    Mount,
    SandboxError,
    SandboxSpec,
    loopdev,
    open_backend,
)
from lambdahost.sandbox.tmpvol import SPARES, TmpLease, TmpVolumes, Volume, lease

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="volumes need root")

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
    backend = open_backend(tmp_path / "state", request.param, provisions=provisions())
    yield backend
    backend.cleanup_stale()
    backend.close()


async def probe(backend: Backend, task: Path, code: str, **kwargs: object) -> tuple:
    read_end, write_end = os.pipe()
    spec = SandboxSpec(
        sandbox_id="tmpvol",
        start=Exec([PYTHON, "/var/task/probe.py", textwrap.dedent(code)]),
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


def _loops_under(path: Path, settle_s: float = 30.0) -> list[str]:
    """Loop devices still backed by files under `path`. The kernel detaches an autoclear
    device after its last close asynchronously, so wait (up to `settle_s`) for that."""
    deadline = time.monotonic() + settle_s
    while (found := _attached_under(path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _attached_under(path: Path) -> list[str]:
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


# -- loop devices under concurrency ------------------------------------------------------------


def _check_attached(volume: Volume) -> None:
    """`volume.device` is a real loop block device, bound to the volume's own image."""
    mode = os.stat(volume.device).st_mode
    assert stat.S_ISBLK(mode) and os.major(os.stat(volume.device).st_rdev) == 7
    name = Path(volume.device).name
    assert Path(f"/sys/block/{name}/loop/backing_file").read_text().strip() == str(volume.image)


def test_many_volumes_attach_at_once(tmp_path: Path) -> None:
    """64 volumes from 16 threads, all held at once: far more than the 8 loop devices the
    module makes at boot. Each gets its own real device; none falls back to anything."""
    pool = TmpVolumes(tmp_path / "tmp", spares=0)
    assert pool.available, pool.reason
    with ThreadPoolExecutor(16) as threads:
        volumes = list(threads.map(lambda _: pool.acquire(64 * MB, mount=False), range(64)))
    try:
        assert len({v.device for v in volumes}) == 64
        for volume in volumes:
            _check_attached(volume)
    finally:
        for volume in volumes:
            pool.release(volume)
        pool.close()
    assert _loops_under(tmp_path) == []


def test_a_burst_of_leases_gets_real_volumes(tmp_path: Path) -> None:
    """100 cold starts asking at once, as the backends ask (`lease`): every one gets a
    disk-backed volume. Prints the latency each saw (the pool keeps only a few ready)."""

    async def burst() -> tuple[list[TmpLease | None], list[float]]:
        pool.prepare(64 * MB)
        await asyncio.sleep(0.5)  # the spares are made, as after a server's start

        async def one() -> TmpLease | None:
            started = time.perf_counter()
            got = await lease(pool, 64 * MB, mount=False)
            waited.append((time.perf_counter() - started) * 1000)
            return got

        waited: list[float] = []
        return await asyncio.gather(*(one() for _ in range(100))), waited

    pool = TmpVolumes(tmp_path / "tmp")
    leases, waited = asyncio.run(burst())
    try:
        assert all(held is not None for held in leases)
        assert len({held.device for held in leases if held}) == 100
        waited.sort()
        print(f"100 leases at once: p50 {waited[50]:.1f} ms, max {waited[-1]:.1f} ms")
    finally:
        for held in leases:
            if held is not None:
                held.release()
        pool.close()
    assert _loops_under(tmp_path) == []


def test_a_device_that_stays_busy_is_stepped_over(tmp_path: Path) -> None:
    """The kernel offers the lowest unbound device; if someone holds it exclusively, it
    stays offered and stays busy. Attaching goes on with other devices."""
    control = os.open("/dev/loop-control", os.O_RDWR)
    try:
        number = fcntl.ioctl(control, 0x4C82)  # LOOP_CTL_GET_FREE
    finally:
        os.close(control)
    held = os.open(f"/dev/loop{number}", os.O_RDONLY | os.O_EXCL)  # a block device's claim
    pool = TmpVolumes(tmp_path / "tmp", spares=0)
    try:
        volumes = [pool.acquire(64 * MB, mount=False) for _ in range(4)]
        assert f"/dev/loop{number}" not in {v.device for v in volumes}
        for volume in volumes:
            _check_attached(volume)
            pool.release(volume)
    finally:
        os.close(held)
        pool.close()


def test_missing_device_node_is_made(tmp_path: Path) -> None:
    """Where nothing makes device nodes (a container's /dev), the node is made with mknod,
    with the dev_t sysfs announces; a node of the wrong device is refused."""
    control = os.open("/dev/loop-control", os.O_RDWR)
    try:
        number = fcntl.ioctl(control, 0x4C82)
    finally:
        os.close(control)
    node = tmp_path / f"loop{number}"
    fd = loopdev._open(number, str(node))
    try:
        assert os.fstat(fd).st_rdev == os.stat(f"/dev/loop{number}").st_rdev
        assert stat.S_ISBLK(node.stat().st_mode)
    finally:
        os.close(fd)
    wrong = tmp_path / "wrong"
    os.mknod(wrong, stat.S_IFBLK | 0o600, os.makedev(7, (number + 1) % 256))
    with pytest.raises(loopdev.LoopError, match="stale node"):
        loopdev._open(number, str(wrong))


def test_a_failing_volume_fails_the_start_instead_of_a_tmpfs(tmp_path: Path) -> None:
    """The pool works on this host, but this volume cannot be made: the sandbox must not
    start with a memory-backed /tmp in its place."""
    pool = TmpVolumes(tmp_path / "tmp", spares=0)
    try:
        with pytest.raises(SandboxError, match="cannot make its /tmp"):
            asyncio.run(lease(pool, -MB))  # an impossible size: making its image fails
    finally:
        pool.close()


def test_the_pool_keeps_more_ready_after_a_burst(tmp_path: Path) -> None:
    """Acquires that found none ready make the pool keep more (bursts come again), up to
    MAX_SPARES; after `decay_s` without such a miss it goes back to its spares."""
    pool = TmpVolumes(tmp_path / "tmp")
    pool.decay_s = 1.0
    try:
        pool.prepare(64 * MB)
        _wait_for(lambda: pool.ready_count(64 * MB) == SPARES)
        burst = [pool.acquire(64 * MB, mount=False) for _ in range(SPARES + 6)]  # misses
        _wait_for(lambda: pool.ready_count(64 * MB) > SPARES)
        for volume in burst:
            pool.release(volume)
        _wait_for(lambda: pool.ready_count(64 * MB) == SPARES)  # a second later
    finally:
        pool.close()
    assert _loops_under(tmp_path) == []


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
