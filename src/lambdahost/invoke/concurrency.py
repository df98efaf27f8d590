"""Concurrency accounting: who may start an invoke now, exactly, and always given back.

All counting happens on the event loop, so check-and-increment is atomic without locks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lambdahost.errors import TooManyRequests

RETRY_AFTER_S = 1


class ConcurrencyLimiter:
    def __init__(self, account_limit: int) -> None:
        self.account_limit = account_limit
        self.reserved: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        self.unreserved_in_flight = 0

    def update_reserved(self, reserved: dict[str, int]) -> None:
        """New reserved settings. In-flight invokes keep the pool they started in."""
        self.reserved = dict(reserved)

    @property
    def unreserved_limit(self) -> int:
        return self.account_limit - sum(self.reserved.values())

    @contextlib.contextmanager
    def slot(self, function_name: str) -> Iterator[None]:
        """Hold one execution slot for the block; raise TooManyRequests when none is free."""
        reserved = self.reserved.get(function_name)
        if reserved is not None:
            current = self.in_flight.get(function_name, 0)
            if current >= reserved:
                raise _throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
            self.in_flight[function_name] = current + 1
            try:
                yield
            finally:
                self.in_flight[function_name] -= 1
            return
        if self.unreserved_in_flight >= self.unreserved_limit:
            raise _throttled("ConcurrentInvocationLimitExceeded")
        self.unreserved_in_flight += 1
        try:
            yield
        finally:
            self.unreserved_in_flight -= 1


def _throttled(reason: str) -> TooManyRequests:
    return TooManyRequests(
        "Rate Exceeded.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
        extra={"Reason": reason, "retryAfterSeconds": str(RETRY_AFTER_S)},
    )
