"""`make bench`: start a real lambdahost server and measure it through its HTTP API.

    python bench/run.py [--quick] [--only warm,cold,throughput,memory,burst,boto3]
                        [--output bench/results.json]

Every figure is measured next to the floor (`floor_server.py`: the same Runtime-API round trip
with no platform) in the same run, and printed with its ratio to the floor and its target.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measure
from floor import Floor, running_floor
from lambda_client import LambdaClient
from report import checks, cpu_table, table
from rich.console import Console
from server_process import Server, running_server

HERE = Path(__file__).resolve().parent
PHASES = ("warm", "cold", "throughput", "memory", "burst", "boto3")
console = Console(stderr=True)


@dataclass(frozen=True)
class Counts:
    warm: int
    warm_node: int
    cold: int
    cold_node: int
    throughput_clients: tuple[int, ...]
    throughput_s: float
    memory_envs: int
    burst: int
    boto3: int


FULL = Counts(5000, 2000, 200, 50, (1, 2, 4, 8), 3.0, 8, 100, 1000)
QUICK = Counts(100, 50, 5, 3, (1, 2), 0.3, 2, 5, 20)


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()


PYTHON_CODE = "def handler(event, context):\n    return {}\n"
NODE_CODE = "export const handler = async () => ({});\n"
RUNTIMES = {
    "python": ("python3.11", "app.handler", zip_of({"app.py": PYTHON_CODE})),
    "node": ("nodejs20.x", "index.handler", zip_of({"index.mjs": NODE_CODE})),
}


class Bench:
    def __init__(self, server: Server, floor: Floor, counts: Counts) -> None:
        self.server = server
        self.floor = floor
        self.counts = counts
        self.client = server.endpoint.connect()
        self.floor_client = floor.endpoint.connect()
        self.results: dict[str, Any] = {"nodejs": {}, "floor": {}, "boto3": {}, "details": {}}
        self._created: set[str] = set()

    def function(self, name: str, kind: str = "python") -> str:
        """Create (once) a no-op function of the given runtime kind and wait until Active."""
        if name not in self._created:
            runtime, handler, code = RUNTIMES[kind]
            self.client.create_function(name, runtime, handler, code)
            self.client.wait_settled(name)
            self._created.add(name)
        return name

    def _server_pids(self) -> list[int]:
        """This process (the client), the server and everything in its sandboxes."""
        sandboxes = self.server.sandbox_cgroups("pids")
        return [
            os.getpid(),
            self.server.pid,
            *(p for g in sandboxes for p in measure.cgroup_pids(g)),
        ]

    def record(self, phase: str, figures: dict[str, Any]) -> None:
        self.results["details"][phase] = figures

    # -- phases ---------------------------------------------------------------------------
    def warm(self) -> None:
        c, r, floor = self.counts, self.results, self.results["floor"]
        ours = measure.CpuMeter(self._server_pids)
        python = measure.warm(self.client, self.function("bench-warm-py"), c.warm, meter=ours)
        node = measure.warm(
            self.client, self.function("bench-warm-node", "node"), c.warm_node, meter=ours
        )
        runtimes = self.floor.start_runtimes("warm-py", "python")
        runtimes += self.floor.start_runtimes("warm-node", "node")
        base = measure.CpuMeter(lambda: [os.getpid(), self.floor.process.pid, *runtimes])
        floor_python = measure.warm(self.floor_client, "warm-py", c.warm, meter=base)
        floor_node = measure.warm(self.floor_client, "warm-node", c.warm_node, meter=base)
        r["warm_p50_ms"], r["warm_p99_ms"] = python.p50, python.p99
        r["nodejs"].update(warm_p50_ms=node.p50, warm_p99_ms=node.p99)
        floor.update(warm_p50_ms=floor_python.p50, warm_p99_ms=floor_python.p99)
        floor.update(node_warm_p50_ms=floor_node.p50, node_warm_p99_ms=floor_node.p99)
        self.record(
            "warm",
            {
                "python": python.summary(),
                "nodejs": node.summary(),
                "floor_python": floor_python.summary(),
                "floor_nodejs": floor_node.summary(),
            },
        )

    def cold(self) -> None:
        c, r, floor = self.counts, self.results, self.results["floor"]
        # With function networking (this server's default) and without (`isolated`), on the
        # zygote and on fresh bwrap sandboxes: interleaved, so the difference is networking's.
        mine = (self.client, self.function("bench-cold-py"))
        with self._cold_server(network="isolated") as isolated_fn:
            python, isolated = measure.cold_interleaved(mine, isolated_fn, c.cold)
        with (
            self._cold_server(sandbox="bwrap") as fresh_fn,
            self._cold_server(sandbox="bwrap", network="isolated") as fresh_isolated_fn,
        ):
            fresh, fresh_isolated = measure.cold_interleaved(
                fresh_fn, fresh_isolated_fn, c.cold // 2
            )
        node = measure.cold_by_update(
            self.client, self.function("bench-cold-node", "node"), c.cold_node
        )
        floor_python = measure.cold_floor(self.floor_client, "python", c.cold)
        floor_node = measure.cold_floor(self.floor_client, "node", c.cold_node)
        r["cold_p50_ms"], r["cold_p99_ms"] = python.p50, python.p99
        r["cold_init_p50_ms"] = python.extra["server_init_p50_ms"]
        r["cold_fresh_p50_ms"], r["cold_fresh_p99_ms"] = fresh.p50, fresh.p99
        r["cold_isolated_p50_ms"] = isolated.p50
        r["cold_fresh_isolated_p50_ms"] = fresh_isolated.p50
        r["network_cold_cost_p50_ms"] = python.p50 - isolated.p50
        r["network_fresh_cold_cost_p50_ms"] = fresh.p50 - fresh_isolated.p50
        r["nodejs"].update(cold_p50_ms=node.p50, cold_p99_ms=node.p99)
        floor.update(cold_p50_ms=floor_python.p50, cold_p99_ms=floor_python.p99)
        floor.update(node_cold_p50_ms=floor_node.p50, node_cold_p99_ms=floor_node.p99)
        self.record(
            "cold",
            {
                "method": "UpdateFunctionConfiguration (new env var) before each timed invoke",
                "python": python.summary(),
                "python_fresh_sandbox": fresh.summary(),
                "python_no_network": isolated.summary(),
                "python_fresh_sandbox_no_network": fresh_isolated.summary(),
                "nodejs": node.summary(),
                "floor_python": floor_python.summary(),
                "floor_nodejs": floor_node.summary(),
            },
        )

    @staticmethod
    @contextlib.contextmanager
    def _cold_server(**server: str) -> Iterator[tuple[LambdaClient, str]]:
        """A server of its own, started with `server`'s options, with a python function."""
        with running_server(**server) as other:
            client = other.endpoint.connect()
            runtime, handler, code = RUNTIMES["python"]
            client.create_function("bench-cold-other", runtime, handler, code)
            client.wait_settled("bench-cold-other")
            yield client, "bench-cold-other"

    def throughput(self) -> None:
        c, r = self.counts, self.results
        name = self.function("bench-warm-py")
        self.floor.start_runtimes("throughput-py", "python", max(c.throughput_clients))
        details: dict[str, Any] = {"duration_s": c.throughput_s}
        for clients in c.throughput_clients:
            ours = measure.throughput(self.server.endpoint, name, clients, c.throughput_s)
            base = measure.throughput(self.floor.endpoint, "throughput-py", clients, c.throughput_s)
            r[f"throughput_{clients}"] = ours["per_s"]
            r["floor"][f"throughput_{clients}"] = base["per_s"]
            details[f"clients_{clients}"] = {"lambdahost": ours, "floor": base}
            console.log(f"  {clients} clients: {ours['per_s']:.0f}/s (floor {base['per_s']:.0f}/s)")
        self.record("throughput", details)

    def memory(self) -> None:
        c, r, floor = self.counts, self.results, self.results["floor"]
        python = self._idle_environments(self.function("bench-memory-py"), c.memory_envs)
        node = self._idle_environments(self.function("bench-memory-node", "node"), c.memory_envs)
        floor_python = self._idle_floor_runtimes("memory-py", "python", c.memory_envs)
        floor_node = self._idle_floor_runtimes("memory-node", "node", c.memory_envs)
        r["idle_env_pss_mb"] = python["pss_mb"]
        r["idle_envs_per_gb"] = 1024 / python["pss_mb"]
        r["nodejs"].update(idle_env_pss_mb=node["pss_mb"], idle_envs_per_gb=1024 / node["pss_mb"])
        floor.update(
            idle_runtime_pss_mb=floor_python["pss_mb"],
            idle_runtimes_per_gb=1024 / floor_python["pss_mb"],
            node_idle_runtime_pss_mb=floor_node["pss_mb"],
        )
        self.record(
            "memory",
            {
                "note": "mean over N idle (frozen) environments of one function, PSS summed "
                "over the processes in each sandbox's memory cgroup",
                "python": python,
                "nodejs": node,
                "floor_python": floor_python,
                "floor_nodejs": floor_node,
            },
        )

    def _idle_environments(self, name: str, count: int) -> dict[str, Any]:
        before = set(self.server.sandbox_cgroups())
        measure.burst(self.server.endpoint, [name] * count)  # N at once: N environments
        groups = [group for group in self.server.sandbox_cgroups() if group not in before]
        time.sleep(0.5)  # parked environments are frozen shortly after they answer
        per_env = []
        for group in groups:
            figures = measure.process_memory(measure.cgroup_pids(group))
            figures["cgroup_usage_mb"] = _read_int(group / "memory.usage_in_bytes") / 2**20
            freezer = Path(str(group).replace("/memory/", "/freezer/")) / "freezer.state"
            figures["frozen"] = freezer.read_text().strip() == "FROZEN"
            per_env.append(figures)
        if not per_env:
            raise RuntimeError(f"no sandbox cgroups found under {self.server.cgroup_instance}")
        return _mean_of(per_env)

    def _idle_floor_runtimes(self, name: str, kind: str, count: int) -> dict[str, Any]:
        pids = self.floor.start_runtimes(name, kind, count)
        measure.burst(self.floor.endpoint, [name] * count)
        time.sleep(0.2)
        return _mean_of([measure.process_memory([pid]) for pid in pids])

    def burst(self) -> None:
        c = self.counts
        names = [f"bench-burst-{i:03d}" for i in range(c.burst)]
        with ThreadPoolExecutor(4) as pool:  # setup only: create the functions a bit faster
            list(pool.map(self._create_elsewhere, names))
        ours = measure.burst(self.server.endpoint, names)
        base = measure.burst(self.floor.endpoint, ["burst"] * c.burst, {"X-Floor-Cold": "python"})
        key = f"burst_{c.burst}_s"
        self.results[key] = ours["total_s"]
        self.results["floor"][key] = base["total_s"]
        self.record("burst", {"lambdahost": ours, "floor": base})

    def _create_elsewhere(self, name: str) -> None:
        client = self.server.endpoint.connect()
        try:
            runtime, handler, code = RUNTIMES["python"]
            client.create_function(name, runtime, handler, code)
            client.wait_settled(name)
        finally:
            client.close()

    def boto3(self) -> None:
        import boto3
        from botocore.config import Config

        endpoint = self.server.endpoint
        lam = boto3.client(
            "lambda",
            endpoint_url=f"http://{endpoint.host}:{endpoint.port}",
            region_name=endpoint.region,
            aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        name = self.function("bench-warm-py")

        def invoke() -> None:
            lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()

        for _ in range(20):
            invoke()
        samples = measure.Latencies([measure.timed(invoke) for _ in range(self.counts.boto3)])
        self.results["boto3"].update(warm_p50_ms=samples.p50, warm_p99_ms=samples.p99)
        self.record("boto3", samples.summary())


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def _mean_of(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise mean of numeric figures (nested dicts too); the count of items alongside."""
    merged: dict[str, Any] = {"count": len(items)}
    for key, first in items[0].items():
        if isinstance(first, dict):
            merged[key] = _mean_of([item[key] for item in items])
            merged[key].pop("count")
        elif isinstance(first, bool):
            merged[key] = all(item[key] for item in items)
        elif isinstance(first, int | float):
            merged[key] = sum(item.get(key, 0) for item in items) / len(items)
    return merged


def _meta(counts: Counts, phases: list[str], server: Server) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "phases": phases,
        "counts": counts.__dict__,
        "server_pid": server.pid,
        "cgroup_instance": server.cgroup_instance,
        "loadavg_at_end": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--only", default=",".join(PHASES), help="comma-separated phases")
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    phases = [phase.strip() for phase in args.only.split(",") if phase.strip()]
    unknown = [phase for phase in phases if phase not in PHASES]
    if unknown:
        parser.error(f"unknown phases {unknown}; choose from {', '.join(PHASES)}")
    counts = QUICK if args.quick else FULL
    # SIGTERM (e.g. from a CI runner) unwinds like Ctrl-C, so the server is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    load_at_start = os.getloadavg()
    with running_server(sandbox="zygote") as server, running_floor() as floor:
        bench = Bench(server, floor, counts)
        for phase in phases:
            console.log(f"[bold]{phase}[/] …")
            phase_started = time.monotonic()
            run: Callable[[], None] = getattr(bench, phase)
            run()
            console.log(f"[bold]{phase}[/] done in {time.monotonic() - phase_started:.1f} s")
        results = bench.results
        results["meta"] = _meta(counts, phases, server)
    results["meta"]["total_s"] = round(time.monotonic() - started, 1)
    results["meta"]["loadavg_at_start"] = load_at_start  # others' load skews every figure
    results["checks"] = checks(results)
    args.output.write_text(json.dumps(results, indent=2, default=float) + "\n")
    title = (
        f"lambdahost bench ({'quick' if args.quick else 'full'}, {results['meta']['total_s']} s)"
    )
    # Piped (CI logs, `| tee`): wide enough that no row wraps.
    out = Console(width=None if sys.stdout.isatty() else 120)
    out.print(table(results, title))
    if (cpu := cpu_table(results)) is not None:
        out.print(cpu)
    console.print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        console.print("interrupted: server stopped")
        sys.exit(130)
