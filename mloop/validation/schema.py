"""Schemas and schema skew: what the data must look like, and every way a batch fails to.

A schema is inferred from statistics, saved as human-editable JSON (versioned), edited by people,
and checked in one streaming pass over new data. The result is :class:`Anomalies`: each anomaly
names the column, the kind, what was expected, what was found, and example values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mloop.deprecations import renamed
from mloop.errors import DataError
from mloop.validation.io import Progress, Source, describe, scan
from mloop.validation.stats import _NUMBER, ColumnStats, Statistics, _dtype_of, _untyped

__all__ = ["Anomalies", "Anomaly", "ColumnSchema", "Schema", "infer_schema", "validate_schema"]

SCHEMA_VERSION = 1
TYPES = ("int", "float", "bool", "string", "datetime", "any")
VOCABULARY_LIMIT = 1_000
EXAMPLES = 5
DEFAULT_RANGE_TOLERANCE = 0.01
DEFAULT_UNSEEN_TOLERANCE = 0.01
DEFAULT_RANGE_MARGIN = 0.25  # inferred ranges: observed [min, max] widened by this share of the width
INFERRED_TOLERANCE = 0.05  # inferred rules judge a batch by more than single outliers (a sample's range)
ROW_NUMBER_MIN_ROWS = 20  # fewer rows than this are too few to tell a row number from a small range


@dataclass
class ColumnSchema:
    """Rules for one column; tolerances are fractions of the batch's non-null values."""

    type: str
    nullable: bool = False
    max_null_fraction: float = 0.0
    min: float | None = None
    max: float | None = None
    out_of_range_tolerance: float = DEFAULT_RANGE_TOLERANCE
    vocabulary: list[str] | None = None
    unseen_tolerance: float = DEFAULT_UNSEEN_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.type not in ("int", "float", "datetime"):
            for key in ("min", "max", "out_of_range_tolerance"):
                d.pop(key)
        if self.vocabulary is None:
            d.pop("vocabulary")
            d.pop("unseen_tolerance")
        if not self.nullable:
            d.pop("max_null_fraction")
        return d


@dataclass
class Schema:
    """The expected columns of a dataset, in order, and whether other columns are allowed."""

    __mloop_artifact__: ClassVar[str] = "schema"

    columns: dict[str, ColumnSchema] = field(default_factory=dict)
    allow_extra_columns: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "mloop_schema_version": SCHEMA_VERSION,
            "allow_extra_columns": self.allow_extra_columns,
            "columns": {name: col.to_dict() for name, col in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, d: Any) -> Schema:
        """Parse and check a schema document; DataError names the offending field."""
        if not isinstance(d, dict):
            raise DataError("a schema must be a JSON object", field="schema")
        version = d.get("mloop_schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(
                f"schema version {version!r} is not supported (this mloop reads version {SCHEMA_VERSION})",
                field="mloop_schema_version",
            )
        unknown = set(d) - {"mloop_schema_version", "allow_extra_columns", "columns"}
        if unknown:
            raise DataError(f"schema has unknown key {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
        columns = d.get("columns")
        if not isinstance(columns, dict) or not columns:
            raise DataError(
                "schema 'columns' must be a non-empty object of column name → rules", field="columns"
            )
        allow_extra = d.get("allow_extra_columns", False)
        if not isinstance(allow_extra, bool):
            raise DataError("schema 'allow_extra_columns' must be true or false", field="allow_extra_columns")
        return cls({name: _column_from_dict(name, spec) for name, spec in columns.items()}, allow_extra)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a schema file written by ``mloop data schema infer`` (and perhaps edited)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DataError(f"schema file {path} does not exist", field="schema") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"schema file {path} cannot be read: {exc}", field="schema") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"schema file {path} is not valid JSON: {exc}", field="schema") from exc
        return cls.from_dict(doc)

    def to_bytes(self) -> bytes:
        return self.to_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Schema:
        return cls.from_dict(json.loads(data))


def _column_from_dict(name: str, spec: Any) -> ColumnSchema:
    where = f"columns.{name}"
    if not isinstance(spec, dict):
        raise DataError(f"schema {where} must be an object", field=where)
    known = {f for f in ColumnSchema.__dataclass_fields__}
    unknown = set(spec) - known
    if unknown:
        raise DataError(
            f"schema {where} has unknown key {sorted(unknown)[0]!r}", field=f"{where}.{sorted(unknown)[0]}"
        )
    kind = spec.get("type")
    if kind not in TYPES:
        raise DataError(
            f"schema {where}.type must be one of {list(TYPES)}, got {kind!r}", field=f"{where}.type"
        )
    col = ColumnSchema(type=kind)
    for key in ("nullable",):
        if key in spec:
            if not isinstance(spec[key], bool):
                raise DataError(f"schema {where}.{key} must be true or false", field=f"{where}.{key}")
            setattr(col, key, spec[key])
    for key in ("max_null_fraction", "out_of_range_tolerance", "unseen_tolerance"):
        if key in spec:
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise DataError(
                    f"schema {where}.{key} must be a fraction in [0, 1], got {value!r}",
                    field=f"{where}.{key}",
                )
            setattr(col, key, float(value))
    for key in ("min", "max"):
        if key in spec and spec[key] is not None:
            if isinstance(spec[key], bool) or not isinstance(spec[key], int | float):
                raise DataError(
                    f"schema {where}.{key} must be a number, got {spec[key]!r}", field=f"{where}.{key}"
                )
            setattr(col, key, float(spec[key]))
    if col.min is not None and col.max is not None and col.min > col.max:
        raise DataError(f"schema {where}: min {col.min} is greater than max {col.max}", field=f"{where}.min")
    if "vocabulary" in spec and spec["vocabulary"] is not None:
        vocab = spec["vocabulary"]
        if not isinstance(vocab, list) or not all(isinstance(v, str) for v in vocab):
            raise DataError(
                f"schema {where}.vocabulary must be a list of strings", field=f"{where}.vocabulary"
            )
        col.vocabulary = vocab
    return col


def infer_schema(
    stats: Statistics, *, range_margin: float = DEFAULT_RANGE_MARGIN, numeric_text: bool = True
) -> Schema:
    """A schema that the data behind ``stats`` satisfies, with default tolerances to edit.

    A sample's minimum and maximum are not the population's: each inferred numeric range is widened by
    ``range_margin`` × its width on both sides (never below 0 for a column that had no negative value),
    and its ``out_of_range_tolerance`` and ``unseen_tolerance`` are 5 % instead of 1 %, so that other
    rows of the same data pass (checked on held-out splits of three datasets). ``range_margin=0`` gives
    the observed range exactly (what a model's signature records: the range it was trained on).
    A column that numbers the rows (integers, all distinct, filling their range: a CSV's written-out
    index, an id sequence) gets no inferred range, since other rows carry other numbers.
    Text that is all numbers is validated as numbers (``numeric_text``), as a file's quoted numbers
    are meant; a model's signature keeps it text (``numeric_text=False``), since the model was
    trained on the text: ZIP codes turned into floats made the first version fail to load.
    Tighten the written schema by hand where the domain is known.
    """
    if range_margin < 0:
        raise DataError(f"range_margin must be ≥ 0, got {range_margin}", field="range_margin")
    if stats.rows == 0:
        raise DataError(f"cannot infer a schema from {stats.source or 'data'} with zero rows", field="data")
    columns = {}
    for name, c in stats.columns.items():
        kind = "any" if c.dtype in ("null", "mixed") else c.dtype
        col = ColumnSchema(type=kind, nullable=c.missing > 0)
        if range_margin > 0:
            col.out_of_range_tolerance = col.unseen_tolerance = INFERRED_TOLERANCE
        if col.nullable:
            col.max_null_fraction = min(1.0, round(2 * c.missing / max(c.rows, 1) + 0.01, 4))
        if (
            c.kind == "numeric"
            and c.min is not None
            and c.max is not None
            and not _row_number(c, range_margin)
        ):
            col.min, col.max = _widened(c.min, c.max, range_margin, integral=kind == "int")
        if (
            c.kind == "categorical"
            and c.top_exact
            and c.distinct_exact
            and 0 < c.distinct <= VOCABULARY_LIMIT
        ):
            col.vocabulary = sorted(str(k) for k in (c.counts or {}))
        if numeric_text and c.dtype == "string" and c.numeric_text == c.count and c.count:
            col.type = "float"  # text that is all numbers (e.g. quoted): validate as numbers
            col.vocabulary = None
        columns[name] = col
    return Schema(columns)


def _row_number(c: ColumnStats, range_margin: float) -> bool:
    """Whether ``c`` counts rows (a written-out index, an id sequence): integers, all distinct, filling
    [min, max]. The next batch's rows carry the next numbers, so a range inferred from them refuses
    every new row; with a margin, such a column gets no range (type and nullability still apply)."""
    if (
        range_margin == 0
        or c.dtype != "int"
        or c.count < ROW_NUMBER_MIN_ROWS
        or c.min is None
        or c.max is None
    ):
        return False
    span = c.max - c.min + 1
    return c.distinct >= 0.97 * c.count and abs(span - c.count) <= 0.03 * c.count


def _widened(lo: float, hi: float, margin: float, *, integral: bool) -> tuple[float, float]:
    pad = (hi - lo) * margin
    new_lo, new_hi = lo - pad, hi + pad
    if lo >= 0:
        new_lo = max(new_lo, 0.0)
    if integral:
        new_lo, new_hi = math.floor(new_lo), math.ceil(new_hi)
    return new_lo, new_hi


@dataclass
class Anomaly:
    """One way the data breaks its schema."""

    column: str
    kind: str
    expected: str
    found: str
    examples: list[Any] = field(default_factory=list)
    count: int = 0
    fraction: float | None = None


@dataclass
class Anomalies:
    """The outcome of validating a batch against a schema. Empty means the data conforms."""

    __mloop_artifact__: ClassVar[str] = "anomalies"

    items: list[Anomaly] = field(default_factory=list)
    rows: int = 0
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.items

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "ok": self.ok,
            "anomalies": [asdict(a) for a in self.items],
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), default=str).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Anomalies:
        d = json.loads(data)
        return cls([Anomaly(**a) for a in d["anomalies"]], d["rows"], d["source"])

    def summary(self) -> str:
        """One line per anomaly, for logs and error messages."""
        return "; ".join(f"{a.column}: {a.kind} (expected {a.expected}, found {a.found})" for a in self.items)


class _ColumnCheck:
    """Counts, over all batches, what one column does against its rules."""

    def __init__(self, name: str, rule: ColumnSchema) -> None:
        self.name, self.rule = name, rule
        self.values = self.nulls = self.bad_type = self.out_of_range = self.unseen = 0
        self.found_types: set[str] = set()
        self.examples: dict[str, list[Any]] = {"type": [], "range": [], "unseen": []}
        self.lo: float | None = None
        self.hi: float | None = None
        self.vocabulary = pa.array(rule.vocabulary, pa.string()) if rule.vocabulary is not None else None

    def update(self, array: pa.Array) -> None:
        self.nulls += array.null_count
        values = pc.drop_null(array)
        self.values += len(values)
        if _untyped(array.type) is not None:  # lists, structs, times of day, durations, bytes
            self.found_types.add(str(array.type))
            self.bad_type += len(values)
            for v in values.slice(0, EXAMPLES).to_pylist():
                v = v if pa.types.is_nested(array.type) else str(v)  # a time, duration, bytes: as text
                if len(self.examples["type"]) < EXAMPLES and v not in self.examples["type"]:
                    self.examples["type"].append(v)
            return
        dtype = _dtype_of(array.type)
        if len(values) == 0:
            return
        self.found_types.add(dtype)
        expected = self.rule.type
        if expected in ("int", "float", "datetime"):
            numbers = self._as_numbers(values, dtype)
            if numbers is not None and len(numbers):
                self._check_range(numbers)
        elif expected == "bool" and dtype != "bool":
            self._bad(values, len(values))
        if self.vocabulary is not None and expected in ("string", "bool", "any"):
            text = pc.cast(values, pa.string()) if dtype != "string" else values
            unseen = pc.invert(pc.is_in(text, value_set=self.vocabulary))
            n = int(pc.sum(unseen).as_py() or 0)
            if n:
                self.unseen += n
                _add_examples(self.examples["unseen"], pc.filter(text, unseen))

    def _as_numbers(self, values: pa.Array, dtype: str) -> np.ndarray | None:
        expected = self.rule.type
        if expected == "datetime":
            if dtype != "datetime":
                self._bad(values, len(values))
                return None
            from mloop.validation.stats import _epoch_seconds

            return _epoch_seconds(values)
        if dtype in ("int", "float"):
            x = values.to_numpy(zero_copy_only=False).astype(np.float64)
            if expected == "int" and dtype == "float":
                fractional = np.isfinite(x) & (x != np.round(x))
                if fractional.any():
                    self._bad(pa.array(x[fractional]), int(fractional.sum()))
            return x[~np.isnan(x)]
        if dtype == "string":
            looks = pc.match_substring_regex(values, _NUMBER, ignore_case=True)
            bad = int(len(values) - (pc.sum(looks).as_py() or 0))
            if bad:
                self._bad(pc.filter(values, pc.invert(looks)), bad)
            return pc.cast(pc.filter(values, looks), pa.float64()).to_numpy(zero_copy_only=False)
        self._bad(values, len(values))
        return None

    def _bad(self, values: pa.Array, n: int) -> None:
        self.bad_type += n
        _add_examples(self.examples["type"], values)

    def _check_range(self, x: np.ndarray) -> None:
        finite = x[np.isfinite(x)]
        if len(finite):
            lo, hi = float(finite.min()), float(finite.max())
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
        outside = np.zeros(len(x), dtype=bool)
        if self.rule.min is not None:
            outside |= x < self.rule.min
        if self.rule.max is not None:
            outside |= x > self.rule.max
        n = int(outside.sum())
        if n:
            self.out_of_range += n
            _add_examples(self.examples["range"], pa.array(x[outside]))

    def anomalies(self, rows: int) -> list[Anomaly]:
        out: list[Anomaly] = []
        rule, name = self.rule, self.name
        null_fraction = self.nulls / rows if rows else 0.0
        if self.nulls and (not rule.nullable or null_fraction > rule.max_null_fraction):
            allowed = f"at most {rule.max_null_fraction:.1%} nulls" if rule.nullable else "no nulls"
            out.append(
                Anomaly(
                    name,
                    "null_values",
                    allowed,
                    f"{self.nulls} nulls ({null_fraction:.1%})",
                    [],
                    self.nulls,
                    null_fraction,
                )
            )
        if self.bad_type:
            found = "/".join(sorted(self.found_types)) or "?"
            out.append(
                Anomaly(
                    name,
                    "type_mismatch",
                    rule.type,
                    f"{found}: {self.bad_type} values that are not {rule.type}",
                    self.examples["type"],
                    self.bad_type,
                    self.bad_type / max(self.values, 1),
                )
            )
        if self.values and self.out_of_range / self.values > rule.out_of_range_tolerance:
            frac = self.out_of_range / self.values
            out.append(
                Anomaly(
                    name,
                    "out_of_range",
                    f"[{rule.min:g}, {rule.max:g}] (tolerance {rule.out_of_range_tolerance:.1%})"
                    if rule.min is not None and rule.max is not None
                    else f"min {rule.min} max {rule.max}",
                    f"{self.out_of_range} values outside ({frac:.1%}); observed [{self.lo:g}, {self.hi:g}]",
                    self.examples["range"],
                    self.out_of_range,
                    frac,
                )
            )
        if self.values and self.unseen / self.values > rule.unseen_tolerance:
            frac = self.unseen / self.values
            vocab = rule.vocabulary or []
            shown = ", ".join(vocab[:5]) + (", …" if len(vocab) > 5 else "")
            out.append(
                Anomaly(
                    name,
                    "unseen_categories",
                    f"one of {len(vocab)} known values ({shown}) (tolerance {rule.unseen_tolerance:.1%})",
                    f"{self.unseen} unseen values ({frac:.1%})",
                    self.examples["unseen"],
                    self.unseen,
                    frac,
                )
            )
        return out


def _add_examples(bucket: list[Any], values: pa.Array) -> None:
    if len(bucket) >= EXAMPLES:
        return
    for v in pc.unique(values.slice(0, 1000)).to_pylist():
        if v not in bucket:
            bucket.append(v)
        if len(bucket) >= EXAMPLES:
            return


def validate_schema(
    source: Source,
    schema: Schema | Mapping[str, Any],
    *,
    encoding: str = "utf-8",
    progress: Progress | None = None,
) -> Anomalies:
    """Check data against a schema in one streaming pass; the result lists every anomaly found."""
    if not isinstance(schema, Schema):
        schema = Schema.from_dict(dict(schema))
    checks: dict[str, _ColumnCheck] = {}
    seen: dict[str, int] = {}  # column → rows seen (batches may hold only some columns)

    def consume(batch: pa.RecordBatch) -> None:
        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            seen[name] = seen.get(name, 0) + batch.num_rows
            rule = schema.columns.get(name)
            if rule is not None:
                checks.setdefault(name, _ColumnCheck(name, rule)).update(array)

    def reset() -> None:
        checks.clear()
        seen.clear()

    scan(source, consume, reset, encoding=encoding, progress=progress)
    if not seen:
        from mloop.validation.io import read_table

        seen.update(dict.fromkeys(read_table(source, encoding=encoding).schema.names, 0))
    rows = max(seen.values(), default=0)
    items: list[Anomaly] = []
    if rows == 0:
        items.append(Anomaly("*", "empty_data", "at least one row", "0 rows"))
    for name, rule in schema.columns.items():
        if name not in seen:
            items.append(Anomaly(name, "missing_column", f"column of type {rule.type}", "column absent"))
    if not schema.allow_extra_columns:
        for name in seen:
            if name not in schema.columns:
                items.append(
                    Anomaly(
                        name,
                        "unexpected_column",
                        "no such column (allow_extra_columns is false)",
                        "column present",
                    )
                )
    for check in checks.values():
        items.extend(check.anomalies(rows))
    return Anomalies(items, rows, describe(source))


# old names, for one release (mloop.deprecations)
__getattr__ = renamed(__name__, {"validate": "validate_schema"}, globals())
