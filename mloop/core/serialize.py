"""Values ⇄ bytes, chosen by type. The serializer's name is stored as the artifact's type.

Built in: pandas DataFrame/Series → Parquet (pyarrow), numpy arrays → .npy (no pickle), JSON-able
values → canonical JSON, scikit-learn estimators → joblib, and mloop's own domain objects
(statistics, schemas, anomaly and drift reports: any class with ``__mloop_artifact__``, ``to_bytes``
and ``from_bytes``) → their own JSON. Models use joblib (pickle) rather than
skops: any estimator, custom transformers included, round-trips, and loading is fast; the risk of
pickle (code runs on load) is contained because every read is verified against the content digest
recorded in the metadata store before it is unpickled, so bytes swapped in the artifact store are
refused. Only load model artifacts from a metadata store you trust.
"""

from __future__ import annotations

import importlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mloop.core.fingerprint import file_digest
from mloop.errors import SerializationError
from mloop.stores.base import ArtifactStore, NewArtifact

__all__ = [
    "Serializer",
    "deserialize",
    "file_artifact",
    "parquet_options",
    "python_type_name",
    "serialize",
    "store_value",
]


@dataclass(frozen=True, slots=True)
class Serializer:
    """How one family of values becomes bytes and back."""

    name: str
    accepts: Callable[[Any], bool]
    dump: Callable[[Any], bytes]
    load: Callable[[bytes], Any]


def python_type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_mloop_object(value: Any) -> bool:
    return isinstance(getattr(type(value), "__mloop_artifact__", None), str) and hasattr(value, "to_bytes")


def _load_mloop_object(data: bytes, python_type: str | None) -> Any:
    """Rebuild an mloop domain object (Statistics, Schema, …) by its recorded class.

    Only classes inside the ``mloop`` package are imported, so an artifact record cannot make
    mloop import arbitrary code.
    """
    module_name, _, class_name = (python_type or "").rpartition(".")
    if not module_name.startswith("mloop.") or not class_name:
        raise SerializationError(f"artifact of type 'mloop' names class {python_type!r}, not an mloop class")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None or not hasattr(cls, "from_bytes"):
        raise SerializationError(f"class {python_type} cannot read an mloop artifact")
    return cls.from_bytes(data)


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 100:
        return False
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def _dump_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _is_dataframe(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, pd.DataFrame)


def _is_series(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, pd.Series)


def _json_attrs(attrs: dict[Any, Any]) -> dict[Any, Any]:
    """The entries of ``DataFrame.attrs`` that Parquet can keep (JSON values).

    Other entries (the prediction log's ``LogHealth``, say) describe how a frame was read, not its
    content: they are left out of the artifact without pyarrow's warning on every write."""
    kept = {}
    for key, value in attrs.items():
        try:
            json.dumps({key: value})
        except (TypeError, ValueError):
            continue
        kept[key] = value
    return kept


def _dump_parquet(df: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not all(isinstance(c, str) for c in df.columns):
        df = df.rename(columns=str)
    kept = _json_attrs(df.attrs)
    if kept != df.attrs:
        df = df.copy(deep=False)
        df.attrs = kept
    small = df.size < _THREADED_FROM_CELLS
    table = pa.Table.from_pandas(df, preserve_index=True, nthreads=1 if small else None)
    sink = io.BytesIO()
    pq.write_table(table, sink, **parquet_options(table))
    return sink.getvalue()


def _load_parquet(data: bytes) -> Any:
    import pyarrow.parquet as pq

    threads = len(data) >= _THREADED_FROM_BYTES
    return pq.read_table(io.BytesIO(data), use_threads=threads).to_pandas(use_threads=threads)


# Arrow's thread pool costs more than it saves on the small tables a pipeline step passes on
# (2-3 ms of a 3 ms conversion of 2,000 rows × 9 columns, on two cores): one thread below these sizes.
_THREADED_FROM_CELLS = 2_000_000
_THREADED_FROM_BYTES = 16 * 2**20
_ZSTD_FROM_ROWS = 20_000


def parquet_options(table: Any) -> dict[str, Any]:
    """How mloop writes a Parquet table (artifacts, prediction log segments).

    Compression: zstd for large tables; below ``_ZSTD_FROM_ROWS`` rows, snappy, because zstd sets up
    a codec per column chunk (~1 ms a table of 20 columns: most of the cost of writing a small one).
    Dictionary encoding for every column but floating-point ones: measured values rarely repeat, so
    their dictionary is hashed and then thrown away (half the time of writing 2,000 rows × 9
    columns, for a larger file), while labels, categories and ids compress well with one.
    """
    import pyarrow as pa

    return {
        "compression": "zstd" if table.num_rows >= _ZSTD_FROM_ROWS else "snappy",
        "use_dictionary": [f.name for f in table.schema if not pa.types.is_floating(f.type)],
    }


def _dump_series(series: Any) -> bytes:
    name = series.name if series.name is not None else "__series__"
    return _dump_parquet(series.to_frame(name=str(name)))


def _load_series(data: bytes) -> Any:
    frame = _load_parquet(data)
    series = frame.iloc[:, 0]
    return series.rename(None) if series.name == "__series__" else series


def _is_ndarray(value: Any) -> bool:
    import numpy as np

    return isinstance(value, np.ndarray) and not value.dtype.hasobject


def _dump_npy(array: Any) -> bytes:
    import numpy as np

    sink = io.BytesIO()
    np.save(sink, array, allow_pickle=False)
    return sink.getvalue()


def _load_npy(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def _is_estimator(value: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return False
    return isinstance(value, BaseEstimator)


def _dump_joblib(model: Any) -> bytes:
    import joblib

    sink = io.BytesIO()
    joblib.dump(model, sink)
    return sink.getvalue()


def _load_joblib(data: bytes) -> Any:
    import joblib

    return joblib.load(io.BytesIO(data))


SERIALIZERS: tuple[Serializer, ...] = (
    Serializer("mloop", _is_mloop_object, lambda v: v.to_bytes(), lambda b: b),
    Serializer("json", _is_json, _dump_json, lambda b: json.loads(b)),
    Serializer("parquet", _is_dataframe, _dump_parquet, _load_parquet),
    Serializer("parquet-series", _is_series, _dump_series, _load_series),
    Serializer("npy", _is_ndarray, _dump_npy, _load_npy),
    Serializer("joblib", _is_estimator, _dump_joblib, _load_joblib),
)
_BY_NAME = {s.name: s for s in SERIALIZERS}


def serialize(value: Any, *, what: str = "value") -> tuple[str, bytes]:
    """``(serializer name, bytes)`` for ``value``; SerializationError names ``what`` when none fits."""
    for serializer in SERIALIZERS:
        if serializer.accepts(value):
            return serializer.name, serializer.dump(value)
    raise SerializationError(
        f"{what}: no serializer for a value of type {python_type_name(value)} "
        f"(supported: pandas DataFrame/Series, numpy arrays of numbers, JSON values with string keys and "
        f"finite floats, scikit-learn estimators)",
        field=what,
    )


def deserialize(type_name: str, data: bytes, python_type: str | None = None) -> Any:
    """The value stored as ``data`` by the serializer named ``type_name``.

    ``python_type`` (recorded with every artifact) is needed for mloop domain objects.
    """
    serializer = _BY_NAME.get(type_name)
    if serializer is None:
        raise SerializationError(f"unknown artifact type {type_name!r}", field="type")
    try:
        if type_name == "mloop":
            return _load_mloop_object(data, python_type)
        return serializer.load(data)
    except Exception as exc:
        raise SerializationError(f"cannot read a {type_name} artifact: {exc}", field="type") from exc


def store_value(artifacts: ArtifactStore, value: Any, *, what: str = "value") -> NewArtifact:
    """Serialize ``value`` and put its bytes in the artifact store: the one way a value becomes an
    artifact (the runner's outputs, ``Workspace.store_artifact``, monitoring's reports)."""
    kind, data = serialize(value, what=what)
    digest, uri = artifacts.put(data)
    return NewArtifact(digest, kind, python_type_name(value), len(data), uri)


def file_artifact(path: Path) -> NewArtifact:
    """A file or folder referenced by path (not copied) as an artifact: its content digest, ``file`` or
    ``directory``, its size and its ``file://`` URI. The one way a path input becomes an artifact."""
    path = path.expanduser().resolve()
    digest, size = file_digest(path)
    return NewArtifact(digest, "file" if path.is_file() else "directory", "pathlib.Path", size, path.as_uri())
