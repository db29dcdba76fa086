"""The embedded online store: one SQLite file in the workspace, read by key in tens of microseconds.

Raw ``sqlite3`` rather than SQLAlchemy: a lookup is one indexed SELECT, and the ORM-free path is what
keeps a one-entity read far below a millisecond. WAL mode lets ``materialize`` write while a prediction
service reads.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from mloop.errors import StoreUnavailableError

__all__ = ["SqliteOnlineStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_features (
    view TEXT NOT NULL, key TEXT NOT NULL, ts REAL NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (view, key)
) WITHOUT ROWID
"""
_UPSERT = """
INSERT INTO online_features (view, key, ts, payload) VALUES (?, ?, ?, ?)
ON CONFLICT (view, key) DO UPDATE SET ts = excluded.ts, payload = excluded.payload
WHERE excluded.ts >= online_features.ts
"""


class SqliteOnlineStore:
    """:class:`~mloop.stores.base.OnlineStore` on a SQLite file (``sqlite:///path``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailableError(
                    f"cannot open the online store {self.path}: {exc}", field="online_url"
                ) from exc
            self._conn = conn
        return self._conn

    def write(self, view: str, rows: Sequence[tuple[str, float, str]]) -> int:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, [(view, k, ts, p) for k, ts, p in rows])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(rows)

    def read(self, view: str, keys: Sequence[str]) -> list[tuple[float, str] | None]:
        with self._lock:
            conn = self._connect()
            if len(keys) == 1:
                row = conn.execute(
                    "SELECT ts, payload FROM online_features WHERE view = ? AND key = ?", (view, keys[0])
                ).fetchone()
                return [(row[0], row[1]) if row else None]
            found: dict[str, tuple[float, str]] = {}
            unique = list(dict.fromkeys(keys))
            for i in range(0, len(unique), 500):  # stay below SQLite's bound-parameter limit
                chunk = unique[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for key, ts, payload in conn.execute(
                    f"SELECT key, ts, payload FROM online_features WHERE view = ? AND key IN ({marks})",
                    (view, *chunk),
                ):
                    found[key] = (ts, payload)
        return [found.get(k) for k in keys]

    def newest(self, view: str) -> float | None:
        with self._lock:
            row = (
                self._connect()
                .execute("SELECT max(ts) FROM online_features WHERE view = ?", (view,))
                .fetchone()
            )
        return None if row is None or row[0] is None else float(row[0])

    def drop(self, view: str) -> None:
        with self._lock:
            self._connect().execute("DELETE FROM online_features WHERE view = ?", (view,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
