"""Samples for pipeline tests: rows generated from a :class:`Schema`, or drawn from a data file.

A generated sample respects each column's type, range, vocabulary and null allowance, so a pipeline
that passes the schema gate in production also passes it on the sample; the seed makes it repeatable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mloop.errors import DataError
from mloop.validation.schema import ColumnSchema, Schema

__all__ = ["sample_from_file", "sample_from_schema", "write_sample"]

_DEFAULT_NULLS = 0.05


def _schema_of(schema: Schema | dict[str, Any] | str | Path) -> Schema:
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, dict):
        return Schema.from_dict(schema)
    return Schema.load(schema)


def _column(name: str, col: ColumnSchema, rows: int, rng: np.random.Generator) -> pd.Series:
    lo = col.min if col.min is not None else 0.0
    hi = col.max if col.max is not None else max(lo + 100.0, 100.0)
    values: Any
    if col.vocabulary:
        values = rng.choice(np.asarray(col.vocabulary, dtype=object), size=rows)
        if col.type == "bool":
            values = np.asarray([str(v).lower() == "true" for v in values], dtype=object)
    elif col.type == "int":
        values = rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, size=rows).astype(object)
    elif col.type == "float":
        values = rng.uniform(lo, hi, size=rows).astype(object)
    elif col.type == "bool":
        values = rng.integers(0, 2, size=rows).astype(bool).astype(object)
    elif col.type == "datetime":
        lo = col.min if col.min is not None else 1.7e9
        hi = col.max if col.max is not None else lo + 86400 * 365
        values = pd.to_datetime(rng.uniform(lo, hi, size=rows), unit="s", utc=True).astype(object)
    else:  # string / any without a vocabulary
        values = np.asarray([f"{name}_{i}" for i in rng.integers(0, 20, size=rows)], dtype=object)
    if col.nullable:
        fraction = col.max_null_fraction or _DEFAULT_NULLS
        values[rng.random(rows) < fraction * 0.9] = None  # stay under the allowed fraction
    series = pd.Series(values, name=name)
    if col.type == "float" or (col.type == "int" and col.nullable):
        return pd.to_numeric(series).astype("Float64" if col.type == "float" else "Int64")
    if col.type == "int":
        return series.astype("int64")
    if col.type == "datetime":
        return pd.to_datetime(series, utc=True)
    return series


def sample_from_schema(
    schema: Schema | dict[str, Any] | str | Path, rows: int = 1000, *, seed: int = 0
) -> pd.DataFrame:
    """``rows`` rows that satisfy ``schema`` (a Schema, its dict, or a schema JSON file)."""
    if rows < 1:
        raise DataError(f"a sample needs at least one row, got rows={rows}", field="rows")
    parsed = _schema_of(schema)
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: _column(name, col, rows, rng) for name, col in parsed.columns.items()})


def sample_from_file(path: str | Path, rows: int = 1000, *, seed: int = 0) -> pd.DataFrame:
    """Up to ``rows`` rows drawn at random (without replacement, order kept) from a CSV/Parquet/JSON file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sample file {path} does not exist", field="sample")
    suffixes = "".join(path.suffixes).lower()
    try:
        if ".parquet" in suffixes:
            df = pd.read_parquet(path)
        elif ".json" in suffixes:
            df = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        else:
            df = pd.read_csv(path)
    except Exception as exc:
        raise DataError(f"sample file {path} cannot be read: {exc}", field="sample") from exc
    if len(df) <= rows:
        return df.reset_index(drop=True)
    return df.sample(n=rows, random_state=seed).sort_index().reset_index(drop=True)


def write_sample(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a sample where a pipeline can read it (CSV, or Parquet for a ``.parquet`` path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path
