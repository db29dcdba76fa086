"""The prediction log: what was asked, what was answered, by which version — off the request path.

Requests append to an in-memory buffer (O(1), bounded: past ``max_buffered`` records new ones are
dropped and counted, never blocking a request). A background thread writes the buffer every
``flush_interval_s`` as a Parquet segment (temp file + rename, so readers never see half a segment).
``close()`` flushes everything: a clean shutdown (SIGTERM) loses nothing; a crash (SIGKILL) loses at
most what arrived in the last flush interval. Delayed labels (``/feedback``) are segments too.

Layout: ``<root>/<model>/predictions/<segment>.parquet`` and ``<root>/<model>/feedback/<segment>.parquet``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mloop.entities import new_id

__all__ = ["PredictionLog", "read_log"]


class _Buffer:
    """Records waiting to be written; bounded, never blocks the caller."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.records: list[dict[str, Any]] = []
        self.dropped = 0

    def add(self, records: list[dict[str, Any]]) -> None:
        room = max(self.limit - len(self.records), 0)
        if room < len(records):
            self.dropped += len(records) - room
            records = records[:room]
        self.records.extend(records)

    def take(self) -> list[dict[str, Any]]:
        taken, self.records = self.records, []
        return taken


def _write_segment(folder: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{new_id()}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(pa.Table.from_pylist(records), tmp, compression="zstd")
    os.replace(tmp, folder / name)  # readers see whole segments or none


class PredictionLog:
    """Buffered, periodically flushed Parquet log of predictions and feedback for one model."""

    def __init__(self, root: Path, model: str, *, flush_interval_s: float = 1.0, max_buffered: int = 200_000):
        self.root = Path(root) / model
        self.flush_interval_s = flush_interval_s
        self._predictions = _Buffer(self.root / "predictions", max_buffered)
        self._feedback = _Buffer(self.root / "feedback", max_buffered)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mloop-prediction-log", daemon=True)
        self._thread.start()

    def append(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._predictions.add(records)

    def feedback(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._feedback.add(records)

    @property
    def dropped(self) -> int:
        return self._predictions.dropped + self._feedback.dropped

    def flush(self) -> int:
        """Write what is buffered now; returns the number of prediction records written."""
        with self._lock:
            predictions, labels = self._predictions.take(), self._feedback.take()
        _write_segment(self._predictions.folder, predictions)
        _write_segment(self._feedback.folder, labels)
        self.written += len(predictions)
        return len(predictions)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def close(self) -> None:
        """Stop the writer and flush everything still buffered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()


def read_log(root: Path, model: str, kind: str = "predictions") -> pa.Table:
    """Every flushed segment of a model's log (``predictions`` or ``feedback``) as one table."""
    folder = Path(root) / model / kind
    files = sorted(p for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pa.table({})
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def encode(value: Any) -> Any:
    """Values as the log stores them: scalars as they are, anything else as JSON text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, default=str)
