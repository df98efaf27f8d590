"""Log groups, streams and events (CloudWatch Logs' model), written in batches.

Invokes hand their lines to `append`, which only queues them: a background thread commits
batches, so the synchronous invoke path never waits on a database write. The same thread
purges events older than their group's retention every `retention_sweep_s` seconds
(`$LAMBDAHOST_LOG_RETENTION_SWEEP_S`, default 600)."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable

from sqlalchemy import case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from lambdahost.store.db import Database, rows_affected
from lambdahost.store.tables import Base, LogEventRow, LogGroupRow, LogStreamRow

log = logging.getLogger("lambdahost.logs")
Batch = tuple[str, str, list[tuple[int, str]]]  # group, stream, [(timestamp ms, message)]
DAY_MS = 86_400_000


def _sweep_interval() -> float:
    return float(os.environ.get("LAMBDAHOST_LOG_RETENTION_SWEEP_S", "600"))


class LogStore:
    def __init__(
        self,
        db: Database,
        flush_interval_s: float = 0.05,
        retention_sweep_s: float | None = None,
    ) -> None:
        self.db = db
        self._sweep_s = retention_sweep_s if retention_sweep_s is not None else _sweep_interval()
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
        next_sweep = time.monotonic()  # once at start-up: catches up after downtime
        while not stop:
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self._sweep_s
            try:
                item = self._queue.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                continue
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
                    self._write_retrying(batches)
                except Exception:
                    log.exception("failed to write %d log batches", len(batches))
                with self._flushed:
                    self._pending -= len(batches)
                    self._flushed.notify_all()

    def _write_retrying(self, batches: list[Batch]) -> None:
        try:
            self.write(batches)
        except IntegrityError:
            # An API call (CreateLogGroup/CreateLogStream) created a row between our check
            # and our insert; the second pass sees it.
            self.write(batches)

    def _sweep(self) -> None:
        try:
            purged = self.purge_expired()
        except Exception:
            log.exception("retention purge failed")
            return
        if purged:
            log.info("retention purge deleted %d log events", purged)

    def purge_expired(self, now_ms: int | None = None) -> int:
        """Delete events older than their group's retention; returns how many went.

        Cheap: one indexed range delete per group that has a retention policy."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        deleted = 0
        with self.db.session() as s:
            groups = s.execute(
                select(LogGroupRow.name, LogGroupRow.retention_days).where(
                    LogGroupRow.retention_days.is_not(None)
                )
            ).all()
            for name, days in groups:
                cutoff = now - int(days or 0) * DAY_MS
                result = s.execute(
                    delete(LogEventRow).where(
                        LogEventRow.group_name == name, LogEventRow.timestamp_ms < cutoff
                    )
                )
                deleted += rows_affected(result)
                # Streams whose every event has expired go too, as they do in CloudWatch.
                s.execute(
                    delete(LogStreamRow).where(
                        LogStreamRow.group_name == name, LogStreamRow.last_event_ms < cutoff
                    )
                )
        return deleted

    def write(self, batches: list[Batch]) -> None:
        """Commit batches in one transaction: events by executemany (the hot part), one
        stream-statistics update per stream."""
        now = int(time.time() * 1000)
        merged: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for group, stream, lines in batches:
            merged.setdefault((group, stream), []).extend(lines)
        streams = Base.metadata.tables[LogStreamRow.__tablename__]
        with self.db.session() as s:
            for (group, stream), lines in merged.items():
                first = min(t for t, _ in lines)
                last = max(t for t, _ in lines)
                # One Core UPDATE per stream in the common case (it exists); the statistics
                # are widened in SQL, so no row is loaded.
                widened = (
                    update(streams)
                    .where(streams.c.group_name == group, streams.c.name == stream)
                    .values(
                        first_event_ms=case(
                            (
                                or_(
                                    streams.c.first_event_ms.is_(None),
                                    streams.c.first_event_ms > first,
                                ),
                                first,
                            ),
                            else_=streams.c.first_event_ms,
                        ),
                        last_event_ms=case(
                            (
                                or_(
                                    streams.c.last_event_ms.is_(None),
                                    streams.c.last_event_ms < last,
                                ),
                                last,
                            ),
                            else_=streams.c.last_event_ms,
                        ),
                        last_ingestion_ms=now,
                    )
                )
                if rows_affected(s.execute(widened)):
                    continue
                # One writer thread: get-or-create needs no upsert, and stays portable.
                if s.get(LogGroupRow, group) is None:
                    s.add(LogGroupRow(name=group, created_ms=now))
                s.add(
                    LogStreamRow(
                        group_name=group,
                        name=stream,
                        created_ms=now,
                        first_event_ms=first,
                        last_event_ms=last,
                        last_ingestion_ms=now,
                    )
                )
            s.flush()
            s.execute(
                insert(
                    Base.metadata.tables[LogEventRow.__tablename__]
                ),  # Core executemany: no ORM bookkeeping
                [
                    {
                        "group_name": group,
                        "stream_name": stream,
                        "timestamp_ms": t,
                        "ingestion_ms": now,
                        "message": message,
                    }
                    for (group, stream), lines in merged.items()
                    for t, message in lines
                ],
            )
