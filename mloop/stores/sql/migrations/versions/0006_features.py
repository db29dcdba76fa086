"""Feature store: definitions recorded as versions, and materializations into the online store.

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from mloop.stores.sql.schema import UTCDateTime

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_definitions",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
    )
    op.create_table(
        "feature_materializations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("view", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("start_at", UTCDateTime),
        sa.Column("end_at", UTCDateTime, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_feature_materializations_view_at", "feature_materializations", ["view", "at"])


def downgrade() -> None:
    op.drop_table("feature_materializations")
    op.drop_table("feature_definitions")
