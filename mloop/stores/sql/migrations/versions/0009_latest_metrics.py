"""Each run's latest value of each metric, one row per (run, key), kept by ``log_metrics`` in the
same transaction as the points: the runs page sorts and filters on it without reading the series.

Backfilled from ``metrics``: the point with the highest id of each (run, key), i.e. the last logged.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from mloop.stores.sql.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "latest_metrics",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("timestamp", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_latest_metrics"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO latest_metrics (run_id, key, value, step, timestamp) "
        "SELECT m.run_id, m.key, m.value, m.step, m.timestamp FROM metrics m "
        "WHERE m.id IN (SELECT max(id) FROM metrics GROUP BY run_id, key)"
    )
    # after the backfill: one sorted build instead of an index update per row
    op.create_index("ix_latest_metrics_key_value_run_id", "latest_metrics", ["key", "value", "run_id"])


def downgrade() -> None:
    op.drop_table("latest_metrics")
