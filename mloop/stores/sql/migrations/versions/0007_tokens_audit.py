"""Team server: API tokens (only their sha256 is stored) and the audit trail of every write.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from mloop.stores.sql.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", ID, primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_entries_target", "audit_entries", ["target"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_target", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_table("api_tokens")
