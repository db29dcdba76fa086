"""``model_versions.run_id`` indexed: a run's page asks which versions a run registered
(``ModelRegistry.versions_of_run``), which scanned the table.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_run_id", "model_versions")
