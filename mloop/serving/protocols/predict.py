"""mloop's own routes, ``POST /predict`` and ``POST /feedback``: bodies and the error shape.

Errors are ``{"error": {"code", "message", "field"}}`` with the status of the error class.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from mloop.serving.predictor import InputError
from mloop.serving.protocols.mlflow import rows_from_split

__all__ = ["error", "feedback_items", "rows_from"]


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """mloop's error body."""
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status)


def rows_from(body: Any) -> list[dict[str, Any]]:
    """``instances`` or MLflow's ``dataframe_split`` / ``dataframe_records``."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object", field="body")
    if "instances" in body:
        rows = body["instances"]
    elif "dataframe_records" in body:
        rows = body["dataframe_records"]
    elif "dataframe_split" in body:
        rows = rows_from_split(body["dataframe_split"])
    else:
        raise InputError("expected 'instances', 'dataframe_split' or 'dataframe_records'", field="body")
    if not isinstance(rows, list):
        raise InputError("the rows must be a JSON array", field="instances")
    return rows


def feedback_items(body: Any) -> list[Any]:
    """``{"prediction_id", "label"}`` or ``{"feedback": [...]}`` → the list of items."""
    items = body.get("feedback", [body]) if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise InputError("expected {'prediction_id', 'label'} or {'feedback': [...]}", field="body")
    return items
