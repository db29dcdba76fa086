"""Point-in-time correct joins of entity rows with feature views, executed by DuckDB.

For each entity row and each view: the latest feature row with the same join keys whose event time is
≤ the row's timestamp and ≥ that timestamp minus the view's TTL (both bounds inclusive), ties on event
time broken by the view's created column (latest wins); no such row → nulls. Every entity row comes
back exactly once, in input order, duplicates included (Feast drops rows with no match; we do not).

DuckDB's ``ASOF LEFT JOIN`` streams the Parquet sources and spills to disk, so entity and feature data
larger than memory still join.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from mloop.errors import DataError, NotFoundError
from mloop.features.definitions import FeatureView
from mloop.features.sources import SqlSource, register_filesystem, sql_table

__all__ = ["connect", "describe", "historical", "latest_rows", "relation", "resolve_view", "source_sql"]

ROW = "__mloop_row"
_TIME_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")


def connect(temp_dir: str | Path | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC (timestamps with a zone compare as instants), spilling to ``temp_dir``."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if temp_dir is not None:
        con.execute(f"SET temp_directory = {_lit(str(temp_dir))}")
    limit = memory_limit or os.environ.get("MLOOP_DUCKDB_MEMORY_LIMIT")
    if limit:
        con.execute(f"SET memory_limit = {_lit(limit)}")
    return con


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def source_sql(source: str) -> str:
    """The DuckDB table function reading a view's source: a Parquet/CSV file, folder or glob."""
    path = source[len("file://") :] if source.startswith("file://") else source
    if "://" not in path and not any(c in path for c in "*?["):
        p = Path(path)
        if not p.exists():
            raise NotFoundError(f"feature source {source} does not exist", field="source")
        if p.is_dir():
            parquet = any(p.rglob("*.parquet"))
            path = str(p / "**" / ("*.parquet" if parquet else "*.csv"))
    if path.endswith((".csv", ".csv.gz")) or path.endswith("*.csv"):
        return f"read_csv({_lit(path)}, header = true)"
    return f"read_parquet({_lit(path)})"


def relation(con: duckdb.DuckDBPyConnection, view: FeatureView) -> str:
    """What a query reads ``view``'s rows from, on ``con``: a table function over its files (local or
    through fsspec), or the temporary table a SQL source was loaded into."""
    if isinstance(view.source, SqlSource):
        times = (view.timestamp,) + ((view.created,) if view.created else ())
        return sql_table(con, view.source, view.name, times)
    register_filesystem(con, view.source)
    return _microseconds(con, source_sql(view.source))


_NS_TYPES = {"TIMESTAMP_NS": "TIMESTAMP", "TIMESTAMPTZ_NS": "TIMESTAMP WITH TIME ZONE"}


def _microseconds(con: duckdb.DuckDBPyConnection, table_sql: str) -> str:
    """``table_sql`` with nanosecond timestamps (pandas' default in Parquet) read as microseconds, the
    precision every other timestamp here has, so they join and compare like any other."""
    try:
        kinds = con.execute(f"DESCRIBE SELECT * FROM {table_sql}").fetchall()
    except duckdb.Error:
        return table_sql  # the caller's own read reports what is wrong with the source
    casts = [
        f"CAST({_q(str(r[0]))} AS {_NS_TYPES[str(r[1])]}) AS {_q(str(r[0]))}"
        for r in kinds
        if str(r[1]) in _NS_TYPES
    ]
    if not casts:
        return table_sql
    return f"(SELECT * REPLACE ({', '.join(casts)}) FROM {table_sql})"


def describe(con: duckdb.DuckDBPyConnection, relation_sql: str, what: str) -> dict[str, str]:
    """Column name → DuckDB type of a relation, translating read errors into :class:`DataError`."""
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {relation_sql}").fetchall()
    except duckdb.Error as exc:
        raise DataError(f"cannot read {what}: {_first_line(exc)}", field="source") from exc
    return {str(r[0]): str(r[1]) for r in rows}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _zone(kind: str) -> str:
    return "aware" if kind == "TIMESTAMP WITH TIME ZONE" else "naive"


def resolve_view(con: duckdb.DuckDBPyConnection, view: FeatureView) -> tuple[FeatureView, dict[str, str]]:
    """The view with its feature list filled in from the source, checked against the source's columns."""
    columns = describe(con, relation(con, view), f"feature view {view.name!r} source {view.source}")
    if view.timestamp not in columns:
        raise DataError(
            f"feature view {view.name!r}: source {view.source} has no timestamp column {view.timestamp!r}",
            field="timestamp",
        )
    if columns[view.timestamp] not in _TIME_TYPES:
        raise DataError(
            f"feature view {view.name!r}: column {view.timestamp!r} is {columns[view.timestamp]}, "
            "not a timestamp",
            field="timestamp",
        )
    for col, what in [(k, "join key") for k in view.join_keys] + [(view.created, "created column")]:
        if col is not None and col not in columns:
            raise DataError(
                f"feature view {view.name!r}: source {view.source} has no {what} {col!r}", field=col
            )
    reserved = {view.timestamp, view.created, *view.join_keys}
    keyed = [f for f in view.features or () if f in reserved]
    if keyed:
        raise DataError(
            f"feature view {view.name!r}: {keyed[0]!r} is a join key or timestamp, not a feature",
            field="features",
        )
    # pandas writes its index as __index_level_0__ when a frame's index is not a plain range
    features = view.features or tuple(c for c in columns if c not in reserved and not _pandas_index(c))
    missing = [f for f in features if f not in columns]
    if missing:
        raise NotFoundError(
            f"feature view {view.name!r}: source {view.source} has no column(s) {', '.join(missing)}",
            field="features",
        )
    if not features:
        raise DataError(f"feature view {view.name!r}: source has no feature columns", field="features")
    return FeatureView(
        view.name, view.entities, view.source, view.timestamp, view.ttl, features, view.created
    ), columns


def _pandas_index(column: str) -> bool:
    return column.startswith("__index_level_") and column.endswith("__")


def _entity_relation(
    con: duckdb.DuckDBPyConnection, entities: pd.DataFrame | str | Path, timestamp_col: str
) -> tuple[str, dict[str, str]]:
    """Register the entity rows with a row number that records input order."""
    if isinstance(entities, pd.DataFrame):
        frame = entities.reset_index(drop=True)
        if ROW in frame.columns:
            raise DataError(f"entity rows may not have a column named {ROW}", field=ROW)
        for col in frame.columns:
            if _texty(frame[col]):
                _reject_mixed_zones(frame[col], str(col))
        con.register("__mloop_entities_df", frame.assign(**{ROW: np.arange(len(frame), dtype="int64")}))
        relation = "__mloop_entities_df"
    else:
        path = str(entities)
        if not Path(path).exists():
            raise NotFoundError(f"entity file {path} does not exist", field="entities")
        if path.endswith((".csv", ".csv.gz")):
            try:
                # as the sources are read (DuckDB): only an empty field is missing; NA (Namibia), null
                # or None are keys like any other (pandas' default turned them into missing values)
                frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
            except pd.errors.EmptyDataError as exc:
                raise DataError(f"entity file {path} is empty (no header row)", field="entities") from exc
            return _entity_relation(con, _parse_time_columns(frame, timestamp_col), timestamp_col)
        if Path(path).is_file():
            # one file: its row number is the input order already, with no sort over the entity rows
            relation = (
                f"(SELECT * EXCLUDE (file_row_number), file_row_number AS {ROW} "
                f"FROM read_parquet({_lit(path)}, file_row_number = true))"
            )
        else:
            relation = (
                f"(SELECT * EXCLUDE (file_row_number, filename), "
                f"row_number() OVER (ORDER BY filename, file_row_number) AS {ROW} "
                f"FROM read_parquet({_lit(path)}, file_row_number = true, filename = true))"
            )
    columns = describe(con, relation, "entity rows")
    columns.pop(ROW, None)
    return relation, columns


def _parse_time_columns(frame: pd.DataFrame, timestamp_col: str) -> pd.DataFrame:
    """CSV has no types: the timestamp column and columns whose name says time are parsed, and mixed
    zones are refused."""
    for col in frame.columns:
        name = str(col).lower()
        if _texty(frame[col]) and (col == timestamp_col or "time" in name or name.endswith("_at")):
            _reject_mixed_zones(frame[col], str(col))
            try:
                frame[col] = pd.to_datetime(frame[col], format="ISO8601")
            except (ValueError, TypeError) as exc:
                raise DataError(f"entity column {col!r}: not timestamps ({exc})", field=str(col)) from exc
    return frame


def _texty(values: pd.Series) -> bool:
    return bool(pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values))


def _reject_mixed_zones(values: pd.Series, column: str) -> None:
    zones: set[bool] = set()
    for v in values.dropna().head(100_000):
        if isinstance(v, pd.Timestamp) or hasattr(v, "tzinfo"):
            zones.add(getattr(v, "tzinfo", None) is not None)
        elif isinstance(v, str):
            zones.add(v.endswith("Z") or "+" in v[10:] or v[10:].count("-") > 0)
    if len(zones) > 1:
        raise DataError(
            f"entity column {column!r} mixes timezone-naive and timezone-aware timestamps", field=column
        )


def _orderable(column: str, kind: str) -> tuple[str, str]:
    """A created column as a non-null sortable number, and the value above every row's."""
    if kind in _TIME_TYPES:
        return f"coalesce(epoch_us({_q(column)}), -9223372036854775807)", "9223372036854775807"
    if any(t in kind for t in ("INT", "DECIMAL", "FLOAT", "DOUBLE", "REAL")):
        return f"coalesce(CAST({_q(column)} AS DOUBLE), '-inf'::DOUBLE)", "'inf'::DOUBLE"
    raise DataError(f"created column {column!r} is {kind}: expected a timestamp or a number", field=column)


def historical(
    entities: pd.DataFrame | str | Path,
    selection: Sequence[tuple[FeatureView, Sequence[str]]],
    *,
    timestamp_col: str = "event_timestamp",
    out: str | Path | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame | int:
    """Point-in-time join (see the module docstring). ``selection``: each view with the features wanted.

    Returns the joined frame (entity columns, then one ``view:feature`` column per feature), or, with
    ``out``, writes it to that Parquet file without holding it in memory and returns the row count.
    """
    con = con or connect()
    entity_rel, ecols = _entity_relation(con, entities, timestamp_col)
    if timestamp_col not in ecols:
        raise DataError(f"entity rows have no timestamp column {timestamp_col!r}", field=timestamp_col)
    etype = ecols[timestamp_col]
    if etype not in _TIME_TYPES:
        raise DataError(
            f"entity column {timestamp_col!r} is {etype}, not a timestamp (mixed or unparsable values?)",
            field=timestamp_col,
        )
    select = [f"e.{_q(c)}" for c in ecols]
    joins: list[str] = []
    for i, (view, features) in enumerate(selection):
        view, scols = resolve_view(con, view)
        missing = [k for k in view.join_keys if k not in ecols]
        if missing:
            raise DataError(
                f"entity rows lack join key(s) {', '.join(missing)} of feature view {view.name!r}",
                field=missing[0],
            )
        if _zone(scols[view.timestamp]) != _zone(etype):
            raise DataError(
                f"entity column {timestamp_col!r} is timezone-{_zone(etype)} but feature view "
                f"{view.name!r} column {view.timestamp!r} is timezone-{_zone(scols[view.timestamp])}; "
                "use one kind",
                field=timestamp_col,
            )
        alias, ts = f"f{i}", f"__mloop_ts{i}"
        cols = [*view.join_keys, *features]
        inner = f"SELECT {', '.join(_q(c) for c in dict.fromkeys(cols))}, {_q(view.timestamp)} AS {ts}"
        on = " AND ".join(f"e.{_q(k)} = {alias}.{_q(k)}" for k in view.join_keys)
        if view.created:
            # ASOF matches on one inequality, so order by (event time, created) as one struct: the entity
            # side's created is +∞, so the match is the latest-created row at the latest event time.
            # (A window dedupe before the join would sort the whole source; this costs nothing extra.)
            created, top = _orderable(view.created, scols[view.created])
            stype = scols[view.timestamp]
            inner += f", struct_pack(t := {_q(view.timestamp)}, c := {created}) AS __mloop_o{i}"
            on += (
                f" AND struct_pack(t := CAST(e.{_q(timestamp_col)} AS {stype}), c := {top}) "
                f">= {alias}.__mloop_o{i}"
            )
        else:
            on += f" AND e.{_q(timestamp_col)} >= {alias}.{ts}"
        inner += f" FROM {relation(con, view)}"
        joins.append(f"ASOF LEFT JOIN ({inner}) {alias} ON {on}")
        within = "TRUE"
        if view.ttl is not None:
            micros = int(view.ttl.total_seconds() * 1_000_000)
            within = f"{alias}.{ts} >= e.{_q(timestamp_col)} - to_microseconds({micros})"
        for f in features:
            select.append(f"CASE WHEN {within} THEN {alias}.{_q(f)} END AS {_q(f'{view.name}:{f}')}")
    sql = f"SELECT {', '.join(select)} FROM {entity_rel} e {' '.join(joins)} ORDER BY e.{ROW}"
    try:
        if out is not None:
            con.execute(f"COPY ({sql}) TO {_lit(str(out))} (FORMAT parquet)")
            count = con.execute(f"SELECT count(*) FROM read_parquet({_lit(str(out))})").fetchone()
            return int(count[0]) if count else 0
        return con.execute(sql).df()
    except duckdb.Error as exc:
        raise DataError(f"point-in-time join failed: {_first_line(exc)}", field="entities") from exc


def latest_rows(
    con: duckdb.DuckDBPyConnection, view: FeatureView, *, start: Any = None, end: Any = None
) -> duckdb.DuckDBPyConnection:
    """The latest row per entity key with event time in ``[start, end]``: what the online store holds.

    Columns: the join keys, the event time as ``__mloop_ts`` (epoch seconds), then the features.
    """
    keys = ", ".join(_q(k) for k in view.join_keys)
    features = ", ".join(_q(f) for f in view.features or ())
    order = _q(view.timestamp) + " DESC" + (f", {_q(view.created)} DESC" if view.created else "")
    where = []
    params: list[Any] = []
    if start is not None:
        where.append(f"{_q(view.timestamp)} >= ?")
        params.append(start)
    if end is not None:
        where.append(f"{_q(view.timestamp)} <= ?")
        params.append(end)
    sql = (
        f"SELECT {keys}, epoch_us({_q(view.timestamp)}) / 1e6 AS __mloop_ts, {features} "
        f"FROM {relation(con, view)} {'WHERE ' + ' AND '.join(where) if where else ''} "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
    )
    try:
        return con.execute(sql, params)
    except duckdb.Error as exc:
        raise DataError(f"feature view {view.name!r}: {_first_line(exc)}", field="source") from exc
