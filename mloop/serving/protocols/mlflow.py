"""MLflow's scoring-server input formats (``dataframe_split``, ``dataframe_records``)."""

from __future__ import annotations

from typing import Any

from mloop.serving.predictor import InputError

__all__ = ["rows_from_split"]


def rows_from_split(split: Any) -> list[dict[str, Any]]:
    """MLflow's ``dataframe_split`` (``{"columns": [...], "data": [[...], ...]}``) → rows."""
    if (
        not isinstance(split, dict)
        or not isinstance(split.get("columns"), list)
        or not isinstance(split.get("data"), list)
    ):
        raise InputError("dataframe_split needs 'columns' and 'data' lists", field="dataframe_split")
    columns = split["columns"]
    rows = []
    for i, values in enumerate(split["data"]):
        if not isinstance(values, list) or len(values) != len(columns):
            raise InputError(f"dataframe_split.data[{i}] must list {len(columns)} values", field=f"data[{i}]")
        rows.append(dict(zip(columns, values, strict=True)))
    return rows
