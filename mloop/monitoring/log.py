"""The prediction log: what was asked, what was answered, by which version — off the request path.

Each request's records are copied into per-column lists in memory: O(1), bounded (past
``max_buffered`` rows, new records are dropped and counted, never blocking a request), and leaving
no per-request objects for the garbage collector to trace. A background
thread writes the buffer every ``flush_interval_s`` as a Parquet segment (temp file + rename, so
readers never see half a segment). ``close()`` flushes everything: a clean shutdown (SIGTERM) loses
nothing; a crash (SIGKILL) loses at most what arrived in the last flush interval. Delayed labels
(``/feedback``) are segments too.

Every column has a pinned type (:mod:`mloop.monitoring.log_schema`): the service conforms each
request's records to its serving version's schema before it answers, and each flush writes with that
schema, never with types inferred from the flush's values. Reading casts all segments to one schema;
a segment that cannot be read at all is moved to ``<root>/<model>/quarantine/`` and counted, never
fatal.

Feedback is not gated on ids this process served: any worker, replica or later process accepts a
label for a well-formed prediction id, and labels are joined to predictions when the log is read
(the latest label by arrival time wins; ids with differing labels are counted as conflicts; labels
whose prediction is not in the log are counted as unmatched).

Layout: ``<root>/<model>/predictions/*.parquet``, ``<root>/<model>/feedback/*.parquet`` and
``<root>/<model>/quarantine/``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mloop.core.serialize import parquet_options
from mloop.entities import new_id
from mloop.errors import BusyError
from mloop.monitoring.log_schema import cast_table, target_schema
from mloop.names import check_name

if TYPE_CHECKING:  # the service appends without pandas (~0.3 s less before it answers)
    import numpy as np
    import pandas as pd

log = logging.getLogger("mloop.serving")

__all__ = [
    "LogHealth",
    "PredictionLog",
    "labelled_predictions",
    "quarantined_segments",
    "read_log",
    "recent_requests",
]


Chunk = dict[str, list[Any]]  # one request's records, column by column, conformed to its schema
_UNFIT = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError, ValueError, TypeError)


class _Columns:
    """Buffered records of one schema, column by column.

    A request's chunk is copied into long-lived per-column lists, so what waits for the writer is a
    few lists of plain values (numbers and strings, which the garbage collector does not track),
    not one dict and a dozen lists per request that every collection until the flush would trace.
    At flush time each column becomes one Arrow array in one call (no per-request concatenation
    while the writer holds the GIL: ~4 ms of CPU for ~400 records under load).
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        # the names once: iterating a pyarrow schema wraps a new Field per column (~6 µs per request)
        self.names: list[str] = schema.names
        self.values: list[list[Any]] = [[] for _ in schema]
        self.sizes: list[int] = []  # rows per chunk, to drop one unfit chunk alone
        self.rows = 0

    def add(self, chunk: Chunk, n: int) -> None:
        for name, column in zip(self.names, self.values, strict=True):
            values = chunk.get(name)
            column.extend(values if values is not None else [None] * n)
        self.sizes.append(n)
        self.rows += n

    def table(self) -> tuple[pa.Table, int]:
        """The records as one table of the schema, and how many were dropped because they do not
        fit it (only a chunk that skipped :func:`~mloop.monitoring.log_schema.conform`: dropped
        alone, never its neighbours)."""
        try:
            return _typed(self.schema, self.values), 0
        except _UNFIT:
            pass
        kept, lost, start = [], 0, 0
        for n in self.sizes:
            try:
                kept.append(_typed(self.schema, [column[start : start + n] for column in self.values]))
            except _UNFIT:
                lost += n
                log.warning("prediction log: dropped a request's records that do not fit the schema")
            start += n
        return (pa.concat_tables(kept) if kept else self.schema.empty_table()), lost


def _typed(schema: pa.Schema, values: list[list[Any]]) -> pa.Table:
    return pa.table([pa.array(v, type=f.type) for f, v in zip(schema, values, strict=True)], schema=schema)


class _Buffer:
    """Records waiting to be written, by schema (one, or two while a canary serves); bounded by
    rows, never blocks the caller: :meth:`add` says whether the chunk was kept."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.groups: list[_Columns] = []
        self.rows = 0
        self.dropped = 0

    def add(self, schema: pa.Schema, chunk: Chunk, *, count_drop: bool = True) -> bool:
        n = len(next(iter(chunk.values()), []))
        if self.rows + n > self.limit:
            self.dropped += n if count_drop else 0
            return False
        group = next((g for g in self.groups if g.schema is schema), None)
        if group is None:
            group = next((g for g in self.groups if g.schema.equals(schema)), None)
            if group is None:
                group = _Columns(schema)
                self.groups.append(group)
        group.add(chunk, n)
        self.rows += n
        return True

    def take(self) -> tuple[list[_Columns], int]:
        taken, rows = self.groups, self.rows
        self.groups, self.rows = [], 0
        return taken, rows


def _segment_options(table: pa.Table) -> dict[str, Any]:
    """mloop's Parquet options, without column statistics (nothing reads a segment with a filter;
    a quarter of the time of writing a 200-row segment of 26 columns) nor a dictionary for the
    prediction ids (each one unique: its dictionary is the column again)."""
    options = parquet_options(table)
    return {
        **options,
        "write_statistics": False,
        "use_dictionary": [c for c in options["use_dictionary"] if c != "prediction_id"],
    }


def _write_segments(folder: Path, groups: list[_Columns]) -> int:
    """One segment per schema; returns the number of records that could not be written (always 0
    when chunks were conformed)."""
    lost = 0
    for group in groups:
        table, failed = group.table()
        lost += failed
        if table.num_rows:
            name = f"{new_id()}.parquet"
            tmp = folder / f".{name}.tmp"
            sink = pa.BufferOutputStream()  # in memory: pyarrow need not work out a filesystem
            pq.write_table(table, sink, **_segment_options(table))
            try:
                tmp.write_bytes(sink.getvalue())
            except FileNotFoundError:  # the model's first segment
                folder.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(sink.getvalue())
            os.replace(tmp, folder / name)  # readers see whole segments or none
            _SEGMENTS.keep(folder / name, table)  # a reader in this process need not read it back
    return lost


class PredictionLog:
    """Buffered, periodically flushed Parquet log of predictions and feedback for one model."""

    def __init__(self, root: Path, model: str, *, flush_interval_s: float = 1.0, max_buffered: int = 200_000):
        self.root = Path(root) / check_name(model)  # a name becomes a folder: never ".." or "a/b"
        self.flush_interval_s = flush_interval_s
        self._predictions = _Buffer(self.root / "predictions", max_buffered)
        self._feedback = _Buffer(self.root / "feedback", max_buffered)
        self._lock = threading.Lock()
        # one flush at a time: a flush that finds the buffers empty because the writer thread took
        # them waits for that write, so whatever was appended before flush() is on disk after it
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mloop-prediction-log", daemon=True)
        self._thread.start()

    def append(self, chunk: Chunk, schema: pa.Schema) -> None:
        """One request's predictions, as columns of equal length, already conformed to ``schema``
        (:func:`~mloop.monitoring.log_schema.conform`, which the caller runs before it answers)."""
        with self._lock:
            self._predictions.add(schema, chunk)

    def feedback(self, chunk: Chunk, schema: pa.Schema) -> None:
        """Delayed labels (``prediction_id``, ``label``, ``ts``), conformed to ``schema``.

        Unlike a prediction's record (dropped and counted when the buffer is full: the answer matters
        more), labels are what their request is for: a full buffer refuses the whole chunk with
        :class:`BusyError` (HTTP 503, ``Retry-After``), and the caller sends it again."""
        with self._lock:
            kept = self._feedback.add(schema, chunk, count_drop=False)
            waiting = self._feedback.rows
        if not kept:
            raise BusyError(
                f"labels not recorded: {waiting} labels already wait to be written (at most "
                f"{self._feedback.limit}); send them again after the next write",
                retry_after_s=self.flush_interval_s,
                field="feedback",
            )

    @property
    def dropped(self) -> int:
        return self._predictions.dropped + self._feedback.dropped

    @property
    def quarantined(self) -> int:
        """Segments of this model's log set aside as unreadable, by any reader (the service's
        ``mloop_prediction_log_quarantined_segments_total``)."""
        return quarantined_segments(self.root.parent, self.root.name)

    def flush(self) -> int:
        """Write what is buffered now, and wait for a write the writer thread has under way: on
        return, every record appended before the call is on disk. Returns the number of prediction
        records this call wrote."""
        with self._flushing:
            with self._lock:
                (predictions, rows), (labels, label_rows) = self._predictions.take(), self._feedback.take()
            try:
                lost = _write_segments(self._predictions.folder, predictions)
            except Exception:
                self._predictions.dropped += rows + label_rows  # reported as dropped, never silently lost
                raise
            self._predictions.dropped += lost
            try:
                self._feedback.dropped += _write_segments(self._feedback.folder, labels)
            except Exception:
                self._feedback.dropped += label_rows
                raise
            self.written += rows - lost
            return rows - lost

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


def read_log(
    root: Path, model: str, kind: str = "predictions", *, since_segment: str | None = None
) -> pa.Table:
    """Every readable segment of a model's log (``predictions`` or ``feedback``) as one table.

    Segment names are ULIDs, so ``since_segment`` (a ULID, e.g. ``ulid_at(t)``) reads only the
    segments written after it: monitoring and rollout read what is new, not the whole history.
    Segments are cast to one schema (the newest pinned types); the number of values that could not
    be cast (now null) is in the table's schema metadata under ``mloop.uncastable``. An unreadable
    segment is quarantined and skipped.
    """
    files = _segments(root, model, kind, since_segment)
    key = (str(root), model, kind, since_segment)
    known = _READS.get(key)
    if known is not None and files[: len(known.files)] == known.files:
        # the same segments and some new ones (segments are immutable): cast only the new ones
        added = [t for t in (_read_segment(f) for f in files[len(known.files) :]) if t is not None]
        if all(_fits(t.schema, known.schema) for t in added):
            if added:
                known = _Read(files, known.schema, [*known.tables, *added], known.lost)
                _remember(key, known)
            return known.table()
    tables = [t for t in (_read_segment(f) for f in files) if t is not None]
    if not tables:
        return pa.table({})
    schema = target_schema(tables)
    cast, lost = [], 0
    for table in tables:
        typed, failed = cast_table(table, schema)
        cast.append(typed)
        lost += failed
    if lost:
        log.warning(
            "prediction log %s/%s: %d value(s) of older segments could not be cast", root, model, lost
        )
    read = _Read(files, schema, cast, lost)
    _remember(key, read)
    return read.table()


@dataclass
class _Read:
    """One read of a log: its segments, their common schema and the segments cast to it."""

    files: list[Path]
    schema: pa.Schema
    tables: list[pa.Table]
    lost: int

    def table(self) -> pa.Table:
        if len(self.tables) > 1 and sum(t.num_rows for t in self.tables) <= _COMBINED_ROWS:
            # a log of small segments (a batch each) is hundreds of chunks a column, and every
            # filter or conversion of the read pays per chunk (~11 ms against ~1 ms to filter 15,000
            # rows in 150 chunks): read again and again by a scheduler, the read is kept as one chunk
            self.tables = [pa.concat_tables(self.tables).combine_chunks()]
        out = pa.concat_tables(self.tables) if self.tables else pa.table({})
        return out.replace_schema_metadata({b"mloop.uncastable": str(self.lost).encode()})


# rows up to which a kept read is one chunk: a copy of the segments it holds, which the segment
# cache holds too, so kept reads may use twice the memory of their rows (bounded by this)
_COMBINED_ROWS = 250_000


_READS: OrderedDict[tuple[str, str, str, str | None], _Read] = OrderedDict()
_READS_KEPT = 16  # a scheduler reads a few ranges per model (since a promotion, a canary's start)
_READS_LOCK = threading.Lock()


def _remember(key: tuple[str, str, str, str | None], read: _Read) -> None:
    with _READS_LOCK:
        _READS[key] = read
        _READS.move_to_end(key)
        while len(_READS) > _READS_KEPT:
            _READS.popitem(last=False)


def _fits(schema: pa.Schema, target: pa.Schema) -> bool:
    """A segment with exactly the target's columns and types: it leaves the common schema as it is
    (see target_schema) and needs no cast."""
    return len(schema) == len(target) and all(
        a.name == b.name and a.type == b.type for a, b in zip(schema, target, strict=True)
    )


def count_logged(root: Path, model: str, *, since_segment: str | None = None) -> int:
    """How many predictions the flushed segments hold (a bound callers check before reading).

    A scheduler asks on every pass: each segment's row count is read once per process (a segment
    is immutable under its unique name), so a pass costs one listing of the folder."""
    total = 0
    for path in _segments(root, model, "predictions", since_segment):
        key = str(path)
        rows = _ROW_COUNTS.get(key)
        if rows is None:
            table = _read_segment(path)
            if table is None:
                continue
            if len(_ROW_COUNTS) >= _MAX_COUNTED:
                _ROW_COUNTS.clear()
            rows = _ROW_COUNTS[key] = table.num_rows
        total += rows
    return total


_ROW_COUNTS: dict[str, int] = {}  # segment path → rows (names are ULIDs: never reused)
_MAX_COUNTED = 1_000_000


def recent_requests(root: Path, model: str, limit: int) -> list[dict[str, Any]]:
    """The instances of up to ``limit`` most recently logged predictions, oldest first, as clients sent
    them: the serving version's feature columns without their ``input.`` prefix, a null where the
    client sent null, and the entity keys of a row that was served by key (shadow answers, which
    repeat a request, are not counted).

    Reads segments newest first and stops once it has ``limit`` rows (a bounded read, whatever the
    log's size). What a load test replays.
    """
    found: list[dict[str, Any]] = []
    for path in reversed(_segments(root, model, "predictions", None)):
        table = _read_segment(path)
        if table is None:
            continue
        inputs = [c for c in table.column_names if c.startswith("input.")]
        names = table.column_names
        roles = table.column("role").to_pylist() if "role" in names else [None] * len(table)
        entities = table.column("entity").to_pylist() if "entity" in names else [None] * len(table)
        rows = [
            {**_entity(entity), **{k.removeprefix("input."): v for k, v in row.items()}}
            for row, role, entity in zip(table.select(inputs).to_pylist(), roles, entities, strict=True)
            if role != "shadow"  # a shadow answer repeats a request another role answered
        ]
        found[:0] = rows
        if len(found) >= limit:
            break
    return found[-limit:] if limit > 0 else []


def _entity(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def quarantined_segments(root: Path, model: str) -> int:
    """How many of ``model``'s segments were set aside as unreadable."""
    folder = Path(root) / model / "quarantine"
    return sum(1 for p in folder.iterdir() if p.suffix == ".parquet") if folder.is_dir() else 0


def _segments(root: Path, model: str, kind: str, since_segment: str | None) -> list[Path]:
    folder = Path(root) / check_name(model) / kind
    try:
        with os.scandir(folder) as entries:  # one listing; no stat per file
            names = sorted(e.name for e in entries if e.name.endswith(".parquet") and e.name[0] != ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    if since_segment is not None:
        names = [n for n in names if n[: -len(".parquet")] >= since_segment]
    key = (str(folder), since_segment)
    known = _LISTED.get(key)
    # a scheduler lists every pass, and a log mostly grows at its end: reuse the paths made before
    if known is not None and names[: len(known[0])] == known[0]:
        if len(names) == len(known[0]):
            return list(known[1])
        paths = [*known[1], *(folder / n for n in names[len(known[0]) :])]
    else:
        paths = [folder / n for n in names]
    if len(_LISTED) >= 256:
        _LISTED.clear()
    _LISTED[key] = (names, paths)
    return list(paths)


_LISTED: dict[tuple[str, str | None], tuple[list[str], list[Path]]] = {}


def _read_segment(path: Path) -> pa.Table | None:
    """A segment, or None when it is gone or cannot be read, or holds predictions mloop cannot have
    written (then it is moved to quarantine)."""
    try:
        table = _SEGMENTS.read(path)
    except FileNotFoundError:  # another reader quarantined it a moment ago
        return None
    except PermissionError as exc:  # the file may be fine: skip it this time, do not move it
        log.warning("prediction log: segment %s is not readable here (%s); skipped", path, exc)
        return None
    except (pa.ArrowException, OSError) as exc:  # pyarrow reports corrupt footers as either
        _quarantine(path, exc)
        return None
    problem = _malformed(table) if path.parent.name == "predictions" else None
    if problem is not None:
        _quarantine(path, problem)
        return None
    return table


def _malformed(table: pa.Table) -> str | None:
    """Why a predictions segment cannot be attributed to a version at a time (None: it can). Every
    row names the version that answered it: monitoring compares that version's statistics, and
    canary judgements count by version, so a row without one cannot be read as anyone's."""
    schema = table.schema
    for name in ("prediction_id", "ts", "version", "prediction"):
        if schema.get_field_index(name) < 0:
            return f"no {name!r} column"
    if not pa.types.is_integer(schema.field("version").type):
        return f"'version' is {schema.field('version').type}, not an integer"
    if not pa.types.is_timestamp(schema.field("ts").type):
        return f"'ts' is {schema.field('ts').type}, not a timestamp"
    for name in ("prediction_id", "version", "ts"):
        if table.column(name).null_count:
            return f"{table.column(name).null_count} row(s) without a {name!r}"
    return None


def _quarantine(path: Path, why: object) -> None:
    """Move an unusable segment aside (``<root>/<model>/quarantine/``), where it is counted."""
    target = path.parent.parent / "quarantine" / f"{path.parent.name}-{path.name}"
    try:
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
    except FileNotFoundError:
        return
    except OSError as move:
        log.error("prediction log: segment %s cannot be used (%s) nor moved (%s); skipped", path, why, move)
        return
    log.error("prediction log: segment %s cannot be used (%s); moved to %s", path, why, target)


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
        self._add(key, table)
        return table

    def keep(self, path: Path, table: pa.Table) -> None:
        """A segment this process just wrote (as Parquet gives it back: one chunk per column)."""
        _ROW_COUNTS[str(path)] = table.num_rows
        self._add((str(path), path.stat().st_mtime_ns), table.combine_chunks())

    def _add(self, key: tuple[str, int], table: pa.Table) -> None:
        with self.lock:
            if key in self.tables:
                return
            self.tables[key] = table
            self.rows += table.num_rows
            while self.rows > self.max_rows and len(self.tables) > 1:
                _, old = self.tables.popitem(last=False)
                self.rows -= old.num_rows


_SEGMENTS = _SegmentCache()


@dataclass(frozen=True)
class LogHealth:
    """What reading a log had to work around; shown by ``mloop monitor``."""

    quarantined_segments: int = 0  # unreadable segments set aside
    uncastable_values: int = 0  # values of old, mixed-type segments read as null
    unmatched_labels: int = 0  # labelled ids with no logged prediction (yet, or ever)
    conflicting_labels: int = 0  # ids labelled more than once with different labels (latest wins)
    duplicate_predictions: int = 0  # rows repeating a logged prediction id (a copied segment): left out

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> LogHealth:
        # immutable: pandas deep-copies a frame's attrs into every frame derived from it, and a read's
        # frame is filtered and sliced many times per pass
        return self


def labelled_predictions(
    root: Path,
    model: str,
    *,
    since_segment: str | None = None,
    include_shadow: bool = False,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Logged predictions in arrival order, with a ``label`` column (None until feedback arrived).
    ``columns`` keeps only those logged columns (and the label): a caller that judges predictions
    without their inputs, such as a canary's judge on every pass, need not convert the inputs.

    The latest label (by arrival time) wins when one prediction id got several; a label that is
    missing or cannot be cast to the predictions' type labels nothing (it is counted as uncastable),
    and one without a time is the oldest. Feedback segments are read whole (labels arrive late,
    after the predictions they belong to), and labels are cast to the predictions' type.
    ``frame.attrs["log_health"]`` is the :class:`LogHealth` of the read (unmatched labels only
    counted when the whole log was read; a read since a segment counts the conflicting labels of the
    predictions it read).
    """
    table = read_log(root, model, since_segment=since_segment)
    uncastable = _uncastable(table)
    if table.num_rows == 0:
        empty = table.to_pandas()
        empty.attrs["log_health"] = LogHealth(quarantined_segments(root, model), uncastable)
        return empty
    all_ids = table.column("prediction_id")
    duplicates = 0
    if not include_shadow:  # a shadow's answer shares its request's id
        shadow = pc.fill_null(pc.equal(table.column("role"), "shadow"), False)
        if pc.any(shadow).as_py():  # most logs have none: no copy of the whole read then
            table = table.filter(pc.invert(shadow))
        if pc.count_distinct(table.column("prediction_id")).as_py() < table.num_rows:
            first = _first_per_id(table)  # each id once, in arrival order: a copied segment counts once
            duplicates, table = table.num_rows - first.num_rows, first
    feedback_table = read_log(root, model, "feedback")
    uncastable += _uncastable(feedback_table)
    unmatched = conflicts = 0
    kept = table if columns is None else table.select([c for c in table.column_names if c in set(columns)])
    predictions = kept.to_pandas()
    if feedback_table.num_rows == 0:
        out = predictions.assign(label=None)
    else:
        label_type = table.schema.field("prediction").type
        labels_table, failed = cast_table(
            feedback_table,
            pa.schema(
                [pa.field(n, feedback_table.schema.field(n).type) for n in ("prediction_id", "ts")]
                + [pa.field("label", label_type)]
            ),
        )
        uncastable += failed
        # in Arrow, not pandas: pandas' isin/groupby on Arrow-backed strings go value by value; and
        # with compute functions only (a group_by loads Acero: ~0.2 s in a one-shot command)
        ids = labels_table.column("prediction_id")
        # a label that is missing or could not be cast (counted above) labels nothing: it never
        # hides an earlier, valid one
        labelled = pc.is_valid(labels_table.column("label"))
        if since_segment is None:
            feedback = labels_table.filter(pc.and_(labelled, pc.is_valid(ids)))
        else:  # the labels of the predictions read (feedback is read whole: labels come late)
            read = pc.is_in(ids, value_set=all_ids.combine_chunks())
            feedback = labels_table.filter(pc.and_(labelled, read))
        # stable; a label without a time is the oldest (it cannot claim to be the latest)
        ts = feedback.column("ts")
        keys = pa.table({"timed": pc.is_valid(ts), "ts": ts})
        order = pc.sort_indices(keys, [("timed", "ascending"), ("ts", "ascending")])
        newest_first = feedback.take(order[::-1])  # arrival order reversed: the first match is the latest
        latest = _first_per_id(newest_first)
        if latest.num_rows:  # each id's latest label: any other label is a conflict
            at = pc.index_in(newest_first.column("prediction_id"), value_set=latest.column("prediction_id"))
            differs = pc.not_equal(newest_first.column("label"), latest.column("label").take(at))
            conflicts = len(pc.unique(newest_first.column("prediction_id").filter(differs)))
        if since_segment is None:
            known = pc.is_in(latest.column("prediction_id"), value_set=all_ids.combine_chunks())
            unmatched = latest.num_rows - int(pc.sum(known).as_py() or 0)
        where = pc.index_in(table.column("prediction_id"), value_set=latest.column("prediction_id"))
        out = predictions.assign(label=latest.column("label").take(where).to_pandas())
    out = out.reset_index(drop=True)
    out.attrs["log_health"] = LogHealth(
        quarantined_segments(root, model), uncastable, unmatched, conflicts, duplicates
    )
    return out


def _first_per_id(feedback: pa.Table) -> pa.Table:
    """The first row of each prediction id (``index_in`` finds an id's first occurrence)."""
    ids = feedback.column("prediction_id").combine_chunks()
    return feedback.take(pc.index_in(pc.unique(ids), value_set=ids))


def label_values(labels: pd.Series, like: pd.Series | None = None) -> np.ndarray:
    """The labels of labelled rows as an array of their own type. A log's ``label`` column holds
    None where no label came, so pandas keeps bool (and string) labels as Python objects, which
    scikit-learn calls an "unknown" target, and integer labels as floats; after the unlabelled rows
    are dropped the values get their type back, and (``like``: the rows' ``prediction`` column,
    whose type the labels were cast to when logged) integers come back as integers: a label 1.0
    is not the class 1 to a model fitted on it, nor to a comparison of answers as text."""
    import numpy as np

    values = labels.infer_objects().to_numpy()
    answers = like.to_numpy() if like is not None else None
    if (
        answers is not None
        and values.dtype.kind == "f"
        and answers.dtype.kind in "iu"
        and np.isfinite(values).all()
        and (values == np.round(values)).all()
    ):
        return values.astype(answers.dtype)
    return values


def wrong_answers(predicted: Any, labels: Any) -> np.ndarray:
    """1.0 where an answer is not its label, else 0.0. Numbers compare as numbers (a model fitted on
    labels read back as floats answers 1.0 for the class 1), anything else as text."""
    import numpy as np

    p, y = np.asarray(predicted), np.asarray(labels)
    if p.dtype.kind in "iuf" and y.dtype.kind in "iuf":
        return (p.astype(float) != y.astype(float)).astype(float)
    return np.asarray([str(a) != str(b) for a, b in zip(p, y, strict=True)], dtype=float)


def _uncastable(table: pa.Table) -> int:
    meta = table.schema.metadata or {}
    return int(meta.get(b"mloop.uncastable", b"0"))
