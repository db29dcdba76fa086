"""The Open Inference Protocol v2 (KServe REST ``required_api``), spoken in its own dialect.

Routes: ``GET /v2`` (server metadata), ``/v2/health/{live,ready}``, ``GET /v2/models/{m}[/versions/{v}]``
(metadata with ``inputs`` and ``outputs``), ``GET …/ready``, ``POST …/infer``. A version route
answers for the production, canary or shadow version being served; any other version is 404.

Each model input column is one tensor named after the column, shape ``[n]`` (or ``[n, 1]``); the
outputs are ``predict`` (shape ``[n]``) and, for classifiers, ``predict_proba`` (``[n, classes]``).
Data may be flat or nested, in JSON or in the binary tensor data extension; responses are binary
when the request asks (``binary_data_output`` or an output's ``binary_data``). The response's
``parameters.prediction_ids`` is the rows' prediction ids joined by commas (the spec allows only
strings, numbers and booleans there); ``/feedback`` takes them one by one. Every error, on every
``/v2`` route including unknown ones, is ``{"error": "<message>"}`` with the spec's status codes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response

from mloop.auth import challenge
from mloop.entities import new_id
from mloop.errors import MloopError, NotFoundError
from mloop.names import decimal
from mloop.serving.limits import clip, parse_json
from mloop.serving.predictor import Predictor
from mloop.serving.protocols.tensors import (
    DATATYPES,
    TensorError,
    check_data,
    compatible,
    decode_binary,
    encode_binary,
    flatten,
)
from mloop.serving.responses import AnswerResponse

__all__ = ["InferRequest", "decode_request", "error_response", "infer_response", "metadata"]

HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("predict", "predict_proba")


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """The spec's error body; input errors of any kind are 400 (not found 404, limits 408/413, a
    compressed body 415, and a missing or insufficient token 401/403, which HTTP clients act on)."""
    if 400 <= status < 500 and status not in (401, 403, 404, 405, 408, 413, 415):
        status = 400
    return JSONResponse({"error": clip(message, 400)}, status_code=status, headers=challenge(status))


@dataclass
class InferRequest:
    """A decoded infer request: the rows, which outputs, in which encoding, and the id to echo."""

    rows: list[dict[str, Any]]
    id: str
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    binary: dict[str, bool] = field(default_factory=dict)


def decode_request(
    raw: bytes,
    header_length: str | None,
    max_depth: int,
    predictor: Predictor,
    entity_keys: Sequence[str] = (),
) -> InferRequest:
    """The request body (JSON, or JSON header + binary tensors) → rows, checked against the spec and
    ``predictor``'s signature; ``entity_keys`` are accepted as inputs too (a model that reads its
    features from the online store by those keys)."""
    blobs = b""
    if header_length is not None:
        n = decimal(header_length, 18)
        if n is None or n > len(raw):
            raise TensorError(
                f"{HEADER_LENGTH} {clip(header_length, 40)!r} does not fit the body", field="body"
            )
        raw, blobs = raw[:n], raw[n:]
    body = parse_json(raw, max_depth)
    if not isinstance(body, dict):
        raise TensorError("the body must be a JSON object with 'inputs'", field="body")
    # kserve's client also sends model_name (and may send model_version): allowed, as strings
    _known_keys(body, ("id", "parameters", "inputs", "outputs", "model_name", "model_version"), "the request")
    for key in ("model_name", "model_version"):
        if key in body and not isinstance(body[key], str):
            raise TensorError(f"'{key}' must be a string", field=key)
    request_id = _request_id(body.get("id"))
    params = _parameters(body.get("parameters"), "parameters")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("'inputs' must be a non-empty list of tensors", field="inputs")
    columns: dict[str, list[Any]] = {}
    rows_n: int | None = None
    offset = 0
    rules = {**{key: {"type": "any"} for key in entity_keys}, **predictor.loaded.rules}
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise TensorError(f"{where} must be an object", field=where)
        _known_keys(tensor, ("name", "shape", "datatype", "parameters", "data"), where)
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str):
            raise TensorError(f"{where}.name must be a string", field=where)
        where = f"input {clip(name, 60)!r}"
        if name in columns:
            raise TensorError(f"{where} appears twice", field=name)
        if name not in rules:
            raise TensorError(f"{where} is not an input of the model (it takes {list(rules)})", field=name)
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise TensorError(f"{where}: unknown datatype {clip(repr(datatype), 40)}", field=name)
        if not compatible(datatype, rules[name]):
            raise TensorError(
                f"{where}: datatype {datatype} does not fit the column's type {rules[name].get('type')!r}",
                field=name,
            )
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
        ):
            raise TensorError(f"{where}: shape must be a non-empty list of non-negative integers", field=name)
        if len(shape) > 2 or math.prod(shape[1:]) != 1:
            raise TensorError(f"{where}: shape {shape} is not one value per row ([n] or [n, 1])", field=name)
        count = shape[0]
        tensor_params = _parameters(tensor.get("parameters"), f"{where}.parameters")
        size = tensor_params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(blobs):
                raise TensorError(f"{where}: binary_data_size {size!r} does not fit the body", field=name)
            if "data" in tensor:
                raise TensorError(f"{where}: has both 'data' and binary_data_size", field=name)
            values = decode_binary(blobs[offset : offset + size], datatype, count, where)
            offset += size
        else:
            data = tensor.get("data")
            if not isinstance(data, list):
                raise TensorError(f"{where}: 'data' must be a list", field=name)
            values = flatten(data, shape, where)
            if len(values) != count:
                raise TensorError(
                    f"{where}: {len(values)} values, the shape {shape} says {count}", field=name
                )
            check_data(values, datatype, where)
        if rows_n is not None and count != rows_n:
            raise TensorError(f"{where}: {count} rows, the other inputs have {rows_n}", field=name)
        rows_n = count
        columns[name] = values
    if offset != len(blobs):
        raise TensorError(f"{len(blobs) - offset} bytes of binary data belong to no input", field="body")
    n = rows_n or 0
    rows = [{name: values[i] for name, values in columns.items()} for i in range(n)]
    request = InferRequest(rows, request_id)
    default_binary = _flag(params, "binary_data_output", "parameters")
    requested = body.get("outputs")
    if requested is None:
        request.binary = dict.fromkeys(OUTPUTS, default_binary)
        return request
    if not isinstance(requested, list):
        raise TensorError("'outputs' must be a list of {'name': …}", field="outputs")
    request.outputs = []
    for j, output in enumerate(requested):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise TensorError(f"outputs[{j}] must be an object with a 'name'", field="outputs")
        name = output["name"]
        if name not in OUTPUTS or name in request.outputs:
            raise TensorError(
                f"outputs[{j}]: {clip(repr(name), 60)} is not an output, or repeats one", field=name
            )
        out_params = _parameters(output.get("parameters"), f"outputs[{j}].parameters")
        binary = out_params.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise TensorError(f"outputs[{j}].parameters.binary_data must be a boolean", field=name)
        request.outputs.append(name)
        request.binary[name] = binary
    return request


def _request_id(value: Any) -> str:
    if value is None:
        return new_id()
    if isinstance(value, str):
        return value
    raise TensorError("'id' must be a string", field="id")


def _known_keys(obj: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [key for key in obj if key not in known]
    if unknown:
        raise TensorError(
            f"{where}: unknown field {clip(repr(unknown[0]), 60)} (fields: {list(known)})", field=where
        )


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"{where} must be an object", field=where)
    return value


def _flag(params: dict[str, Any], name: str, where: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise TensorError(f"{where}.{name} must be a boolean", field=name)
    return value


def infer_response(model: str, request: InferRequest, result: dict[str, Any]) -> Response:
    """The infer response for one ``ModelService.predict`` result, JSON or binary as asked."""
    predictions = result["predictions"]
    n = len(predictions)
    tensors: dict[str, tuple[list[int], str, list[Any]]] = {
        "predict": ([n], tensor_type(predictions), predictions)
    }
    if "probabilities" in result:
        k = len(result["classes"])
        flat = [p for row in result["probabilities"] for p in row]
        tensors["predict_proba"] = ([n, k], "FP64", flat)
    outputs, blobs = [], []
    for name in request.outputs:
        if name not in tensors:
            raise TensorError(f"output {name!r} is not produced by this model (a regressor)", field=name)
        shape, datatype, data = tensors[name]
        if request.binary.get(name):
            blob = encode_binary(data, datatype)
            blobs.append(blob)
            outputs.append({"name": name, "shape": shape, "datatype": datatype,
                            "parameters": {"binary_data_size": len(blob)}})  # fmt: skip
        else:
            outputs.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    body = {
        "model_name": model,
        "model_version": str(result["version"]),
        "id": request.id,
        "parameters": {"prediction_ids": ",".join(result["prediction_ids"])},
        "outputs": outputs,
    }
    if not blobs:
        return AnswerResponse(body)
    header = json.dumps(body, separators=(",", ":")).encode()
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def metadata(
    model: str, predictor: Predictor, versions: list[str], extra: dict[str, Any], entity_keys: list[str]
) -> dict[str, Any]:
    """Model metadata: the spec's fields (with ``inputs`` and ``outputs``), then mloop's own. A model
    with a feature service lists its features as ``inputs`` and, in ``entity_keys``, the key tensors a
    request may send instead of the features it reads by key (the spec has no way to say "either")."""
    loaded = predictor.loaded
    keyed = {"entity_keys": entity_keys} if entity_keys else {}
    outputs = [{"name": "predict", "datatype": tensor_type(loaded.classes or [0.0]), "shape": [-1]}]
    if loaded.classes is not None:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(loaded.classes)]})
    return {
        "name": model,
        "versions": versions,
        "platform": "mloop",
        "inputs": [
            {"name": c, "datatype": _datatype(loaded.rules[c]), "shape": [-1]} for c in loaded.columns
        ],
        "outputs": outputs,
        **keyed,
        **extra,
    }


class ModelNotReady(MloopError):
    """The model is not loaded yet (HTTP 503)."""

    code = "not_ready"
    http_status = 503


def not_served(model: str, name: str, version: str | None = None) -> NotFoundError:
    """The 404 for a model or version this service does not serve."""
    if version is None:
        return NotFoundError(f"this service serves model {model!r}, not {clip(name, 100)!r}", field="name")
    return NotFoundError(f"version {clip(version, 40)!r} of {model!r} is not served here", field="version")


def _datatype(rule: dict[str, Any]) -> str:
    return {"int": "INT64", "float": "FP64", "bool": "BOOL"}.get(rule.get("type", ""), "BYTES")


def tensor_type(values: list[Any]) -> str:
    """The v2 datatype of a list of Python values."""
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"
