"""Pages of runs for the team server: filters, a sort and keyset (cursor) pagination, in SQL.

Every value is a bound parameter; keys and operators come from closed sets. A page is found by walking
an index, never by counting or offsetting everything: the next page starts strictly after the last
row's ``(sort value, id)``. A run's metric is its latest logged value of that key, read from
``latest_metrics`` (one row per run and key, kept by ``log_metrics``). Sorting on a metric keeps only
the runs that logged it; a metric filter keeps only the runs whose latest value passes it.

The plan is chosen per request, by selectivity, so that the cost does not depend on how the sort and
the filters happen to be correlated:

* **filter-driven** when a metric filter is selective (fewer than ``SELECTIVE`` runs pass it, by a
  bounded count on its index): read the runs passing it from the filter's ``(key, value, run_id)``
  index, look up each one's sort value and other conditions by primary key, keep the page's best.
  Cost: the filter's matches.
* **sort-driven** otherwise: walk the sort's index in page order (the metric's index, or the runs'
  primary key for creation time), probe each run's conditions, stop at the page's end. When the
  metrics are correlated (sort on one, filter on another that its best values fail), the matches can
  lie far down that order; so the walk is bounded to the first ``WALK_BUDGET`` entries of the order,
  and when those hold less than a page the page is read filter-driven after all. Cost: at most the
  budget plus the filter's matches (at most twice those), never the sort index's length.

Given a :class:`~mloop.stores.sql.run_index.LatestMetricsIndex` (the team server keeps one per
process), a page filtered or sorted on metrics is ordered from the index's in-memory columns instead,
and only the proposed runs are read, checked against every condition by the database (``index``
plan); the SQL plans above remain for everything else and when the index cannot fill a page.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import Run
from mloop.errors import ParameterError
from mloop.stores.sql import schema as t
from mloop.stores.sql.base import SqlStore
from mloop.stores.sql.engine import translate_errors
from mloop.stores.sql.metadata import _run
from mloop.stores.sql.run_index import LatestMetricsIndex

__all__ = ["COMPARATORS", "SELECTIVE", "WALK_BUDGET", "RunPage", "RunPageQuery", "SqlRunPages"]

COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
}
_RANGE_OPS = {">", ">=", "<", "<=", "="}  # a filter with one of these is a range of its index

# A filter that fewer runs pass drives the page: reading its m matches beats walking the sort order
# (about page × runs / m entries when the two are independent) below m ≈ sqrt(page × runs); 4,000 is
# that point for pages of 50 among ~300,000 runs, and a count up to it costs a fraction of a page.
SELECTIVE = 4_000
# Entries of the sort order a sort-driven page walks at most before it gives way to the filter. Equal to
# SELECTIVE, so that giving way costs at most as much again as the filter-driven plan: a page never
# costs more than twice the cheaper plan's reads, however the metrics are correlated.
WALK_BUDGET = SELECTIVE


@dataclass(frozen=True, slots=True)
class RunPageQuery:
    """Which runs, in which order, from where. ``sort_metric`` None sorts by creation time."""

    pipeline: str | None = None
    status: str | None = None
    trigger: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    metrics: tuple[tuple[str, str, float], ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    sort_metric: str | None = None
    descending: bool = True
    limit: int = 50
    after: tuple[float | None, str] | None = None  # (sort value, id) of the previous page's last row


@dataclass(frozen=True, slots=True)
class RunPage:
    """Runs of one page, the sort metric's value of each (None when sorted by time), the cursor, and
    the plan that found it (``sort``, ``filter`` or ``index``: for tests and benchmarks)."""

    runs: list[Run]
    sort_values: list[float | None]
    next_after: tuple[float | None, str] | None
    plan: str = "sort"


class _Statement:
    """One page query under construction: its bound values and the conditions on a run id column."""

    def __init__(self, query: RunPageQuery, selective: int, walk_budget: int) -> None:
        self.query = query
        self.selective, self.walk_budget = selective, walk_budget
        self.values: dict[str, Any] = {"limit": query.limit + 1}
        if query.sort_metric is not None:
            self.values["sort_key"] = query.sort_metric
        for field_name in ("pipeline", "status", "trigger", "since", "until"):
            if getattr(query, field_name) is not None:
                self.values[field_name] = getattr(query, field_name)
        for i, (key, value) in enumerate(query.params):
            self.values[f"pk{i}"] = key
            self.values[f"pv{i}"] = json.dumps(value, sort_keys=True, separators=(",", ":"))
        for i, (key, _, number) in enumerate(query.metrics):
            self.values[f"mk{i}"], self.values[f"mv{i}"] = key, float(number)
        if query.after is not None:
            self.values["after_value"], self.values["after_id"] = query.after

    def run_conditions(self, runs: Any) -> list[Any]:
        """Conditions on the runs table's own columns."""
        q, out = self.query, []
        for field_name in ("pipeline", "status", "trigger"):
            if getattr(q, field_name) is not None:
                out.append(runs.c[field_name] == sa.bindparam(field_name))
        if q.since is not None:
            out.append(runs.c.created_at >= sa.bindparam("since", type_=t.UTCDateTime))
        if q.until is not None:
            out.append(runs.c.created_at < sa.bindparam("until", type_=t.UTCDateTime))
        return out

    def probes(
        self,
        run_id: Any,
        *,
        skip_metric: int | None = None,
        with_runs: bool = True,
        with_metrics: bool = True,
    ) -> list[Any]:
        """Conditions on the run whose id is ``run_id``, each a primary-key or index probe."""
        out: list[Any] = []
        if with_runs and (conditions := self.run_conditions(t.runs)):
            out.append(sa.exists().where(t.runs.c.id == run_id, *conditions))
        for i in range(len(self.query.params)):
            p = t.params.alias(f"pf{i}")
            out.append(
                sa.exists().where(
                    p.c.run_id == run_id,
                    p.c.key == sa.bindparam(f"pk{i}"),
                    p.c.value == sa.bindparam(f"pv{i}"),
                    p.c.step_run_id.is_(None),
                )
            )
        for i, (_, op, _) in enumerate(self.query.metrics if with_metrics else ()):
            if i != skip_metric:
                f = t.latest_metrics.alias(f"mf{i}")
                out.append(
                    sa.exists().where(
                        f.c.run_id == run_id, f.c.key == sa.bindparam(f"mk{i}"), _metric_test(f, i, op)
                    )
                )
        return out

    def after(self, value: Any, run_id: Any) -> list[Any]:
        """Strictly after the previous page's last row, in page order."""
        q = self.query
        if q.after is None:
            return []
        a: Any = sa.bindparam("after_id")
        if value is None:
            return [run_id < a if q.descending else run_id > a]
        v = sa.bindparam("after_value", type_=sa.Float)
        if q.descending:
            return [sa.or_(value < v, sa.and_(value == v, run_id < a))]
        return [sa.or_(value > v, sa.and_(value == v, run_id > a))]

    def order(self, value: Any, run_id: Any) -> list[Any]:
        columns = [run_id] if value is None else [value, run_id]
        return [c.desc() for c in columns] if self.query.descending else columns

    def sort_source(self) -> tuple[Any, Any, Any, list[Any]]:
        """(FROM, sort value column or None, run id column, conditions) of the sort's own index."""
        if self.query.sort_metric is None:
            return t.runs, None, t.runs.c.id, self.run_conditions(t.runs)
        s = t.latest_metrics.alias("s")
        return s, s.c.value, s.c.run_id, [s.c.key == sa.bindparam("sort_key")]

    def sort_driven(self, *, bounded: bool = False) -> sa.Select[Any]:
        """Walk the sort's index in page order, probing each run (``bounded``: down to ``:floor``)."""
        source, value, run_id, own = self.sort_source()
        conditions = own + self.after(value, run_id)
        if bounded:
            bound = value if value is not None else run_id
            floor = sa.bindparam("floor", type_=bound.type)
            conditions.append(bound >= floor if self.query.descending else bound <= floor)
        conditions += self.probes(run_id, with_runs=self.query.sort_metric is not None)
        return (
            sa.select(run_id.label("run_id"), (value if value is not None else sa.null()).label("sort_value"))
            .select_from(source)
            .where(*conditions)
            .order_by(*self.order(value, run_id))
            .limit(sa.bindparam("limit"))
        )

    def walk_floor(self) -> sa.Select[Any]:
        """The sort value (or id) ``walk_budget`` entries down the order from the cursor: an index-only
        walk that bounds the sort-driven plan."""
        source, value, run_id, own = self.sort_source()
        bound = value if value is not None else run_id
        own = own if self.query.sort_metric is not None else []  # the runs' own conditions are no bound
        return (
            sa.select(bound)
            .select_from(source)
            .where(*own, *self.after(value, run_id))
            .order_by(*self.order(value, run_id))
            .offset(self.walk_budget)
            .limit(1)
        )

    def filter_driven(self, driver: int) -> sa.Select[Any]:
        """Read the runs passing metric filter ``driver`` from its index; sort them."""
        _, op, _ = self.query.metrics[driver]
        d = t.latest_metrics.alias("d")
        conditions = [d.c.key == sa.bindparam(f"mk{driver}"), _metric_test(d, driver, op)]
        source: Any = d
        value: Any = None
        sort_value: Any = sa.null()
        if self.query.sort_metric is not None:
            s = t.latest_metrics.alias("s")
            source = d.join(s, sa.and_(s.c.run_id == d.c.run_id, s.c.key == sa.bindparam("sort_key")))
            sort_value = s.c.value
            # ordering on an expression, not the column, keeps a planner (PostgreSQL's, with LIMIT) from
            # walking the sort's index instead, which is the correlation trap this plan exists to avoid
            value = s.c.value + sa.literal_column("0")
        conditions += self.after(value, d.c.run_id) + self.probes(d.c.run_id, skip_metric=driver)
        return (
            sa.select(d.c.run_id.label("run_id"), sort_value.label("sort_value"))
            .select_from(source)
            .where(*conditions)
            .order_by(*self.order(value, d.c.run_id))
            .limit(sa.bindparam("limit"))
        )

    def membership_walk(self, driver: int) -> sa.Select[Any]:
        """The filter-driven plan for SQLite, which has no hash join: the runs passing metric filter
        ``driver`` are read once from its index into an in-memory set (``IN (subquery)``), and the sort
        metric's index is walked in page order against that set. Both read index entries in order,
        several times cheaper than a primary-key probe per match. (PostgreSQL would plan this as the
        sort-driven walk with a probe per run, the correlation trap; it hash-joins ``filter_driven``.)
        """
        _, op, _ = self.query.metrics[driver]
        d = t.latest_metrics.alias("d")
        members = sa.select(d.c.run_id).where(
            d.c.key == sa.bindparam(f"mk{driver}"), _metric_test(d, driver, op)
        )
        s = t.latest_metrics.alias("s")
        conditions = [
            s.c.key == sa.bindparam("sort_key"),
            s.c.run_id.in_(members),
            *self.after(s.c.value, s.c.run_id),
            *self.probes(s.c.run_id, skip_metric=driver),
        ]
        return (
            sa.select(s.c.run_id.label("run_id"), s.c.value.label("sort_value"))
            .where(*conditions)
            .order_by(*self.order(s.c.value, s.c.run_id))
            .limit(sa.bindparam("limit"))
        )

    def candidates_shape(self, keys: list[str]) -> tuple[Any, ...]:
        """What :meth:`candidates` depends on (every value in it is bound): equal shapes, equal SQL."""
        q = self.query
        present = tuple(
            getattr(q, f) is not None for f in ("pipeline", "status", "trigger", "since", "until")
        )
        return present, len(q.params), len(keys)

    def candidates(self, keys: list[str], dialect: str) -> sa.Select[Any]:
        """The runs ``:ids`` (those the index proposes): each run's row, whether it meets the
        conditions the index does not hold (``ok``: pipeline, status, trigger, time, params), and the
        database's latest value of each of ``keys`` (``v0``, ``v1``, … bound as ``vk0``, …).

        ``:ids`` is one value, a JSON list, not one placeholder per id: the SQL text is then the same
        for every page, so it is not rendered again per page and PostgreSQL prepares it (a JSON list
        also costs the driver less to send than an array)."""
        r = t.runs
        conditions = self.run_conditions(r) + self.probes(r.c.id, with_runs=False, with_metrics=False)
        ok = sa.case((sa.and_(*conditions), 1), else_=0) if conditions else sa.literal_column("1")
        values = []
        for j in range(len(keys)):
            lm = t.latest_metrics.alias(f"v{j}")
            value = sa.select(lm.c.value).where(lm.c.run_id == r.c.id, lm.c.key == sa.bindparam(f"vk{j}"))
            values.append(value.scalar_subquery().label(f"v{j}"))
        ids = sa.bindparam("ids", type_=sa.Text)  # a JSON list of the ids
        if dialect == "postgresql":
            among = r.c.id.in_(sa.select(sa.func.json_array_elements_text(sa.cast(ids, sa.JSON))))
        else:
            among = r.c.id.in_(sa.select(sa.column("value")).select_from(sa.func.json_each(ids)))
        columns = [c for c in r.c if c.name != "heartbeat_at"]  # all a Run is made of
        return sa.select(*columns, ok.label("ok"), *values).where(among)

    def matches(self, i: int) -> sa.Select[Any]:
        """How many runs pass metric filter ``i``, counted on its index up to ``selective``."""
        _, op, _ = self.query.metrics[i]
        f = t.latest_metrics.alias("c")
        inner = sa.select(sa.literal(1)).where(f.c.key == sa.bindparam(f"mk{i}"), _metric_test(f, i, op))
        return sa.select(sa.func.count()).select_from(inner.limit(self.selective).subquery())


def _metric_test(alias: Any, i: int, op: str) -> Any:
    return COMPARATORS[op](alias.c.value, sa.bindparam(f"mv{i}", type_=sa.Float))


class SqlRunPages(SqlStore):
    """Pages of runs over the metadata database of a workspace (the thresholds of the plan choice
    can be set, so that tests reach every plan with little data). Database errors leave as mloop's,
    as from every SQL store."""

    def __init__(
        self,
        engine: Engine,
        *,
        selective: int = SELECTIVE,
        walk_budget: int = WALK_BUDGET,
        index: LatestMetricsIndex | None = None,
    ) -> None:
        super().__init__(engine)
        self.selective = selective
        self.walk_budget = walk_budget
        self.index = index
        # the index plan's statements by shape: building one costs as much as running it, and a
        # statement object used again also keeps SQLAlchemy's cache key of it
        self._candidates: dict[tuple[Any, ...], sa.Select[Any]] = {}
        postgres = engine.dialect.name == "postgresql"
        self._statement_reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else engine
        )

    def page(self, query: RunPageQuery) -> RunPage:
        if not 1 <= query.limit <= 1000:
            raise ParameterError(f"limit must be 1 to 1000, got {query.limit}", field="limit")
        for _, op, _ in query.metrics:
            if op not in COMPARATORS:
                raise ParameterError(
                    f"metric operator {op!r} is not one of {sorted(COMPARATORS)}", field="where"
                )
        if query.after is not None and query.sort_metric is not None and query.after[0] is None:
            raise ParameterError("cursor does not belong to this sort", field="cursor")
        st = _Statement(query, self.selective, self.walk_budget)
        found = None
        if self.index is not None and (query.sort_metric is not None or query.metrics):
            # each of its statements is whole on its own (a run is read with its values and
            # conditions in one), so no transaction is needed: on PostgreSQL, no BEGIN and ROLLBACK
            with translate_errors(self.store_name), self._statement_reader.connect() as conn:
                found = self._indexed(conn, st, self.index)
        if found is not None:
            keys, rows = found
            plan = "index"
        else:
            with self._read() as conn:  # several statements that must agree: one transaction
                keys, plan = self._keys(conn, st)
                rows = self._runs(conn, [run_id for run_id, _ in keys[: query.limit]])
        more = len(keys) > query.limit
        keys = keys[: query.limit]
        runs = [_run(rows[run_id]) for run_id, _ in keys]
        sort_values = [value for _, value in keys]
        next_after = (sort_values[-1], runs[-1].id) if more and keys else None
        return RunPage(runs, sort_values, next_after, plan)

    def _indexed(
        self, conn: sa.Connection, st: _Statement, index: LatestMetricsIndex
    ) -> tuple[list[tuple[str, float | None]], dict[str, Any]] | None:
        """The page's (run id, sort value) and rows, in the order the index gives and with the
        membership the database gives; None when the conditions the index does not hold left fewer
        than a page among ``walk_budget`` proposals (the SQL plan then reads the page)."""
        q = st.query
        keys = list(dict.fromkeys([k for k, _, _ in q.metrics] + ([q.sort_metric] if q.sort_metric else [])))
        index.refresh(conn, keys)
        shape = st.candidates_shape(keys)
        statement = self._candidates.get(shape)
        if statement is None:
            if len(self._candidates) >= 256:  # shapes are few in practice; bound them anyway
                self._candidates.clear()
            statement = self._candidates[shape] = st.candidates(keys, conn.dialect.name)
        key_values = {f"vk{j}": key for j, key in enumerate(keys)}
        for _ in range(3):  # a value corrected under the page's feet: compute it again, at most twice
            found: list[tuple[str, float | None]] = []
            rows: dict[str, Any] = {}
            after, count, proposed, stale = q.after, q.limit + 1, 0, False
            while True:
                proposals = index.order(q.metrics, q.sort_metric, q.descending, after, count)
                ids = [run_id for run_id, _ in proposals]
                db = {
                    r["id"]: r
                    for r in conn.execute(
                        statement, st.values | key_values | {"ids": json.dumps(ids)}
                    ).mappings()
                }
                truth = {
                    run_id: {
                        key: (db[run_id][f"v{j}"] if run_id in db else None) for j, key in enumerate(keys)
                    }
                    for run_id in ids
                }
                if index.correct(truth):
                    stale = True
                    break
                for run_id, value in proposals:
                    if run_id in db and db[run_id]["ok"]:
                        found.append((run_id, value))
                        rows[run_id] = db[run_id]
                proposed += len(proposals)
                if len(found) > q.limit or len(proposals) < count:
                    return found[: q.limit + 1], rows
                if proposed >= self.walk_budget:
                    return None
                last_id, last_value = proposals[-1]
                after, count = (last_value, last_id), min(4 * count, self.walk_budget)
            if not stale:
                break
        return None

    @staticmethod
    def _keys(conn: sa.Connection, st: _Statement) -> tuple[list[tuple[str, float | None]], str]:
        """(run id, sort value) of the page's rows and one more, in page order; and the plan used."""

        def run(stmt: sa.Select[Any], **extra: Any) -> list[tuple[str, float | None]]:
            return [(r[0], r[1]) for r in conn.execute(stmt, st.values | extra)]

        drivers = [i for i, (_, op, _) in enumerate(st.query.metrics) if op in _RANGE_OPS]
        if not drivers:
            return run(st.sort_driven()), "sort"
        counts = {i: conn.execute(st.matches(i), st.values).scalar_one() for i in drivers}
        driver = min(drivers, key=lambda i: counts[i])
        if counts[driver] < st.selective:
            return run(st.filter_driven(driver)), "filter"
        floor = conn.execute(st.walk_floor(), st.values).scalar()
        if floor is None:  # the rest of the order is shorter than the budget: walk all of it
            return run(st.sort_driven()), "sort"
        keys = run(st.sort_driven(bounded=True), floor=floor)
        if len(keys) > st.query.limit:
            return keys, "sort"
        if st.query.sort_metric is not None and conn.dialect.name == "sqlite":
            return run(st.membership_walk(driver)), "filter"
        return run(st.filter_driven(driver)), "filter"

    @staticmethod
    def _runs(conn: sa.Connection, ids: list[str]) -> dict[str, Any]:
        if not ids:
            return {}
        stmt = sa.select(t.runs).where(t.runs.c.id.in_(sa.bindparam("ids", expanding=True)))
        return {r["id"]: r for r in conn.execute(stmt, {"ids": ids}).mappings()}
