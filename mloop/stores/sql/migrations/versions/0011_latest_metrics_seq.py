"""``latest_metrics.seq``: when each row last changed, in commit order, so that the team server's
in-memory index of the table reads only what changed since its last look (issue 18).

Existing rows get 0: a reader's first look reads the whole table anyway. On PostgreSQL the column
defaults to the writing transaction's id, so a bulk insert that does not name it is still seen.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("latest_metrics") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE latest_metrics ALTER COLUMN seq SET DEFAULT pg_current_xact_id()::text::bigint"
        )
    op.create_index("ix_latest_metrics_seq", "latest_metrics", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_latest_metrics_seq", "latest_metrics")
    with op.batch_alter_table("latest_metrics") as batch:
        batch.drop_column("seq")
