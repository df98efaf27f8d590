"""The durable queue of accepted asynchronous invokes (the `async_events` table).

`enqueue` commits before it returns, so a 202 means the event survives a kill -9. Workers
claim due events with a lease; an event is deleted only after it ran to a final outcome, so
delivery is at-least-once. `enqueue` rings the `Doorbell` the dispatcher waits on."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from lambdahost.store.db import Database, rows_affected
from lambdahost.store.tables import AsyncEventRow


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class QueuedEvent:
    id: int
    request_id: str
    function_name: str
    qualifier: str | None
    payload: bytes
    enqueued_ms: int
    attempts: int


class Doorbell:
    """Wakes whoever waits for queued events (the dispatcher), from the event loop or any thread.

    Node-local: a bell rung before anyone listens does nothing, which is fine because a
    listener looks at the queue before it first waits."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def listen(self) -> None:
        """Bind to the running loop; call from the coroutine that will `wait`."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def ring(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # a worker thread
            on_loop = False
        if on_loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def clear(self) -> None:
        if self._event is not None:
            self._event.clear()

    async def wait(self, timeout: float) -> None:
        """Until rung, or `timeout` seconds."""
        assert self._event is not None, "listen() first"
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass


class EventQueue:
    def __init__(self, db: Database, doorbell: Doorbell) -> None:
        self.db = db
        self.doorbell = doorbell
        self.worker = uuid.uuid4().hex

    def enqueue(
        self, function_name: str, qualifier: str | None, payload: bytes, request_id: str
    ) -> None:
        now = now_ms()
        with self.db.session() as s:
            s.add(
                AsyncEventRow(
                    request_id=request_id,
                    function_name=function_name,
                    qualifier=qualifier,
                    payload=payload,
                    enqueued_ms=now,
                    attempts=0,
                    next_attempt_ms=now,
                    lease_until_ms=0,
                    lease_owner="",
                )
            )
        self.doorbell.ring()  # committed: a dispatcher may claim it now

    def release_all_leases(self) -> int:
        """At start of an embedded (single-process) server: whatever was leased died with it."""
        with self.db.session() as s:
            result = s.execute(
                update(AsyncEventRow)
                .where(AsyncEventRow.lease_until_ms > 0)
                .values(lease_until_ms=0)
            )
            return rows_affected(result)

    def claim(self, limit: int, lease_ms: int) -> list[QueuedEvent]:
        """Take up to `limit` due events for this worker."""
        now = now_ms()
        claimed: list[QueuedEvent] = []
        with self.db.session() as s:
            candidates = s.scalars(
                select(AsyncEventRow)
                .where(AsyncEventRow.next_attempt_ms <= now, AsyncEventRow.lease_until_ms < now)
                .order_by(AsyncEventRow.next_attempt_ms, AsyncEventRow.id)
                .limit(limit)
            ).all()
            for row in candidates:
                # A conditional update is the claim: another worker may have won the race.
                won = rows_affected(
                    s.execute(
                        update(AsyncEventRow)
                        .where(AsyncEventRow.id == row.id, AsyncEventRow.lease_until_ms < now)
                        .values(lease_until_ms=now + lease_ms, lease_owner=self.worker)
                        .execution_options(synchronize_session=False)
                    )
                )
                if won:
                    claimed.append(
                        QueuedEvent(
                            row.id,
                            row.request_id,
                            row.function_name,
                            row.qualifier,
                            row.payload,
                            row.enqueued_ms,
                            row.attempts,
                        )
                    )
        return claimed

    def retry_later(self, event: QueuedEvent, delay_ms: int, *, count_attempt: bool) -> None:
        with self.db.session() as s:
            s.execute(
                update(AsyncEventRow)
                .where(AsyncEventRow.id == event.id)
                .values(
                    next_attempt_ms=now_ms() + delay_ms,
                    lease_until_ms=0,
                    lease_owner="",
                    attempts=AsyncEventRow.attempts + (1 if count_attempt else 0),
                )
            )

    def done(self, event: QueuedEvent) -> None:
        with self.db.session() as s:
            s.execute(delete(AsyncEventRow).where(AsyncEventRow.id == event.id))

    def next_due_ms(self) -> int | None:
        with self.db.session() as s:
            return s.scalar(
                select(AsyncEventRow.next_attempt_ms)
                .where(AsyncEventRow.lease_until_ms == 0)
                .order_by(AsyncEventRow.next_attempt_ms)
                .limit(1)
            )

    def pending(self) -> int:
        with self.db.session() as s:
            return len(s.scalars(select(AsyncEventRow.id)).all())
