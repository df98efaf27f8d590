"""One small handler per implemented operation: wire members in, wire members out.

Handlers translate between the model's member names and the services; rules live in
`control/` and `invoke/`. Operations without a handler answer NotImplementedException.
Each module of this package registers the handlers of one resource."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from lambdahost.api.lambda_.codeurls import CodeUrls
from lambdahost.platform import Platform

Output = dict[str, Any]


@dataclass
class Call:
    """One API call: the platform, the parsed input, and headers the handler wants to add."""

    platform: Platform
    params: dict[str, Any]
    base_url: str
    code_urls: CodeUrls
    response_headers: dict[str, str] = field(default_factory=dict)
    # A handler that answers with its own response (a stream) sets it; its output is unused.
    raw_response: Response | None = None


Handler = Callable[[Call], Awaitable[Output]]
HANDLERS: dict[str, Handler] = {}


def operation(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def load_all() -> dict[str, Handler]:
    """Import every handler module (they register themselves) and return the registry."""
    from lambdahost.api.lambda_ import (  # noqa: F401
        concurrency,
        event_configs,
        functions,
        invoke,
        layers,
        permissions,
        provisioned,
        streaming,
        urls,
        versions,
    )

    return HANDLERS
