"""Trigger leases: who holds an event (owner, lease_until), a per-trigger evaluation lease, last error.

An event is reclaimed only when its lease expired, never merely because it has no run yet; a
trigger is evaluated by one scheduler at a time so its watermark moves once per batch of new data.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from mloop.stores.sql.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trigger_events") as batch:
        batch.add_column(sa.Column("owner", sa.String(200)))
        batch.add_column(sa.Column("lease_until", UTCDateTime))
    with op.batch_alter_table("trigger_state") as batch:
        batch.add_column(sa.Column("locked_by", sa.String(200)))
        batch.add_column(sa.Column("locked_until", UTCDateTime))
        batch.add_column(sa.Column("last_error", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("trigger_state") as batch:
        batch.drop_column("last_error")
        batch.drop_column("locked_until")
        batch.drop_column("locked_by")
    with op.batch_alter_table("trigger_events") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("owner")
