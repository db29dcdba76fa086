"""The prediction log's column types, pinned: what each column may hold, decided before anything is
written, and the rules that keep every value inside them.

Types come from the serving version, never from the values of one flush: features from the
version's signature (``int`` → int64, ``float`` → float64, ``bool`` → bool, ``string`` → string;
``datetime`` and ``any`` → string, non-strings stored as JSON text), ``prediction`` and ``label``
from the model's classes (float64 for regression), and fixed types for the rest. A value its column
cannot hold (a lone surrogate in a string, ``true`` as a label of classes ``[0, 1]``, an integer
beyond int64) is refused by :func:`conform` with a :class:`DataError` (HTTP 422) naming the column —
before the request is acknowledged, so one request can never make a flush fail and take its
neighbours' records with it.

Reading casts every segment to one schema (:func:`cast_table`), so logs written before types were
pinned (``int64`` beside ``bool``, ``123`` beside ``[1, 2]``) stay readable: values that cannot be
cast become null and are counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from mloop.errors import DataError

__all__ = [
    "LENIENT",
    "cast_table",
    "conform",
    "feedback_schema",
    "prediction_schema",
    "request_key",
    "target_schema",
    "value_type",
]

MAX_KEY_CHARS = 256  # a request key routes and identifies a caller: an id, not a payload
LENIENT = b"mloop.json"  # field metadata: non-string values are stored as JSON text, not refused
PINNED = {b"mloop.pinned": b"1"}  # schema metadata of segments written with pinned types

_INT64 = (-(2**63), 2**63)
_TS = pa.timestamp("us", tz="UTC")
_FEATURE_TYPES = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string()}


def value_type(classes: Sequence[Any] | None) -> pa.Field:
    """The type of ``prediction`` and ``label``: the classes' common type, float64 for regression."""
    if classes is None:
        return pa.field("value", pa.float64())
    kinds = {type(c) for c in classes}
    if kinds == {bool}:
        return pa.field("value", pa.bool_())
    if kinds == {int}:
        return pa.field("value", pa.int64())
    if kinds and kinds <= {int, float}:
        return pa.field("value", pa.float64())
    if kinds == {str}:
        return pa.field("value", pa.string())
    return pa.field("value", pa.string(), metadata={LENIENT: b"1"})


def _feature(name: str, rule: Mapping[str, Any]) -> pa.Field:
    kind = _FEATURE_TYPES.get(str(rule.get("type", "any")))
    if kind is None:  # datetime, any: whatever JSON value validation let through, as text
        return pa.field(name, pa.string(), metadata={LENIENT: b"1"})
    return pa.field(name, kind)


def prediction_schema(inputs: Mapping[str, Mapping[str, Any]], classes: Sequence[Any] | None) -> pa.Schema:
    """The pinned schema of one serving version's prediction records.

    ``inputs`` maps each feature to its signature rule (``{"type": "int", …}``), as
    ``LoadedModel.rules`` holds them; ``classes`` is the model's classes, or None for regression.
    """
    value = value_type(classes)
    fields = [
        pa.field("prediction_id", pa.string()),
        pa.field("ts", _TS),
        pa.field("model", pa.string()),
        pa.field("version", pa.int64()),
        pa.field("role", pa.string()),
        pa.field("latency_ms", pa.float64()),
        pa.field("request_key", pa.string()),
        # the entity keys a request was served by (JSON text; null when it carried the features):
        # what a load test replays to a candidate that reads other features by key
        pa.field("entity", pa.string()),
        value.with_name("prediction"),
        pa.field("probability", pa.float64()),
        pa.field("score", pa.float64()),
        *(_feature(f"input.{name}", rule) for name, rule in inputs.items()),
    ]
    return pa.schema(fields, metadata=PINNED)


def feedback_schema(classes: Sequence[Any] | None) -> pa.Schema:
    """The pinned schema of delayed labels for a model with these classes."""
    value = value_type(classes).with_name("label")
    return pa.schema([pa.field("prediction_id", pa.string()), value, pa.field("ts", _TS)], metadata=PINNED)


def request_key(key: Any) -> str | None:
    """A request key as the log stores it: a string (or none). Other JSON types are refused, not
    converted: ``123`` and ``"123"`` would otherwise route and log as one caller."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise DataError(f"the request key must be a string, got {_short(key)}", field="key")
    if not _encodable(key):
        raise DataError("the request key is not valid UTF-8 text (a lone surrogate)", field="key")
    if len(key) > MAX_KEY_CHARS:  # it is logged with every row of the request
        raise DataError(
            f"the request key has {len(key)} characters, over the limit of {MAX_KEY_CHARS}", field="key"
        )
    return key


def conform(chunk: Mapping[str, Sequence[Any]], schema: pa.Schema) -> dict[str, list[Any]]:
    """``chunk``'s values as ``schema`` stores them, or DataError naming the first that cannot be.

    Every column of the schema is in the result (missing ones as nulls); a column the schema lacks
    is refused. Conversions are the lossless ones only: an integral float into an int64 column, an
    int into a float64 column, JSON text in a lenient (``any``) column. On the request path: a few
    µs for one row (the per-column checks are built once per schema).
    """
    names, columns = _plan(schema)
    if not names.issuperset(chunk):
        extra = sorted(c for c in chunk if c not in names)
        raise DataError(f"column {extra[0]!r} is not in the log's schema", field=extra[0])
    n = len(next(iter(chunk.values()), ()))
    out: dict[str, list[Any]] = {}
    for name, check in columns:
        values = chunk.get(name)
        if values is None:
            out[name] = [None] * n
            continue
        if len(values) != n:
            raise DataError(f"log column {name!r} has {len(values)} values, not {n}", field=name)
        out[name] = check(name, values)
    return out


Check = Callable[[str, Sequence[Any]], list[Any]]
_PLANS: dict[int, tuple[pa.Schema, frozenset[str], list[tuple[str, Check]]]] = {}


def _plan(schema: pa.Schema) -> tuple[frozenset[str], list[tuple[str, Check]]]:
    """The column checks of ``schema``, built once (schemas live as long as their serving version)."""
    entry = _PLANS.get(id(schema))
    if entry is None or entry[0] is not schema:
        if len(_PLANS) > 64:
            _PLANS.clear()
        entry = _PLANS[id(schema)] = (schema, frozenset(schema.names), [(f.name, _check(f)) for f in schema])
    return entry[1], entry[2]


def _check(f: pa.Field) -> Check:
    kind = f.type
    if kind == pa.string():
        lenient = f.metadata is not None and LENIENT in f.metadata

        def strings(name: str, values: Sequence[Any]) -> list[Any]:
            for v in values:
                if v is not None and (type(v) is not str or not v.isascii()):
                    return [_string(name, v, lenient) for v in values]
            return list(values)

        return strings
    if kind == pa.int64():

        def ints(name: str, values: Sequence[Any]) -> list[Any]:
            for v in values:
                if v is not None and (type(v) is not int or not _INT64[0] <= v < _INT64[1]):
                    return [_int(name, v) for v in values]
            return list(values)

        return ints
    if kind == pa.float64():

        def floats(name: str, values: Sequence[Any]) -> list[Any]:
            for v in values:
                if v is not None and type(v) is not float:
                    return [_float(name, v) for v in values]
            return list(values)

        return floats
    if kind == pa.bool_():

        def bools(name: str, values: Sequence[Any]) -> list[Any]:
            for v in values:
                if v is not None and type(v) is not bool:
                    raise _refused(name, v, "true or false")
            return list(values)

        return bools
    return lambda name, values: list(values)  # timestamps the service makes itself


def _refused(column: str, value: Any, expected: str) -> DataError:
    name = column.removeprefix("input.")
    return DataError(f"column {name!r}: {_short(value)} cannot be stored as {expected}", field=name)


def _string(column: str, v: Any, lenient: bool) -> str | None:
    if v is None:
        return None
    if type(v) is str:
        if not _encodable(v):
            name = column.removeprefix("input.")
            raise DataError(f"column {name!r}: the text holds a lone surrogate (not UTF-8)", field=name)
        return v
    if lenient:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return json.dumps(v, default=str)  # ASCII-escaped: always storable
    raise _refused(column, v, "a string")


def _int(column: str, v: Any) -> int | None:
    if v is None:
        return None
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) is not int or not _INT64[0] <= v < _INT64[1]:
        raise _refused(column, v, "a 64-bit integer")
    return v


def _float(column: str, v: Any) -> float | None:
    if v is None:
        return None
    if type(v) is float:
        return v
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:
            pass
    raise _refused(column, v, "a number")


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


# reading ------------------------------------------------------------------------------------------


def target_schema(tables: Sequence[pa.Table]) -> pa.Schema:
    """One schema for segments written at different times: each column takes its type from the
    newest segment written with pinned types; columns only old segments have get the type their
    values share (int64 and bool → int64, any float → float64, anything else → string)."""
    chosen: dict[str, pa.DataType] = {}
    pinned = [t.schema for t in tables if t.schema.metadata and t.schema.metadata.get(b"mloop.pinned")]
    for schema in reversed(pinned):
        for f in schema:
            chosen.setdefault(f.name, f.type)
    seen: dict[str, list[pa.DataType]] = {}
    for table in tables:
        for f in table.schema:
            seen.setdefault(f.name, []).append(f.type)
    for name, kinds in seen.items():
        if name not in chosen:
            chosen[name] = _common_type(kinds)
    order = list(seen)
    return pa.schema([pa.field(name, chosen[name]) for name in order])


def _common_type(kinds: list[pa.DataType]) -> pa.DataType:
    distinct = [k for k in dict.fromkeys(kinds) if k != pa.null()]
    if not distinct:
        return pa.null()
    if len(distinct) == 1:
        return distinct[0]
    if all(pa.types.is_integer(k) or pa.types.is_boolean(k) for k in distinct):
        return pa.int64()
    if all(pa.types.is_integer(k) or pa.types.is_boolean(k) or pa.types.is_floating(k) for k in distinct):
        return pa.float64()
    return pa.string()


def cast_table(table: pa.Table, schema: pa.Schema) -> tuple[pa.Table, int]:
    """``table`` with ``schema``'s columns and types; returns it and how many values became null
    because they could not be cast (a list key under a string column, ``"abc"`` under int64)."""
    columns, lost = [], 0
    for f in schema:
        index = table.schema.get_field_index(f.name)
        if index < 0:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        array, failed = _cast(table.column(index), f.type)
        columns.append(array)
        lost += failed
    return pa.table(columns, schema=pa.schema([pa.field(f.name, f.type) for f in schema])), lost


def _cast(column: pa.ChunkedArray, kind: pa.DataType) -> tuple[pa.ChunkedArray | pa.Array, int]:
    if column.type == kind:
        return column, 0
    try:
        return column.cast(kind, safe=True), 0
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    values: list[Any] = []
    failed = 0
    for scalar in column:  # value by value: only old, mixed segments take this path
        if not scalar.is_valid:
            values.append(None)
            continue
        try:
            values.append(scalar.cast(kind, safe=True).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            values.append(None)
            failed += 1
    return pa.array(values, type=kind), failed
