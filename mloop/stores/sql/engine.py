"""Connecting and upgrading: the only place where SQLite and PostgreSQL are treated differently.

SQLite runs in WAL mode with a long busy timeout, and write transactions start with ``BEGIN IMMEDIATE``
so concurrent writers queue on the lock instead of failing with "database is locked" when a read
transaction tries to upgrade. PostgreSQL needs nothing special beyond an advisory lock around
migrations so several processes opening a fresh database at once apply them once.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from mloop.errors import (
    ConfigurationError,
    MetadataStoreError,
    SchemaVersionError,
    StoreUnavailableError,
    StoreUnreachableError,
)
from mloop.stores.sql.schema import HEAD_REVISION, VERSION_TABLE

__all__ = ["WRITE", "connect", "insert_ignoring_conflicts", "translate_errors", "upgrade"]

# Execution option marking a write transaction (BEGIN IMMEDIATE on SQLite).
WRITE = "mloop_write"
_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x6D6C6F6F70  # "mloop"
_SQLITE_BUSY_SECONDS = 60.0


def connect(url: str) -> Engine:
    """An engine for ``url`` with the schema upgraded to this version's head.

    Raises StoreUnavailableError when the database cannot be reached and SchemaVersionError when it
    was created by a newer mloop.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"metadata URL {url!r} is not a database URL", field="metadata_url") from exc
    safe = parsed.render_as_string(hide_password=True)
    try:
        engine = _sqlite_engine(parsed) if parsed.get_backend_name() == "sqlite" else _server_engine(parsed)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        hint = " (install mloop[postgres])" if parsed.get_backend_name() == "postgresql" else ""
        raise ConfigurationError(
            f"metadata URL {safe}: no driver for {parsed.drivername}{hint}", field="metadata_url"
        ) from exc
    try:
        upgrade(engine)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if parsed.get_backend_name() == "sqlite":
            raise StoreUnavailableError(
                f"cannot connect to metadata store {safe}: {reason}{_sqlite_hint(parsed, reason)}"
            ) from exc
        # a server that does not answer may be on its way up (a SQLite file that fails will not be)
        raise StoreUnreachableError(f"cannot connect to metadata store {safe}: {reason}") from exc
    except DatabaseError as exc:  # sqlite3: "file is not a database", "database disk image is malformed"
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        where = parsed.database if parsed.get_backend_name() == "sqlite" else safe
        raise StoreUnavailableError(
            f"metadata database {where} cannot be read ({reason}): it is corrupted or not an mloop "
            "database; restore it from a backup or point the workspace elsewhere",
            field="metadata_url",
        ) from exc
    return engine


@contextmanager
def translate_errors(store: str = "metadata store", *, integrity: bool = True) -> Iterator[None]:
    """Turn the database errors raised inside the block into mloop's error tree, once for every store.

    Unreachable or dropped connections (``OperationalError``, ``InterfaceError``, an invalidated
    connection, an exhausted pool) become :class:`StoreUnavailableError`, which callers may retry; a
    refused write (constraint) and any other driver error become :class:`MetadataStoreError`. mloop's
    own errors pass through, and so does a constraint violation with ``integrity=False`` (for a caller
    that retries on it).
    """
    try:
        yield
    except IntegrityError as exc:
        if not integrity:
            raise
        raise MetadataStoreError(f"{store} refused the write: {_reason(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            raise StoreUnavailableError(f"{store} unavailable: {_reason(exc)}") from exc
        raise MetadataStoreError(f"{store} failed: {_reason(exc)}") from exc
    except PoolTimeoutError as exc:
        raise StoreUnavailableError(f"{store} unavailable: {exc}") from exc


def _reason(exc: DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc.orig or exc).__name__


def _server_engine(url: sa.URL) -> Engine:
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if engine.dialect.name != "postgresql":
        return engine

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Timestamps come back in the session's time zone; in UTC, psycopg gives them with
        # datetime.UTC itself, which UTCDateTime returns as is (under a server zone such as
        # 'Etc/UTC' each one was converted again: a tenth of a runs page's reading). No SQL of
        # mloop's depends on the session's zone.
        autocommit, dbapi_conn.autocommit = dbapi_conn.autocommit, True
        cursor = dbapi_conn.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.close()
        dbapi_conn.autocommit = autocommit

    return engine


def _sqlite_engine(url: sa.URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:"):  # each connection its own empty database: runs would vanish
        raise ConfigurationError(
            f"metadata URL {url} is an in-memory SQLite database, which keeps nothing once a command "
            "ends: give a file (sqlite:///path/mloop.db), or leave it empty for the workspace's own",
            field="metadata_url",
        )
    if not database.startswith("file:"):
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StoreUnavailableError(
                f"cannot connect to metadata store {url}: directory {parent} does not exist"
            )
    engine = sa.create_engine(url, connect_args={"timeout": _SQLITE_BUSY_SECONDS, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_SECONDS * 1000)}")
        _enter_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # straight to the driver: this runs once per transaction, on the hot path of every write
        immediate = conn.get_execution_options().get(WRITE, False)
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")  # type: ignore[union-attr]

    return engine


def _sqlite_hint(url: sa.URL, reason: str) -> str:
    """Why SQLite could not open or write its file, where the file system says (its own message,
    "unable to open database file" or "disk I/O error", names no cause)."""
    database = url.database or ""
    if database.startswith("file:") or not ("unable to open" in reason or "I/O error" in reason):
        return ""
    folder = Path(database).expanduser().resolve().parent
    if not os.access(folder, os.W_OK):
        return f" (the folder {folder} is read-only: SQLite writes its WAL beside the database)"
    try:
        if shutil.disk_usage(folder).free < 1 << 20:
            return f" (the disk holding {folder} is full)"
    except OSError:
        pass
    return ""


def _enter_wal(cur: sqlite3.Cursor) -> None:
    """Switch a new database to WAL, waiting for other openers as the busy timeout would.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once, without the
    busy handler, while another connection holds a write lock on a database still in rollback mode
    (several processes opening one new workspace at once); so the switch is retried here.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    pause = 0.002
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _current_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine) -> None:
    """Bring the schema to HEAD_REVISION with Alembic, once, even with concurrent openers."""
    with engine.connect() as conn:
        current = _current_revision(conn)
    if current == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    known = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
    if current is not None and current not in known:
        raise SchemaVersionError(
            f"the metadata database is at schema revision {current!r}, newer than this mloop knows "
            f"(newest known: {HEAD_REVISION!r}); upgrade mloop to open it"
        )
    try:
        with engine.execution_options(**{WRITE: True}).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except OperationalError:
        raise
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreUnavailableError(f"could not upgrade the metadata schema: {reason}") from exc


def insert_ignoring_conflicts(dialect: str, table: sa.Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` builder of the dialect (imported on first use: the
    PostgreSQL dialect module alone costs ~40 ms of import time)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)
