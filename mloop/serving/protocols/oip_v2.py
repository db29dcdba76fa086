"""The Open Inference Protocol v2 (KServe REST): tensors in, tensors out."""

from __future__ import annotations

from typing import Any

from mloop.entities import new_id
from mloop.serving.predictor import InputError

__all__ = ["infer_response", "rows_from_v2"]


def rows_from_v2(body: Any) -> list[dict[str, Any]]:
    """Open Inference Protocol tensors (one per column) → rows."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InputError("expected {'inputs': [{'name', 'shape', 'datatype', 'data'}, …]}", field="inputs")
    columns: dict[str, list[Any]] = {}
    for i, tensor in enumerate(body["inputs"]):
        if (
            not isinstance(tensor, dict)
            or not isinstance(tensor.get("name"), str)
            or not isinstance(tensor.get("data"), list)
        ):
            raise InputError(f"inputs[{i}] needs a 'name' and a 'data' list", field=f"inputs[{i}]")
        columns[tensor["name"]] = tensor["data"]
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise InputError("all input tensors must hold the same number of values", field="inputs")
    n = lengths.pop()
    return [{name: data[i] for name, data in columns.items()} for i in range(n)]


def infer_response(model: str, body: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The infer response for one ``ModelService.predict`` result."""
    outputs = [
        {
            "name": "predict",
            "shape": [len(result["predictions"])],
            "datatype": tensor_type(result["predictions"]),
            "data": result["predictions"],
        }
    ]
    if "probabilities" in result:
        flat = [p for row in result["probabilities"] for p in row]
        outputs.append(
            {
                "name": "predict_proba",
                "shape": [len(result["probabilities"]), len(result["classes"])],
                "datatype": "FP64",
                "data": flat,
            }
        )
    request_id = body.get("id") if isinstance(body, dict) else None
    return {
        "model_name": model,
        "model_version": str(result["version"]),
        "id": request_id or new_id(),
        "outputs": outputs,
        "parameters": {"prediction_ids": result["prediction_ids"]},
    }


def tensor_type(values: list[Any]) -> str:
    """The v2 datatype of a list of Python values."""
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"
