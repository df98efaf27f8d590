"""Real sandboxes (root, cgroup v1), on every backend (bwrap, zygote): each test starts probes
inside and checks what they saw. The probe reports through a pipe given in `pass_fds`, so
every test also checks that descriptors reach the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lambdahost.invoke.environment import provisions
from lambdahost.runtimes import PYTHON
from lambdahost.sandbox import (
    BACKENDS,
    Backend,
    Exec,
    Link,
    Mount,
    SandboxError,
    SandboxSpec,
    open_backend,
)
from lambdahost.sandbox.bwrap import BwrapBackend
from lambdahost.sandbox.zygote import ZygoteBackend

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

PROBE = """\
import json, os, sys
result = {}
exec(sys.argv[1])
os.write(int(os.environ["OUT_FD"]), json.dumps(result).encode())
"""


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds: slow hosts (an emulated cgroup-v2 guest) take longer
    than a fixed sleep allows."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    task = tmp_path / "task"
    task.mkdir()
    (task / "probe.py").write_text(PROBE)
    return task


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend(tmp_path: Path, kind: str) -> Iterator[Backend]:
    # tmp_path is 0700 root: mount sources and state must still work from there.
    backend = open_backend(tmp_path / "state", kind, provisions=provisions())
    assert isinstance(backend, {"bwrap": BwrapBackend, "zygote": ZygoteBackend}[kind])
    yield backend
    backend.cleanup_stale()
    if isinstance(backend, ZygoteBackend):
        backend.close()


def spec_for(task: Path, code: str, sandbox_id: str, out_fd: int, **kwargs: object) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=sandbox_id,
        start=Exec([PYTHON, "/var/task/probe.py", textwrap.dedent(code)]),
        env={"OUT_FD": str(out_fd)},
        mounts=[Mount(task, "/var/task")],
        pass_fds=(out_fd,),
        **{"cwd": "/var/task", **kwargs},  # type: ignore[arg-type]
    )


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


async def probe(backend: Backend, task: Path, code: str, sandbox_id: str = "probe", **kw):
    """Run `code` in a fresh sandbox; returns (exit status, result dict, stats)."""
    read_end, write_end = os.pipe()
    try:
        sandbox = await backend.start(spec_for(task, code, sandbox_id, write_end, **kw))
    finally:
        os.close(write_end)
    try:
        status = await asyncio.wait_for(sandbox.wait(), 60)
        stats = sandbox.stats()
        output = await asyncio.to_thread(read_all, read_end)
        if status != 0 and not output:
            print(sandbox.stderr_tail())
    finally:
        await sandbox.destroy()
    return status, (json.loads(output) if output else {}), stats


def test_isolation(backend: Backend, task_dir: Path, tmp_path: Path) -> None:
    code = f"""
    import errno, socket
    result["fds"] = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    result["pids"] = sorted(p for p in os.listdir("/proc") if p.isdigit())
    result["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()]
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    result["status"] = {{k: v.strip() for k, v in status.items()
                        if k.startswith(("Cap", "NoNewPrivs", "Seccomp"))}}
    def writable(path):
        try:
            with open(path, "w") as f:
                f.write("x")
            return True
        except OSError as e:
            return e.errno
    result["writes"] = {{p: writable(p) for p in
                        ["/var/task/new", "/new", "/etc/passwd", "/usr/new", "/tmp/new", "/opt/x"]}}
    result["exists"] = {{p: os.path.exists(p) for p in ["/root", "/home", "/work",
                        {str(tmp_path)!r}, "/var/task/probe.py", "/opt"]}}
    result["etc"] = sorted(os.listdir("/etc"))
    result["passwd"] = open("/etc/passwd").read()
    result["hosts"] = open("/etc/hosts").read()
    result["interfaces"] = [name for _, name in socket.if_nameindex()]
    server = socket.create_server(("127.0.0.1", 9001))
    client = socket.create_connection(("127.0.0.1", 9001), timeout=5)
    result["loopback"] = server.accept()[0].getsockname()[1]
    result["hostname"] = socket.gethostname()
    result["env"] = dict(os.environ)
    result["cwd"] = os.getcwd()
    result["stdin"] = os.readlink("/proc/self/fd/0")
    result["mounts"] = open("/proc/self/mounts").read()
    import ssl
    result["certs"] = ssl.create_default_context().cert_store_stats()["x509_ca"]
    """
    status, seen, _ = asyncio.run(probe(backend, task_dir, code, sandbox_id="iso"))
    assert status == 0, seen
    assert seen["pids"] == ["1"]  # only the probe itself: PID 1 of its own namespace
    uid = seen["ids"][0]
    assert uid >= 1_900_000_000  # a host uid of its own (sandbox/uids.py)
    assert seen["ids"] == [uid, uid, uid, []]
    assert all(
        int(seen["status"][f"Cap{kind}"], 16) == 0 for kind in ("Inh", "Prm", "Eff", "Bnd", "Amb")
    )
    assert seen["status"]["NoNewPrivs"] == "1" and seen["status"]["Seccomp"] == "2"
    erofs = 30
    assert seen["writes"] == {
        "/var/task/new": erofs,
        "/new": erofs,
        "/etc/passwd": erofs,
        "/usr/new": erofs,
        "/tmp/new": True,
        "/opt/x": erofs,
    }
    assert seen["exists"] == {
        "/root": False,
        "/home": False,
        "/work": False,
        str(tmp_path): False,
        "/var/task/probe.py": True,
        "/opt": True,
    }
    assert "shadow" not in seen["etc"] and "ssl" in seen["etc"]
    assert f"sbx_user{uid}:x:{uid}:{uid}" in seen["passwd"]
    assert "127.0.0.1\tlocalhost sandbox.localdomain" in seen["hosts"]
    assert seen["interfaces"] == ["lo"]
    assert seen["loopback"] == 9001
    assert seen["hostname"] == "localhost"
    # Exactly spec.env (Python itself adds LC_CTYPE when it coerces the C locale).
    assert set(seen["env"]) - {"LC_CTYPE"} == {"OUT_FD"}
    assert seen["cwd"] == "/var/task"
    assert seen["stdin"] == "/dev/null"
    assert len(seen["fds"]) == 5  # 0-2, the pipe, and the one listdir() holds
    assert seen["certs"] > 10


def test_seccomp_denies_escapes(backend: Backend, task_dir: Path) -> None:
    code = """
    import ctypes, subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    def call(*args):
        ctypes.set_errno(0)
        rc = libc.syscall(*args)
        return [rc, ctypes.get_errno()]
    result["unshare_user"] = call(272, 0x10000000)
    result["unshare_ns"] = call(272, 0x00020000)
    result["setns"] = call(308, 0, 0)
    result["clone_newuser"] = call(56, 0x10000000 | 17, 0, 0, 0, 0)
    result["clone3"] = call(435, 0, 0)
    result["mount"] = [libc.mount(b"none", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno()]
    result["ptrace"] = call(101, 16, 1, 0, 0)  # PTRACE_ATTACH to pid 1
    result["bpf"] = call(321, 0, 0, 0)
    result["keyctl"] = call(250, 0, 0)
    result["io_uring"] = call(425, 1, 0)
    result["unshare_cmd"] = subprocess.run(["/usr/bin/unshare", "-U", "true"]).returncode
    result["fork_ok"] = subprocess.run(["/bin/true"]).returncode
    """
    status, seen, _ = asyncio.run(probe(backend, task_dir, code, sandbox_id="seccomp"))
    assert status == 0, seen
    eperm, enosys = 1, 38
    for name in ("unshare_user", "unshare_ns", "setns", "clone_newuser", "mount", "ptrace", "bpf",
                 "keyctl"):  # fmt: skip
        assert seen[name] == [-1, eperm], name
    assert seen["clone3"] == [-1, enosys]
    assert seen["io_uring"] == [-1, enosys]
    assert seen["unshare_cmd"] != 0
    assert seen["fork_ok"] == 0


def test_tmp_is_limited(backend: Backend, task_dir: Path) -> None:
    code = """
    import errno
    written = 0
    try:
        with open("/tmp/fill", "wb") as f:
            while written < 64 << 20:
                f.write(b"x" * (1 << 20))
                f.flush()
                written += 1 << 20
    except OSError as e:
        result["errno"] = e.errno
    result["written_mb"] = written >> 20
    """
    status, seen, _ = asyncio.run(probe(backend, task_dir, code, sandbox_id="tmp", tmp_mb=8))
    assert status == 0
    assert seen["errno"] == 28  # ENOSPC
    assert 6 <= seen["written_mb"] <= 8


def test_memory_limit_oom_kills(backend: Backend, task_dir: Path) -> None:
    code = """
    chunks = []
    for _ in range(512):
        chunks.append(bytearray(1 << 20))  # zero-filled: really touched
    result["survived"] = True
    """
    status, seen, stats = asyncio.run(
        probe(backend, task_dir, code, sandbox_id="oom", memory_mb=64)
    )
    assert seen == {}
    assert status == -9
    assert stats.oom_killed
    assert stats.memory_peak_bytes >= 60 << 20


def test_fork_bomb_stopped_by_pids_limit(backend: Backend, task_dir: Path) -> None:
    code = """
    import time
    children = 0
    try:
        while children < 1000:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
    except OSError as e:
        result["errno"] = e.errno
    result["children"] = children
    """

    async def run() -> tuple[dict, int]:
        read_end, write_end = os.pipe()
        spec = spec_for(task_dir, code, "forkbomb", write_end, pids_max=32)
        sandbox = await backend.start(spec)
        os.close(write_end)
        try:
            # The parent reports once it hits the limit; its children keep it from EOF.
            data = b""
            while not data.endswith(b"}"):
                chunk = await asyncio.to_thread(os.read, read_end, 65536)
                assert chunk
                data += chunk
            pids = sandbox.stats().pids
        finally:
            await sandbox.destroy()
            os.close(read_end)
        return json.loads(data), pids

    seen, pids = asyncio.run(run())
    assert seen["errno"] == 11  # EAGAIN from the pids controller
    assert 20 <= seen["children"] < 32
    assert pids <= 32
    assert subprocess.run(["/bin/true"]).returncode == 0  # the host is fine


def test_sandboxes_do_not_share_tmp(backend: Backend, task_dir: Path) -> None:
    writer = """
    open("/tmp/secret", "w").write("a")
    os.write(int(os.environ["OUT_FD"]), b"{}")
    os.read(0, 1)  # stdin is /dev/null: returns at once, so sleep instead
    import time; time.sleep(60)
    """

    async def run() -> dict:
        read_end, write_end = os.pipe()
        first = await backend.start(spec_for(task_dir, writer, "writer", write_end))
        os.close(write_end)
        try:
            assert await asyncio.to_thread(os.read, read_end, 10) == b"{}"
            _, seen, _ = await probe(
                backend, task_dir, 'result["tmp"] = os.listdir("/tmp")', sandbox_id="reader"
            )
        finally:
            await first.destroy()
            os.close(read_end)
        return seen

    assert asyncio.run(run()) == {"tmp": []}


def test_links_in_the_root(backend: Backend, task_dir: Path) -> None:
    """`SandboxSpec.links` become symbolic links in the sandbox's own root (how the nodejs
    runtime's SDK reaches ES modules at /node_modules)."""
    code = """
    result["link"] = os.readlink("/node_modules")
    result["through"] = os.path.isfile("/node_modules/probe.py")
    result["nested"] = os.readlink("/var/lang/x")
    """
    links = (Link("/node_modules", "/var/task"), Link("/var/lang/x", "../task"))
    status, seen, _ = asyncio.run(probe(backend, task_dir, code, links=links))
    assert status == 0
    assert seen == {"link": "/var/task", "through": True, "nested": "../task"}


def test_pass_fds_keep_their_numbers(backend: Backend, task_dir: Path, tmp_path: Path) -> None:
    extra_path = tmp_path / "extra"
    extra_path.write_text("hello")
    code = """
    fds = {int(n) for n in os.listdir("/proc/self/fd")}
    result["extra"] = os.pread(int(os.environ["EXTRA_FD"]), 5, 0).decode()
    result["fds"] = sorted(fds)
    """

    async def run() -> tuple[int, dict, int, int]:
        # High numbers, to show they are not renumbered; free ones (F_DUPFD), not dup2 onto
        # fixed numbers, which could silently replace a descriptor the backend holds.
        opened = os.open(extra_path, os.O_RDONLY)
        extra = fcntl.fcntl(opened, fcntl.F_DUPFD, 200)
        os.close(opened)
        read_end, write_end = os.pipe()
        write_high = fcntl.fcntl(write_end, fcntl.F_DUPFD, 230)
        os.close(write_end)
        spec = SandboxSpec(
            sandbox_id="fds",
            start=Exec([PYTHON, "/var/task/probe.py", textwrap.dedent(code)]),
            env={"OUT_FD": str(write_high), "EXTRA_FD": str(extra)},
            mounts=[Mount(task_dir, "/var/task")],
            pass_fds=(write_high, extra),
        )
        sandbox = await backend.start(spec)
        os.close(write_high)
        os.close(extra)
        status = await sandbox.wait()
        await sandbox.destroy()
        return status, json.loads(await asyncio.to_thread(read_all, read_end)), write_high, extra

    status, seen, write_high, extra = asyncio.run(run())
    assert status == 0
    assert seen["extra"] == "hello"
    assert set(seen["fds"]) - {0, 1, 2} - {write_high, extra} <= {3}  # 3: listdir's own fd


def _mountinfo(under: Path) -> list[str]:
    """Mounts below `under` (other tests' backends come and go meanwhile: their watchdogs
    clean up when they are garbage-collected)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sorted(
        line.split(" ", 4)[4] for line in lines if line.split(" ")[4].startswith(f"{under}/")
    )


def test_destroy_leaves_nothing(backend: Backend, task_dir: Path) -> None:
    state_dir = backend.state_dir  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30  # the /tmp pool measures its first size with a mount
    while not backend._volumes.ready(512 << 20) and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    mounts_before = _mountinfo(state_dir)

    async def run() -> tuple[list[int], list[Path], Path]:
        sandbox = await backend.start(
            SandboxSpec(
                sandbox_id="gone",
                start=Exec(["/bin/sh", "-c", "sleep 60 & sleep 60"]),
                env={},
                mounts=[Mount(task_dir, "/var/task")],
            )  # fmt: skip
        )
        assert await eventually(lambda: sandbox.stats().pids == 3)  # sh and its two sleeps
        assert sandbox.alive()
        pids = sorted(sandbox.cgroups.tasks())
        groups = backend.cgroup_layout.paths(sandbox.cgroups.name)
        assert all(group.is_dir() for group in groups)
        await sandbox.freeze()  # destroy must also handle a frozen sandbox
        await sandbox.destroy()
        await sandbox.destroy()  # idempotent
        assert not sandbox.alive()
        return pids, groups, backend.state_dir / "sandboxes" / "gone"

    pids, groups, state = asyncio.run(run())
    helpers = 1 if isinstance(backend, BwrapBackend) else 0  # bwrap's monitor
    assert len(pids) == 3 + helpers  # sh, two sleeps
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(group.exists() for group in groups)
    assert not state.exists()
    assert _mountinfo(state_dir) == mounts_before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cleanup_stale_after_crash(tmp_path: Path, task_dir: Path, kind: str) -> None:
    state = tmp_path / "state"
    crashed = open_backend(state, kind, provisions=provisions())

    async def start_and_forget() -> list[int]:
        pids = []
        for name in ("left-1", "left-2"):
            sandbox = await crashed.start(
                SandboxSpec(sandbox_id=name, start=Exec(["/bin/sleep", "60"]), env={})
            )
            pids.append(sandbox.pid)
        return pids  # dropped without destroy(), as by a server that died

    pids = asyncio.run(start_and_forget())
    for pid in pids:
        os.kill(pid, 0)  # still running
    fresh = open_backend(state, kind, provisions=provisions())
    assert fresh.cleanup_stale() == 2
    for pid in pids:
        deadline = time.monotonic() + 5
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _running(pid)
    # the instance's parent group goes too once it is empty
    assert not any(path.exists() for path in fresh.cgroup_layout.paths(fresh.cgroup_parent))
    assert not any((state / "sandboxes").iterdir())
    assert fresh.cleanup_stale() == 0
    gc.collect()  # the dropped transports complain about their closed loop: let them do it here


CRASHING_SERVER = """
import asyncio, os, sys
from pathlib import Path
from lambdahost.invoke.environment import provisions
from lambdahost.sandbox import Exec, SandboxSpec, open_backend

async def main():
    backend = open_backend(Path(sys.argv[1]), sys.argv[2], provisions=provisions())
    for name in ("crash-1", "crash-2"):
        spec = SandboxSpec(sandbox_id=name, start=Exec(["/bin/sleep", "60"]), env={})
        sandbox = await backend.start(spec)
        print(sandbox.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_cleanup_stale_after_server_was_killed(tmp_path: Path, kind: str) -> None:
    state = tmp_path / "state"
    server = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SERVER, str(state), kind], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    pids = [int(server.stdout.readline()) for _ in range(2)]
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    try:
        for pid in pids:  # the backend's watchdog kills them
            deadline = time.monotonic() + 10
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not _running(pid)
        fresh = open_backend(state, kind, provisions=provisions())
        assert fresh.cleanup_stale() in (0, 1, 2)  # what the watchdog had not removed yet
        assert fresh.cleanup_stale() == 0
    finally:
        for pid in pids:  # never leak sleepers, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie (orphans are reparented to an init that may reap slowly)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or went while being read
        return False


def test_freeze_and_thaw(backend: Backend, task_dir: Path) -> None:
    ticker = """
    import time
    fd = int(os.environ["OUT_FD"])
    while True:
        os.write(fd, b".")
        time.sleep(0.01)
    """

    async def run() -> tuple[int, int, float, float]:
        read_end, write_end = os.pipe()
        sandbox = await backend.start(spec_for(task_dir, ticker, "ticker", write_end))
        os.close(write_end)
        os.set_blocking(read_end, False)

        def drain() -> int:
            try:
                return len(os.read(read_end, 1 << 20))
            except BlockingIOError:
                return 0

        try:
            assert await eventually(lambda: drain() > 0)
            started = time.perf_counter()
            await sandbox.freeze()
            freeze_s = time.perf_counter() - started
            assert sandbox.cgroups.freezer_state() == "FROZEN"
            drain()
            await asyncio.sleep(0.3)
            while_frozen = drain()
            started = time.perf_counter()
            await sandbox.thaw()
            thaw_s = time.perf_counter() - started
            await sandbox.thaw()  # no-op
            after_thaw = 0

            def ticked() -> bool:
                nonlocal after_thaw
                after_thaw += drain()
                return after_thaw > 0

            await eventually(ticked)
        finally:
            await sandbox.destroy()
            os.close(read_end)
        return while_frozen, after_thaw, freeze_s, thaw_s

    while_frozen, after_thaw, freeze_s, thaw_s = asyncio.run(run())
    assert while_frozen == 0
    assert after_thaw > 0
    assert freeze_s < 10 and thaw_s < 10  # milliseconds here; generous for emulated guests


def test_start_errors(backend: Backend, task_dir: Path) -> None:
    async def run() -> None:
        with pytest.raises(SandboxError):
            await backend.start(SandboxSpec(sandbox_id="Bad_Id", start=Exec(["/bin/true"]), env={}))
        with pytest.raises(SandboxError):
            await backend.start(
                SandboxSpec(
                    sandbox_id="nosrc",
                    start=Exec(["/bin/true"]),
                    env={},
                    mounts=[Mount(Path("/nonexistent"), "/var/task")],
                )  # fmt: skip
            )
        with pytest.raises(SandboxError):
            await backend.start(
                SandboxSpec(
                    sandbox_id="hide",
                    start=Exec(["/bin/true"]),
                    env={},
                    mounts=[Mount(task_dir, "/usr")],
                )  # fmt: skip
            )
        missing = await backend.start(
            SandboxSpec(
                sandbox_id="missing",
                start=Exec(["/var/task/nope"]),
                env={},
                mounts=[Mount(task_dir, "/var/task")],
            )  # fmt: skip
        )
        assert await missing.wait() == 127
        await missing.destroy()
        # A failed start leaves no cgroups or state behind, and the id is reusable.
        again = await backend.start(
            SandboxSpec(sandbox_id="nosrc", start=Exec(["/bin/true"]), env={})
        )
        assert await again.wait() == 0
        await again.destroy()

    asyncio.run(run())
    assert backend.cleanup_stale() == 0


def test_start_is_fast(backend: Backend) -> None:
    async def run() -> float:
        timings = []
        for attempt in range(5):
            started = time.perf_counter()
            sandbox = await backend.start(
                SandboxSpec(
                    sandbox_id=f"fast-{attempt}", start=Exec([PYTHON, "-c", "pass"]), env={}
                )
            )
            assert await sandbox.wait() == 0
            timings.append(time.perf_counter() - started)
            await sandbox.destroy()
        return min(timings)

    assert asyncio.run(run()) < 1.0  # typically ~20 ms; generous for loaded CI machines
