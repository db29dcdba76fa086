"""Tables of the metadata store (SQLAlchemy Core).

Changes go through an Alembic migration, never ``create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = ["HEAD_REVISION", "VERSION_TABLE", "UTCDateTime", "metadata"]

# The newest Alembic revision this code knows; a database at another, unknown revision is newer.
HEAD_REVISION = "0013"
VERSION_TABLE = "mloop_schema_version"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out.

    PostgreSQL stores ``timestamptz``. SQLite has no datetime type: it stores fixed-width ISO-8601
    strings with microseconds and ``+00:00``, so text order is time order and reading back is a
    C-speed ``datetime.fromisoformat`` (the regex parser SQLAlchemy uses otherwise dominated
    run searches).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the metadata store; mloop stores UTC only")
        value = value.astimezone(UTC)
        return value.isoformat(timespec="microseconds") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is UTC:  # as both drivers give it back (fromisoformat, psycopg's session in UTC)
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(32)

runs = sa.Table(
    "runs",
    metadata,
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
    sa.Index(None, "pipeline", "created_at"),
    sa.Index(None, "status"),
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id"), nullable=False),
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
    sa.Index(None, "run_id"),
    sa.Index(None, "cache_key", "status"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("python_type", sa.String(200), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("step_run_id", ID, sa.ForeignKey("step_runs.id"), primary_key=True),
    sa.Column("artifact_id", ID, sa.ForeignKey("artifacts.id"), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("uri", sa.Text),  # where the step read a file input (a same-bytes copy: its own path)
    sa.Index(None, "artifact_id", "kind"),
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("step_run_id", ID),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", UTCDateTime, nullable=False),
    sa.Index(None, "run_id", "key", "id"),
    sa.Index(None, "key", "value"),
)

# A run's latest value of each metric (the last logged point), kept by log_metrics in the points'
# transaction (migration 0009). The runs page sorts and filters on it: one row per (run, key), and the
# (key, value, run_id) index is a metric's runs in page order, ties broken by id as the cursor is.
# No foreign key: the point inserted with it in the same transaction already checks the run.
latest_metrics = sa.Table(
    "latest_metrics",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", UTCDateTime, nullable=False),
    # When the row last changed, in commit order (see latest_metrics_seq; migration 0011): the team
    # server's in-memory index of this table reads only the rows changed since its last look.
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index(None, "key", "value", "run_id"),
    sa.Index(None, "seq"),
    sqlite_with_rowid=False,
)


def latest_metrics_seq(dialect: str) -> Any:
    """The ``seq`` a write to ``latest_metrics`` stamps on its rows, so that a reader can ask "what
    changed since I last looked" and miss nothing (``mloop.stores.sql.run_index`` relies on it):

    * SQLite: one more than the table's largest. Writers are serialised (``BEGIN IMMEDIATE``) and
      the subquery runs under the write lock, so seq grows in commit order.
    * PostgreSQL: the writing transaction's id (``pg_current_xact_id()``). Ids are not in commit
      order, so a reader keeps the oldest transaction still running when it last looked
      (``pg_snapshot_xmin``) and reads from there: no transaction with a smaller id can commit later.
    """
    if dialect == "postgresql":
        return sa.literal_column("pg_current_xact_id()::text::bigint", sa.BigInteger)
    table = latest_metrics.alias("newest")
    one, zero = sa.literal_column("1", sa.BigInteger), sa.literal_column("0", sa.BigInteger)
    return sa.select(sa.func.coalesce(sa.func.max(table.c.seq), zero) + one).scalar_subquery()


params = sa.Table(
    "params",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("step_run_id", ID),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index(None, "run_id"),
    sa.Index(None, "key", "value"),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_version", sa.Integer, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), sa.ForeignKey("models.name"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("artifact_id", ID, sa.ForeignKey("artifacts.id"), nullable=False),
    sa.Column("run_id", ID),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("name", "version"),
    sa.Index(None, "run_id"),  # which versions a run registered (a run's page)
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("name", sa.String(200), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

alias_events = sa.Table(
    "alias_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_version", sa.Integer),
    sa.Column("to_version", sa.Integer),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text),  # JSON: the numbers behind a move or a refusal (migration 0010)
    sa.Index(None, "name", "alias", "id"),
)

trigger_events = sa.Table(
    "trigger_events",
    metadata,
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
    sa.Column("owner", sa.String(200)),  # host:pid:random of the scheduler holding the event
    sa.Column("lease_until", UTCDateTime),  # renewed by its heartbeat; reclaimable once past
    sa.UniqueConstraint("trigger", "event_key"),
)

trigger_state = sa.Table(
    "trigger_state",
    metadata,
    sa.Column("trigger", sa.String(200), primary_key=True),
    sa.Column("evaluated_at", UTCDateTime),
    sa.Column("fired_at", UTCDateTime),
    sa.Column("next_due_at", UTCDateTime),
    sa.Column("last_result", sa.Text, nullable=False),
    sa.Column("watermark", sa.Text, nullable=False),
    sa.Column("locked_by", sa.String(200)),  # the scheduler evaluating the trigger right now
    sa.Column("locked_until", UTCDateTime),
    sa.Column("last_error", sa.Text),  # the latest failure, cleared by the next clean evaluation
)

# feature store (issue 16): definitions as versions, and each materialization into the online store
feature_definitions = sa.Table(
    "feature_definitions",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
)

feature_materializations = sa.Table(
    "feature_materializations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("view", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("start_at", UTCDateTime),
    sa.Column("end_at", UTCDateTime, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index(None, "view", "at"),
)

# team server (issue 18): tokens, of which only the sha256 is stored, and the audit trail
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", UTCDateTime),
)

audit_entries = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(500), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Index(None, "target"),
)

# pipeline versions and CI verdicts (issue 17; migration 0008) ------------------------------------

pipeline_versions = sa.Table(
    "pipeline_versions",
    metadata,
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
    sa.UniqueConstraint("name", "version"),
)

pipeline_aliases = sa.Table(
    "pipeline_aliases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

pipeline_alias_events = sa.Table(
    "pipeline_alias_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_version", sa.Integer),
    sa.Column("to_version", sa.Integer),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index(None, "name", "alias", "id"),
)

ci_results = sa.Table(
    "ci_results",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("pipeline", sa.String(500), nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Index(None, "code_hash", "id"),
)
