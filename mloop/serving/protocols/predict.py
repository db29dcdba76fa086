"""mloop's own routes, ``POST /predict`` and ``POST /feedback``: bodies and the error shape.

Errors are ``{"error": {"code", "message", "field"}}`` with the status of the error class.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from mloop.auth import challenge
from mloop.serving.limits import clip, parse_json
from mloop.serving.predictor import InputError
from mloop.serving.protocols.mlflow import rows_from_split

__all__ = ["error", "feedback_items", "parse", "request_key", "rows_from"]


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """mloop's error body (the message quotes at most ~200 characters of what was sent)."""
    body = {
        "error": {"code": code, "message": clip(message, 400), "field": clip(field, 100) if field else field}
    }
    return JSONResponse(body, status_code=status, headers=challenge(status))


def parse(raw: bytes, max_depth: int) -> Any:
    """The JSON body, within the nesting limit."""
    return parse_json(raw, max_depth)


def rows_from(body: Any) -> list[dict[str, Any]]:
    """``instances`` or MLflow's ``dataframe_split`` / ``dataframe_records``."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object", field="body")
    given = [key for key in ROW_KEYS if key in body]
    if len(given) != 1:
        found = f", got {' and '.join(repr(k) for k in given)}" if given else ""
        raise InputError(
            f"expected one of 'instances', 'dataframe_split' or 'dataframe_records'{found}", field="body"
        )
    key = given[0]
    rows = rows_from_split(body[key]) if key == "dataframe_split" else body[key]
    if not isinstance(rows, list):
        raise InputError(f"{key!r}: the rows must be a JSON array", field=key)
    return rows


ROW_KEYS = ("instances", "dataframe_records", "dataframe_split")


MAX_FEEDBACK_ITEMS = 10_000


def feedback_items(body: Any) -> list[Any]:
    """``{"prediction_id", "label"}`` or ``{"feedback": [...]}`` → the list of items."""
    if isinstance(body, dict) and "feedback" in body and len(body) > 1:
        raise InputError("{'feedback': [...]} takes no other fields", field="body")
    items = body.get("feedback", [body]) if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise InputError("expected {'prediction_id', 'label'} or {'feedback': [...]}", field="body")
    if len(items) > MAX_FEEDBACK_ITEMS:  # as predictions have max_batch_rows: memory stays bounded
        raise InputError(
            f"{len(items)} labels exceed the limit of {MAX_FEEDBACK_ITEMS} per request", field="feedback"
        )
    for i, item in enumerate(items):
        extra = [k for k in item if k not in ("prediction_id", "label")] if isinstance(item, dict) else []
        if extra:
            raise InputError(
                f"feedback[{i}]: unknown field {clip(repr(extra[0]), 60)}", field=f"feedback[{i}]"
            )
        if isinstance(item, dict) and "prediction_id" in item and not isinstance(item["prediction_id"], str):
            raise InputError(f"feedback[{i}]: prediction_id must be a string", field="prediction_id")
    return items


def request_key(body: Any, header: str | None) -> str | None:
    """The caller's key for sticky canary routing: the ``x-request-key`` header, else ``key``."""
    if header is not None:
        return header
    key = body.get("key") if isinstance(body, dict) else None
    if key is not None and not isinstance(key, str):
        raise InputError(f"key must be a string, got {type(key).__name__}", field="key")
    return key
