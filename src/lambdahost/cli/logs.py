"""`lambdahost logs`: print (and follow) a function's log events from a running server.

It makes the calls `aws logs tail` (AWS CLI v2) makes: FilterLogEvents, interleaved, from
`--since`; following polls again from the newest timestamp seen and skips event ids it has
already printed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from lambdahost.cli.invoke import (
    DataDirOption,
    EndpointOption,
    RegionOption,
    connect,
    err,
    friendly_errors,
    out,
)

UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LAMBDA_MARKERS = ("START RequestId:", "END RequestId:", "REPORT RequestId:", "INIT_START ")


def parse_since(since: str, now: float | None = None) -> int:
    """`10m`, `2h`, `1d`… ago, or an ISO 8601 time; epoch milliseconds."""
    now = time.time() if now is None else now
    relative = re.fullmatch(r"(\d+)([smhdw])", since.strip())
    if relative:
        return int((now - int(relative.group(1)) * UNITS_S[relative.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(since.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{since!r}: use an amount and unit (30s, 10m, 2h, 1d, 1w) or an ISO 8601 time"
        ) from None
    return int(moment.timestamp() * 1000)


def group_for(name: str) -> str:
    """A log group as given, else the function's, from a name, NAME:QUALIFIER or an ARN."""
    if name.startswith("/"):
        return name
    parts = name.split(":")
    function = parts[6] if name.startswith("arn:") and len(parts) > 6 else parts[0]
    return f"/aws/lambda/{function}"


def logs(
    name: str = typer.Argument(..., help="Function name, or a log group starting with '/'."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events."),
    since: str = typer.Option("10m", "--since", "-s", help="Start this long ago (10m, 2h, 1d)."),
    filter_pattern: str = typer.Option(
        None, "--filter", help='Only events matching these terms ("phrases", ?any, -not).'
    ),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between polls with --follow."),
    endpoint_url: str = EndpointOption,
    data_dir: Path = DataDirOption,
    region: str = RegionOption,
) -> None:
    """Print a function's logs (CloudWatch-style), optionally following new ones."""
    group = group_for(name)
    query: dict[str, Any] = {
        "logGroupName": group,
        "interleaved": True,
        "startTime": parse_since(since),
    }
    if filter_pattern:
        query["filterPattern"] = filter_pattern
    client = connect("logs", endpoint_url, region, data_dir)
    with friendly_errors(endpoint_url):
        try:
            events = follow_events(client, query, interval) if follow else all_events(client, query)
            for event in events:
                show_event(event)
        except client.exceptions.ResourceNotFoundException:
            err.print(f"[yellow]No log group {group}[/] (has the function been invoked yet?)")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            pass


def all_events(client: Any, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("filter_log_events").paginate(**query):
        yield from page["events"]


def follow_events(client: Any, query: dict[str, Any], interval: float) -> Iterator[dict[str, Any]]:
    """Poll forever, as `aws logs tail --follow` does (but every `interval` seconds)."""
    seen: set[str] = set()
    newest = query["startTime"]
    waiting_shown = False
    while True:
        try:
            response = client.filter_log_events(**query)
        except client.exceptions.ResourceNotFoundException:
            # Following a function that has not run yet: wait for its group to appear.
            if not waiting_shown:
                err.print(f"[dim]Waiting for log group {query['logGroupName']}…[/]")
                waiting_shown = True
            time.sleep(interval)
            continue
        for event in response["events"]:
            # Only events at the newest timestamp can come back (the next poll starts there).
            if event["timestamp"] > newest:
                newest, seen = event["timestamp"], set()
            elif event["eventId"] in seen:
                continue
            seen.add(event["eventId"])
            yield event
        if "nextToken" in response:
            query["nextToken"] = response["nextToken"]
            continue
        query.pop("nextToken", None)
        query["startTime"] = newest
        time.sleep(interval)


def show_event(event: dict[str, Any]) -> None:
    moment = datetime.fromtimestamp(event["timestamp"] / 1000).astimezone()
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    # Runtimes put multi-line records (tracebacks) in one event, separated by \r.
    message = event["message"].rstrip("\n").replace("\r", "\n")
    style = "dim" if message.startswith(LAMBDA_MARKERS) else ""
    if "[ERROR]" in message or message.startswith("Traceback"):
        style = "red"
    out.print(
        Text.assemble(
            (stamp, "cyan"),
            " ",
            (event.get("logStreamName", ""), "dim"),
            " ",
            (message, style),
        )
    )
