"""CloudWatch Logs rules and queries: groups, streams, events, retention, filter patterns.

Operations take and return the wire members (camelCase dicts) so `api/logs/` only maps
operations to methods. Reads go straight to the database; event writes go through the `LogStore`
writer thread, the one place that creates groups and streams on the invoke path."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from lambdahost.control.clock import now_ms
from lambdahost.control.logs.syntax import (
    HEAD,
    TAIL,
    FilterPattern,
    InvalidParameter,
    Position,
    ResourceAlreadyExists,
    ResourceNotFound,
    event_id,
    opaque_token,
    parse_opaque_token,
    parse_position_token,
    position_token,
    token_number,
)
from lambdahost.store.db import Database
from lambdahost.store.logs import DAY_MS, LogStore
from lambdahost.store.tables import LogEventRow, LogGroupRow, LogStreamRow

# The only values AWS accepts for retentionInDays.
RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
PUT_TOO_OLD_MS = 14 * DAY_MS  # PutLogEvents rejects events older than this...
PUT_TOO_NEW_MS = 2 * 3_600_000  # ...or further in the future than this
LIST_LIMIT = 50
EVENTS_LIMIT = 10_000
RESPONSE_BYTES = 1_048_576  # event pages stop at 1 MB of messages, as CloudWatch's do
FILTER_SCAN_BUDGET = 200_000  # rows one FilterLogEvents call may examine before paging
SCAN_CHUNK = 1_000
GROUP_MISSING = "The specified log group does not exist."
STREAM_MISSING = "The specified log stream does not exist."


# --- the service -----------------------------------------------------------------------------


class LogService:
    def __init__(self, db: Database, store: LogStore, region: str, account_id: str) -> None:
        self.db = db
        self.store = store
        self.region = region
        self.account_id = account_id

    def group_arn(self, name: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{name}"

    def group_name(self, params: dict[str, Any]) -> str:
        """`logGroupName`, or `logGroupIdentifier` as a name or ARN (never both)."""
        name = params.get("logGroupName")
        identifier = params.get("logGroupIdentifier")
        if name and identifier:
            raise InvalidParameter(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters."
            )
        if identifier:
            if identifier.startswith("arn:"):
                _, _, rest = identifier.partition(":log-group:")
                name = rest.removesuffix(":*")
            else:
                name = identifier
        if not name:
            raise InvalidParameter("Either logGroupName or logGroupIdentifier must be specified.")
        return str(name)

    # groups

    def create_log_group(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["logGroupName"]
        try:
            with self.db.session() as s:
                if s.get(LogGroupRow, name) is not None:
                    raise ResourceAlreadyExists("The specified log group already exists")
                s.add(LogGroupRow(name=name, created_ms=now_ms()))
        except IntegrityError:
            raise ResourceAlreadyExists("The specified log group already exists") from None
        return {}

    def delete_log_group(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["logGroupName"]
        with self.db.session() as s:
            if s.get(LogGroupRow, name) is None:
                raise ResourceNotFound(GROUP_MISSING)
            s.execute(delete(LogEventRow).where(LogEventRow.group_name == name))
            s.execute(delete(LogStreamRow).where(LogStreamRow.group_name == name))
            s.execute(delete(LogGroupRow).where(LogGroupRow.name == name))
        return {}

    def describe_log_groups(self, params: dict[str, Any]) -> dict[str, Any]:
        prefix = params.get("logGroupNamePrefix")
        pattern = params.get("logGroupNamePattern")
        if prefix and pattern is not None:
            raise InvalidParameter(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."
            )
        limit = params.get("limit") or LIST_LIMIT
        query = select(LogGroupRow).order_by(LogGroupRow.name)
        if prefix:
            query = query.where(LogGroupRow.name >= prefix, _starts_with(LogGroupRow.name, prefix))
        if identifiers := params.get("logGroupIdentifiers"):
            names = [self.group_name({"logGroupIdentifier": i}) for i in identifiers]
            query = query.where(LogGroupRow.name.in_(names))
        if token := params.get("nextToken"):
            (after,) = parse_opaque_token(token, 1)
            query = query.where(LogGroupRow.name > after)
        if pattern:
            # Substring, case-insensitive, as AWS documents; checked here to stay portable.
            wanted = pattern.lower()
            rows = [r for r in self._scan(query) if wanted in r.name.lower()]
            rows = rows[: limit + 1]
        else:
            with self.db.session() as s:
                rows = list(s.scalars(query.limit(limit + 1)))
        output: dict[str, Any] = {"logGroups": [self._group_shape(r) for r in rows[:limit]]}
        if len(rows) > limit:
            output["nextToken"] = opaque_token(rows[limit - 1].name)
        return output

    def _scan(self, query: Any) -> Iterator[Any]:
        with self.db.session() as s:
            yield from s.scalars(query)

    def _group_shape(self, row: LogGroupRow) -> dict[str, Any]:
        arn = self.group_arn(row.name)
        shape: dict[str, Any] = {
            "logGroupName": row.name,
            "creationTime": row.created_ms,
            "metricFilterCount": 0,
            "arn": f"{arn}:*",
            "logGroupArn": arn,
            "storedBytes": 0,
            "logGroupClass": "STANDARD",
        }
        if row.retention_days is not None:
            shape["retentionInDays"] = row.retention_days
        return shape

    def put_retention_policy(self, params: dict[str, Any]) -> dict[str, Any]:
        days = params["retentionInDays"]
        if days not in RETENTION_DAYS:
            raise InvalidParameter(
                f"1 validation error detected: Value '{days}' at 'retentionInDays' failed to "
                "satisfy constraint: Member must satisfy enum value set: "
                f"[{', '.join(str(d) for d in RETENTION_DAYS)}]"
            )
        self._set_retention(params["logGroupName"], days)
        return {}

    def delete_retention_policy(self, params: dict[str, Any]) -> dict[str, Any]:
        self._set_retention(params["logGroupName"], None)
        return {}

    def _set_retention(self, name: str, days: int | None) -> None:
        with self.db.session() as s:
            row = s.get(LogGroupRow, name)
            if row is None:
                raise ResourceNotFound(GROUP_MISSING)
            row.retention_days = days

    # streams

    def create_log_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        group, name = params["logGroupName"], params["logStreamName"]
        try:
            with self.db.session() as s:
                if s.get(LogGroupRow, group) is None:
                    raise ResourceNotFound(GROUP_MISSING)
                if s.get(LogStreamRow, (group, name)) is not None:
                    raise ResourceAlreadyExists("The specified log stream already exists")
                s.add(LogStreamRow(group_name=group, name=name, created_ms=now_ms()))
        except IntegrityError:
            raise ResourceAlreadyExists("The specified log stream already exists") from None
        return {}

    def delete_log_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        group, name = params["logGroupName"], params["logStreamName"]
        with self.db.session() as s:
            if s.get(LogGroupRow, group) is None:
                raise ResourceNotFound(GROUP_MISSING)
            if s.get(LogStreamRow, (group, name)) is None:
                raise ResourceNotFound(STREAM_MISSING)
            s.execute(
                delete(LogEventRow).where(
                    LogEventRow.group_name == group, LogEventRow.stream_name == name
                )
            )
            s.execute(
                delete(LogStreamRow).where(
                    LogStreamRow.group_name == group, LogStreamRow.name == name
                )
            )
        return {}

    def describe_log_streams(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.group_name(params)
        prefix = params.get("logStreamNamePrefix")
        by_time = params.get("orderBy") == "LastEventTime"
        descending = bool(params.get("descending"))
        limit = params.get("limit") or LIST_LIMIT
        if by_time and prefix:
            raise InvalidParameter("Cannot order by LastEventTime with a logStreamNamePrefix.")
        query = select(LogStreamRow).where(LogStreamRow.group_name == group)
        if prefix:
            query = query.where(
                LogStreamRow.name >= prefix, _starts_with(LogStreamRow.name, prefix)
            )
        token = params.get("nextToken")
        if by_time:
            last = func.coalesce(LogStreamRow.last_event_ms, 0)
            keys = (
                (last.desc(), LogStreamRow.name.desc()) if descending else (last, LogStreamRow.name)
            )
            query = query.order_by(*keys)
            offset = token_number(parse_opaque_token(token, 2)[1]) if token else 0
            query = query.offset(offset)
        else:
            name_order = LogStreamRow.name.desc() if descending else LogStreamRow.name
            query = query.order_by(name_order)
            if token:
                _, after = parse_opaque_token(token, 2)
                query = query.where(
                    LogStreamRow.name < after if descending else LogStreamRow.name > after
                )
        with self.db.session() as s:
            self._require_group(s, group)
            rows = list(s.scalars(query.limit(limit + 1)))
        output: dict[str, Any] = {"logStreams": [self._stream_shape(r) for r in rows[:limit]]}
        if len(rows) > limit:
            if by_time:
                output["nextToken"] = opaque_token("o", offset + limit)
            else:
                output["nextToken"] = opaque_token("n", rows[limit - 1].name)
        return output

    def _stream_shape(self, row: LogStreamRow) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "logStreamName": row.name,
            "creationTime": row.created_ms,
            "arn": f"{self.group_arn(row.group_name)}:log-stream:{row.name}",
            "storedBytes": 0,
        }
        if row.first_event_ms is not None:
            shape["firstEventTimestamp"] = row.first_event_ms
        if row.last_event_ms is not None:
            shape["lastEventTimestamp"] = row.last_event_ms
        if row.last_ingestion_ms is not None:
            shape["lastIngestionTime"] = row.last_ingestion_ms
            shape["uploadSequenceToken"] = str(row.last_ingestion_ms)
        return shape

    @staticmethod
    def _require_group(s: Session, group: str) -> LogGroupRow:
        row = s.get(LogGroupRow, group)
        if row is None:
            raise ResourceNotFound(GROUP_MISSING)
        return row

    # events

    def put_log_events(self, params: dict[str, Any]) -> dict[str, Any]:
        group, stream = params["logGroupName"], params["logStreamName"]
        events: list[dict[str, Any]] = params["logEvents"]
        timestamps = [e["timestamp"] for e in events]
        if timestamps != sorted(timestamps):
            raise InvalidParameter(
                "Log events in a single PutLogEvents request must be in chronological order."
            )
        if timestamps[-1] - timestamps[0] > DAY_MS:
            raise InvalidParameter(
                "The batch of log events in a single PutLogEvents request cannot span more "
                "than 24 hours."
            )
        with self.db.session() as s:
            row = self._require_group(s, group)
            if s.get(LogStreamRow, (group, stream)) is None:
                raise ResourceNotFound(STREAM_MISSING)
            retention = row.retention_days
        now = now_ms()
        too_new = next((i for i, t in enumerate(timestamps) if t > now + PUT_TOO_NEW_MS), None)
        too_old = _last_index(timestamps, lambda t: t < now - PUT_TOO_OLD_MS)
        expired = (
            _last_index(timestamps, lambda t: t < now - retention * DAY_MS) if retention else None
        )
        first = max(i for i in (too_old, expired, -1) if i is not None) + 1
        end = too_new if too_new is not None else len(events)
        accepted = [(e["timestamp"], e["message"]) for e in events[first:end]]
        if accepted:
            self.store.append(group, stream, accepted)
            self.store.flush()
        output: dict[str, Any] = {"nextSequenceToken": str(now)}
        rejected = {
            key: value
            for key, value in (
                ("tooNewLogEventStartIndex", too_new),
                ("tooOldLogEventEndIndex", too_old),
                ("expiredLogEventEndIndex", expired),
            )
            if value is not None
        }
        if rejected:
            output["rejectedLogEventsInfo"] = rejected
        return output

    def get_log_events(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.group_name(params)
        stream = params["logStreamName"]
        limit = params.get("limit") or EVENTS_LIMIT
        if token := params.get("nextToken"):
            direction, position = parse_position_token(token)
        elif params.get("startFromHead"):
            direction, position = "f", HEAD
        else:
            direction, position = "b", TAIL
        where = [LogEventRow.group_name == group, LogEventRow.stream_name == stream]
        where += _time_window(params)
        with self.db.session() as s:
            self._require_group(s, group)
            if s.get(LogStreamRow, (group, stream)) is None:
                raise ResourceNotFound(STREAM_MISSING)
            if direction == "f":
                query = select(LogEventRow).where(*where, _after(position))
                rows = _within_budget(list(s.scalars(query.order_by(*_ORDER).limit(limit))))
            else:
                query = select(LogEventRow).where(*where, _before(position))
                newest_first = list(s.scalars(query.order_by(*_ORDER_DESC).limit(limit)))
                rows = _within_budget(newest_first)[::-1]
        if rows:
            forward = position_token("f", _position(rows[-1]))
            backward = position_token("b", _position(rows[0]))
        elif direction == "f":
            # At the end: the same forward token comes back, which is how clients know.
            forward = position_token("f", position)
            backward = position_token("b", (position[0], position[1] + 1))
        else:
            forward = position_token("f", HEAD)
            backward = position_token("b", position)
        return {
            "events": [
                {"timestamp": r.timestamp_ms, "message": r.message, "ingestionTime": r.ingestion_ms}
                for r in rows
            ],
            "nextForwardToken": forward,
            "nextBackwardToken": backward,
        }

    def filter_log_events(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.group_name(params)
        names = params.get("logStreamNames")
        prefix = params.get("logStreamNamePrefix")
        if names and prefix:
            raise InvalidParameter(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters."
            )
        pattern = FilterPattern.parse(params.get("filterPattern"))
        limit = params.get("limit") or EVENTS_LIMIT
        position = HEAD
        if token := params.get("nextToken"):
            ts, row_id = parse_opaque_token(token, 2)
            position = (token_number(ts), token_number(row_id))
        where = [LogEventRow.group_name == group, *_time_window(params)]
        if names:
            where.append(LogEventRow.stream_name.in_(names))
        elif prefix:
            where.append(_starts_with(LogEventRow.stream_name, prefix))
        events: list[LogEventRow] = []
        size = scanned = 0
        resume: Position | None = None  # where the next page starts, if there is one
        chunk = limit + 1 if pattern.matches_everything else SCAN_CHUNK
        with self.db.session() as s:
            self._require_group(s, group)
            for row in _rows_after(s, where, position, chunk):
                if scanned >= FILTER_SCAN_BUDGET:
                    # AWS pages the same way, sometimes with an empty page: clients keep
                    # following nextToken.
                    resume = position
                    break
                scanned += 1
                if pattern.matches(row.message):
                    if len(events) == limit or (
                        events and size + len(row.message) > RESPONSE_BYTES
                    ):
                        resume = position
                        break
                    events.append(row)
                    size += len(row.message)
                position = _position(row)
        output: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": r.stream_name,
                    "timestamp": r.timestamp_ms,
                    "message": r.message,
                    "ingestionTime": r.ingestion_ms,
                    "eventId": event_id(r.id),
                }
                for r in events
            ],
            "searchedLogStreams": [],
        }
        if resume is not None:
            output["nextToken"] = opaque_token(*resume)
        return output


_ORDER = (LogEventRow.timestamp_ms, LogEventRow.id)
_ORDER_DESC = (LogEventRow.timestamp_ms.desc(), LogEventRow.id.desc())


def _position(row: LogEventRow) -> Position:
    return (row.timestamp_ms, row.id)


def _after(p: Position) -> ColumnElement[bool]:
    # `ts >= T` first so the (group, timestamp) index bounds the scan.
    ts, row_id = p
    return and_(
        LogEventRow.timestamp_ms >= ts,
        or_(LogEventRow.timestamp_ms > ts, LogEventRow.id > row_id),
    )


def _before(p: Position) -> ColumnElement[bool]:
    ts, row_id = p
    return and_(
        LogEventRow.timestamp_ms <= ts,
        or_(LogEventRow.timestamp_ms < ts, LogEventRow.id < row_id),
    )


def _rows_after(
    s: Session, where: list[ColumnElement[bool]], position: Position, chunk: int
) -> Iterator[LogEventRow]:
    """Matching rows after `position` in (timestamp, id) order, fetched `chunk` at a time."""
    while True:
        query = select(LogEventRow).where(*where, _after(position))
        rows = list(s.scalars(query.order_by(*_ORDER).limit(chunk)))
        yield from rows
        if len(rows) < chunk:
            return
        position = _position(rows[-1])


def _within_budget(rows: list[LogEventRow]) -> list[LogEventRow]:
    """The leading rows whose messages fit in one response (always at least one)."""
    size = 0
    for i, row in enumerate(rows):
        size += len(row.message)
        if size > RESPONSE_BYTES and i > 0:
            return rows[:i]
    return rows


def _time_window(params: dict[str, Any]) -> list[ColumnElement[bool]]:
    """startTime is inclusive, endTime exclusive, as CloudWatch documents."""
    where: list[ColumnElement[bool]] = []
    if params.get("startTime") is not None:
        where.append(LogEventRow.timestamp_ms >= params["startTime"])
    if params.get("endTime") is not None:
        where.append(LogEventRow.timestamp_ms < params["endTime"])
    return where


def _starts_with(column: Any, prefix: str) -> ColumnElement[bool]:
    # Not LIKE: SQLite's LIKE ignores case and treats `_` as a wildcard.
    return func.substr(column, 1, len(prefix)) == prefix


def _last_index(values: Sequence[int], predicate: Callable[[int], bool]) -> int | None:
    found = None
    for i, value in enumerate(values):
        if predicate(value):
            found = i
    return found
