"""Triggers: every event that fired (with its evidence and the run it started) and each trigger's state.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from mloop.stores.sql.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "trigger_events",
        sa.Column("id", ID, primary_key=True),
        sa.Column("trigger", sa.String(200), nullable=False),
        sa.Column("event_key", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("pipeline", sa.String(500), nullable=False),
        sa.Column("fired_at", UTCDateTime, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_id", ID),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("trigger", "event_key", name="uq_trigger_events_trigger_event_key"),
    )
    op.create_table(
        "trigger_state",
        sa.Column("trigger", sa.String(200), primary_key=True),
        sa.Column("evaluated_at", UTCDateTime),
        sa.Column("fired_at", UTCDateTime),
        sa.Column("next_due_at", UTCDateTime),
        sa.Column("last_result", sa.Text, nullable=False),
        sa.Column("watermark", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trigger_state")
    op.drop_table("trigger_events")
