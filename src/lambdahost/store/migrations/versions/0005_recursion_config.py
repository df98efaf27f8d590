"""recursive loop detection per function (PutFunctionRecursionConfig)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from lambdahost.store.types import Name

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("functions", sa.Column("recursive_loop", Name(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("functions") as batch:
        batch.drop_column("recursive_loop")
