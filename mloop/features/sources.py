"""Where a feature view's rows come from: files (local or any fsspec URL) and SQL databases.

A source is read by DuckDB. Local Parquet/CSV files, folders and globs are read in place. A remote
fsspec URL (``s3://…``, ``gs://…``, ``memory://…``) is read through the fsspec filesystem registered
with the connection (DuckDB's own network extensions would be downloaded at run time, which mloop never
does). A :class:`SqlSource` (any SQLAlchemy URL: PostgreSQL, SQLite, …) is streamed in chunks into a
temporary DuckDB table of the connection (timestamps stored as text, as SQLite does, are read as
UTC unless they carry an offset), which spills to disk beyond DuckDB's memory limit, so a
table larger than memory still joins; it is read once per connection.

Database passwords never enter the metadata store: a ``SqlSource`` URL takes them from the environment
(``postgresql+psycopg://app:${PGPASSWORD}@db/features``); a literal password is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from mloop.errors import ConfigurationError, DataError, NotFoundError, ParameterError

__all__ = ["SqlSource", "fsspec_protocol", "register_filesystem", "sql_digest", "sql_table"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LOCAL = {"file", "local", ""}
CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class SqlSource:
    """Rows of a SQL query (or a whole table) in a database SQLAlchemy can reach.

    ``url``: a SQLAlchemy URL; ``${VAR}`` is replaced by the environment variable ``VAR`` when the
    source is read (put passwords there). Give exactly one of ``query`` or ``table``.
    """

    url: str
    query: str | None = None
    table: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or "://" not in self.url:
            raise ParameterError(f"SqlSource url {self.url!r} is not a database URL", field="source")
        if (self.query is None) == (self.table is None):
            raise ParameterError("SqlSource: give exactly one of query= or table=", field="source")
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            password = make_url(self.url).password
        except ArgumentError as exc:
            raise ParameterError(f"SqlSource url: {exc}", field="source") from None
        if password and not _ENV.fullmatch(str(password)):
            raise ParameterError(
                "SqlSource url holds a literal password, which would be stored with the definition; "
                "write ${ENV_VAR} in its place and set the variable",
                field="source",
            )

    @property
    def sql(self) -> str:
        """The statement that reads the rows."""
        return self.query if self.query is not None else f"SELECT * FROM {_quote_table(self.table or '')}"

    def resolved_url(self) -> str:
        def env(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ParameterError(
                    f"SqlSource url needs the environment variable {name}, which is not set", field="source"
                )
            return os.environ[name]

        return _ENV.sub(env, self.url)

    def to_dict(self) -> dict[str, Any]:
        return {"sql": {"url": self.url, "query": self.query, "table": self.table}}

    def __str__(self) -> str:
        return f"sql {self.url} ({self.query if self.query is not None else self.table})"


def _quote_table(name: str) -> str:
    parts = name.split(".")
    if not name or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", p) for p in parts):
        raise ParameterError(f"SqlSource table {name!r} is not a table name", field="source")
    return ".".join(f'"{p}"' for p in parts)


def source_from_spec(value: Any) -> str | SqlSource:
    """A stored source (``to_dict``'s form) back as the object a view holds."""
    if isinstance(value, dict) and isinstance(value.get("sql"), dict):
        spec = value["sql"]
        return SqlSource(spec["url"], spec.get("query"), spec.get("table"))
    return str(value)


def fsspec_protocol(source: str) -> str | None:
    """The fsspec protocol of a remote source URL (``s3``, ``memory``…), ``None`` for local paths."""
    if "://" not in source:
        return None
    protocol = source.split("://", 1)[0].lower()
    return None if protocol in _LOCAL else protocol


def register_filesystem(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Let DuckDB read ``source`` through fsspec when it is a remote URL (idempotent per connection)."""
    protocol = fsspec_protocol(source)
    if protocol is None:
        return
    import fsspec

    try:
        fs = fsspec.filesystem(protocol)
    except (ImportError, ValueError) as exc:
        raise ParameterError(
            f"feature source {source}: no fsspec filesystem for {protocol!r} ({exc})", field="source"
        ) from None
    if not fs.exists(source.split("://", 1)[1].split("*", 1)[0].rstrip("/") or "/"):
        raise NotFoundError(f"feature source {source} does not exist", field="source")
    if not con.filesystem_is_registered(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]):
        con.register_filesystem(fs)


def sql_table(
    con: duckdb.DuckDBPyConnection, source: SqlSource, view: str, time_columns: tuple[str, ...]
) -> str:
    """Load the rows of ``source`` into a temporary DuckDB table once per connection; its name."""
    name = "__mloop_sql_" + hashlib.sha256(repr(source.to_dict()).encode()).hexdigest()[:16]
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND temporary", [name]
    ).fetchall()
    if exists[0][0]:
        return name
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(source.resolved_url())
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # unknown dialect or driver not installed
        raise ConfigurationError(
            f"SqlSource of feature view {view!r}: cannot use {source.url}: {type(exc).__name__}: {exc}",
            field="source",
        ) from exc
    created = False
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(text(source.sql))
            columns = list(result.keys())
            while True:
                rows = result.fetchmany(CHUNK_ROWS)
                if not rows and created:
                    break
                chunk = pd.DataFrame.from_records(rows, columns=columns)
                for col in time_columns:
                    if col in chunk.columns and not pd.api.types.is_datetime64_any_dtype(chunk[col]):
                        # text timestamps (SQLite has no time type): offsets honoured, none = UTC
                        chunk[col] = pd.to_datetime(chunk[col], format="ISO8601", utc=True)
                con.register("__mloop_sql_chunk", chunk)
                if created:
                    con.execute(f"INSERT INTO {name} SELECT * FROM __mloop_sql_chunk")
                else:
                    con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM __mloop_sql_chunk")
                    created = True
                con.unregister("__mloop_sql_chunk")
                if not rows:
                    break
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"feature view {view!r}: cannot read {source}: {message}", field="source") from None
    except duckdb.Error as exc:
        raise DataError(
            f"feature view {view!r}: rows of {source} do not load: {exc}", field="source"
        ) from None
    finally:
        engine.dispose()
    return name


def sql_digest(con: duckdb.DuckDBPyConnection, source: SqlSource, table: str) -> tuple[str, int]:
    """A content digest of the rows a SQL source gave (order-independent) and their count."""
    ((count, total),) = con.execute(
        f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM {table} t"
    ).fetchall()
    text = f"{source.url}\n{source.sql}\n{count}\n{total}"
    return hashlib.sha256(text.encode()).hexdigest(), count


def remote_digest(source: str) -> tuple[str, int]:
    """An identity digest of a remote source's files (their paths and fsspec checksums) and total size.

    Remote bytes are not read to fingerprint them: the store's checksum (an ETag, or size + mtime)
    changes when a file is rewritten, which is what a cache key needs.
    """
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(source)
    if any(c in path for c in "*?["):
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        files = sorted(fs.find(path))
    else:
        files = [path]
    digest = hashlib.sha256()
    size = 0
    for file in files:
        info = fs.info(file)
        size += int(info.get("size") or 0)
        digest.update(f"{file}\n{fs.checksum(file)}\n".encode())
    return digest.hexdigest(), size
