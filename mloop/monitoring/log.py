"""The prediction log: what was asked, what was answered, by which version — off the request path.

Each request appends one columnar chunk to an in-memory buffer: O(1) and bounded (past
``max_buffered`` rows, new chunks are dropped and counted, never blocking a request). A background
thread writes the buffer every ``flush_interval_s`` as a Parquet segment (temp file + rename, so
readers never see half a segment). ``close()`` flushes everything: a clean shutdown (SIGTERM) loses
nothing; a crash (SIGKILL) loses at most what arrived in the last flush interval. Delayed labels
(``/feedback``) are segments too.

Layout: ``<root>/<model>/predictions/*.parquet`` and ``<root>/<model>/feedback/*.parquet``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from mloop.entities import new_id
from mloop.names import check_name

if TYPE_CHECKING:  # the service appends without pandas (~0.3 s less before it answers)
    import pandas as pd

log = logging.getLogger("mloop.serving")

__all__ = ["PredictionLog", "labelled_predictions", "log_root", "read_log"]


Chunk = dict[str, list[Any]]  # one request's records, column by column


class _Buffer:
    """Chunks waiting to be written; bounded by rows, never blocks the caller."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.chunks: list[Chunk] = []
        self.rows = 0
        self.dropped = 0

    def add(self, chunk: Chunk) -> None:
        n = len(next(iter(chunk.values()), []))
        if self.rows + n > self.limit:
            self.dropped += n
            return
        self.chunks.append(chunk)
        self.rows += n

    def take(self) -> tuple[list[Chunk], int]:
        taken, rows = self.chunks, self.rows
        self.chunks, self.rows = [], 0
        return taken, rows


def _write_segment(folder: Path, chunks: list[Chunk]) -> None:
    if not chunks:
        return
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, ...], dict[str, list[Any]]] = {}
    for chunk in chunks:  # one table per set of columns, not per request: ~20x cheaper under load
        merged = groups.setdefault(tuple(chunk), {k: [] for k in chunk})
        for key, values in chunk.items():
            merged[key].extend(values)
    tables = [pa.table({k: _arrow_column(v) for k, v in g.items()}) for g in groups.values()]
    table = pa.concat_tables(tables, promote_options="permissive")
    name = f"{new_id()}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / name)  # readers see whole segments or none


def _arrow_column(values: list[Any]) -> pa.Array:
    """One logged column; values Arrow cannot type as they are still get written, never dropped."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    try:  # validation accepts any finite number, so an int beyond int64 (2**70): the float predicted on
        return pa.array([float(v) if type(v) is int else v for v in values])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values])


class PredictionLog:
    """Buffered, periodically flushed Parquet log of predictions and feedback for one model."""

    def __init__(self, root: Path, model: str, *, flush_interval_s: float = 1.0, max_buffered: int = 200_000):
        self.root = Path(root) / check_name(model)  # a name becomes a folder: never ".." or "a/b"
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

    def append(self, chunk: Chunk) -> None:
        """One request's predictions, as columns of equal length."""
        with self._lock:
            self._predictions.add(chunk)

    def feedback(self, chunk: Chunk) -> None:
        with self._lock:
            self._feedback.add(chunk)

    @property
    def dropped(self) -> int:
        return self._predictions.dropped + self._feedback.dropped

    def flush(self) -> int:
        """Write what is buffered now; returns the number of prediction records written."""
        with self._lock:
            (predictions, rows), (labels, label_rows) = self._predictions.take(), self._feedback.take()
        try:
            _write_segment(self._predictions.folder, predictions)
        except Exception:
            self._predictions.dropped += rows + label_rows  # reported as dropped, never silently lost
            raise
        try:
            _write_segment(self._feedback.folder, labels)
        except Exception:
            self._feedback.dropped += label_rows
            raise
        self.written += rows
        return rows

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception:  # a full disk, say: keep the writer alive for the next interval
                log.exception("prediction log %s: a flush failed", self.root)

    def close(self) -> None:
        """Stop the writer and flush everything still buffered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()


def log_root(workspace_root: Path | None) -> Path:
    """Where a workspace's services write their prediction logs by default."""
    return (workspace_root or Path.cwd()) / "prediction-log"


def read_log(
    root: Path, model: str, kind: str = "predictions", *, since_segment: str | None = None
) -> pa.Table:
    """Every flushed segment of a model's log (``predictions`` or ``feedback``) as one table.

    Segment names are ULIDs, so ``since_segment`` (a ULID, e.g. ``ulid_at(t)``) reads only the
    segments written after it: monitoring and rollout read what is new, not the whole history.
    """
    files = _segments(root, model, kind, since_segment)
    if not files:
        return pa.table({})
    tables = [_SEGMENTS.read(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def count_logged(root: Path, model: str, *, since_segment: str | None = None) -> int:
    """How many predictions the flushed segments hold (a bound callers check before reading)."""
    return sum(_SEGMENTS.read(f).num_rows for f in _segments(root, model, "predictions", since_segment))


def _segments(root: Path, model: str, kind: str, since_segment: str | None) -> list[Path]:
    folder = Path(root) / check_name(model) / kind
    files = sorted(p for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if since_segment is not None:
        files = [f for f in files if f.stem >= since_segment]
    return files


class _SegmentCache:
    """Segments are immutable once renamed into place, so a reader keeps the ones it has read: a
    scheduler evaluating every few seconds reads each segment once, not once per pass. Bounded by
    rows (least recently used first out)."""

    def __init__(self, max_rows: int = 2_000_000) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self.tables: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()
        self.lock = threading.Lock()

    def read(self, path: Path) -> pa.Table:
        key = (str(path), path.stat().st_mtime_ns)
        with self.lock:
            table = self.tables.get(key)
            if table is not None:
                self.tables.move_to_end(key)
                return table
        table = pq.read_table(path)
        with self.lock:
            self.tables[key] = table
            self.rows += table.num_rows
            while self.rows > self.max_rows and len(self.tables) > 1:
                _, old = self.tables.popitem(last=False)
                self.rows -= old.num_rows
        return table


_SEGMENTS = _SegmentCache()


def labelled_predictions(
    root: Path, model: str, *, since_segment: str | None = None, include_shadow: bool = False
) -> pd.DataFrame:
    """Logged predictions in arrival order, with a ``label`` column (None until feedback arrived).

    The latest label wins when one prediction id got several. Feedback segments are read whole
    (labels arrive late, after the predictions they belong to).
    """
    predictions = read_log(root, model, since_segment=since_segment).to_pandas()
    if predictions.empty:
        return predictions
    if not include_shadow:
        predictions = predictions[predictions["role"] != "shadow"]
    feedback = read_log(root, model, "feedback").to_pandas()
    if feedback.empty:
        return predictions.assign(label=None)
    labels = feedback.drop_duplicates("prediction_id", keep="last").set_index("prediction_id")["label"]
    out = predictions.assign(label=predictions["prediction_id"].map(labels))
    return out.reset_index(drop=True)


def encode(value: Any) -> Any:
    """Values as the log stores them: scalars as they are, anything else as JSON text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, default=str)
