"""Per-column statistics in one pass, mergeable: stats(A ∪ B) = stats(A).merge(stats(B)).

Reference statistics are computed once, stored as an artifact and reused; drift and training–serving
skew compare two Statistics without re-reading data.

What is exact and what is approximate:
- counts, missing, min, max, mean, std: exact (std by Chan's parallel update);
- quantiles and histograms: a t-digest (Apache DataSketches, k=1000; chosen over KLL because it is
  deterministic, so the same data always gives byte-identical, content-addressable statistics);
- distinct counts: exact up to 4,096 distinct values, then a k-minimum-values estimate (about 1.6 %
  relative error); ``distinct_exact`` says which;
- category frequencies: exact for the 1,000 most frequent values; past that the rest is one ``other``
  count and ``top_exact`` is False;
- the raw values of a numeric column are kept while it has at most 5,000 of them, so drift tests on
  small data are exact.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import tdigest_double

from mloop.errors import DataError
from mloop.validation.io import Progress, Source, describe, scan

__all__ = ["ColumnStats", "Statistics", "compute_statistics"]

STATS_VERSION = 1
TDIGEST_K = 1000
SAMPLE_LIMIT = 5_000
DISTINCT_K = 4_096
TOP_LIMIT = 1_000
SMALL_DOMAIN = 32
_HASH_SPACE = float(2**64)


def _dtype_of(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "datetime"
    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_dictionary(arrow_type):
        return _dtype_of(arrow_type.value_type)
    return "string"


_NUMERIC = ("int", "float", "datetime")


def _is_bytes(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        return _is_bytes(arrow_type.value_type)
    return (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or pa.types.is_binary_view(arrow_type)
    )


def _untyped(arrow_type: pa.DataType) -> str | None:
    """Why no schema type describes a column of ``arrow_type`` (what statistics refuse and a schema
    check reports as a type mismatch), or None when one does."""
    if pa.types.is_nested(arrow_type):  # lists, structs, maps: no domain, range or histogram
        return (
            f"holds nested values ({arrow_type}): statistics, schemas and models take flat columns; "
            "flatten it into columns or drop it"
        )
    if pa.types.is_time(arrow_type) or pa.types.is_duration(arrow_type):
        what = "times of day" if pa.types.is_time(arrow_type) else "durations"
        return f"holds {what}: give them as numbers (seconds, say) or drop the column"
    if _is_bytes(arrow_type):  # a schema's vocabulary is text: bytes would all be "unseen"
        return f"holds bytes ({arrow_type}): decode them to text (categories) or drop the column"
    return None


def _merge_dtype(a: str, b: str, column: str) -> str:
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    if {a, b} == {"int", "float"}:
        return "float"
    if a == "mixed" or b == "mixed" or (a == "string") != (b == "string"):
        return "mixed"
    raise DataError(f"column {column!r} is {a} in one part of the data and {b} in another", field=column)


def _unique(x: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort-based: numpy's hash-based unique is several times slower here)."""
    if len(x) == 0:
        return x
    s = np.sort(x)
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _hash(values: np.ndarray, below: int | None = None) -> np.ndarray:
    """Sorted unique 64-bit hashes of ``values`` (only those under ``below`` when given)."""
    import pandas as pd

    hashes = pd.util.hash_array(values, categorize=False)
    if below is not None:
        hashes = hashes[hashes < below]
    return _unique(hashes)


def _merge_hashes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, bool]:
    merged = _unique(np.concatenate([a, b]))
    if len(merged) > DISTINCT_K:
        return merged[:DISTINCT_K], True
    return merged, False


@dataclass
class ColumnStats:
    """Statistics of one column. ``kind`` is ``numeric``, ``categorical`` or ``null`` (all missing)."""

    name: str
    dtype: str
    count: int = 0
    missing: int = 0
    # numeric
    finite: int = 0
    infinite: int = 0
    min: float | None = None
    max: float | None = None
    mean: float = 0.0
    m2: float = 0.0
    sketch: tdigest_double | None = None
    sample: np.ndarray | None = None
    # categorical values, or the values of a numeric column with a small domain
    counts: dict[Any, int] | None = None
    other: int = 0
    # distinct
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    hashes_saturated: bool = False
    # text columns whose values are mostly numbers (a mixed-type column)
    numeric_text: int = 0

    @property
    def kind(self) -> str:
        if self.dtype in _NUMERIC:
            return "numeric"
        if self.dtype == "null":
            return "null"
        return "categorical"

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def std(self) -> float | None:
        """Population standard deviation (ddof=0) of the finite values."""
        return math.sqrt(self.m2 / self.finite) if self.finite else None

    @property
    def distinct(self) -> int:
        if not self.hashes_saturated:
            return len(self.hashes)
        return round((DISTINCT_K - 1) / (float(self.hashes[-1]) / _HASH_SPACE))

    @property
    def distinct_exact(self) -> bool:
        return not self.hashes_saturated

    @property
    def top_exact(self) -> bool:
        return self.other == 0

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        if self.sketch is None or self.sketch.is_empty():
            return []
        if self.sample is not None and len(self.sample):  # exact while the values are kept
            return [float(v) for v in np.quantile(self.sample, list(qs))]
        return [float(self.sketch.get_quantile(float(q))) for q in qs]

    def top(self, n: int = 10) -> list[tuple[Any, int]]:
        if not self.counts:
            return []
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]

    # building -----------------------------------------------------------------------------------

    def update(self, array: pa.Array | pa.ChunkedArray) -> None:
        self.missing += array.null_count
        values = pc.drop_null(array)
        if len(values) == 0:
            return
        if self.kind == "numeric":
            self._update_numeric(values)
        else:
            self._update_categorical(values)

    def _update_numeric(self, values: pa.Array) -> None:
        if self.dtype == "datetime":
            x = _epoch_seconds(values)
        else:
            x = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        nan = np.isnan(x)
        if nan.any():  # NaN is missing, not a value
            self.missing += int(nan.sum())
            x = x[~nan]
        self.count += len(x)
        finite_mask = np.isfinite(x)
        self.infinite += int(len(x) - finite_mask.sum())
        if len(x):
            lo, hi = float(x.min()), float(x.max())
            self.min = lo if self.min is None else min(self.min, lo)
            self.max = hi if self.max is None else max(self.max, hi)
        finite = x[finite_mask] if self.infinite else x
        if len(finite) == 0:
            return
        n_b, mean_b = len(finite), float(finite.mean())
        m2_b = float(((finite - mean_b) ** 2).sum())
        self.mean, self.m2, self.finite = _chan(self.finite, self.mean, self.m2, n_b, mean_b, m2_b)
        if self.sketch is None:
            self.sketch = tdigest_double(TDIGEST_K)
        self.sketch.update(np.require(finite, np.float64, ["C", "W"]))  # the binding refuses read-only views
        if self.sample is not None or self.finite == n_b:
            base = self.sample if self.sample is not None else np.empty(0)
            self.sample = np.concatenate([base, finite]) if self.finite <= SAMPLE_LIMIT else None
        if self.counts is not None or self.finite == n_b:  # still a small domain (e.g. a 0/1 label)?
            sorted_x = np.sort(finite)
            starts = np.flatnonzero(np.concatenate(([True], sorted_x[1:] != sorted_x[:-1])))
            if len(starts) + len(self.counts or {}) <= SMALL_DOMAIN:
                sizes = np.diff(np.append(starts, len(sorted_x)))
                self.counts = _add_counts(
                    self.counts or {}, dict(zip(sorted_x[starts].tolist(), sizes.tolist(), strict=True))
                )
            else:
                self.counts = None
        below = int(self.hashes[-1]) if self.hashes_saturated else None
        self.hashes, saturated = _merge_hashes(self.hashes, _hash(finite, below))
        self.hashes_saturated |= saturated

    def _update_categorical(self, values: pa.Array) -> None:
        if self.dtype == "bool":
            values = pc.cast(values, pa.string())
        elif pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        self.count += len(values)
        vc = pc.value_counts(values)
        keys = vc.field("values").to_pylist()
        counts = vc.field("counts").to_pylist()
        merged = dict(self.counts or {})
        for key, c in zip(keys, counts, strict=True):
            merged[key] = merged.get(key, 0) + c
        self.counts, dropped = _truncate(merged)
        self.other += dropped
        self.hashes, saturated = _merge_hashes(self.hashes, _hash(np.asarray(keys, dtype=object)))
        self.hashes_saturated |= saturated
        if self.dtype == "string":
            self.numeric_text += _count_numeric_text(values)

    # merging ------------------------------------------------------------------------------------

    def merge(self, other: ColumnStats) -> ColumnStats:
        """The statistics of both parts together; neither input is changed."""
        dtype = _merge_dtype(self.dtype, other.dtype, self.name)
        if dtype == "mixed":
            raise DataError(
                f"column {self.name!r} holds numbers in one part of the data and text in another",
                field=self.name,
            )
        out = ColumnStats(self.name, dtype)
        out.count, out.missing = self.count + other.count, self.missing + other.missing
        out.infinite = self.infinite + other.infinite
        out.numeric_text = self.numeric_text + other.numeric_text
        mins = [v for v in (self.min, other.min) if v is not None]
        maxs = [v for v in (self.max, other.max) if v is not None]
        out.min, out.max = (min(mins) if mins else None), (max(maxs) if maxs else None)
        out.mean, out.m2, out.finite = _chan(
            self.finite, self.mean, self.m2, other.finite, other.mean, other.m2
        )
        sketches = [s for s in (self.sketch, other.sketch) if s is not None]
        if sketches:
            out.sketch = tdigest_double.deserialize(sketches[0].serialize())
            for s in sketches[1:]:
                out.sketch.merge(s)
        if out.finite <= SAMPLE_LIMIT:
            parts = [s for s in (self.sample, other.sample) if s is not None]
            complete = (self.sample is not None or self.finite == 0) and (
                other.sample is not None or other.finite == 0
            )
            out.sample = np.concatenate(parts) if parts and complete else (np.empty(0) if complete else None)
        if out.kind == "numeric":
            if self._domain_known() and other._domain_known():
                merged = _add_counts(self.counts or {}, other.counts or {})
                out.counts = merged if len(merged) <= SMALL_DOMAIN else None
        else:
            out.counts, dropped = _truncate(_add_counts(self.counts or {}, other.counts or {}))
            out.other = self.other + other.other + dropped
        out.hashes, saturated = _merge_hashes(self.hashes, other.hashes)
        out.hashes_saturated = saturated or self.hashes_saturated or other.hashes_saturated
        return out

    def _domain_known(self) -> bool:
        return self.counts is not None or self.finite == 0

    # serialization ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "distinct": self.distinct,
            "distinct_exact": self.distinct_exact,
        }
        if self.kind == "numeric":
            d.update(
                finite=self.finite,
                infinite=self.infinite,
                min=self.min,
                max=self.max,
                mean=self.mean if self.finite else None,
                std=self.std,
                quantiles=dict(
                    zip(
                        ("p01", "p05", "p25", "p50", "p75", "p95", "p99"),
                        self.quantiles([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]),
                        strict=False,
                    )
                ),
                m2=self.m2,
                sketch=_b64(self.sketch.serialize()) if self.sketch is not None else None,
                sample=_b64(self.sample.astype("<f8").tobytes()) if self.sample is not None else None,
                values=[[k, v] for k, v in self.counts.items()] if self.counts is not None else None,
            )
        else:
            d.update(top=[[k, v] for k, v in self.top(TOP_LIMIT)], other=self.other, top_exact=self.top_exact)
            if self.dtype == "string":
                d["numeric_text"] = self.numeric_text
        d["hashes"] = _b64(self.hashes.astype("<u8").tobytes())
        d["hashes_saturated"] = self.hashes_saturated
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnStats:
        col = cls(d["name"], d["dtype"], count=int(d["count"]), missing=int(d["missing"]))
        col.hashes = np.frombuffer(base64.b64decode(d["hashes"]), dtype="<u8").astype(np.uint64)
        col.hashes_saturated = bool(d["hashes_saturated"])
        if col.kind == "numeric":
            col.finite, col.infinite = int(d["finite"]), int(d["infinite"])
            col.min, col.max = d["min"], d["max"]
            col.mean, col.m2 = float(d["mean"] or 0.0), float(d["m2"])
            if d.get("sketch"):
                col.sketch = tdigest_double.deserialize(base64.b64decode(d["sketch"]))
            if d.get("sample") is not None:
                col.sample = np.frombuffer(base64.b64decode(d["sample"]), dtype="<f8").astype(np.float64)
            if d.get("values") is not None:
                col.counts = {float(k): int(v) for k, v in d["values"]}
        else:
            col.counts = {k: int(v) for k, v in d["top"]}
            col.other = int(d["other"])
            col.numeric_text = int(d.get("numeric_text", 0))
        return col


_NUMBER = r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)\s*$"


def _count_numeric_text(values: pa.Array) -> int:
    """How many text values read as numbers (a column with some is mixed-type)."""
    looks = pc.match_substring_regex(values, _NUMBER, ignore_case=True)
    return int(pc.sum(looks).as_py() or 0)


def _epoch_seconds(values: pa.Array) -> np.ndarray:
    if pa.types.is_date(values.type):
        values = values.cast(pa.timestamp("s"))
    # nanoseconds are cut to microseconds (statistics and schemas need no finer time)
    micros = pc.cast(values, pa.timestamp("us", tz=values.type.tz), safe=False).cast(pa.int64())
    return micros.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6


def _chan(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[float, float, int]:
    """Merge (count, mean, sum of squared deviations) of two parts (Chan et al.)."""
    n = n_a + n_b
    if n == 0:
        return 0.0, 0.0, 0
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    m2 = m2_a + m2_b + delta * delta * n_a * n_b / n
    return mean, m2, n


def _add_counts(a: Mapping[Any, int], b: Mapping[Any, int]) -> dict[Any, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _truncate(counts: dict[Any, int]) -> tuple[dict[Any, int], int]:
    if len(counts) <= TOP_LIMIT:
        return counts, 0
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return dict(ranked[:TOP_LIMIT]), sum(v for _, v in ranked[TOP_LIMIT:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Statistics:
    """Statistics of a dataset: one :class:`ColumnStats` per column, in the data's column order."""

    __mloop_artifact__: ClassVar[str] = "statistics"

    columns: dict[str, ColumnStats] = field(default_factory=dict)
    rows: int = 0
    source: str = ""

    def update(self, batch: pa.RecordBatch) -> None:
        """Add one batch: some rows of some or all columns (see ``io.read_batches``)."""
        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            why = _untyped(array.type)
            if why is not None:
                raise DataError(f"column {name!r} {why}", field=name)
            dtype = _dtype_of(array.type)
            col = self.columns.get(name)
            if col is None:
                col = self.columns[name] = ColumnStats(name, dtype)
            elif col.dtype != dtype and dtype != "null":
                col.dtype = dtype if col.dtype == "null" else _merge_dtype(col.dtype, dtype, name)
            col.update(array)
            self.rows = max(self.rows, col.rows)

    def merge(self, other: Statistics) -> Statistics:
        """Statistics of the union of both datasets' rows; a column absent on one side counts as missing."""
        out = Statistics(
            rows=self.rows + other.rows, source=" + ".join(s for s in (self.source, other.source) if s)
        )
        for name in [*self.columns, *(n for n in other.columns if n not in self.columns)]:
            a = self.columns.get(name) or ColumnStats(name, "null", missing=self.rows)
            b = other.columns.get(name) or ColumnStats(name, "null", missing=other.rows)
            out.columns[name] = a.merge(b)
        return out

    def __getitem__(self, name: str) -> ColumnStats:
        try:
            return self.columns[name]
        except KeyError:
            raise DataError(
                f"no column {name!r} in the statistics of {self.source or 'the data'}", field=name
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mloop_statistics_version": STATS_VERSION,
            "source": self.source,
            "rows": self.rows,
            "columns": [c.to_dict() for c in self.columns.values()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Statistics:
        version = d.get("mloop_statistics_version")
        if version != STATS_VERSION:
            raise DataError(
                f"statistics format version {version!r} is not supported "
                f"(this mloop reads version {STATS_VERSION})",
                field="mloop_statistics_version",
            )
        cols = [ColumnStats.from_dict(c) for c in d["columns"]]
        return cls({c.name: c for c in cols}, int(d["rows"]), str(d.get("source", "")))

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Statistics:
        return cls.from_dict(json.loads(data))

    def summary(self) -> list[dict[str, Any]]:
        """A short, human-oriented row per column (no sketches or hashes)."""
        rows = []
        for c in self.columns.values():
            d = c.to_dict()
            for key in ("sketch", "sample", "hashes", "hashes_saturated", "m2", "values"):
                d.pop(key, None)
            if c.kind == "categorical":
                d["top"] = d["top"][:10]
            rows.append(d)
        return rows

    def with_source(self, source: str) -> Statistics:
        return replace(self, source=source)


def compute_statistics(
    source: Source, *, encoding: str = "utf-8", progress: Progress | None = None
) -> Statistics:
    """Statistics of a CSV/Parquet file, DataFrame or Arrow table, streamed in one pass."""
    stats = Statistics(source=describe(source))

    def reset() -> None:
        stats.columns.clear()
        stats.rows = 0

    scan(source, stats.update, reset, encoding=encoding, progress=progress)
    if not stats.columns:
        from mloop.validation.io import read_table

        for name in read_table(source, encoding=encoding).schema.names:  # header-only data
            stats.columns[name] = ColumnStats(name, "null")
    return stats
