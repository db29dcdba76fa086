"""What every SQL store shares, written once: the engine, write transactions that take SQLite's write
lock up front, database errors translated into mloop's error tree, and the JSON the stores keep."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import utcnow
from mloop.stores.sql.engine import WRITE, translate_errors

__all__ = ["SqlStore", "dumps"]


def dumps(value: Any, *, canonical: bool = False) -> str:
    """JSON as the SQL stores keep it.

    ``canonical`` (sorted keys, no NaN) is for values compared by their encoding, such as run params.
    Otherwise key order is kept (a signature's columns are in the model's order) and what JSON cannot
    say natively (datetimes) is written as text.
    """
    if canonical:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return json.dumps(value, separators=(",", ":"), default=str)


class SqlStore:
    """Base of the SQL stores (metadata, registry, triggers, features, tokens, pipelines): one
    implementation for SQLite and PostgreSQL, chosen by the engine's URL."""

    store_name = "metadata store"  # how errors name it

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE: True})

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); database errors leave as mloop errors."""
        with translate_errors(self.store_name), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A read connection; database errors leave as mloop errors."""
        with translate_errors(self.store_name), self.engine.connect() as conn:
            yield conn

    def _clock(self, conn: sa.Connection | None = None) -> datetime:
        """Now, for leases and heartbeats: by the database's clock where hosts share the database
        (PostgreSQL), since one host writes a lease or a heartbeat and another judges it, and hosts'
        clocks differ (one 10 minutes slow had its live runs failed and its events run twice). A
        SQLite file is one host's: its clock. ``conn``: ask in that transaction (else a short one)."""
        if self.engine.dialect.name == "sqlite":
            return utcnow()
        if conn is None:
            with self._read() as fresh:
                return self._clock(fresh)
        now: datetime = conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
        return now.astimezone(UTC)
