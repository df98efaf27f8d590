"""function URLs and resource-based function policies

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from lambdahost.store.types import Name

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "function_urls",
        sa.Column("function_name", Name(64), primary_key=True),
        sa.Column("qualifier", Name(128), primary_key=True),
        sa.Column("url_id", Name(32), nullable=False, unique=True),
        sa.Column("auth_type", Name(16), nullable=False),
        sa.Column("cors", sa.JSON, nullable=True),
        sa.Column("invoke_mode", Name(16), nullable=False),
        sa.Column("created", Name(40), nullable=False),
        sa.Column("last_modified", Name(40), nullable=False),
    )
    op.create_table(
        "function_policies",
        sa.Column("function_name", Name(64), primary_key=True),
        sa.Column("qualifier", Name(128), primary_key=True),
        sa.Column("statements", sa.JSON, nullable=False),
        sa.Column("revision_id", Name(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("function_policies")
    op.drop_table("function_urls")
