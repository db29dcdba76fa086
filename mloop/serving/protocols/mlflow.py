"""MLflow's scoring-server protocol: ``POST /invocations``, ``GET /ping``, ``GET /version``.

``/invocations`` takes ``application/json`` with exactly one of ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs`` (rows as a list of objects, or columns as an
object of lists; MLflow's ``params`` key is allowed and ignored), or ``text/csv`` with a header
row. It answers ``{"predictions": [...]}`` (plus ``prediction_ids`` for ``/feedback``). Errors are
MLflow's: ``{"error_code": "BAD_REQUEST", "message": …}`` with 400 for any bad input, and 415
``text/plain`` for a content type MLflow does not take either.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from mloop.auth import challenge
from mloop.errors import UnsupportedMediaTypeError
from mloop.serving.limits import LARGEST, clip, media_type, parse_json
from mloop.serving.predictor import InputError

__all__ = ["error_response", "rows_from_body", "rows_from_split"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_CODES = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "REQUEST_LIMIT_EXCEEDED",
}


UnsupportedMediaType = UnsupportedMediaTypeError  # the scoring protocol's 415 (a plain-text body)


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    """MLflow's error body; every input error is 400 ``BAD_REQUEST``."""
    if status == 415:
        return PlainTextResponse(clip(message, 400), status_code=415)
    if 400 <= status < 500 and status not in _CODES:
        status = 400
    error_code = _CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    return JSONResponse(
        {"error_code": error_code, "message": clip(message, 400)},
        status_code=status,
        headers=challenge(status),
    )


def rows_from_body(
    raw: bytes, content_type: str, max_depth: int, rules: dict[str, Any]
) -> list[dict[str, Any]]:
    """An ``/invocations`` body → rows (CSV values typed by the signature's ``rules``)."""
    try:
        mime, params = media_type(content_type)
    except UnsupportedMediaType:
        raise UnsupportedMediaType("the scoring server only supports UTF-8") from None
    if set(params) - {"charset"}:
        raise UnsupportedMediaType(f"unrecognized content type parameters: {', '.join(sorted(params))}")
    if mime == "text/csv":
        return _rows_from_csv(raw, rules)
    if mime != "application/json":
        raise UnsupportedMediaType(
            f"this predictor only supports application/json and text/csv, got {clip(content_type, 80)!r}"
        )
    body = parse_json(raw, max_depth)
    if not isinstance(body, dict):
        raise InputError(
            f"the input must be a JSON object with exactly one of the input fields {list(FORMATS)}",
            field="body",
        )
    keys = [key for key in FORMATS if key in body]
    if len(keys) != 1:
        raise InputError(
            f"the input must hold exactly one of the input fields {list(FORMATS)}; got {clip(str(keys))}",
            field="body",
        )
    key = keys[0]
    if key == "dataframe_split":
        return rows_from_split(body[key])
    value = body[key]
    if isinstance(value, dict):  # columnar: {"col": [v, …], …}
        return _rows_from_columns(value, key)
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise InputError(f"{key} must be a list of row objects or an object of column lists", field=key)
    return value


def rows_from_split(split: Any) -> list[dict[str, Any]]:
    """MLflow's ``dataframe_split`` (``{"columns": [...], "data": [[...], ...]}``) → rows."""
    if (
        not isinstance(split, dict)
        or not isinstance(split.get("columns"), list)
        or not isinstance(split.get("data"), list)
    ):
        raise InputError("dataframe_split needs 'columns' and 'data' lists", field="dataframe_split")
    columns = split["columns"]
    if not all(isinstance(c, str) for c in columns):
        raise InputError("dataframe_split.columns must be a list of strings", field="columns")
    if len(set(columns)) != len(columns):
        raise InputError("dataframe_split.columns names a column twice", field="columns")
    rows = []
    for i, values in enumerate(split["data"]):
        if not isinstance(values, list) or len(values) != len(columns):
            raise InputError(f"dataframe_split.data[{i}] must list {len(columns)} values", field=f"data[{i}]")
        rows.append(dict(zip(columns, values, strict=True)))
    return rows


def _rows_from_columns(columns: dict[str, Any], key: str) -> list[dict[str, Any]]:
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise InputError(f"{key}.{clip(name, 60)} must be a list of values", field=name)
        lengths.add(len(values))
    if len(lengths) > 1:
        raise InputError(f"the columns of {key} must hold the same number of values", field=key)
    n = lengths.pop() if lengths else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


def _rows_from_csv(raw: bytes, rules: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        text = raw.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM (pandas drops it too)
    except UnicodeDecodeError as exc:
        raise InputError("the CSV body is not UTF-8 text", field="body") from exc
    try:
        table = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InputError(clip(f"the body is not valid CSV: {exc}"), field="body") from exc
    if not table:
        raise InputError("the CSV body has no header row", field="body")
    header, *lines = table
    if len(set(header)) != len(header):
        raise InputError("the CSV header names a column twice", field="body")
    rows = []
    for i, line in enumerate(lines):
        if len(line) != len(header):
            raise InputError(
                f"CSV line {i + 2} has {len(line)} values, the header {len(header)}", field="body"
            )
        rows.append(
            {name: _typed(value, rules.get(name, {})) for name, value in zip(header, line, strict=True)}
        )
    return rows


def _typed(value: str, rule: dict[str, Any]) -> Any:
    """A CSV cell as the column's type (what pandas' read_csv would infer); left as text if it is not."""
    if value == "":
        return None
    kind = rule.get("type")
    try:
        if kind == "int" and value.isascii() and value.lstrip("+-").isdigit():
            number: float | None = int(value)
        elif kind in ("int", "float"):
            number = float(value)
        else:
            number = None
    except ValueError:
        return value
    if number is not None:
        if not -LARGEST <= number <= LARGEST:  # as in JSON bodies: beyond, a model's arithmetic overflows
            raise InputError(
                f"CSV value {clip(value, 40)!r} is not a finite number within ±{LARGEST:g}", field="body"
            )
        return number
    if kind == "bool" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
