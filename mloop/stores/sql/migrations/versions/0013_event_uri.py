"""``events.uri``: where a step read a file it took as input. Artifacts are content-addressed, so a
copy of a file with the same bytes is the same artifact, recorded with the first path it was read
at; the edge keeps the path each step read, and lineage shows it.

Existing rows get null: lineage then shows the artifact's own path, as before.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("uri", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("uri")
