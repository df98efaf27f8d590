"""revoking a role's older sessions (lambdahost credentials revoke-sessions)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from lambdahost.store.types import Name

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "role_session_revocations",
        sa.Column("role_arn", Name(2048), primary_key=True),
        sa.Column("not_before_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("role_session_revocations")
