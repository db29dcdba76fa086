"""Pages of runs for the team server: filters, a sort and keyset (cursor) pagination, in SQL.

Every value is a bound parameter; keys and operators come from closed sets. A page is found by walking
an index, never by counting or offsetting: the next page starts strictly after the last row's
``(sort value, id)``. A run's metric is its latest logged value of that key (as in ``search_runs``).
Sorting on a metric keeps only the runs that logged it.
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
from mloop.stores.sql.metadata import _run

__all__ = ["COMPARATORS", "RunPage", "RunPageQuery", "SqlRunPages"]

COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
}


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
    """Runs of one page, the sort metric's value of each (None when sorted by time), and the cursor."""

    runs: list[Run]
    sort_values: list[float | None]
    next_after: tuple[float | None, str] | None


def _latest(alias: Any) -> Any:
    newer = t.metrics.alias()
    return ~sa.exists().where(
        newer.c.run_id == alias.c.run_id, newer.c.key == alias.c.key, newer.c.id > alias.c.id
    )


class SqlRunPages:
    """Pages of runs over the metadata database of a workspace."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(self, query: RunPageQuery) -> RunPage:
        if not 1 <= query.limit <= 1000:
            raise ParameterError(f"limit must be 1 to 1000, got {query.limit}", field="limit")
        runs = t.runs
        values: dict[str, Any] = {}
        conditions: list[Any] = []
        for field_name in ("pipeline", "status", "trigger"):
            value = getattr(query, field_name)
            if value is not None:
                conditions.append(runs.c[field_name] == sa.bindparam(field_name))
                values[field_name] = value
        if query.since is not None:
            conditions.append(runs.c.created_at >= sa.bindparam("since", type_=t.UTCDateTime))
            values["since"] = query.since
        if query.until is not None:
            conditions.append(runs.c.created_at < sa.bindparam("until", type_=t.UTCDateTime))
            values["until"] = query.until
        # correlated EXISTS (not IN): the plan walks runs (or the sort metric's index) in page order and
        # stops at the page's end, instead of materialising every match of every condition first
        for i, (key, value) in enumerate(query.params):
            p = t.params.alias(f"pf{i}")
            conditions.append(
                sa.exists().where(
                    p.c.run_id == runs.c.id,
                    p.c.key == sa.bindparam(f"pk{i}"),
                    p.c.value == sa.bindparam(f"pv{i}"),
                    p.c.step_run_id.is_(None),
                )
            )
            values[f"pk{i}"] = key
            values[f"pv{i}"] = json.dumps(value, sort_keys=True, separators=(",", ":"))
        for i, (key, op, number) in enumerate(query.metrics):
            if op not in COMPARATORS:
                raise ParameterError(
                    f"metric operator {op!r} is not one of {sorted(COMPARATORS)}", field="where"
                )
            m = t.metrics.alias(f"mf{i}")
            latest = (  # the run's latest value of the key, found on the (run_id, key, id) index
                sa.select(m.c.value)
                .where(m.c.run_id == runs.c.id, m.c.key == sa.bindparam(f"mk{i}"))
                .order_by(m.c.id.desc())
                .limit(1)
                .correlate(runs)
                .scalar_subquery()
            )
            conditions.append(COMPARATORS[op](latest, sa.bindparam(f"mv{i}", type_=sa.Float)))
            values[f"mk{i}"], values[f"mv{i}"] = key, float(number)

        if query.sort_metric is None:
            stmt = sa.select(runs, sa.null().label("sort_value")).where(*conditions)
            if query.after is not None:
                cmp = (
                    runs.c.id < sa.bindparam("after_id")
                    if query.descending
                    else runs.c.id > sa.bindparam("after_id")
                )
                stmt = stmt.where(cmp)
                values["after_id"] = query.after[1]
            stmt = stmt.order_by(runs.c.id.desc() if query.descending else runs.c.id.asc())
        else:
            s = t.metrics.alias("ms")
            stmt = (
                sa.select(runs, s.c.value.label("sort_value"))
                .select_from(s.join(runs, runs.c.id == s.c.run_id))
                .where(s.c.key == sa.bindparam("sort_key"), _latest(s), *conditions)
            )
            values["sort_key"] = query.sort_metric
            if query.after is not None:
                value, after_id = query.after
                if value is None:
                    raise ParameterError("cursor does not belong to this sort", field="cursor")
                v = sa.bindparam("after_value", type_=sa.Float)
                a: Any = sa.bindparam("after_id")
                if query.descending:
                    stmt = stmt.where(sa.or_(s.c.value < v, sa.and_(s.c.value == v, s.c.run_id < a)))
                else:
                    stmt = stmt.where(sa.or_(s.c.value > v, sa.and_(s.c.value == v, s.c.run_id > a)))
                values["after_value"], values["after_id"] = float(value), after_id
            order = (s.c.value.desc(), s.c.run_id.desc()) if query.descending else (s.c.value, s.c.run_id)
            stmt = stmt.order_by(*order)
        stmt = stmt.limit(query.limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt, values).mappings().all()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        page_runs = [_run(r) for r in rows]
        sort_values = [r["sort_value"] for r in rows]
        next_after = (sort_values[-1], page_runs[-1].id) if more and rows else None
        return RunPage(page_runs, sort_values, next_after)
