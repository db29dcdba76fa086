"""Initial schema: runs, step runs, artifacts, lineage events, metrics, params.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from mloop.stores.sql.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(32)
BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", ID, primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("code_commit", sa.String(80)),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("resumed_from", ID),
    )
    op.create_index("ix_runs_pipeline_created_at", "runs", ["pipeline", "created_at"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "step_runs",
        sa.Column("id", ID, primary_key=True),
        sa.Column("run_id", ID, sa.ForeignKey("runs.id", name="fk_step_runs_run_id_runs"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("cached_from", ID),
        sa.Column("error_type", sa.String(200)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_traceback", sa.Text),
    )
    op.create_index("ix_step_runs_run_id", "step_runs", ["run_id"])
    op.create_index("ix_step_runs_cache_key_status", "step_runs", ["cache_key", "status"])
    op.create_table(
        "artifacts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("python_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("digest", name="uq_artifacts_digest"),
    )
    op.create_table(
        "events",
        sa.Column(
            "step_run_id",
            ID,
            sa.ForeignKey("step_runs.id", name="fk_events_step_run_id_step_runs"),
            primary_key=True,
        ),
        sa.Column(
            "artifact_id",
            ID,
            sa.ForeignKey("artifacts.id", name="fk_events_artifact_id_artifacts"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
    )
    op.create_index("ix_events_artifact_id_kind", "events", ["artifact_id", "kind"])
    op.create_table(
        "metrics",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("run_id", ID, sa.ForeignKey("runs.id", name="fk_metrics_run_id_runs"), nullable=False),
        sa.Column("step_run_id", ID),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("timestamp", UTCDateTime, nullable=False),
    )
    op.create_index("ix_metrics_run_id_key_id", "metrics", ["run_id", "key", "id"])
    op.create_index("ix_metrics_key_value", "metrics", ["key", "value"])
    op.create_table(
        "params",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("run_id", ID, sa.ForeignKey("runs.id", name="fk_params_run_id_runs"), nullable=False),
        sa.Column("step_run_id", ID),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_params_run_id", "params", ["run_id"])
    op.create_index("ix_params_key_value", "params", ["key", "value"])


def downgrade() -> None:
    for table in ("params", "metrics", "events", "artifacts", "step_runs", "runs"):
        op.drop_table(table)
