"""Time in the formats Lambda uses."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def last_modified(ms: int | None = None) -> str:
    """`2026-11-28T04:14:56.123+0000`, as Lambda's LastModified."""
    moment = datetime.fromtimestamp((ms if ms is not None else now_ms()) / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"
