"""reserved and provisioned concurrency, event invoke configs, the async event queue

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from lambdahost.store.types import Name, RowId

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("functions", sa.Column("reserved_concurrency", sa.Integer, nullable=True))
    op.create_table(
        "event_invoke_configs",
        sa.Column("function_name", Name(64), primary_key=True),
        sa.Column("qualifier", Name(128), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("last_modified_s", sa.Float, nullable=False),
    )
    op.create_table(
        "async_events",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("request_id", Name(36), nullable=False, unique=True),
        sa.Column("function_name", Name(64), nullable=False),
        sa.Column("qualifier", Name(128), nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("enqueued_ms", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_owner", Name(64), nullable=False),
    )
    op.create_index("ix_async_events_due", "async_events", ["next_attempt_ms"])
    op.create_table(
        "provisioned_concurrency",
        sa.Column("function_name", Name(64), primary_key=True),
        sa.Column("qualifier", Name(128), primary_key=True),
        sa.Column("requested", sa.Integer, nullable=False),
        sa.Column("last_modified", Name(40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provisioned_concurrency")
    op.drop_table("async_events")
    op.drop_table("event_invoke_configs")
    op.drop_column("functions", "reserved_concurrency")
