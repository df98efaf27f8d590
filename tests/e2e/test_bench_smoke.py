"""`make bench` must keep working: run the harness with tiny counts against a real server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from cgroup_paths import group_dirs

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def test_quick_bench_measures_everything_and_cleans_up(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(output.read_text())

    headline = ["warm_p50_ms", "warm_p99_ms", "cold_p50_ms", "cold_p99_ms", "idle_env_pss_mb"]
    headline += ["throughput_1", "throughput_2", "burst_5_s", "idle_envs_per_gb"]
    floor = ["warm_p50_ms", "cold_p50_ms", "throughput_1", "idle_runtime_pss_mb", "burst_5_s"]
    for figures, keys in [
        (results, headline),
        (results["floor"], floor),
        (results["nodejs"], ["warm_p50_ms", "cold_p50_ms", "idle_env_pss_mb"]),
        (results["boto3"], ["warm_p50_ms", "warm_p99_ms"]),
    ]:
        for key in keys:
            assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures)
    assert results["warm_p50_ms"] <= results["warm_p99_ms"]
    assert results["details"]["memory"]["python"]["count"] >= 1
    assert "warm p50" in done.stdout and "× floor" in done.stdout  # the table was printed

    # The server, its sandboxes and the floor's runtimes are gone.
    server_pid = results["meta"]["server_pid"]
    assert not Path(f"/proc/{server_pid}").exists() or _is_zombie(server_pid)
    instance = results["meta"]["cgroup_instance"]
    assert not group_dirs(instance)


def test_only_selects_phases(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "warm", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(output.read_text())
    assert results["meta"]["phases"] == ["warm"]
    assert "warm_p50_ms" in results and "cold_p50_ms" not in results


def test_unknown_phase_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--only", "warm,nope"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "nope" in done.stderr


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False
