"""Point-in-time correct joins of entity rows with feature views, executed by DuckDB.

For each entity row and each view: the latest feature row with the same join keys whose event time is
≤ the row's timestamp and ≥ that timestamp minus the view's TTL (both bounds inclusive), ties on event
time broken by the view's created column (latest wins); no such row → nulls. Every entity row comes
back exactly once, in input order, duplicates included (Feast drops rows with no match; we do not).

Ties: rows of one entity with the same event time and the same created value (or no created column)
are ordered by where they sit in the source, and the row read last wins: files in the order DuckDB
lists them (by name), rows in file order; a SQL source in the order its query returns rows. The same
rule picks the row :func:`latest_rows` hands to materialization, so offline and online agree.

Keys: an entity key column must be of the same kind (text, number, bool or time) as the source's key
column; integers and floats are one kind (``1`` and ``1.0`` match, online too, where keys compare as
canonical text). Text is never matched against numbers (``"01"`` is not driver 1): cast the column.

DuckDB's ``ASOF LEFT JOIN`` streams the Parquet sources and spills to disk, so entity and feature data
larger than memory still join.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from mloop.errors import DataError, NotFoundError
from mloop.features.definitions import FeatureView
from mloop.features.sources import SqlSource, register_filesystem, sql_table

__all__ = [
    "connect",
    "describe",
    "historical",
    "key_kind",
    "latest_rows",
    "ordered_relation",
    "relation",
    "resolve_view",
    "source_sql",
    "typed_text",
    "typed_value",
]

ROW = "__mloop_row"
SOURCE_ORDER = "__mloop_src"
_TOP = "9223372036854775807"
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


_MICROS = {
    "TIMESTAMP_NS": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_S": "TIMESTAMP",
    "TIMESTAMPTZ_NS": "TIMESTAMP WITH TIME ZONE",
}


def _microseconds(con: duckdb.DuckDBPyConnection, table_sql: str, extra: str = "") -> str:
    """``table_sql`` with nanosecond (pandas' default in Parquet), millisecond and second timestamps
    read as microseconds, the precision every other timestamp here has, so they join and compare like
    any other. ``extra``: more select items (e.g. the table function's virtual columns)."""
    try:
        kinds = con.execute(f"DESCRIBE SELECT * FROM {table_sql}").fetchall()
    except duckdb.Error:
        return table_sql  # the caller's own read reports what is wrong with the source
    casts = [
        f"CAST({_q(str(r[0]))} AS {_MICROS[str(r[1])]}) AS {_q(str(r[0]))}"
        for r in kinds
        if str(r[1]) in _MICROS
    ]
    if not casts and not extra:
        return table_sql
    replace = f" REPLACE ({', '.join(casts)})" if casts else ""
    return f"(SELECT *{replace}{', ' + extra if extra else ''} FROM {table_sql})"


def not_nan(column: str) -> str:
    """SQL: the float ``column`` is not NaN. Not ``NOT isnan(…)``: DuckDB (2.0) folds ``isnan`` of a
    Parquet column to false from the file's statistics, which leave NaN out, so NaN rows passed."""
    return f"CAST({column} AS VARCHAR) NOT IN ('nan', '-nan')"


def ordered_relation(con: duckdb.DuckDBPyConnection, view: FeatureView) -> str:
    """:func:`relation` with one more column, ``__mloop_src``: the row's place in the source (see the
    module docstring's tie rule). Parquet gives it for free (file index, row number); CSV has no row
    number, so a CSV source is loaded into a temporary table once per connection, as SQL sources are."""
    if isinstance(view.source, SqlSource):
        return f"(SELECT *, rowid AS {SOURCE_ORDER} FROM {relation(con, view)})"
    register_filesystem(con, view.source)
    table_sql = source_sql(view.source)
    if table_sql.startswith("read_csv("):
        name = "__mloop_csv_" + hashlib.sha256(table_sql.encode()).hexdigest()[:16]
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND temporary", [name]
        ).fetchall()
        if not exists[0][0]:
            try:
                con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {table_sql}")
            except duckdb.Error as exc:
                raise DataError(
                    f"feature view {view.name!r}: cannot read {view.source}: {_first_line(exc)}",
                    field="source",
                ) from exc
        return f"(SELECT *, rowid AS {SOURCE_ORDER} FROM {name})"
    # a file's index in the listing, then its row number: one BIGINT (2^40 rows per file, 2^23 files)
    order = f"(CAST(file_index AS BIGINT) << 40) + file_row_number AS {SOURCE_ORDER}"
    return _microseconds(con, table_sql, extra=order)


def key_kind(duck_type: str) -> str:
    """What a key of DuckDB type ``duck_type`` compares as: ``text``, ``number``, ``bool``, ``time``, or
    the type itself for anything else (a key must be of one kind on both sides of a join)."""
    kind = duck_type.upper()
    if kind.startswith(("VARCHAR", "CHAR", "TEXT", "STRING")):
        return "text"
    if kind == "BOOLEAN":
        return "bool"
    if kind.startswith(("TIMESTAMP", "DATE", "TIME")):
        return "time"
    if kind.startswith(("DECIMAL", "NUMERIC")) or kind in (
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
        "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL",
    ):  # fmt: skip
        return "number"
    return kind


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
        relation = _microseconds(con, "__mloop_entities_df")
    else:
        path = str(entities)
        if not Path(path).exists():
            raise NotFoundError(f"entity file {path} does not exist", field="entities")
        if path.endswith((".csv", ".csv.gz")):
            try:
                # as the sources are read (DuckDB): only an empty field is missing; NA (Namibia), null
                # or None are keys like any other (pandas' default turned them into missing values)
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            except pd.errors.EmptyDataError as exc:
                raise DataError(f"entity file {path} is empty (no header row)", field="entities") from exc
            frame = _parse_time_columns(frame, timestamp_col)
            for col in frame.columns:
                if _texty(frame[col]):
                    frame[col] = typed_text(frame[col])
            return _entity_relation(con, frame, timestamp_col)
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
        relation = _microseconds(con, relation)
    columns = describe(con, relation, "entity rows")
    columns.pop(ROW, None)
    return relation, columns


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def typed_value(text: str) -> Any:
    """A key typed as text (a CSV cell, a command-line value) as JSON would give it: text that is a
    JSON number is that number (``7`` → 7, ``1.0`` → 1.0), anything else stays text (``01``, `` 1``,
    ``true``), so it finds what the HTTP API's JSON finds."""
    if _NUMBER.fullmatch(text):
        value = json.loads(text)
        if isinstance(value, float) and not math.isfinite(value):
            return text
        return value
    return text


def typed_text(values: pd.Series) -> pd.Series:
    """A CSV column (text) typed as :func:`typed_value` types each value: numbers when every value is
    one, booleans when every value is ``true``/``false`` (any case), else text."""
    present = values.dropna()
    if present.empty:
        return values
    text = present.astype(str)
    if text.map(lambda v: bool(_NUMBER.fullmatch(v))).all():
        return pd.to_numeric(values)
    lowered = text.str.lower()
    if lowered.isin(["true", "false"]).all():
        return values.map(lambda v: v if v is None or v != v else str(v).lower() == "true")
    return values


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


def _check_keys(view: FeatureView, ecols: Mapping[str, str], scols: Mapping[str, str]) -> None:
    """Refuse an entity key column of another kind than the source's (see the module docstring)."""
    for key in view.join_keys:
        ekind, skind = key_kind(ecols[key]), key_kind(scols[key])
        if ekind != skind and ecols[key] != '"NULL"':  # an all-null column matches nothing anyway
            raise DataError(
                f"entity column {key!r} is {ecols[key]} ({ekind}) but feature view {view.name!r} key "
                f"{key!r} is {scols[key]} ({skind}); keys match only within one kind: cast the entity "
                f"column to {skind}",
                field=key,
            )


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
    # no rows: nothing to check the types of (a header-only CSV has none), and an empty result
    empty = not con.execute(f"SELECT 1 FROM {entity_rel} LIMIT 1").fetchall()
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
        clash = [f"{view.name}:{f}" for f in features if f"{view.name}:{f}" in ecols]
        if clash:
            raise DataError(
                f"entity rows have a column named {clash[0]!r}, the name of a requested feature's "
                "output column; rename or drop that column",
                field=clash[0],
            )
        if not empty:
            _check_keys(view, ecols, scols)
        if not empty and _zone(scols[view.timestamp]) != _zone(etype):
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
        # ASOF matches on one inequality, so order by (event time, created, place in the source) as
        # one struct: the entity side's created and place are +∞, so the match is the latest-created,
        # last-read row at the latest event time (the module docstring's tie rule). A window dedupe
        # before the join would sort the whole source; this costs nothing extra.
        stype = scols[view.timestamp]
        created, top = _orderable(view.created, scols[view.created]) if view.created else ("0", "0")
        inner += (
            f", struct_pack(t := {_q(view.timestamp)}, c := {created}, s := {SOURCE_ORDER}) AS __mloop_o{i}"
            f" FROM {ordered_relation(con, view)} WHERE {_q(view.timestamp)} IS NOT NULL"
        )
        # a NaN key is no key (DuckDB's NaN = NaN would join it to every NaN entity key): as
        # materialization leaves such rows out, online finds nothing for it either
        inner += "".join(f" AND {not_nan(_q(k))}" for k in view.join_keys if scols[k] in ("FLOAT", "DOUBLE"))
        etime = f"e.{_q(timestamp_col)}"
        on += (
            f" AND (CASE WHEN {etime} IS NOT NULL THEN struct_pack(t := CAST({etime} AS {stype}), "
            f"c := {top}, s := {_TOP}) END) >= {alias}.__mloop_o{i}"
        )
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
    created = ""
    if view.created:
        kind = describe(con, relation(con, view), f"feature view {view.name!r} source")[view.created]
        created = f"{_orderable(view.created, kind)[0]} DESC, "
    # the tie rule of the point-in-time join (module docstring): created, then place in the source
    order = f"{_q(view.timestamp)} DESC, {created}{SOURCE_ORDER} DESC"
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
        f"FROM {ordered_relation(con, view)} {'WHERE ' + ' AND '.join(where) if where else ''} "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
    )
    try:
        return con.execute(sql, params)
    except duckdb.Error as exc:
        raise DataError(f"feature view {view.name!r}: {_first_line(exc)}", field="source") from exc
