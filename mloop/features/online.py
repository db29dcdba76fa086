"""Online features: copy each entity's latest values into the online store, and read them by key.

Values travel as one JSON object per (view, entity key) with the row's event time beside it; a value
older than the view's TTL at read time comes back as null, with its age, so a caller sees both that it
is stale and by how much.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import duckdb
import pandas as pd

from mloop.errors import DataError
from mloop.features.definitions import FeatureView
from mloop.features.offline import latest_rows
from mloop.stores.base import OnlineStore

__all__ = ["entity_key", "lookup", "materialize", "plain"]

_SEP = "\x1f"
_ESC = "\x1e"
_NULL = _ESC + "0"  # what no escaped text produces: a missing key part matches nothing stored
BATCH = 20_000


def entity_key(values: Sequence[Any]) -> str:
    """One string per compound key; values compare as text, so ``7`` from a URL finds ``7`` from Parquet.

    Parts are escaped (``\x1e`` → ``\x1e\x1e``, ``\x1f`` → ``\x1e\x1f``) before they are joined by
    ``\x1f``, so two different keys never encode alike (``("a\x1fb", "c")`` vs ``("a", "b\x1fc")``), and a
    null part is a code no text encodes to (``None`` never finds the string ``"None"``).
    """
    return _SEP.join(_key_part(v) for v in values)


def _key_part(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NULL
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item"):  # numpy scalars
        return _key_part(value.item())
    text = str(value)
    if _ESC in text or _SEP in text:
        text = text.replace(_ESC, _ESC + _ESC).replace(_SEP, _ESC + _SEP)
    return text


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def plain(value: Any) -> Any:
    """A value as JSON can hold it: numpy scalars unwrapped, NaN/NA/NaT → None, times as ISO strings.

    ±inf stays a float (Python's JSON writes and reads it as ``Infinity``), so the online value is
    the offline one.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def materialize(
    con: duckdb.DuckDBPyConnection,
    store: OnlineStore,
    view: FeatureView,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Write the latest row per entity with event time in ``[start, end]``; returns rows written."""
    features = view.features or ()
    nkeys = len(view.join_keys)
    cursor = latest_rows(con, view, start=start, end=end)
    written = 0
    while True:
        rows = cursor.fetchmany(BATCH)
        if not rows:
            break
        batch = []
        for row in rows:
            if any(_missing(v) for v in row[:nkeys]) or row[nkeys] is None:
                continue  # a row without a key (null, NaN) or an event time can never be looked up
            payload = json.dumps(
                {f: plain(v) for f, v in zip(features, row[nkeys + 1 :], strict=True)},
                separators=(",", ":"),
            )
            batch.append((entity_key(row[:nkeys]), float(row[nkeys]), payload))
        written += store.write(view.name, batch)
    return written


def lookup(
    store: OnlineStore,
    selection: Sequence[tuple[FeatureView, Sequence[str]]],
    entity_rows: Sequence[Mapping[str, Any]],
    *,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Per entity row: its keys, ``features`` (``view:feature`` → value or null), ``age_seconds`` per view
    (null when the store has no row for the key), and ``found`` per view."""
    now = time.time() if now is None else now
    results: list[dict[str, Any]] = []
    for row in entity_rows:
        results.append({**dict(row), "features": {}, "age_seconds": {}, "found": {}})
    for view, features in selection:
        missing = [k for k in view.join_keys if any(k not in r for r in entity_rows)]
        if missing:
            raise DataError(
                f"entity rows lack join key {missing[0]!r} of feature view {view.name!r}", field=missing[0]
            )
        keys = [entity_key([r[k] for k in view.join_keys]) for r in entity_rows]
        ttl = view.ttl.total_seconds() if view.ttl is not None else math.inf
        for result, stored in zip(results, store.read(view.name, keys), strict=True):
            if stored is None:
                values: Mapping[str, Any] = {}
                result["age_seconds"][view.name] = None
                result["found"][view.name] = False
            else:
                ts, payload = stored
                age = now - ts
                fresh = age <= ttl
                values = json.loads(payload) if fresh else {}
                result["age_seconds"][view.name] = round(age, 3)
                result["found"][view.name] = True
            for f in features:
                result["features"][f"{view.name}:{f}"] = values.get(f)
    return results
