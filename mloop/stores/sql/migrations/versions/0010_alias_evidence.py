"""Evidence on alias-history events: the numbers behind a move or a refusal (JSON), e.g. the load
test that kept a candidate out of canary traffic (issue 17).

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alias_events") as batch:
        batch.add_column(sa.Column("evidence", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("alias_events") as batch:
        batch.drop_column("evidence")
