"""The metadata schema. Changes here need a migration in `store/migrations/versions/`.

Column types come from `store/types.py`, so SQLite and PostgreSQL sort, compare and store
strings alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, LargeBinary
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lambdahost.store.types import Message, Name, RowId


class Base(DeclarativeBase):
    pass


class FunctionRow(Base):
    """One function: identity, tags, and counters shared by all its versions."""

    __tablename__ = "functions"

    name: Mapped[str] = mapped_column(Name(64), primary_key=True)
    arn: Mapped[str] = mapped_column(Name(256), unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    reserved_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # PutFunctionRecursionConfig's RecursiveLoop (Allow | Terminate); None: never set, Terminate
    recursive_loop: Mapped[str | None] = mapped_column(Name(16), nullable=True)


class VersionRow(Base):
    """A function version: `$LATEST` (mutable) or a published number (immutable).

    `config` holds the FunctionConfiguration fields as the API returns them, so a published
    version is a plain copy of `$LATEST`."""

    __tablename__ = "function_versions"

    function_name: Mapped[str] = mapped_column(Name(64), primary_key=True)
    version: Mapped[str] = mapped_column(Name(16), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    code_sha256: Mapped[str] = mapped_column(Name(64))  # hex; names the blob
    revision_id: Mapped[str] = mapped_column(Name(36))
    # Pending/InProgress transitions left unfinished by a crash are finished at start-up.
    settled: Mapped[bool] = mapped_column(default=True)
    layer_digests: Mapped[list[str]] = mapped_column(JSON, default=list)  # in /opt order


class LogGroupRow(Base):
    __tablename__ = "log_groups"

    name: Mapped[str] = mapped_column(Name(512), primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)


class LogStreamRow(Base):
    __tablename__ = "log_streams"

    group_name: Mapped[str] = mapped_column(Name(512), primary_key=True)
    name: Mapped[str] = mapped_column(Name(512), primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    first_event_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_event_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_ingestion_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class LogEventRow(Base):
    __tablename__ = "log_events"
    __table_args__ = (
        Index("ix_log_events_group_time", "group_name", "timestamp_ms"),
        Index("ix_log_events_stream", "group_name", "stream_name", "id"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    group_name: Mapped[str] = mapped_column(Name(512))
    stream_name: Mapped[str] = mapped_column(Name(512))
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    ingestion_ms: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Message())


class AliasRow(Base):
    __tablename__ = "aliases"

    function_name: Mapped[str] = mapped_column(Name(64), primary_key=True)
    name: Mapped[str] = mapped_column(Name(128), primary_key=True)
    function_version: Mapped[str] = mapped_column(Name(16))
    description: Mapped[str] = mapped_column(Name(256), default="")
    routing: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)  # version -> weight
    revision_id: Mapped[str] = mapped_column(Name(36))


class LayerVersionRow(Base):
    """A published layer version. Deleting marks it; functions that use it keep working."""

    __tablename__ = "layer_versions"

    layer_name: Mapped[str] = mapped_column(Name(140), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)  # the API's layer version fields
    code_sha256: Mapped[str] = mapped_column(Name(64))
    unzipped_bytes: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # statement id -> statement
    policy_revision: Mapped[str] = mapped_column(Name(36), default="")


class LayerRow(Base):
    """Per-layer counter, so version numbers are never reused after a delete."""

    __tablename__ = "layers"

    name: Mapped[str] = mapped_column(Name(140), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer, default=0)


class EventInvokeConfigRow(Base):
    """Retries, event age and destinations of asynchronous invokes, per function qualifier."""

    __tablename__ = "event_invoke_configs"

    function_name: Mapped[str] = mapped_column(Name(64), primary_key=True)
    qualifier: Mapped[str] = mapped_column(Name(128), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    last_modified_s: Mapped[float] = mapped_column(Float)


class AsyncEventRow(Base):
    """An accepted asynchronous invoke, kept until it has run (or failed) for good.

    Workers claim due events by taking a lease (`lease_until_ms`); an event whose worker died
    becomes due again when the lease expires. Many workers on one PostgreSQL can share it."""

    __tablename__ = "async_events"
    __table_args__ = (Index("ix_async_events_due", "next_attempt_ms"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(Name(36), unique=True)
    function_name: Mapped[str] = mapped_column(Name(64))
    qualifier: Mapped[str | None] = mapped_column(Name(128), nullable=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    enqueued_ms: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger)
    lease_until_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str] = mapped_column(Name(64), default="")


class ProvisionedConfigRow(Base):
    __tablename__ = "provisioned_concurrency"

    function_name: Mapped[str] = mapped_column(Name(64), primary_key=True)
    qualifier: Mapped[str] = mapped_column(Name(128), primary_key=True)
    requested: Mapped[int] = mapped_column(Integer)
    last_modified: Mapped[str] = mapped_column(Name(40))


class FunctionUrlRow(Base):
    """A function URL: one per function qualifier ("" for the unqualified function)."""

    __tablename__ = "function_urls"

    function_name: Mapped[str] = mapped_column(Name(64), primary_key=True)
    qualifier: Mapped[str] = mapped_column(Name(128), primary_key=True)
    url_id: Mapped[str] = mapped_column(Name(32), unique=True)
    auth_type: Mapped[str] = mapped_column(Name(16))
    cors: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    invoke_mode: Mapped[str] = mapped_column(Name(16), default="BUFFERED")
    created: Mapped[str] = mapped_column(Name(40))
    last_modified: Mapped[str] = mapped_column(Name(40))


class FunctionPolicyRow(Base):
    """A function's resource-based policy, per qualifier ("" for the unqualified function)."""

    __tablename__ = "function_policies"

    function_name: Mapped[str] = mapped_column(Name(64), primary_key=True)
    qualifier: Mapped[str] = mapped_column(Name(128), primary_key=True)
    statements: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # in order
    revision_id: Mapped[str] = mapped_column(Name(36))


class RoleRevocationRow(Base):
    """A role whose sessions issued before `not_before_ms` are refused (AWS's "revoke active
    sessions": the role's AWSRevokeOlderSessions policy, denying aws:TokenIssueTime before it)."""

    __tablename__ = "role_session_revocations"

    role_arn: Mapped[str] = mapped_column(Name(2048), primary_key=True)
    not_before_ms: Mapped[int] = mapped_column(BigInteger)
