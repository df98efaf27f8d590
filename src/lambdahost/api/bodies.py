"""Reading request bodies without trusting the sender.

A body is read only after the request's signed head checked out (`sigv4.begin`), never past
the operation's limit (the announced Content-Length is judged before a byte is read), and
while its signature is still unproven it holds a share of `UnverifiedBodies`: a bound on how
many such bodies are read at once and on the bytes they may announce together."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request

from lambdahost.errors import LambdaError, TooManyRequests

__all__ = ["Body", "UnverifiedBodies", "announced_size", "expected_size", "read_body"]

TooLarge = Callable[[], Exception]  # the error to raise past the limit


class Body:
    """A request body and, when asked for, its SHA-256 (hex), computed while it arrived.

    The chunks are joined on first use of `data`, so a body whose signature fails is dropped
    without ever being copied whole."""

    def __init__(self, chunks: list[bytes], sha256: str) -> None:
        self._chunks = chunks
        self._data: bytes | None = None
        self.sha256 = sha256

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = b"".join(self._chunks)
            self._chunks = []
        return self._data


def announced_size(request: Request) -> int | None:
    """The Content-Length the client announced, or None (chunked, or none at all)."""
    value = request.headers.get("content-length")
    # The HTTP parser already rejected malformed lengths; be strict anyway.
    return int(value) if value is not None and value.isdigit() else None


def expected_size(request: Request, limit: int) -> int:
    """How many bytes the body may bring: its Content-Length, up to `limit` when chunked,
    and none when neither is sent (a GET)."""
    announced = announced_size(request)
    if announced is not None:
        return min(announced, limit)
    return limit if "transfer-encoding" in request.headers else 0


async def read_body(
    request: Request, limit: int, too_large: TooLarge, *, digest: bool = False
) -> Body:
    """Read the body, stopping with `too_large()` as soon as it exceeds `limit` bytes."""
    announced = announced_size(request)
    if announced is not None and announced > limit:
        raise too_large()
    hasher = hashlib.sha256() if digest else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        if hasher is not None:
            hasher.update(chunk)
        chunks.append(chunk)
    return Body(chunks, hasher.hexdigest() if hasher is not None else "")


class UnverifiedBodies:
    """Admission for bodies whose signature is not yet verified.

    `slots` bodies are read at once, announcing `budget` bytes together at most (a body
    without Content-Length counts as its operation's limit). A request that finds no room
    within `wait` seconds is answered 429, as Lambda throttles."""

    def __init__(self, slots: int = 16, budget: int = 192 * 1024 * 1024, wait: float = 30.0):
        self.slots = slots
        self.budget = budget
        self.wait = wait
        self._free_slots = asyncio.Semaphore(slots)
        self._room = asyncio.Condition()
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    @contextlib.asynccontextmanager
    async def admit(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.budget)  # one oversized body still gets in, alone
        try:
            async with asyncio.timeout(self.wait):
                await self._free_slots.acquire()
        except TimeoutError:
            raise _throttled() from None
        try:
            try:
                async with asyncio.timeout(self.wait), self._room:
                    await self._room.wait_for(lambda: self._held + size <= self.budget)
                    self._held += size
            except TimeoutError:
                raise _throttled() from None
            try:
                yield
            finally:
                async with self._room:
                    self._held -= size
                    self._room.notify_all()
        finally:
            self._free_slots.release()


def _throttled() -> LambdaError:
    return TooManyRequests("Rate exceeded", extra={"Reason": "CallerRateLimitExceeded"})
