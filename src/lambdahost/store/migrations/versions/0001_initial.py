"""functions, versions and logs

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from lambdahost.store.types import Message, Name, RowId

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "functions",
        sa.Column("name", Name(64), primary_key=True),
        sa.Column("arn", Name(256), nullable=False, unique=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("last_version", sa.Integer, nullable=False),
    )
    op.create_table(
        "function_versions",
        sa.Column("function_name", Name(64), primary_key=True),
        sa.Column("version", Name(16), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("code_sha256", Name(64), nullable=False),
        sa.Column("revision_id", Name(36), nullable=False),
        sa.Column("settled", sa.Boolean, nullable=False),
    )
    op.create_table(
        "log_groups",
        sa.Column("name", Name(512), primary_key=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("retention_days", sa.Integer, nullable=True),
    )
    op.create_table(
        "log_streams",
        sa.Column("group_name", Name(512), primary_key=True),
        sa.Column("name", Name(512), primary_key=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("first_event_ms", sa.BigInteger, nullable=True),
        sa.Column("last_event_ms", sa.BigInteger, nullable=True),
        sa.Column("last_ingestion_ms", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "log_events",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("group_name", Name(512), nullable=False),
        sa.Column("stream_name", Name(512), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
        sa.Column("ingestion_ms", sa.BigInteger, nullable=False),
        sa.Column("message", Message(), nullable=False),
    )
    op.create_index("ix_log_events_group_time", "log_events", ["group_name", "timestamp_ms"])
    op.create_index("ix_log_events_stream", "log_events", ["group_name", "stream_name", "id"])


def downgrade() -> None:
    op.drop_table("log_events")
    op.drop_table("log_streams")
    op.drop_table("log_groups")
    op.drop_table("function_versions")
    op.drop_table("functions")
