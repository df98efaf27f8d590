"""function URLs and resource-based function policies

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "function_urls",
        sa.Column("function_name", sa.String(64), primary_key=True),
        sa.Column("qualifier", sa.String(128), primary_key=True),
        sa.Column("url_id", sa.String(32), nullable=False, unique=True),
        sa.Column("auth_type", sa.String(16), nullable=False),
        sa.Column("cors", sa.JSON, nullable=True),
        sa.Column("invoke_mode", sa.String(16), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("last_modified", sa.String(40), nullable=False),
    )
    op.create_table(
        "function_policies",
        sa.Column("function_name", sa.String(64), primary_key=True),
        sa.Column("qualifier", sa.String(128), primary_key=True),
        sa.Column("statements", sa.JSON, nullable=False),
        sa.Column("revision_id", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("function_policies")
    op.drop_table("function_urls")
