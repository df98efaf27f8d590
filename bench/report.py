"""The results table: each figure, the floor measured in the same run, the ratio, the target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.table import Table


@dataclass(frozen=True)
class Target:
    limit: float
    at_most: bool = True  # False: the figure must be at least `limit`
    note: str = ""

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def text(self, unit: str) -> str:
        sign = "≤" if self.at_most else "≥"
        return f"{sign} {self.limit:,g} {unit}".strip() + (f" {self.note}" if self.note else "")


@dataclass(frozen=True)
class Row:
    label: str
    key: str  # dotted path into the results document
    unit: str
    floor_key: str | None = None
    targets: tuple[Target, ...] = ()


def rows(burst_key: str) -> list[Row]:
    count = burst_key.split("_")[1]
    fresh = Target(50, note="fresh")
    return [
        Row("warm p50", "warm_p50_ms", "ms", "floor.warm_p50_ms", (Target(1),)),
        Row("warm p99", "warm_p99_ms", "ms", "floor.warm_p99_ms", (Target(3),)),
        Row("warm p50 via boto3", "boto3.warm_p50_ms", "ms", "floor.warm_p50_ms"),
        Row("warm p99 via boto3", "boto3.warm_p99_ms", "ms", "floor.warm_p99_ms"),
        Row("warm p50 nodejs20.x", "nodejs.warm_p50_ms", "ms", "floor.node_warm_p50_ms"),
        Row("warm p99 nodejs20.x", "nodejs.warm_p99_ms", "ms", "floor.node_warm_p99_ms"),
        Row("cold p50 (zygote)", "cold_p50_ms", "ms", "floor.cold_p50_ms", (Target(5),)),
        Row("cold p99 (zygote)", "cold_p99_ms", "ms", "floor.cold_p99_ms"),
        Row("cold p50 (fresh sandbox)", "cold_fresh_p50_ms", "ms", "floor.cold_p50_ms", (fresh,)),
        Row("cold p99 (fresh sandbox)", "cold_fresh_p99_ms", "ms", "floor.cold_p99_ms"),
        Row("cold p50 (zygote), no network", "cold_isolated_p50_ms", "ms", "floor.cold_p50_ms"),
        Row("cold p50 (fresh), no network", "cold_fresh_isolated_p50_ms", "ms"),
        Row("networking's cold p50 cost", "network_cold_cost_p50_ms", "ms", None, (Target(1),)),
        Row("networking's fresh cold p50 cost", "network_fresh_cold_cost_p50_ms", "ms"),
        Row("cold p50, server Init Duration", "cold_init_p50_ms", "ms"),
        Row("cold p50 nodejs20.x", "nodejs.cold_p50_ms", "ms", "floor.node_cold_p50_ms"),
        Row("cold p99 nodejs20.x", "nodejs.cold_p99_ms", "ms", "floor.node_cold_p99_ms"),
        *(
            Row(
                f"throughput, {n} client{'s' * (n > 1)}",
                f"throughput_{n}",
                "/s",
                f"floor.throughput_{n}",
                (Target(2500, at_most=False),) if n == 8 else (),
            )  # fmt: skip
            for n in (1, 2, 4, 8)
        ),
        Row("idle env PSS", "idle_env_pss_mb", "MB", "floor.idle_runtime_pss_mb", (Target(3),)),
        Row("idle envs per GB (by PSS)", "idle_envs_per_gb", "", "floor.idle_runtimes_per_gb"),
        Row(
            "idle env PSS nodejs20.x",
            "nodejs.idle_env_pss_mb",
            "MB",
            "floor.node_idle_runtime_pss_mb",
        ),  # fmt: skip
        Row(
            f"{count} concurrent first invokes", burst_key, "s", f"floor.{burst_key}", (Target(1),)
        ),  # fmt: skip
    ]


def lookup(document: dict[str, Any], dotted: str | None) -> float | None:
    value: Any = document
    for part in (dotted or "").split(".") if dotted else ():
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) and dotted else None


def table(results: dict[str, Any], title: str) -> Table:
    burst_key = next((key for key in results if key.startswith("burst_")), "burst_100_s")
    grid = Table(title=title, title_justify="left")
    grid.add_column("figure")
    grid.add_column("lambdahost", justify="right")
    grid.add_column("floor", justify="right")
    grid.add_column("× floor", justify="right")
    grid.add_column("target")
    grid.add_column("", justify="left")
    for row in rows(burst_key):
        value = lookup(results, row.key)
        if value is None:
            continue
        floor = lookup(results, row.floor_key)
        ratio = value / floor if floor else None
        grid.add_row(
            row.label,
            f"{_number(value)} {row.unit}".strip(),
            f"{_number(floor)} {row.unit}".strip() if floor is not None else "",
            f"{ratio:.1f}×" if ratio is not None and math.isfinite(ratio) else "",
            " / ".join(target.text(row.unit) for target in row.targets),
            " / ".join(_mark(target.met(value)) for target in row.targets),
        )
    return grid


def checks(results: dict[str, Any]) -> dict[str, bool]:
    """Target → met, for the results file."""
    burst_key = next((key for key in results if key.startswith("burst_")), "burst_100_s")
    verdicts: dict[str, bool] = {}
    for row in rows(burst_key):
        value = lookup(results, row.key)
        for target in row.targets if value is not None else ():
            verdicts[f"{row.key} {target.text(row.unit)}"] = target.met(value)
    return verdicts


def _mark(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cpu_table(results: dict[str, Any]) -> Table | None:
    """CPU each process spent per warm invoke: where the time beyond the floor goes."""
    warm = results.get("details", {}).get("warm")
    if not warm:
        return None
    grid = Table(title="CPU per warm invoke, by process", title_justify="left")
    grid.add_column("run")
    grid.add_column("process")
    grid.add_column("CPU ms", justify="right")
    for run in ("python", "floor_python", "nodejs", "floor_nodejs"):
        spent = warm.get(run, {}).get("cpu_ms_per_invoke", {})
        for index, (label, ms) in enumerate(spent.items()):
            grid.add_row(run if index == 0 else "", label, f"{ms:.3f}")
    return grid
