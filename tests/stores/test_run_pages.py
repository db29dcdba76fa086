"""Pages of runs (filters, metric sort, keyset cursor) on SQLite and PostgreSQL.

Every plan (sort-driven, bounded sort-driven giving way, filter-driven) must give exactly what a
brute-force reference computes from the points logged: random data with ties, runs without the metric,
correlated metrics, several latest-vs-older points, and pages walked by cursor without gaps or repeats.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import mloop
from mloop.entities import RunStatus, StepStatus
from mloop.stores.sql import schema as t
from mloop.stores.sql.engine import connect
from mloop.stores.sql.metadata import SqlMetadataStore
from mloop.stores.sql.run_index import LatestMetricsIndex
from mloop.stores.sql.run_pages import COMPARATORS, RunPageQuery, SqlRunPages

MIGRATIONS = Path(mloop.__file__).parent / "stores" / "sql" / "migrations"


def test_metric_sort_with_ties_pages_without_gaps_or_repeats(any_workspace: mloop.Workspace) -> None:
    ws = any_workspace
    for i in range(13):
        with ws.start_run("sweep", {"lr": 0.1 if i % 2 else 0.2}) as tr:
            tr.log_metric("acc", 0.0)  # overwritten: only the latest value counts
            tr.log_metric("acc", float(i % 4), step=1)
    pages = SqlRunPages(ws.metadata.engine)  # type: ignore[attr-defined]
    seen: list[tuple[float | None, str]] = []
    after = None
    while True:
        page = pages.page(RunPageQuery(sort_metric="acc", limit=4, after=after))
        seen += list(zip(page.sort_values, [r.id for r in page.runs], strict=True))
        after = page.next_after
        if after is None:
            break
    assert len(seen) == 13 and len({i for _, i in seen}) == 13
    assert seen == sorted(seen, reverse=True)
    filtered = pages.page(RunPageQuery(metrics=(("acc", ">=", 2.0),), params=(("lr", 0.1),), limit=50))
    assert filtered.runs and all(r.params["lr"] == 0.1 for r in filtered.runs)
    assert all(ws.metadata.get_metrics(r.id, "acc")[-1].value >= 2 for r in filtered.runs)
    assert len(filtered.runs) == sum(1 for i in range(13) if i % 2 and i % 4 >= 2)


# a brute-force reference over the points as logged ------------------------------------------------


@dataclass
class Logged:
    """What the test wrote: each run's attributes and its latest value of each metric."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest: dict[str, dict[str, float]] = field(default_factory=dict)

    def reference(self, q: RunPageQuery) -> list[tuple[float | None, str]]:
        rows = []
        for run_id, run in self.runs.items():
            metrics = self.latest.get(run_id, {})
            if any(
                getattr(q, f) is not None and run[f] != getattr(q, f)
                for f in ("pipeline", "status", "trigger")
            ):
                continue
            if any(run["params"].get(k, object()) != v for k, v in q.params):
                continue
            if not all(k in metrics and _passes(metrics[k], op, v) for k, op, v in q.metrics):
                continue
            if q.sort_metric is None:
                rows.append((None, run_id))
            elif q.sort_metric in metrics:
                rows.append((metrics[q.sort_metric], run_id))
        if q.sort_metric is None:
            return sorted(rows, key=lambda r: r[1], reverse=q.descending)
        return sorted(rows, key=lambda r: (r[0], r[1]), reverse=q.descending)


def _passes(value: float, op: str, number: float) -> bool:
    return bool(COMPARATORS[op](value, number))


def _fill(store: SqlMetadataStore, rng: random.Random, n: int) -> Logged:
    """n runs: ``a`` on a coarse grid (ties), ``b`` correlated with ``a`` (its best values fail
    ``a``'s high thresholds), ``c`` independent; some runs lack a metric; older points are overwritten;
    some points are logged by a step (the other write path)."""
    logged = Logged()
    for i in range(n):
        pipeline = "p" if i % 3 else "q"
        params = {"lr": [0.1, 0.2][i % 2], "kind": "x"}
        run = store.create_run(pipeline, params=params, trigger="manual", code_commit=None, code_hash="h")
        a = round(rng.random(), 1)
        values = {"a": a, "b": round((a + 0.55) % 1, 2), "c": rng.choice([0.0, 0.25, 0.5, 1.0, rng.random()])}
        for key in [k for k in values if rng.random() < 0.15]:
            del values[key]  # a run without the metric
        older = [(k, rng.random(), 0) for k in values if rng.random() < 0.5]
        if older:
            store.log_metrics(run.id, older)
        points = [(k, v, 1) for k, v in values.items()]
        if i % 4 == 0 and points:
            step = store.start_step(run.id, "train", cache_key=f"k{i}", params={}, inputs={})
            store.finish_step(step.id, StepStatus.SUCCEEDED, metrics=points)
        elif points:
            store.log_metrics(run.id, points)
        status = RunStatus.SUCCEEDED if i % 5 else RunStatus.FAILED
        store.finish_run(run.id, status)
        logged.runs[run.id] = {
            "pipeline": pipeline,
            "status": status.value,
            "trigger": "manual",
            "params": params,
        }
        logged.latest[run.id] = values
    return logged


def _walk(pages: SqlRunPages, q: RunPageQuery) -> tuple[list[tuple[float | None, str]], set[str]]:
    """Every page of ``q`` by cursor: (sort value, id) rows in order, and the plans used."""
    rows: list[tuple[float | None, str]] = []
    plans: set[str] = set()
    after = None
    for _ in range(1000):
        page = pages.page(replace(q, after=after))
        assert len(page.runs) <= q.limit
        rows += list(zip(page.sort_values, [r.id for r in page.runs], strict=True))
        plans.add(page.plan)
        after = page.next_after
        if after is None:
            return rows, plans
    raise AssertionError("pagination did not end")


def _queries(rng: random.Random) -> Iterator[RunPageQuery]:
    for _ in range(30):
        metrics = tuple(
            (rng.choice("abc"), rng.choice(list(COMPARATORS)), round(rng.random(), 1))
            for _ in range(rng.choice([0, 1, 1, 2]))
        )
        yield RunPageQuery(
            pipeline=rng.choice([None, None, "p", "q"]),
            status=rng.choice([None, None, "succeeded"]),
            params=rng.choice([(), (), (("lr", 0.1),)]),
            metrics=metrics,
            sort_metric=rng.choice([None, "a", "b", "c"]),
            descending=rng.random() < 0.7,
            limit=rng.choice([2, 7, 50]),
        )


# selective / walk budget: the default, always the filter's index, the sort's walk with a tiny budget
# (so it gives way often), and the unbounded sort walk
PLANS = {
    "default": {},
    "filter": {"selective": 10**9},
    "budget": {"selective": 0, "walk_budget": 4},
    "sort": {"selective": 0, "walk_budget": 10**9},
    # the in-memory index (a fresh one per query); with a budget of 4 proposals it often gives way
    "index": {"index": LatestMetricsIndex},
    "index-budget": {"index": LatestMetricsIndex, "walk_budget": 4},
}


def _pages(engine: sa.Engine, knobs: dict[str, Any]) -> SqlRunPages:
    return SqlRunPages(engine, **{k: v() if k == "index" else v for k, v in knobs.items()})


def test_every_plan_gives_the_reference_pages(any_workspace: mloop.Workspace) -> None:
    store: SqlMetadataStore = any_workspace.metadata  # type: ignore[assignment]
    rng = random.Random(18)
    logged = _fill(store, rng, 90)
    used: set[str] = set()
    for q in _queries(rng):
        expected = logged.reference(q)
        for name, knobs in PLANS.items():
            rows, plans = _walk(_pages(store.engine, knobs), q)
            assert rows == expected, (name, q)
            used |= plans
    assert used == {"sort", "filter", "index"}


def test_correlated_filter_gives_way_to_its_index(any_workspace: mloop.Workspace) -> None:
    """Sorting on ``b`` (best values where ``a`` is low) and keeping high ``a``: the sort's walk finds no
    match in its budget, so the filter's index serves the page, and it is the reference's page."""
    store: SqlMetadataStore = any_workspace.metadata  # type: ignore[assignment]
    logged = _fill(store, random.Random(7), 60)
    q = RunPageQuery(metrics=(("a", ">=", 0.5),), sort_metric="b", limit=5)
    pages = SqlRunPages(store.engine, selective=0, walk_budget=5)
    page = pages.page(q)
    assert page.plan == "filter"
    assert list(zip(page.sort_values, [r.id for r in page.runs], strict=True)) == logged.reference(q)[:5]
    # a selective filter drives the page from the start; an unselective one walks the sort's index
    assert SqlRunPages(store.engine, selective=10**9).page(q).plan == "filter"
    loose = RunPageQuery(metrics=(("a", ">=", 0.0),), sort_metric="b", limit=5)
    assert SqlRunPages(store.engine, selective=1, walk_budget=50).page(loose).plan == "sort"


def test_index_sees_new_changed_and_deleted_runs_at_once(any_workspace: mloop.Workspace) -> None:
    """The index is built once and then only brought up to date: a run logged, a value changed and a
    run deleted since its last look are each in the very next page, as the SQL plan has them."""
    store: SqlMetadataStore = any_workspace.metadata  # type: ignore[assignment]
    logged = _fill(store, random.Random(3), 40)
    pages = SqlRunPages(store.engine, index=LatestMetricsIndex())
    q = RunPageQuery(metrics=(("a", ">", 0.3),), sort_metric="b", limit=10)

    def check() -> None:
        page = pages.page(q)
        assert page.plan == "index"
        assert list(zip(page.sort_values, [r.id for r in page.runs], strict=True)) == logged.reference(q)[:10]

    check()
    new = store.create_run("p", params={}, trigger="manual", code_commit=None, code_hash="h").id
    store.log_metrics(new, [("a", 0.9, 0), ("b", 5.0, 0)])  # the best b: first on the page
    logged.runs[new] = {"pipeline": "p", "status": "running", "trigger": "manual", "params": {}}
    logged.latest[new] = {"a": 0.9, "b": 5.0}
    check()
    store.log_metrics(new, [("a", 0.1, 1)])  # no longer passes the filter
    logged.latest[new]["a"] = 0.1
    check()
    top = pages.page(q).runs[0].id
    with store.engine.begin() as conn:  # a run removed behind the index's back (no seq to read)
        for table in (t.latest_metrics, t.metrics, t.params):
            conn.execute(table.delete().where(table.c.run_id == top))
        conn.execute(t.step_runs.delete().where(t.step_runs.c.run_id == top))
        conn.execute(t.runs.delete().where(t.runs.c.id == top))
    del logged.runs[top]
    check()
    assert top not in [r.id for r in pages.page(q).runs]


@pytest.mark.parametrize("resort", [1, 10**6], ids=["resorted-often", "never-resorted"])
def test_a_long_lived_index_stays_exact_as_values_move(any_workspace: mloop.Workspace, resort: int) -> None:
    """One index serving many pages while runs are logged and values change between them: the sort
    orders it keeps (sorted again after ``resort`` moves, or never) give the reference pages, cursor
    walks included, every time."""
    store: SqlMetadataStore = any_workspace.metadata  # type: ignore[assignment]
    rng = random.Random(resort)
    logged = _fill(store, rng, 50)
    pages = SqlRunPages(store.engine, index=LatestMetricsIndex(resort=resort))
    for _ in range(12):
        for run_id in rng.sample(sorted(logged.runs), 4):  # values that move, often onto ties
            points = [(k, round(rng.random(), 1), 2) for k in rng.sample("abc", 2)]
            store.log_metrics(run_id, points)
            logged.latest.setdefault(run_id, {}).update({k: v for k, v, _ in points})
        if rng.random() < 0.5:  # a run that came after the orders were sorted
            new = store.create_run("p", params={}, trigger="manual", code_commit=None, code_hash="h").id
            values = {"a": round(rng.random(), 1), "b": rng.random()}
            store.log_metrics(new, [(k, v, 0) for k, v in values.items()])
            logged.runs[new] = {"pipeline": "p", "status": "running", "trigger": "manual", "params": {}}
            logged.latest[new] = values
        for q in [q for q in _queries(rng) if q.sort_metric is not None][:3]:
            rows, plans = _walk(pages, q)
            assert rows == logged.reference(q), q
            assert plans <= {"index", "sort", "filter"}


def test_index_waits_for_a_transaction_that_commits_late(any_workspace: mloop.Workspace) -> None:
    """PostgreSQL stamps rows with their transaction's id, which is not commit order: a transaction
    that began before the index looked and commits after must still be read by the next look."""
    store: SqlMetadataStore = any_workspace.metadata  # type: ignore[assignment]
    run = store.create_run("p", params={}, trigger="manual", code_commit=None, code_hash="h").id
    store.log_metrics(run, [("acc", 0.5, 0)])
    pages = SqlRunPages(store.engine, index=LatestMetricsIndex())
    q = RunPageQuery(sort_metric="acc", limit=5)
    assert [r.id for r in pages.page(q).runs] == [run]
    late = store.create_run("p", params={}, trigger="manual", code_commit=None, code_hash="h").id
    if store.engine.dialect.name == "sqlite":
        store.log_metrics(late, [("acc", 0.9, 0)])  # writers are serialised: nothing can commit late
    else:
        with store.engine.connect() as slow:
            tx = slow.begin()
            store._insert_metrics(slow, late, [("acc", 0.9, 0)], None)
            newer = store.create_run("p", params={}, trigger="manual", code_commit=None, code_hash="h").id
            store.log_metrics(newer, [("acc", 0.1, 0)])  # a later transaction commits first
            assert [r.id for r in pages.page(q).runs] == [run, newer]
            tx.commit()
    ids = [r.id for r in pages.page(q).runs]
    assert ids[0] == late and run in ids


def test_latest_value_follows_the_last_point_logged(any_workspace: mloop.Workspace) -> None:
    store: SqlMetadataStore = any_workspace.metadata  # type: ignore[assignment]
    run = store.create_run("p", params={}, trigger="manual", code_commit=None, code_hash="h").id
    store.log_metrics(run, [("acc", 0.9, 0), ("acc", 0.2, 1), ("loss", 1.0, 0)])
    store.log_metrics(run, [("acc", 0.4, 0)])  # an earlier step logged later still wins: the last point
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.latest_metrics.c.key, t.latest_metrics.c.value, t.latest_metrics.c.step).order_by(
                t.latest_metrics.c.key
            )
        ).all()
    assert [tuple(r) for r in rows] == [("acc", 0.4, 0), ("loss", 1.0, 0)]


def test_bad_queries_name_the_field(any_workspace: mloop.Workspace) -> None:
    pages = SqlRunPages(any_workspace.metadata.engine)  # type: ignore[attr-defined]
    with pytest.raises(mloop.ParameterError) as info:
        pages.page(RunPageQuery(limit=0))
    assert info.value.field == "limit"
    with pytest.raises(mloop.ParameterError) as info:
        pages.page(RunPageQuery(metrics=(("a", "~", 1.0),)))
    assert info.value.field == "where"
    with pytest.raises(mloop.ParameterError) as info:
        pages.page(RunPageQuery(sort_metric="a", after=(None, "01ABC")))
    assert info.value.field == "cursor"


# migration 0009 -----------------------------------------------------------------------------------


def _database_at(url: str, revision: str) -> sa.Engine:
    """An engine on a database whose schema stops at ``revision``, as an older mloop left it."""
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return engine


def test_migration_backfills_each_runs_last_point(metadata_url: str) -> None:
    engine = _database_at(metadata_url, "0008")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    points = [
        ("r1", "acc", 0.5),
        ("r1", "acc", 0.7),
        ("r1", "loss", 2.0),
        ("r2", "acc", 0.9),
        ("r2", "acc", 0.1),
        ("r1", "acc", 0.6),
        ("r3", "loss", 1.0),
    ]
    with engine.begin() as conn:
        conn.execute(
            t.runs.insert(),
            [
                {
                    "id": r,
                    "pipeline": "p",
                    "status": "succeeded",
                    "trigger": "manual",
                    "params": "{}",
                    "code_hash": "h",
                    "created_at": at,
                    "heartbeat_at": at,
                }
                for r in ("r1", "r2", "r3")
            ],
        )
        conn.execute(
            t.metrics.insert(),
            [
                {"run_id": r, "key": k, "value": v, "step": i, "timestamp": at}
                for i, (r, k, v) in enumerate(points)
            ],
        )
    engine.dispose()
    engine = connect(metadata_url)  # upgrades to head: 0009 creates and backfills latest_metrics
    with engine.connect() as conn:
        lm = t.latest_metrics.c
        rows = conn.execute(sa.select(lm.run_id, lm.key, lm.value, lm.step).order_by(lm.run_id, lm.key)).all()
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("latest_metrics")}
    assert [tuple(r) for r in rows] == [
        ("r1", "acc", 0.6, 5),
        ("r1", "loss", 2.0, 2),
        ("r2", "acc", 0.1, 4),
        ("r3", "loss", 1.0, 6),
    ]
    assert "ix_latest_metrics_key_value_run_id" in indexes
    page = SqlRunPages(engine).page(RunPageQuery(sort_metric="acc", limit=5))
    assert [(r.id, v) for r, v in zip(page.runs, page.sort_values, strict=True)] == [("r1", 0.6), ("r2", 0.1)]
    store = SqlMetadataStore(engine)  # the write path keeps the backfilled row current
    store.log_metrics("r2", [("acc", 0.95, 7)])
    assert SqlRunPages(engine).page(RunPageQuery(sort_metric="acc", limit=1)).runs[0].id == "r2"
    engine.dispose()


def test_database_errors_leave_as_mloop_errors(tmp_path: Path) -> None:
    """The runs page reads through the SQL stores' one base: a database without the tables (or gone)
    is an mloop error the API maps to a status, not SQLAlchemy's OperationalError (a 500)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(mloop.MloopError, match="metadata store"):
        SqlRunPages(engine).page(RunPageQuery())


def test_the_workspace_serves_the_pages(any_workspace: mloop.Workspace) -> None:
    """Callers (the team server) ask the workspace for a page, not a SQL engine behind its Protocol."""
    ws = any_workspace
    for i in range(3):
        with ws.start_run("sweep", {"i": i}) as tr:
            tr.log_metric("acc", float(i))
    query = RunPageQuery(pipeline="sweep", sort_metric="acc", limit=2)
    page = ws.run_page(query)
    direct = SqlRunPages(ws.metadata.engine).page(query)  # type: ignore[attr-defined]
    assert [r.id for r in page.runs] == [r.id for r in direct.runs]
    assert page.sort_values == [2.0, 1.0] and page.next_after is not None


# migration 0012 -----------------------------------------------------------------------------------


def test_migration_indexes_the_run_that_registered_each_version(metadata_url: str) -> None:
    """A database made before 0012 gets the index ``versions_of_run`` reads by, as a new one has."""
    engine = _database_at(metadata_url, "0011")
    assert "ix_model_versions_run_id" not in {
        i["name"] for i in sa.inspect(engine).get_indexes("model_versions")
    }
    engine.dispose()
    engine = connect(metadata_url)  # as a workspace opens its database: upgraded to the head
    assert "ix_model_versions_run_id" in {i["name"] for i in sa.inspect(engine).get_indexes("model_versions")}
    engine.dispose()


def test_migration_adds_where_each_input_was_read(metadata_url: str) -> None:
    """0013: events made before it have no path of their own (null: lineage shows the artifact's)."""
    engine = _database_at(metadata_url, "0012")
    assert "uri" not in {c["name"] for c in sa.inspect(engine).get_columns("events")}
    engine.dispose()
    engine = connect(metadata_url)
    assert "uri" in {c["name"] for c in sa.inspect(engine).get_columns("events")}
    engine.dispose()
