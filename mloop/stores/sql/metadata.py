"""The metadata store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL.

Each public method is one short transaction. Writes go through the WRITE engine (``BEGIN IMMEDIATE``
on SQLite), reads through the plain one. Rows are turned into frozen entities before they leave.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import (
    ArtifactRef,
    Event,
    Metric,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
    new_id,
    utcnow,
)
from mloop.errors import MetadataStoreError, NotFoundError, ParameterError, StoreUnavailableError
from mloop.stores.base import NewArtifact, RunQuery
from mloop.stores.sql import schema as t
from mloop.stores.sql.base import SqlStore, dumps
from mloop.stores.sql.engine import connect, insert_ignoring_conflicts

__all__ = ["SqlMetadataStore"]

_COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    "=": lambda c, v: c == v,
    "==": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
}


_LATEST_KEY = ("run_id", "key")  # latest_metrics' primary key


def _canonical(value: Any) -> str:
    return dumps(value, canonical=True)  # params are compared by their encoding


class SqlMetadataStore(SqlStore):
    """Runs, step runs, artifacts, lineage events, metrics and params in one SQL database."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._metric_insert = _DriverInsert(engine, t.metrics)
        self._latest_upsert = _DriverInsert(
            engine, t.latest_metrics, statement=_latest_upsert(engine.dialect.name), computed=("seq",)
        )
        self._run_insert = _DriverInsert(engine, t.runs)
        self._param_insert = _DriverInsert(engine, t.params)
        self._sqlite = engine.dialect.name == "sqlite"
        self._driver_errors = _DriverInsert.errors_of(engine)
        self._search_statements: dict[tuple[Any, ...], sa.Select[Any]] = {}

    @classmethod
    def from_url(cls, url: str) -> SqlMetadataStore:
        """Connect to ``url`` and upgrade its schema (see :func:`mloop.stores.sql.engine.connect`)."""
        return cls(connect(url))

    def close(self) -> None:
        self.engine.dispose()

    # runs ---------------------------------------------------------------------------------------

    def create_run(
        self,
        pipeline: str,
        *,
        params: Mapping[str, Any],
        trigger: str,
        code_commit: str | None,
        code_hash: str,
        resumed_from: str | None = None,
    ) -> Run:
        now = self._clock()  # its first heartbeat: judged by other hosts against the same clock
        row: dict[str, Any] = {
            "id": new_id(),
            "pipeline": pipeline,
            "status": RunStatus.RUNNING.value,
            "trigger": trigger,
            "params": _canonical(dict(params)),
            "code_commit": code_commit,
            "code_hash": code_hash,
            "created_at": now,
            "heartbeat_at": now,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "resumed_from": resumed_from,
        }
        param_rows = [
            {"run_id": row["id"], "step_run_id": None, "key": k, "value": _canonical(v)}
            for k, v in params.items()
        ]
        self._driver_insert((self._run_insert, [dict(row)]), (self._param_insert, param_rows))
        return _run(row | {"ended_at": None, "error": None})

    def finish_run(self, run_id: str, status: RunStatus, error: str | None = None) -> Run:
        values = {"b_id": run_id, "b_status": status.value, "b_ended": utcnow(), "b_error": error}
        with self._write() as conn:
            row = conn.execute(_FINISH_RUN, values).mappings().first()
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found", field="run_id")
        return _run(row)

    def heartbeat(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                t.runs.update()
                .where(t.runs.c.id == run_id, t.runs.c.status == RunStatus.RUNNING.value)
                .values(heartbeat_at=self._clock(conn))
            )

    def get_run(self, run_id: str) -> Run:
        with self._read() as conn:
            row = conn.execute(sa.select(t.runs).where(t.runs.c.id == run_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found", field="run_id")
        return _run(row)

    def search_runs(self, query: RunQuery) -> list[Run]:
        """Runs matching every filter, newest first."""
        for key, op, _ in query.metrics:
            if op not in _COMPARATORS:
                raise ParameterError(
                    f"metric filter on {key!r}: operator {op!r} is not one of {sorted(_COMPARATORS)}",
                    field="metrics",
                )
        shape = (
            query.pipeline is not None,
            query.status is not None,
            len(query.params),
            tuple(op for _, op, _ in query.metrics),
            query.id_prefix is not None,
        )
        stmt = self._search_statements.get(shape)
        if stmt is None:
            stmt = self._search_statements[shape] = _search_statement(*shape)
        values: dict[str, Any] = {"limit": query.limit}
        if query.pipeline is not None:
            values["pipeline"] = query.pipeline
        if query.status is not None:
            values["status"] = RunStatus(query.status).value
        if query.id_prefix is not None:  # ids are ULIDs ([0-9A-Z]): no LIKE wildcard can be smuggled in
            values["id_prefix"] = "".join(c for c in query.id_prefix.upper() if c.isalnum()) + "%"
        for i, (key, value) in enumerate(query.params.items()):
            values[f"pk{i}"], values[f"pv{i}"] = key, _canonical(value)
        for i, (key, _, value) in enumerate(query.metrics):
            values[f"mk{i}"], values[f"mv{i}"] = key, float(value)
        with self._read() as conn:
            return [_run(r) for r in conn.execute(stmt, values).mappings()]

    def fail_stale_runs(
        self, *, host: str, is_alive: Callable[[int], bool], stale_after_s: float
    ) -> list[str]:
        """Mark failed every running run whose process is gone (same host) or whose heartbeat expired."""
        with self._read() as conn:
            cutoff = self._clock(conn) - timedelta(seconds=stale_after_s)
            rows = conn.execute(
                sa.select(t.runs.c.id, t.runs.c.host, t.runs.c.pid, t.runs.c.heartbeat_at).where(
                    t.runs.c.status == RunStatus.RUNNING.value
                )
            ).all()
        stale: list[tuple[str, str]] = []
        for run_id, run_host, pid, beat in rows:
            if run_host == host and pid is not None and not is_alive(pid):
                stale.append((run_id, f"process {pid} on {host} died while the run was running"))
            elif beat < cutoff:
                stale.append((run_id, f"no heartbeat since {beat} (stale after {stale_after_s:.0f}s)"))
        if not stale:
            return []
        now = utcnow()
        with self._write() as conn:
            for run_id, reason in stale:
                conn.execute(
                    t.runs.update()
                    .where(t.runs.c.id == run_id, t.runs.c.status == RunStatus.RUNNING.value)
                    .values(status=RunStatus.FAILED.value, ended_at=now, error=reason)
                )
                conn.execute(
                    t.step_runs.update()
                    .where(t.step_runs.c.run_id == run_id, t.step_runs.c.status == StepStatus.RUNNING.value)
                    .values(
                        status=StepStatus.FAILED.value,
                        ended_at=now,
                        error_type="StaleRun",
                        error_message=reason,
                    )
                )
        return [run_id for run_id, _ in stale]

    # steps --------------------------------------------------------------------------------------

    def start_step(
        self,
        run_id: str,
        name: str,
        *,
        cache_key: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
        input_uris: Mapping[str, str] | None = None,
    ) -> StepRun:
        row: dict[str, Any] = {
            "id": new_id(),
            "run_id": run_id,
            "name": name,
            "status": StepStatus.RUNNING.value,
            "cache_key": cache_key,
            "params": _canonical(dict(params)),
            "started_at": utcnow(),
        }
        with self._write() as conn:
            conn.execute(t.step_runs.insert(), row)
            self._link(conn, row["id"], "input", inputs, input_uris)
        return _step(row)

    def finish_step(
        self,
        step_run_id: str,
        status: StepStatus,
        *,
        outputs: Mapping[str, NewArtifact] | None = None,
        metrics: Sequence[tuple[str, float, int]] = (),
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, NewArtifact] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        error_traceback: str | None = None,
    ) -> dict[str, ArtifactRef]:
        """Close a step execution and, in one transaction, record its outputs, metrics and params,
        and the inputs the step reported reading besides its declared ones (``log_input``).

        Returns the recorded output artifacts by output name.
        """
        with self._write() as conn:
            run_id = conn.execute(
                t.step_runs.update()
                .where(t.step_runs.c.id == step_run_id)
                .values(
                    status=StepStatus(status).value,
                    ended_at=utcnow(),
                    error_type=error_type,
                    error_message=error_message,
                    error_traceback=error_traceback,
                )
                .returning(t.step_runs.c.run_id)
            ).scalar()
            if run_id is None:
                raise NotFoundError(f"step run {step_run_id!r} not found", field="step_run_id")
            refs = {name: self._upsert_artifact(conn, art) for name, art in (outputs or {}).items()}
            self._link(conn, step_run_id, "output", {name: ref.id for name, ref in refs.items()})
            used = {name: self._upsert_artifact(conn, art).id for name, art in (inputs or {}).items()}
            self._link(conn, step_run_id, "input", used)
            self._insert_metrics(conn, run_id, metrics, step_run_id)
            self._insert_params(conn, run_id, params or {}, step_run_id)
        return refs

    def record_cached_step(
        self,
        run_id: str,
        name: str,
        *,
        cache_key: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
        cached_from: str,
        outputs: Mapping[str, str],
        input_uris: Mapping[str, str] | None = None,
    ) -> StepRun:
        """A cache hit: a finished step run that re-links the outputs of ``cached_from``."""
        now = utcnow()
        row: dict[str, Any] = {
            "id": new_id(),
            "run_id": run_id,
            "name": name,
            "status": StepStatus.CACHED.value,
            "cache_key": cache_key,
            "params": _canonical(dict(params)),
            "started_at": now,
            "ended_at": now,
            "cached_from": cached_from,
        }
        with self._write() as conn:
            conn.execute(t.step_runs.insert(), row)
            self._link(conn, row["id"], "input", inputs, input_uris)
            self._link(conn, row["id"], "output", outputs)
        return _step(row)

    def find_cached(self, cache_key: str) -> tuple[StepRun, dict[str, ArtifactRef]] | None:
        """The newest succeeded execution with this cache key, and its outputs by name."""
        with self._read() as conn:
            row = (
                conn.execute(
                    sa.select(t.step_runs)
                    .where(
                        t.step_runs.c.cache_key == cache_key,
                        t.step_runs.c.status == StepStatus.SUCCEEDED.value,
                    )
                    .order_by(t.step_runs.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            outs = conn.execute(
                sa.select(t.events.c.name, t.artifacts)
                .join(t.artifacts, t.artifacts.c.id == t.events.c.artifact_id)
                .where(t.events.c.step_run_id == row["id"], t.events.c.kind == "output")
            ).mappings()
            return _step(row), {o["name"]: _artifact(o) for o in outs}

    def list_steps(self, run_id: str) -> list[StepRun]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.step_runs).where(t.step_runs.c.run_id == run_id).order_by(t.step_runs.c.id)
            ).mappings()
            return [_step(r) for r in rows]

    def get_step(self, step_run_id: str) -> StepRun:
        with self._read() as conn:
            row = (
                conn.execute(sa.select(t.step_runs).where(t.step_runs.c.id == step_run_id)).mappings().first()
            )
        if row is None:
            raise NotFoundError(f"step run {step_run_id!r} not found", field="step_run_id")
        return _step(row)

    # lineage ------------------------------------------------------------------------------------

    def add_artifact(self, artifact: NewArtifact) -> ArtifactRef:
        """Record an artifact; recording the same digest again returns the existing one."""
        with self._write() as conn:
            return self._upsert_artifact(conn, artifact)

    def get_artifact(self, artifact_id: str) -> ArtifactRef:
        with self._read() as conn:
            row = (
                conn.execute(
                    sa.select(t.artifacts).where(
                        sa.or_(t.artifacts.c.id == artifact_id, t.artifacts.c.digest == artifact_id)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"artifact {artifact_id!r} not found", field="artifact_id")
        return _artifact(row)

    def get_artifacts(self, artifact_ids: Sequence[str]) -> dict[str, ArtifactRef]:
        ids = list(dict.fromkeys(artifact_ids))
        found: dict[str, ArtifactRef] = {}
        with self._read() as conn:
            for lo in range(0, len(ids), 500):  # bounded IN lists: SQLite's variable limit
                chunk = ids[lo : lo + 500]
                for row in conn.execute(sa.select(t.artifacts).where(t.artifacts.c.id.in_(chunk))).mappings():
                    found[row["id"]] = _artifact(row)
        return found

    def find_artifacts(self, prefix: str, *, limit: int = 2) -> list[ArtifactRef]:
        # ids are ULIDs ([0-9A-Z]), digests hex ([0-9a-f]): keeping letters and digits leaves no LIKE wildcard
        clean = "".join(c for c in prefix if c.isalnum())
        if not clean:
            return []
        a = t.artifacts
        stmt = (
            sa.select(a)
            .where(sa.or_(a.c.id.like(clean.upper() + "%"), a.c.digest.like(clean.lower() + "%")))
            .order_by(a.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [_artifact(r) for r in conn.execute(stmt).mappings()]

    def events(
        self, *, step_run_ids: Sequence[str] = (), artifact_ids: Sequence[str] = (), kind: str | None = None
    ) -> list[Event]:
        stmt = sa.select(t.events)
        if step_run_ids:
            stmt = stmt.where(t.events.c.step_run_id.in_(list(step_run_ids)))
        if artifact_ids:
            stmt = stmt.where(t.events.c.artifact_id.in_(list(artifact_ids)))
        if kind is not None:
            stmt = stmt.where(t.events.c.kind == kind)
        with self._read() as conn:
            # the whole key: ties on step_run_id came back in whatever order the query plan gave
            stmt = stmt.order_by(*t.events.primary_key.columns)
            return [Event(**r) for r in conn.execute(stmt).mappings()]

    # metrics & params ---------------------------------------------------------------------------

    def log_metrics(
        self, run_id: str, metrics: Sequence[tuple[str, float, int]], *, step_run_id: str | None = None
    ) -> None:
        """Append metric points in one transaction, and make the last point of each key the run's
        latest value of it (``latest_metrics``, which the runs page sorts and filters on).

        This is the hottest write in mloop (training loops log per batch), so it skips SQLAlchemy's
        per-statement machinery: one INSERT compiled per dialect at construction, executed with
        ``executemany`` on the pooled driver connection, values passed through the columns' own bind
        processors so rows are identical to those written by the Core path.
        """
        rows = _metric_rows(run_id, metrics, step_run_id)
        if rows:
            self._driver_insert((self._metric_insert, rows), (self._latest_upsert, _latest_rows(rows)))

    def _driver_insert(self, *batches: tuple[_DriverInsert, list[dict[str, Any]]]) -> None:
        """Insert rows into several tables in one transaction, on a pooled driver connection."""
        dbapi_conn = self.engine.raw_connection()
        cursor = dbapi_conn.cursor()
        error, integrity_error = self._driver_errors
        try:
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            for insert, rows in batches:
                if rows:
                    cursor.executemany(insert.sql, [insert.params(row) for row in rows])
            dbapi_conn.commit()
        except error as exc:
            dbapi_conn.rollback()
            if isinstance(exc, integrity_error):
                raise MetadataStoreError(f"metadata store refused the write: {exc}") from exc
            raise StoreUnavailableError(f"metadata store unavailable: {exc}") from exc
        finally:
            cursor.close()
            dbapi_conn.close()  # back to the pool

    def log_params(self, run_id: str, params: Mapping[str, Any], *, step_run_id: str | None = None) -> None:
        with self._write() as conn:
            self._insert_params(conn, run_id, params, step_run_id)

    def get_metrics(self, run_id: str, key: str | None = None) -> list[Metric]:
        stmt = sa.select(t.metrics).where(t.metrics.c.run_id == run_id)
        if key is not None:
            stmt = stmt.where(t.metrics.c.key == key)
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(t.metrics.c.id)).mappings()
            return [
                Metric(
                    run_id=r["run_id"],
                    key=r["key"],
                    value=r["value"],
                    step=r["step"],
                    timestamp=r["timestamp"],
                    step_run_id=r["step_run_id"],
                )
                for r in rows
            ]

    def get_params(self, run_id: str) -> dict[str, Any]:
        """Params of a run: the run's own, then those steps logged (``step/key`` names)."""
        stmt = (
            sa.select(t.params.c.key, t.params.c.value, t.step_runs.c.name)
            .outerjoin(t.step_runs, t.step_runs.c.id == t.params.c.step_run_id)
            .where(t.params.c.run_id == run_id)
            .order_by(t.params.c.id)
        )
        with self._read() as conn:
            return {
                (f"{step}/{key}" if step else key): json.loads(value)
                for key, value, step in conn.execute(stmt)
            }

    # helpers ------------------------------------------------------------------------------------

    def _upsert_artifact(self, conn: sa.Connection, artifact: NewArtifact) -> ArtifactRef:
        values = {
            "id": new_id(),
            "digest": artifact.digest,
            "type": artifact.type,
            "python_type": artifact.python_type,
            "size": artifact.size,
            "uri": artifact.uri,
            "created_at": utcnow(),
        }
        row = conn.execute(_artifact_upsert(conn.dialect.name), values).mappings().one()
        return _artifact(row)

    @staticmethod
    def _link(
        conn: sa.Connection,
        step_run_id: str,
        kind: str,
        artifact_ids: Mapping[str, str],
        uris: Mapping[str, str] | None = None,
    ) -> None:
        if artifact_ids:
            conn.execute(
                t.events.insert(),
                [
                    {
                        "step_run_id": step_run_id,
                        "artifact_id": aid,
                        "kind": kind,
                        "name": name,
                        "uri": (uris or {}).get(name),
                    }
                    for name, aid in artifact_ids.items()
                ],
            )

    @staticmethod
    def _insert_metrics(
        conn: sa.Connection, run_id: str, metrics: Sequence[tuple[str, float, int]], step_run_id: str | None
    ) -> None:
        rows = _metric_rows(run_id, metrics, step_run_id)
        if rows:
            conn.execute(t.metrics.insert(), rows)
            conn.execute(_latest_upsert(conn.dialect.name), _latest_rows(rows))

    @staticmethod
    def _insert_params(
        conn: sa.Connection, run_id: str, params: Mapping[str, Any], step_run_id: str | None
    ) -> None:
        if not params:
            return
        rows = []
        for key, value in params.items():
            try:
                encoded = _canonical(value)
            except (TypeError, ValueError) as exc:
                raise ParameterError(
                    f"param {key!r}: value of type {type(value).__name__} is not JSON-serialisable", field=key
                ) from exc
            rows.append({"run_id": run_id, "step_run_id": step_run_id, "key": key, "value": encoded})
        conn.execute(t.params.insert(), rows)


_FINISH_RUN = (
    t.runs.update()
    .where(t.runs.c.id == sa.bindparam("b_id"))
    .values(status=sa.bindparam("b_status"), ended_at=sa.bindparam("b_ended"), error=sa.bindparam("b_error"))
    .returning(*t.runs.c)
)


def _search_statement(
    by_pipeline: bool, by_status: bool, n_params: int, metric_ops: tuple[str, ...], by_prefix: bool
) -> sa.Select[Any]:
    """The run search for one shape of query, with every value a bound parameter (built once)."""
    stmt = sa.select(t.runs)
    if by_prefix:
        stmt = stmt.where(t.runs.c.id.like(sa.bindparam("id_prefix")))
    if by_pipeline:
        stmt = stmt.where(t.runs.c.pipeline == sa.bindparam("pipeline"))
    if by_status:
        stmt = stmt.where(t.runs.c.status == sa.bindparam("status"))
    for i in range(n_params):
        # IN (not a correlated EXISTS) lets the planner start from the (key, value) index
        stmt = stmt.where(
            t.runs.c.id.in_(
                sa.select(t.params.c.run_id).where(
                    t.params.c.key == sa.bindparam(f"pk{i}"),
                    t.params.c.value == sa.bindparam(f"pv{i}"),
                    t.params.c.step_run_id.is_(None),
                )
            )
        )
    for i, op in enumerate(metric_ops):
        latest = t.latest_metrics.alias(f"lm{i}")  # the run's latest value of the key, by primary key
        stmt = stmt.where(
            sa.exists().where(
                latest.c.run_id == t.runs.c.id,
                latest.c.key == sa.bindparam(f"mk{i}"),
                _COMPARATORS[op](latest.c.value, sa.bindparam(f"mv{i}", type_=sa.Float)),
            )
        )
    return stmt.order_by(t.runs.c.created_at.desc(), t.runs.c.id.desc()).limit(sa.bindparam("limit"))


def _metric_rows(
    run_id: str, metrics: Sequence[tuple[str, float, int]], step_run_id: str | None
) -> list[dict[str, Any]]:
    now = utcnow()
    rows = []
    for key, value, step in metrics:
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"metric {key!r}: value {value!r} is not a number", field=key) from exc
        rows.append(
            {"run_id": run_id, "step_run_id": step_run_id, "key": key, "value": number, "step": int(step),
             "timestamp": now}
        )  # fmt: skip
    return rows


def _latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last point of each key (a batch may log a key several times), in key order: concurrent
    writers to one run then lock its rows in the same order (no deadlock on PostgreSQL)."""
    last = {row["key"]: row for row in rows}
    return [
        {k: last[key][k] for k in ("run_id", "key", "value", "step", "timestamp")} for key in sorted(last)
    ]


def _upsert(dialect: str, table: sa.Table, key: tuple[str, ...]) -> Any:
    """``INSERT … ON CONFLICT (key) DO UPDATE``: a row replaces the one with the same key."""
    insert = insert_ignoring_conflicts(dialect, table)
    return insert.on_conflict_do_update(
        index_elements=list(key),
        set_={c.key: insert.excluded[c.key] for c in table.columns if c.key not in key},
    )


@functools.cache
def _artifact_upsert(dialect: str) -> Any:
    """One statement whether the digest is new or known: a no-op update returns the stored row (DO
    NOTHING would return none), the one every later step links to. Built once per dialect: making
    ``excluded`` costs ~0.5 ms, and a run records every output of every step."""
    insert = insert_ignoring_conflicts(dialect, t.artifacts)
    return insert.on_conflict_do_update(
        index_elements=["digest"], set_={"digest": insert.excluded.digest}
    ).returning(*t.artifacts.c)


@functools.cache
def _latest_upsert(dialect: str) -> Any:
    """The upsert of a run's latest metric values, stamping each row's ``seq`` (when it changed)."""
    insert = insert_ignoring_conflicts(dialect, t.latest_metrics).values(seq=t.latest_metrics_seq(dialect))
    return insert.on_conflict_do_update(
        index_elements=list(_LATEST_KEY),
        set_={c: insert.excluded[c] for c in ("value", "step", "timestamp", "seq")},
    )


class _DriverInsert:
    """An INSERT into ``table`` compiled once for the engine's dialect, run on the driver directly;
    with ``upsert_on`` (the primary key's columns) a row replaces the one with the same key; or the
    given ``statement``, whose ``computed`` columns are SQL expressions rather than values.

    Every column is named (primary keys too, unless autoincremented) and values pass through the
    columns' bind processors, so rows equal those the Core path writes.
    """

    def __init__(
        self,
        engine: Engine,
        table: sa.Table,
        *,
        upsert_on: tuple[str, ...] = (),
        statement: Any = None,
        computed: tuple[str, ...] = (),
    ) -> None:
        dialect = engine.dialect
        columns = [
            c.key
            for c in table.columns
            if not (c.primary_key and c.autoincrement is True) and c.key not in computed
        ]
        if statement is None:
            statement = _upsert(dialect.name, table, upsert_on) if upsert_on else table.insert()
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        self.columns = columns
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or []) if compiled.positional else None
        processors = {c.key: c.type.bind_processor(dialect) for c in table.columns if c.key in columns}
        self.processors = {k: p for k, p in processors.items() if p is not None}

    @staticmethod
    def errors_of(engine: Engine) -> tuple[type[Exception], type[Exception]]:
        """The driver's base error and integrity error classes."""
        dbapi = engine.dialect.loaded_dbapi
        return dbapi.Error, dbapi.IntegrityError

    def params(self, row: dict[str, Any]) -> Any:
        full = {k: row.get(k) for k in self.columns}  # absent columns are NULL
        for key, process in self.processors.items():
            full[key] = process(full[key])
        return tuple(full[k] for k in self.order) if self.order is not None else full


def _run(row: Mapping[Any, Any]) -> Run:
    return Run(
        id=row["id"],
        pipeline=row["pipeline"],
        status=RunStatus(row["status"]),
        trigger=row["trigger"],
        params=json.loads(row["params"]),
        code_commit=row["code_commit"],
        code_hash=row["code_hash"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],  # a runs row, whole: by key (a row's .get is Mapping's slow one)
        error=row["error"],
        resumed_from=row["resumed_from"],
        host=row["host"],
        pid=row["pid"],
    )


def _step(row: Mapping[Any, Any]) -> StepRun:
    return StepRun(
        id=row["id"],
        run_id=row["run_id"],
        name=row["name"],
        status=StepStatus(row["status"]),
        cache_key=row["cache_key"],
        params=json.loads(row["params"]),
        started_at=row["started_at"],
        ended_at=row.get("ended_at"),
        cached_from=row.get("cached_from"),
        error_type=row.get("error_type"),
        error_message=row.get("error_message"),
        error_traceback=row.get("error_traceback"),
    )


def _artifact(row: Mapping[Any, Any]) -> ArtifactRef:
    return ArtifactRef(
        id=row["id"],
        digest=row["digest"],
        type=row["type"],
        python_type=row["python_type"],
        size=row["size"],
        uri=row["uri"],
        created_at=row["created_at"],
    )
