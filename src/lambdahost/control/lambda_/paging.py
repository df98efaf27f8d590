"""Lambda's list pagination for lists built in memory: the marker is the next item's index."""

from __future__ import annotations

from typing import Any


def page(
    items: list[Any], key: str, marker: str | None, max_items: int | None, most: int = 50
) -> dict[str, Any]:
    """`{key: one page of items}`, plus `NextMarker` when more follow. Pages hold `max_items`
    (default 50), never more than `most`."""
    start = int(marker) if marker and marker.isdigit() else 0
    limit = min(max_items or 50, most)
    result: dict[str, Any] = {key: items[start : start + limit]}
    if start + limit < len(items):
        result["NextMarker"] = str(start + limit)
    return result
