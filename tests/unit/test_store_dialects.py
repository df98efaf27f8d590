"""The store and the services that hold SQL, on SQLite and on PostgreSQL alike.

Each test gets a freshly migrated database of each dialect: SQLite in a temp dir as the
server makes it (`Database.in_dir`), PostgreSQL as a new database on a throwaway server
(tests/pg.py). Services are built as platform.py builds them, without HTTP or sandboxes."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from lambda_services import wire_functions
from pg import PostgresServer, postgresql_fixture
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from lambdahost.config import Settings
from lambdahost.control.lambda_.layers import LayerService
from lambdahost.control.lambda_.versions import VersionService
from lambdahost.control.logs.service import LogService
from lambdahost.control.logs.syntax import ResourceAlreadyExists, ResourceNotFound
from lambdahost.errors import ResourceNotFound as LambdaNotFound
from lambdahost.invoke.queue import Doorbell, EventQueue
from lambdahost.store.blobs import BlobStore
from lambdahost.store.db import Database
from lambdahost.store.logs import DAY_MS, LogStore
from lambdahost.store.tables import AliasRow, Base, LogEventRow, LogStreamRow
from lambdahost.store.types import ESC, escape_nul, unescape_nul

postgresql = postgresql_fixture()

# Names whose byte order (SQLite's, CloudWatch's, Lambda's) differs from a linguistic one:
# en-US sorts them "_x", "/a", "a", "A-1", "b", "B".
AWKWARD_NAMES = ["b", "B", "a", "A-1", "_x", "/a"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database.in_dir(tmp_path)
        database.migrate()
        yield database
        database.close()
        return
    server: PostgresServer = request.getfixturevalue("postgresql")
    name = server.create_database()
    database = Database(server.url(name))
    try:
        database.migrate()
        yield database
    finally:
        database.close()
        server.drop_database(name)


def now_ms() -> int:
    return int(time.time() * 1000)


# --- schema ------------------------------------------------------------------------------------


def test_migrations_build_the_models_schema(db: Database) -> None:
    db.migrate()  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert diff == []
    assert version is not None
    assert set(inspect(db.engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}


def test_database_url_picks_the_dialect(tmp_path: Path) -> None:
    sqlite = Database.in_dir(tmp_path)
    assert sqlite.engine.dialect.name == "sqlite"
    with sqlite.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    sqlite.close()
    for url in ("postgresql://u@/d?host=/tmp", "postgres://u@/d?host=/tmp"):
        pg = Database(url)  # no connection is made until used
        assert pg.engine.dialect.name == "postgresql"
        assert pg.engine.dialect.driver == "psycopg"
        pg.close()


def test_migrate_concurrently(db: Database) -> None:
    """Nodes of a cluster may start at once: each one migrates, none fails."""
    if db.engine.dialect.name == "sqlite":
        pytest.skip("one process owns a SQLite file")
    with db.engine.begin() as conn:  # back to an empty database
        for table in [*reversed(Base.metadata.sorted_tables)]:
            conn.execute(text(f'DROP TABLE "{table.name}"'))
        conn.execute(text("DROP TABLE alembic_version"))
    url = db.engine.url.render_as_string(hide_password=False)
    script = "import sys; from lambdahost.store.db import Database; Database(sys.argv[1]).migrate()"
    nodes = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    failures = [node.communicate(timeout=120)[1].decode()[-2000:] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0, 0], failures
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_text_round_trips_nul_and_unusual_characters(db: Database) -> None:
    odd = ["nul\x00inside", "\x00", "\ue000", "\ue000\x00\ue0000", "tab\tand ünïcödé ✓ 🎉"]
    with db.session() as s:
        for i, value in enumerate(odd):
            s.add(
                AliasRow(
                    function_name="f",
                    name=f"a{i}",
                    function_version="1",
                    description=value,
                    routing={"1": 0.5, "note": value},
                    revision_id="r",
                )
            )
    with db.session() as s:
        rows = s.scalars(select(AliasRow).order_by(AliasRow.name)).all()
        assert [r.description for r in rows] == odd
        assert [r.routing["note"] for r in rows] == odd
        assert s.get(AliasRow, ("f", "a0")) is not None


@given(st.text(alphabet=st.sampled_from(["\x00", ESC, "0", "a", "\\"]) | st.characters()))
def test_nul_escape_round_trips(value: str) -> None:
    stored = escape_nul(value)
    assert "\x00" not in stored
    assert unescape_nul(stored) == value
    if "\x00" not in value and ESC not in value:
        assert stored is value  # the common case costs nothing


def test_names_sort_byte_by_byte(db: Database) -> None:
    with db.session() as s:
        for name in AWKWARD_NAMES:
            s.add(LogStreamRow(group_name="g", name=name, created_ms=0))
    with db.session() as s:
        ordered = s.scalars(select(LogStreamRow.name).order_by(LogStreamRow.name)).all()
        after_b = s.scalars(
            select(LogStreamRow.name).where(LogStreamRow.name > "B").order_by(LogStreamRow.name)
        ).all()
    assert ordered == sorted(AWKWARD_NAMES)
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            provider = conn.execute(
                text("SELECT datlocprovider FROM pg_database WHERE datname = current_database()")
            ).scalar()
            default_order = conn.execute(
                text("SELECT x FROM unnest(CAST(:names AS text[])) AS x ORDER BY x"),
                {"names": AWKWARD_NAMES},
            ).scalars()
            if provider == "i":  # tests/pg.py's ICU en-US: this test means something
                assert list(default_order) != ordered
    assert after_b == [n for n in sorted(AWKWARD_NAMES) if n > "B"]


def test_row_ids_are_64_bit(db: Database) -> None:
    big = 2**40
    with db.session() as s:
        s.add(
            LogEventRow(
                id=big,
                group_name="g",
                stream_name="s",
                timestamp_ms=1,
                ingestion_ms=1,
                message="m",
            )
        )
    if db.engine.dialect.name == "postgresql":  # the sequence continues past it, as SQLite does
        with db.engine.begin() as conn:
            conn.execute(text("SELECT setval('log_events_id_seq', :v)"), {"v": big})
    store = LogStore(db)
    store.write([("g", "s", [(2, "next")])])
    with db.session() as s:
        assert s.scalars(select(LogEventRow.id).order_by(LogEventRow.id)).all() == [big, big + 1]


# --- the log store -----------------------------------------------------------------------------


def test_log_store_appends_in_batches_and_widens_stream_statistics(db: Database) -> None:
    store = LogStore(db, flush_interval_s=0.0, retention_sweep_s=3600)
    store.start()
    try:
        store.append("/aws/lambda/f", "s1", [(1000, "one"), (1001, "two\x00")])
        store.append("/aws/lambda/f", "s1", [(500, "early")])
        store.append("/aws/lambda/f", "s2", [(2000, "other stream")])
        store.append("/aws/lambda/f", "s1", [])  # nothing to do
        store.flush()
        store.append("/aws/lambda/f", "s1", [(3000, "late")])
        store.flush()
    finally:
        store.stop()
    with db.session() as s:
        events = s.scalars(
            select(LogEventRow).where(LogEventRow.stream_name == "s1").order_by(LogEventRow.id)
        ).all()
        stream = s.get(LogStreamRow, ("/aws/lambda/f", "s1"))
        assert [(e.timestamp_ms, e.message) for e in events] == [
            (1000, "one"),
            (1001, "two\x00"),
            (500, "early"),
            (3000, "late"),
        ]
        assert stream is not None
        assert (stream.first_event_ms, stream.last_event_ms) == (500, 3000)
        assert stream.last_ingestion_ms is not None


def test_log_retention_purges_old_events_and_empty_streams(db: Database) -> None:
    logs = LogService(db, LogStore(db), "us-east-1", "000000000000")
    now = now_ms()
    store = logs.store
    store.write([("kept", "s", [(now - 30 * DAY_MS, "old but no retention")])])
    store.write([("short", "old", [(now - 10 * DAY_MS, "expired")])])
    store.write([("short", "mixed", [(now - 10 * DAY_MS, "expired"), (now, "fresh")])])
    logs.put_retention_policy({"logGroupName": "short", "retentionInDays": 7})
    assert store.purge_expired(now) == 2
    assert store.purge_expired(now) == 0
    with db.session() as s:
        left = s.execute(
            select(LogEventRow.group_name, LogEventRow.message).order_by(LogEventRow.id)
        ).all()
        streams = s.execute(
            select(LogStreamRow.group_name, LogStreamRow.name).order_by(
                LogStreamRow.group_name, LogStreamRow.name
            )
        ).all()
    assert [tuple(r) for r in left] == [("kept", "old but no retention"), ("short", "fresh")]
    assert [tuple(r) for r in streams] == [("kept", "s"), ("short", "mixed")]


# --- CloudWatch Logs queries ---------------------------------------------------------------


@pytest.fixture
def logs(db: Database) -> Iterator[LogService]:
    store = LogStore(db, flush_interval_s=0.0, retention_sweep_s=3600)
    store.start()
    yield LogService(db, store, "us-east-1", "000000000000")
    store.stop()


def pages(call: Callable[[dict[str, Any]], dict[str, Any]], key: str, **params: Any) -> list:
    """Every item of a paged Logs listing, following nextToken (which must advance)."""
    items: list[Any] = []
    token = None
    for _ in range(100):
        out = call({**params, **({"nextToken": token} if token else {})})
        items += out[key]
        if "nextToken" not in out or out["nextToken"] == token:
            return items
        token = out["nextToken"]
    raise AssertionError("paging did not end")


def test_log_groups_and_streams(logs: LogService) -> None:
    for name in AWKWARD_NAMES:
        logs.create_log_group({"logGroupName": name})
    with pytest.raises(ResourceAlreadyExists):
        logs.create_log_group({"logGroupName": "a"})
    groups = pages(logs.describe_log_groups, "logGroups", limit=1)
    assert [g["logGroupName"] for g in groups] == sorted(AWKWARD_NAMES)
    by_prefix = logs.describe_log_groups({"logGroupNamePrefix": "A"})["logGroups"]
    assert [g["logGroupName"] for g in by_prefix] == ["A-1"]  # case-sensitive
    assert (
        logs.describe_log_groups({"logGroupNamePrefix": "_"})["logGroups"][0]["logGroupName"]
        == "_x"
    )  # `_` is no wildcard
    by_pattern = logs.describe_log_groups({"logGroupNamePattern": "a"})["logGroups"]
    assert [g["logGroupName"] for g in by_pattern] == ["/a", "A-1", "a"]  # case-insensitive

    with pytest.raises(ResourceNotFound):
        logs.create_log_stream({"logGroupName": "missing", "logStreamName": "s"})
    for name in AWKWARD_NAMES:
        logs.create_log_stream({"logGroupName": "a", "logStreamName": name})
    with pytest.raises(ResourceAlreadyExists):
        logs.create_log_stream({"logGroupName": "a", "logStreamName": "b"})
    streams = pages(logs.describe_log_streams, "logStreams", logGroupName="a", limit=2)
    assert [s["logStreamName"] for s in streams] == sorted(AWKWARD_NAMES)
    backwards = pages(
        logs.describe_log_streams, "logStreams", logGroupName="a", limit=2, descending=True
    )
    assert [s["logStreamName"] for s in backwards] == sorted(AWKWARD_NAMES, reverse=True)
    prefixed = logs.describe_log_streams({"logGroupName": "a", "logStreamNamePrefix": "B"})
    assert [s["logStreamName"] for s in prefixed["logStreams"]] == ["B"]

    now = now_ms()
    logs.put_log_events(
        {
            "logGroupName": "a",
            "logStreamName": "b",
            "logEvents": [{"timestamp": now - 5, "message": "x"}],
        }
    )
    logs.put_log_events(
        {
            "logGroupName": "a",
            "logStreamName": "a",
            "logEvents": [{"timestamp": now, "message": "y"}],
        }
    )
    by_time = pages(
        logs.describe_log_streams,
        "logStreams",
        logGroupName="a",
        orderBy="LastEventTime",
        descending=True,
        limit=1,
    )
    assert [s["logStreamName"] for s in by_time][:2] == ["a", "b"]
    assert sorted(s["logStreamName"] for s in by_time) == sorted(AWKWARD_NAMES)

    logs.delete_log_stream({"logGroupName": "a", "logStreamName": "b"})
    with pytest.raises(ResourceNotFound):
        logs.delete_log_stream({"logGroupName": "a", "logStreamName": "b"})
    logs.delete_log_group({"logGroupName": "a"})
    with pytest.raises(ResourceNotFound):
        logs.describe_log_streams({"logGroupName": "a"})
    assert len(logs.describe_log_groups({})["logGroups"]) == len(AWKWARD_NAMES) - 1


def test_log_events_get_and_filter_with_paging(logs: LogService) -> None:
    logs.create_log_group({"logGroupName": "g"})
    logs.create_log_stream({"logGroupName": "g", "logStreamName": "s1"})
    logs.create_log_stream({"logGroupName": "g", "logStreamName": "s2"})
    base = now_ms() - 60_000
    first = [
        {"timestamp": base + i, "message": f"s1 line {i} {'ERROR' if i % 3 == 0 else 'ok'}"}
        for i in range(10)
    ]
    out = logs.put_log_events({"logGroupName": "g", "logStreamName": "s1", "logEvents": first})
    assert "rejectedLogEventsInfo" not in out
    logs.put_log_events(
        {
            "logGroupName": "g",
            "logStreamName": "s2",
            "logEvents": [{"timestamp": base + 5, "message": "s2 ERROR \x00 here"}],
        }
    )

    # GetLogEvents: forward from the head in pages of 4, then backward from the tail.
    messages: list[str] = []
    params: dict[str, Any] = {"logGroupName": "g", "logStreamName": "s1", "limit": 4}
    out = logs.get_log_events({**params, "startFromHead": True})
    while out["events"]:
        messages += [e["message"] for e in out["events"]]
        out = logs.get_log_events({**params, "nextToken": out["nextForwardToken"]})
    assert messages == [e["message"] for e in first]
    tail = logs.get_log_events(params)
    assert [e["message"] for e in tail["events"]] == messages[-4:]
    before = logs.get_log_events({**params, "nextToken": tail["nextBackwardToken"]})
    assert [e["message"] for e in before["events"]] == messages[-8:-4]
    window = logs.get_log_events(
        {**params, "startTime": base + 2, "endTime": base + 4, "startFromHead": True}
    )
    assert [e["timestamp"] for e in window["events"]] == [base + 2, base + 3]

    # FilterLogEvents across streams, in (timestamp, id) order, two at a time.
    found = pages(
        logs.filter_log_events, "events", logGroupName="g", filterPattern="ERROR", limit=2
    )
    assert [(e["logStreamName"], e["timestamp"]) for e in found] == [
        ("s1", base),
        ("s1", base + 3),
        ("s2", base + 5),
        ("s1", base + 6),
        ("s1", base + 9),
    ]
    assert found[2]["message"] == "s2 ERROR \x00 here"
    assert len({e["eventId"] for e in found}) == 5
    only_s2 = logs.filter_log_events({"logGroupName": "g", "logStreamNames": ["s2"]})
    assert [e["message"] for e in only_s2["events"]] == ["s2 ERROR \x00 here"]
    prefixed = logs.filter_log_events({"logGroupName": "g", "logStreamNamePrefix": "s1"})
    assert len(prefixed["events"]) == 10
    everything = pages(logs.filter_log_events, "events", logGroupName="g", limit=3)
    assert len(everything) == 11


# --- the async event queue -----------------------------------------------------------------


def test_event_queue_claim_lease_retry_and_ack(db: Database) -> None:
    queue = EventQueue(db, Doorbell())
    payloads = [bytes(range(256)), b"", b"\x00{}"]
    for i, payload in enumerate(payloads):
        queue.enqueue("f", "1" if i else None, payload, f"req-{i}")
    with pytest.raises(IntegrityError):
        queue.enqueue("f", None, b"again", "req-0")  # request ids are unique
    assert queue.pending() == 3
    assert queue.next_due_ms() is not None

    first = queue.claim(limit=2, lease_ms=60_000)
    assert [e.request_id for e in first] == ["req-0", "req-1"]
    assert [e.payload for e in first] == payloads[:2]
    assert all(type(e.payload) is bytes for e in first)
    assert first[0].qualifier is None and first[1].qualifier == "1"
    other = EventQueue(db, Doorbell())  # another worker sees only what is not leased
    rest = other.claim(limit=10, lease_ms=60_000)
    assert [e.request_id for e in rest] == ["req-2"]
    assert rest[0].payload == payloads[2]
    assert queue.claim(limit=10, lease_ms=60_000) == []
    assert queue.next_due_ms() is None  # everything is leased

    queue.retry_later(first[0], 0, count_attempt=True)
    again = other.claim(limit=10, lease_ms=60_000)
    assert [(e.request_id, e.attempts) for e in again] == [("req-0", 1)]
    queue.retry_later(again[0], 3_600_000, count_attempt=False)
    assert queue.claim(limit=10, lease_ms=60_000) == []  # not due for an hour
    assert queue.next_due_ms() > now_ms() + 3_000_000  # type: ignore[operator]

    queue.done(first[1])
    assert queue.pending() == 2
    assert queue.release_all_leases() == 1  # req-2's worker "died"
    reclaimed = queue.claim(limit=10, lease_ms=60_000)
    assert [(e.request_id, e.attempts) for e in reclaimed] == [("req-2", 0)]
    queue.done(reclaimed[0])
    assert queue.pending() == 1


def test_event_queue_workers_never_claim_the_same_event(db: Database) -> None:
    total = 60
    for i in range(total):
        EventQueue(db, Doorbell()).enqueue("f", None, str(i).encode(), f"req-{i}")
    claimed: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        queue = EventQueue(db, Doorbell())
        try:
            while batch := queue.claim(limit=3, lease_ms=600_000):
                with lock:
                    claimed.extend(e.request_id for e in batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(claimed) == sorted(f"req-{i}" for i in range(total))


# --- functions -------------------------------------------------------------------------------


def code_zip(body: str = "def handler(event, context):\n    return event\n") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", body)
    return buffer.getvalue()


class Control:
    """FunctionService and VersionService as platform.py wires them; state transitions run
    when `settle()` is called instead of on a timer."""

    def __init__(self, db: Database, data_dir: Path) -> None:
        settings = Settings(data_dir=data_dir)
        blobs = BlobStore(data_dir / "b")
        self._due: list[Callable[[], None]] = []
        layers = LayerService(settings, db, blobs)
        self.functions = wire_functions(settings, db, blobs, layers, self._due.append)
        self.versions = VersionService(self.functions)

    def settle(self) -> None:
        while self._due:
            self._due.pop(0)()

    def create(self, name: str, **extra: Any) -> dict[str, Any]:
        config = self.functions.create(
            {
                "FunctionName": name,
                "Runtime": "python3.11",
                "Handler": "index.handler",
                "Role": "arn:aws:iam::000000000000:role/r",
                "Code": {"ZipFile": code_zip()},
                **extra,
            }
        )
        self.settle()
        return config


@pytest.fixture
def control(db: Database, tmp_path: Path) -> Control:
    return Control(db, tmp_path)


def test_function_rows_lifecycle(control: Control) -> None:
    functions, versions = control.functions, control.versions
    created = control.create(
        "fn",
        Environment={"Variables": {"GREETING": "héllo ✓", "EMPTY": ""}},
        Tags={"team": "a"},
    )
    assert created["State"] == "Pending"
    got = functions.get("fn")
    assert got.config["State"] == "Active"
    assert got.config["Environment"]["Variables"]["GREETING"] == "héllo ✓"
    assert got.tags == {"team": "a"}
    assert functions.get(created["FunctionArn"]).code_sha256 == got.code_sha256

    one = versions.publish("fn")
    assert one["Version"] == "1"
    assert versions.publish("fn")["Version"] == "1"  # unchanged: the same version

    updated = functions.update_configuration({"FunctionName": "fn", "Description": "second"})
    assert updated["LastUpdateStatus"] == "InProgress"
    control.settle()
    functions.update_code({"FunctionName": "fn", "ZipFile": code_zip("# v2\n")})
    control.settle()
    two = versions.publish("fn", description="v2")
    assert (two["Version"], two["Description"]) == ("2", "v2")
    assert functions.get("fn", "1").config["Description"] == ""
    assert functions.get("fn", "2").code_sha256 != functions.get("fn", "1").code_sha256
    listed = versions.list("fn", None, None)["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2"]

    functions.tag(created["FunctionArn"], {"env": "test"})
    assert functions.tags_of(created["FunctionArn"]) == {"team": "a", "env": "test"}
    assert functions.count_and_size()[0] == 1

    functions.delete("fn", "1")
    with pytest.raises(LambdaNotFound):
        functions.get("fn", "1")
    assert functions.get("fn", "2").config["Version"] == "2"
    functions.delete("fn")
    with pytest.raises(LambdaNotFound):
        functions.get("fn")
    with pytest.raises(LambdaNotFound):
        functions.get("fn", "2")
    assert functions.count_and_size()[0] == 0


def test_function_list_pages_in_byte_order(control: Control) -> None:
    names = ["b", "B", "a", "A-1", "_x", "Z9"]
    for name in names:
        control.create(name)
    control.versions.publish("B")

    def every(all_versions: bool) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        marker = None
        for _ in range(20):
            out = control.functions.list(marker, 1, all_versions)
            seen += [(f["FunctionName"], f["Version"]) for f in out["Functions"]]
            if not (marker := out.get("NextMarker")):
                return seen
        raise AssertionError("paging did not end")

    assert every(False) == [(n, "$LATEST") for n in sorted(names)]
    with_versions = every(True)
    assert with_versions[:3] == [("A-1", "$LATEST"), ("B", "$LATEST"), ("B", "1")]
    assert len(with_versions) == len(names) + 1
