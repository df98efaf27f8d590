"""Log groups, streams and events (CloudWatch Logs' model), written in batches.

Invokes hand their lines to `append`, which only queues them: a background thread commits
batches, so the synchronous invoke path never waits on a database write."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable

from sqlalchemy import select

from lambdahost.store.db import Database
from lambdahost.store.tables import LogEventRow, LogGroupRow, LogStreamRow

log = logging.getLogger("lambdahost.logs")
Batch = tuple[str, str, list[tuple[int, str]]]  # group, stream, [(timestamp ms, message)]


class LogStore:
    def __init__(self, db: Database, flush_interval_s: float = 0.05) -> None:
        self.db = db
        self._queue: queue.Queue[Batch | None] = queue.Queue()
        self._interval = flush_interval_s
        self._thread: threading.Thread | None = None
        self._flushed = threading.Condition()
        self._pending = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def append(self, group: str, stream: str, lines: Iterable[tuple[int, str]]) -> None:
        batch = list(lines)
        if batch:
            with self._flushed:
                self._pending += 1
            self._queue.put((group, stream, batch))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything appended so far is committed."""
        deadline = time.monotonic() + timeout
        with self._flushed:
            while self._pending and time.monotonic() < deadline:
                self._flushed.wait(deadline - time.monotonic())

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batches: list[Batch] = []
            if item is None:
                stop = True
            else:
                batches.append(item)
            time.sleep(self._interval)
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batches.append(more)
            if batches:
                try:
                    self.write(batches)
                except Exception:
                    log.exception("failed to write %d log batches", len(batches))
                with self._flushed:
                    self._pending -= len(batches)
                    self._flushed.notify_all()

    def write(self, batches: list[Batch]) -> None:
        now = int(time.time() * 1000)
        with self.db.session() as s:
            for group, stream, lines in batches:
                # One writer thread: get-or-create needs no upsert, and stays portable.
                if s.get(LogGroupRow, group) is None:
                    s.add(LogGroupRow(name=group, created_ms=now))
                row = s.get(LogStreamRow, (group, stream))
                if row is None:
                    row = LogStreamRow(group_name=group, name=stream, created_ms=now)
                    s.add(row)
                first = min(t for t, _ in lines)
                last = max(t for t, _ in lines)
                row.first_event_ms = min(row.first_event_ms or first, first)
                row.last_event_ms = max(row.last_event_ms or last, last)
                row.last_ingestion_ms = now
                s.add_all(
                    LogEventRow(
                        group_name=group,
                        stream_name=stream,
                        timestamp_ms=t,
                        ingestion_ms=now,
                        message=message,
                    )
                    for t, message in lines
                )

    def events(self, group: str, limit: int = 1000) -> list[tuple[str, int, str]]:
        """Newest `limit` events of a group, oldest first: (stream, timestamp ms, message)."""
        with self.db.session() as s:
            rows = s.execute(
                select(LogEventRow.stream_name, LogEventRow.timestamp_ms, LogEventRow.message)
                .where(LogEventRow.group_name == group)
                .order_by(LogEventRow.id.desc())
                .limit(limit)
            ).all()
        return [(r[0], r[1], r[2]) for r in reversed(rows)]
