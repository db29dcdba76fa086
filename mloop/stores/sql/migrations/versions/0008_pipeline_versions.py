"""Pipeline versions (frozen snapshots, numbered per name), their aliases and alias history, and the
CI verdicts recorded per code hash (issue 17).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from mloop.stores.sql.schema import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.String(32)


def _serial() -> sa.Column:
    return sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )


def upgrade() -> None:
    op.create_table(
        "pipeline_versions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("entry", sa.String(500), nullable=False),
        sa.Column("snapshot_artifact_id", ID, nullable=False),
        sa.Column("snapshot_digest", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("git_dirty", sa.Boolean),
        sa.Column("python_version", sa.String(64), nullable=False),
        sa.Column("packages", sa.Text, nullable=False),
        sa.Column("ci", sa.Text),
        sa.Column("forced_reason", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_pipeline_versions_name_version"),
    )
    op.create_table(
        "pipeline_aliases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("alias", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "pipeline_alias_events",
        _serial(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_pipeline_alias_events_name_alias_id", "pipeline_alias_events", ["name", "alias", "id"]
    )
    op.create_table(
        "ci_results",
        _serial(),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(500), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_ci_results_code_hash_id", "ci_results", ["code_hash", "id"])


def downgrade() -> None:
    for table in ("ci_results", "pipeline_alias_events", "pipeline_aliases", "pipeline_versions"):
        op.drop_table(table)
