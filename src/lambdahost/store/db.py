"""The metadata database: SQLAlchemy 2 on SQLite (WAL) by default, or PostgreSQL by URL.

`Database.in_dir(data_dir)` is the embedded store (a SQLite file in the data dir);
`Database(url)` takes any SQLAlchemy URL: `postgresql+psycopg://user:pass@host/db` (plain
`postgresql://` and `postgres://` mean psycopg 3 too). Everything in it is shared state:
queries stay dialect-neutral, and `store/types.py` makes strings sort and store alike."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, CursorResult, Engine, Result, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def account_schema(account_id: str) -> str:
    """The PostgreSQL schema of an account's store."""
    return f"account_{account_id}"


# Held while migrating, so nodes of a cluster starting together migrate one at a time.
_MIGRATION_LOCK_ID = 0x6C616D6264616831  # "lambdah1"


class Database:
    def __init__(self, url: str | URL, schema: str | None = None) -> None:
        """`schema` (PostgreSQL): keep every table in this schema, made by `migrate`; how
        several accounts share one PostgreSQL database (`account_schema`). On SQLite an
        account's store is a file of its own instead."""
        url = database_url(url)
        sqlite = url.get_backend_name() == "sqlite"
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": 30} if sqlite else {}
        if schema is not None:
            if sqlite or not _SCHEMA.match(schema):
                raise ValueError(f"schema {schema!r} needs PostgreSQL and a plain name")
            connect_args["options"] = f"-csearch_path={schema}"
        self.schema = schema
        self.engine: Engine = create_engine(url, connect_args=connect_args)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Bumped after every commit that changed a function, version or alias, so hot-path
        # readers can cache those rows and still never serve a stale one (one process; a
        # cluster needs a shared counter).
        self.generation = 0
        event.listen(self._sessions, "after_flush", _note_metadata_writes)
        event.listen(self._sessions, "after_commit", self._bump_generation)
        event.listen(self._sessions, "after_soft_rollback", _forget_writes)

    @classmethod
    def in_dir(cls, data_dir: Path) -> Database:
        path = data_dir / "lambdahost.db"
        _private_sqlite_files(path)
        return cls(f"sqlite:///{path}")

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Released at commit; a node that waited finds the schema current.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
                if self.schema is not None:  # a plain name (checked above)
                    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {self.schema}"))
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def _bump_generation(self, session: Session) -> None:
        if session.info.pop("metadata_written", False):
            self.generation += 1


_WATCHED = frozenset({"functions", "function_versions", "aliases"})


def _note_metadata_writes(session: Session, _context: object) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(getattr(obj, "__tablename__", None) in _WATCHED for obj in changed):
        session.info["metadata_written"] = True


def _forget_writes(session: Session, _transaction: object) -> None:
    session.info.pop("metadata_written", None)


def _private_sqlite_files(path: Path) -> None:
    """The database holds every function's environment variables: 0600. Created here before
    SQLite opens it, because SQLite gives its -wal and -shm files the database file's mode;
    files an older version made with the umask's 0644 are tightened."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        with suppress(FileNotFoundError):
            file = path.with_name(path.name + suffix)
            mode = file.lstat().st_mode
            if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
                os.chmod(file, 0o600)


def database_url(url: str | URL) -> URL:
    """Parse a store URL; PostgreSQL without a driver means psycopg 3 (SQLAlchemy's default
    would be psycopg2, which lambdahost does not ship)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL + NORMAL survives a killed process: a committed transaction is in the WAL file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def rows_affected(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (Session.execute types its result loosely)."""
    assert isinstance(result, CursorResult)
    return result.rowcount or 0
