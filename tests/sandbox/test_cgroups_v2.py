"""The cgroup v2 layer: unit tests on a fake cgroupfs anywhere, and on a real v2-only host
(`make test-cgroup2`) the real thing: delegation, limits, freeze, OOM, kill."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from lambdahost.sandbox import cgroups as cg
from lambdahost.sandbox.cgroups_v2 import V2Layout, cpu_weight, own_cgroup

UNIFIED = cg.is_unified(cg.CGROUP_ROOT)
real_v2 = pytest.mark.skipif(
    not UNIFIED or os.geteuid() != 0, reason="needs a cgroup v2-only host, as root"
)


def test_cpu_weight_matches_the_kernel_conversion() -> None:
    assert cpu_weight(2) == 1
    assert cpu_weight(1024) == 39  # systemd: CPUShares=1024 is CPUWeight=39
    assert cpu_weight(262144) == 10000
    assert cpu_weight(0) == 1 and cpu_weight(10**9) == 10000


def test_layout_detection_on_fake_roots(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cg.is_unified(v2)
    hybrid = tmp_path / "hybrid"
    (hybrid / "memory").mkdir(parents=True)
    (hybrid / "memory" / "tasks").write_text("")
    (hybrid / "cgroup.controllers").write_text("")  # a v2 tree mounted at the top: not ours
    assert not cg.is_unified(hybrid)
    assert not cg.is_unified(cg.CGROUP_ROOT) or not (cg.CGROUP_ROOT / "memory").is_dir()


def test_v2_group_reads_the_v2_files(tmp_path: Path) -> None:
    layout = V2Layout(tmp_path, "base", ("memory", "pids", "cpu"))
    group = layout.group("lambdahost/i/one")
    group.dir.mkdir(parents=True)
    (group.dir / "cgroup.procs").write_text("12\n34\n")
    (group.dir / "memory.current").write_text("4096\n")
    (group.dir / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (group.dir / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    (group.dir / "pids.current").write_text("2\n")
    assert group.tasks() == {12, 34}
    assert group.memory_peak() == 4096  # no memory.peak: the highest sample
    (group.dir / "memory.peak").write_text("8192\n")
    assert group.memory_peak() == 8192
    assert group.oom_killed()
    assert group.freezer_state() == "FROZEN"
    assert group.pids_current() == 2
    assert group.procs_files() == group.join_files() == [group.dir / "cgroup.procs"]
    assert layout.paths("lambdahost/i") == [tmp_path / "base" / "lambdahost" / "i"]
    assert layout.children("lambdahost/i") == {"one"}
    again = cg.from_description(layout.describe())
    assert isinstance(again, V2Layout) and again.path("x") == layout.path("x")


# -- the real thing -------------------------------------------------------------------------


@real_v2
def test_delegated_base_holds_no_processes() -> None:
    layout = cg.detect()
    assert isinstance(layout, V2Layout)
    assert {"memory", "pids"} <= set(layout.controllers)
    base = layout.path("")
    assert (base / "cgroup.procs").read_text().split() == []  # the no-internal-processes rule
    assert own_cgroup().startswith("/" + layout.base)
    enabled = (base / "cgroup.subtree_control").read_text().split()
    assert set(layout.controllers) <= set(enabled)


@real_v2
def test_limits_freeze_oom_and_kill_on_v2(tmp_path: Path) -> None:
    layout = cg.detect()
    parent = cg.instance_parent(tmp_path)
    group = layout.group(f"{parent}/probe")
    group.create(cg.Limits(memory_bytes=32 << 20, cpu_shares=1024, pids_max=16))
    try:
        assert (group.dir / "memory.max").read_text().strip() == str(32 << 20)
        assert (group.dir / "pids.max").read_text().strip() == "16"
        if "cpu" in layout.controllers:
            assert (group.dir / "cpu.weight").read_text().strip() == "39"
        # The inner nodes only hold groups.
        assert (layout.path(parent) / "cgroup.procs").read_text().split() == []
        sleeper = _spawn_in(group, ["/bin/sleep", "60"])
        assert group.tasks() == {sleeper.pid}
        asyncio.run(group.freeze())
        assert group.freezer_state() == "FROZEN"
        assert "frozen 1" in (group.dir / "cgroup.events").read_text()
        group.thaw()
        assert group.freezer_state() == "THAWED"
        hog = _spawn_in(group, ["/usr/bin/python3", "-c", "b = bytearray(200 << 20)"])
        hog.wait(60)
        assert hog.returncode == -9
        assert group.oom_killed()
        assert group.memory_peak() >= 16 << 20
        asyncio.run(group.freeze())  # kill_all must handle a frozen group
        asyncio.run(group.kill_all())
        sleeper.wait(10)
        assert group.tasks() == set()
    finally:
        group.kill_all_blocking()
        group.remove()
        layout.remove_if_empty(parent)
    assert not group.exists()
    assert not layout.path(parent).exists()


def _spawn_in(group: cg.CgroupSet, argv: list[str]) -> subprocess.Popen:
    procs = str(group.procs_files()[0])

    def join() -> None:
        with open(procs, "w") as file:
            file.write("0")

    process = subprocess.Popen(argv, preexec_fn=join)  # noqa: PLW1509 (no threads here)
    deadline = time.monotonic() + 10
    while process.pid not in group.tasks() and time.monotonic() < deadline:
        time.sleep(0.01)
    return process
