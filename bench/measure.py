"""The measurements themselves, written once for both lambdahost and the floor: each takes an
`Endpoint` (or a connected client) and a function name, and times invokes end to end."""

from __future__ import annotations

import base64
import math
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lambda_client import Endpoint, LambdaClient

Headers = dict[str, str] | None


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an observed value, never an interpolation."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Latencies:
    samples_ms: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    init_samples_ms: list[float] = field(default_factory=list)  # cold starts' Init Duration
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per invoke, by process

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    def summary(self) -> dict[str, float]:
        samples = self.samples_ms
        return {
            "count": len(samples),
            "p50_ms": self.p50,
            "p90_ms": percentile(samples, 90),
            "p99_ms": self.p99,
            "min_ms": min(samples, default=math.nan),
            "max_ms": max(samples, default=math.nan),
            "mean_ms": sum(samples) / len(samples) if samples else math.nan,
            **self.extra,
            **({"cpu_ms_per_invoke": self.cpu_ms} if self.cpu_ms else {}),
        }


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


# -- 1. warm latency -------------------------------------------------------------------------
def warm(
    client: LambdaClient,
    name: str,
    count: int,
    warmup: int = 50,
    meter: CpuMeter | None = None,
) -> Latencies:
    """Sequential invokes on one keep-alive connection, after a warm-up the figures skip;
    with a meter, also the CPU each process spent per invoke."""
    client.open()
    for _ in range(warmup):
        client.invoke(name)
    if meter is not None:
        meter.start()
    result = Latencies([timed(lambda: client.invoke(name)) for _ in range(count)])
    if meter is not None:
        result.cpu_ms = meter.stop(count)
    return result


# -- 2. cold starts --------------------------------------------------------------------------
_INIT = re.compile(rb"Init Duration: ([0-9.]+) ms")


def cold_by_update(
    client: LambdaClient, name: str, count: int, settle_s: float = 0.03, first_round: int = 0
) -> Latencies:
    """Each round changes an environment variable (which retires the function's environments),
    waits for the update to settle, then times only the invoke, which must start a fresh one.
    The log tail proves it did (`Init Duration`), and gives the server's own init figure.
    `first_round`: where the variable's values start (to go on from an earlier call)."""
    result = Latencies()
    inits: list[float] = []
    tail = {"X-Amz-Log-Type": "Tail"}
    for round_ in range(first_round, first_round + count):
        client.set_environment(name, {"BENCH_ROUND": str(round_)})
        client.wait_settled(name)
        time.sleep(settle_s)  # let the retired environment's teardown finish first
        started = time.perf_counter()
        reply = client.invoke(name, headers=tail)
        result.samples_ms.append((time.perf_counter() - started) * 1000)
        found = _INIT.search(base64.b64decode(reply.headers.get("x-amz-log-result", "")))
        if found is None:
            raise RuntimeError(f"invoke {round_} of {name} was not a cold start")
        inits.append(float(found.group(1)))
    result.extra = {"server_init_p50_ms": percentile(inits, 50)}
    result.init_samples_ms = inits
    return result


def cold_interleaved(
    a: tuple[LambdaClient, str], b: tuple[LambdaClient, str], count: int, chunk: int = 5
) -> tuple[Latencies, Latencies]:
    """Cold starts on two servers (or functions), `chunk` rounds on one, then on the other,
    until each has `count`: slow drift of the machine falls on both alike, so the difference
    of their p50s is what the servers differ in, not when each was measured."""
    results = (Latencies(), Latencies())
    inits: tuple[list[float], list[float]] = ([], [])
    for first in range(0, count, chunk):
        size = min(chunk, count - first)
        for (client, name), result, init in zip((a, b), results, inits, strict=True):
            part = cold_by_update(client, name, size, first_round=first)
            result.samples_ms += part.samples_ms
            init += part.init_samples_ms
    for result, init in zip(results, inits, strict=True):
        result.extra = {"server_init_p50_ms": percentile(init, 50)}
    return results


def cold_floor(client: LambdaClient, kind: str, count: int) -> Latencies:
    """A fresh runtime process per invoke, with no platform around it."""
    client.open()
    headers = {"X-Floor-Cold": kind}
    return Latencies([timed(lambda: client.invoke("cold", headers=headers)) for _ in range(count)])


# -- 3. throughput ---------------------------------------------------------------------------
def _throughput_worker(
    endpoint: Endpoint, name: str, start_at: float, end_at: float, results: multiprocessing.Queue
) -> None:
    client = endpoint.connect()
    done = errors = 0
    try:
        client.open()
        while (now := time.monotonic()) < end_at:
            try:
                client.invoke(name)
            except Exception:
                errors += 1
                client.close()
                continue
            if now >= start_at:  # started inside the window (after the warm-up)
                done += 1
    finally:
        results.put((done, errors))
        client.close()


def throughput(
    endpoint: Endpoint, name: str, clients: int, duration_s: float, warmup_s: float = 0.5
) -> dict[str, float]:
    """Invokes/s with `clients` processes, each looping on its own keep-alive connection.
    Processes, not threads: the client's own Python must not be the bottleneck."""
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = context.Queue()
    start_at = time.monotonic() + 0.3 + warmup_s  # after every process is up and warm
    end_at = start_at + duration_s
    workers = [
        context.Process(target=_throughput_worker, args=(endpoint, name, start_at, end_at, results))
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=duration_s + warmup_s + 120) for _ in workers]
    for worker in workers:
        worker.join(30)
    done = sum(count for count, _ in counts)
    return {"per_s": done / duration_s, "invokes": done, "errors": sum(e for _, e in counts)}


# -- 5. a burst of first invokes -------------------------------------------------------------
def burst(endpoint: Endpoint, names: list[str], headers: Headers = None) -> dict[str, float]:
    """Time from releasing N threads (connections already open) until all N have answered."""
    clients = [endpoint.connect() for _ in names]
    for client in clients:
        client.open()
    gate = threading.Barrier(len(names) + 1)
    finished: list[float] = [math.nan] * len(names)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        gate.wait()
        try:
            clients[index].invoke(names[index], headers=headers)
            finished[index] = time.perf_counter()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(names))]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(120)
    for client in clients:
        client.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(names)} burst invokes failed: {failures[0]}")
    latencies = [(end - started) * 1000 for end in finished]
    return {
        "count": len(names),
        "total_s": max(latencies) / 1000,
        "first_ms": min(latencies),
        "p50_ms": percentile(latencies, 50),
    }


# -- 4. memory -------------------------------------------------------------------------------
def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB figures of /proc/PID/smaps_rollup (readable for frozen processes too)."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            figures[key] = int(parts[0])
    return figures


def process_memory(pids: Iterable[int]) -> dict[str, object]:
    """PSS, RSS and USS (private) in MB summed over `pids`, with PSS per command name."""
    total = {"pss_mb": 0.0, "rss_mb": 0.0, "uss_mb": 0.0}
    by_command: dict[str, float] = {}
    for pid in pids:
        try:
            figures = smaps_rollup(pid)
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        total["pss_mb"] += figures.get("Pss", 0) / 1024
        total["rss_mb"] += figures.get("Rss", 0) / 1024
        private = figures.get("Private_Clean", 0) + figures.get("Private_Dirty", 0)
        total["uss_mb"] += private / 1024
        label = _command_label(command)
        by_command[label] = by_command.get(label, 0.0) + figures.get("Pss", 0) / 1024
    return {**total, "pss_by_process_mb": by_command}


def _command_label(argv: list[bytes]) -> str:
    words = [word.decode(errors="replace") for word in argv if word]
    if not words:
        return "?"
    program = os.path.basename(words[0])
    if program.startswith("python") and "-c" in words[1:-1]:
        # lambdahost's agent: python3.11 -I -S -c "import sys;...from rapid.boot import main"
        code = words[words.index("-c") + 1]
        return f"{program} agent" if "rapid" in code else f"{program} -c {code[:30]}"
    if program == "bwrap":
        return "bwrap (monitor)"
    script = os.path.basename(next((word for word in words[1:] if word[0] != "-"), ""))
    labels = {"lambdahost.cli.main": "lambdahost server", "run.py": "bench client"}
    return labels.get(script) or f"{program} {script}".strip()


def cgroup_pids(group: Path) -> list[int]:
    try:
        return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


# -- where the CPU goes ----------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_label(pid: int) -> str:
    try:
        return _command_label(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    except OSError:
        return "?"


class CpuMeter:
    """CPU ms per operation, by process label, over the span between `start()` and `stop()`."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self._before: dict[int, float] = {}

    def start(self) -> None:
        self._before = {pid: cpu_seconds(pid) for pid in self._pids()}

    def stop(self, operations: int) -> dict[str, float]:
        spent: dict[str, float] = {}
        for pid in self._pids():
            delta = cpu_seconds(pid) - self._before.get(pid, 0.0)
            if delta > 0:
                label = command_label(pid)
                spent[label] = spent.get(label, 0.0) + delta * 1000 / max(1, operations)
        return dict(sorted(spent.items(), key=lambda item: -item[1]))
