"""aliases, layers, and the layers a function version stacks

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from lambdahost.store.types import Name

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "function_versions",
        sa.Column("layer_digests", sa.JSON, nullable=False, server_default="[]"),
    )
    op.create_table(
        "aliases",
        sa.Column("function_name", Name(64), primary_key=True),
        sa.Column("name", Name(128), primary_key=True),
        sa.Column("function_version", Name(16), nullable=False),
        sa.Column("description", Name(256), nullable=False),
        sa.Column("routing", sa.JSON, nullable=False),
        sa.Column("revision_id", Name(36), nullable=False),
    )
    op.create_table(
        "layer_versions",
        sa.Column("layer_name", Name(140), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("info", sa.JSON, nullable=False),
        sa.Column("code_sha256", Name(64), nullable=False),
        sa.Column("unzipped_bytes", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("policy_revision", Name(36), nullable=False),
    )
    op.create_table(
        "layers",
        sa.Column("name", Name(140), primary_key=True),
        sa.Column("last_version", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("layers")
    op.drop_table("layer_versions")
    op.drop_table("aliases")
    op.drop_column("function_versions", "layer_digests")
