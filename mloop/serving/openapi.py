"""The OpenAPI document: the real request bodies and every response, in each protocol's error shape.

Route handlers take the raw ``Request`` (they read bodies within limits themselves), so FastAPI
cannot see the bodies; they are described here. Request schemas for the prediction routes are
built from the served version's signature when the document is first asked for (columns, their
JSON types), so tools that generate requests from the document send rows the model takes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse

from mloop.serving.limits import LARGEST
from mloop.serving.service import PREDICTION_ID

__all__ = ["install"]

_REF = "#/components/schemas/"


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _REF + schema}}}}


def _errors(schema: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Bad request",
        404: "Not found",
        405: "Method not allowed",
        408: "Body not received in time",
        413: "Body too large",
        409: "Labels are not recorded: the server keeps no prediction log",
        415: "Unsupported media type (JSON, UTF-8) or Content-Encoding (bodies are read uncompressed)",
        422: "Invalid input",
        503: "Not ready, or busy: retry after the Retry-After header's seconds",
    }
    return {status: _json(schema, text[status]) for status in statuses}


_V2_COMMON = (400, 404, 405)
V2_SERVER: dict[str, Any] = {
    "responses": {200: _json("V2ServerMetadata", "Server metadata"), **_errors("V2Error", *_V2_COMMON)}
}
V2_LIVE: dict[str, Any] = {"responses": {200: _json("V2Live", "Live"), **_errors("V2Error", *_V2_COMMON)}}
V2_READY: dict[str, Any] = {
    "responses": {
        200: _json("V2Ready", "Ready"),
        503: _json("V2Ready", "Not ready"),
        **_errors("V2Error", *_V2_COMMON),
    }
}
V2_METADATA: dict[str, Any] = {
    "responses": {200: _json("V2ModelMetadata", "Model metadata"), **_errors("V2Error", *_V2_COMMON, 503)}
}
V2_MODEL_READY: dict[str, Any] = {
    "responses": {200: _json("V2ModelReady", "Model ready"), **_errors("V2Error", *_V2_COMMON, 503)}
}
V2_INFER: dict[str, Any] = {
    "responses": {
        200: {
            "description": "Inference response (binary tensor data extension when asked)",
            "content": {
                "application/json": {"schema": {"$ref": _REF + "V2InferenceResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **_errors("V2Error", *_V2_COMMON, 408, 413, 415, 503),
    },
    "openapi_extra": {"x-mloop-body": "V2InferenceRequest"},
}
PING: dict[str, Any] = {
    "responses": {
        200: {"description": "Serving", "content": {"application/json": {"schema": {}}}},
        503: {"description": "Not ready", "content": {"application/json": {"schema": {}}}},
        **_errors("MlflowError", 404, 405),
    }
}
VERSION: dict[str, Any] = {
    "response_class": PlainTextResponse,
    "responses": {
        200: {"description": "mloop's version", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **_errors("MlflowError", 404, 405),
    },
}
INVOCATIONS: dict[str, Any] = {
    "responses": {
        200: _json("MlflowPredictions", "Predictions"),
        415: {
            "description": "Unsupported media type or Content-Encoding (bodies are read uncompressed)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **_errors("MlflowError", 400, 404, 405, 408, 413),
    },
    "openapi_extra": {"x-mloop-body": "MlflowRequest"},
}
PREDICT: dict[str, Any] = {
    "responses": {
        200: _json("Predictions", "Predictions"),
        **_errors("Error", 404, 405, 408, 413, 415, 422),
    },
    "openapi_extra": {"x-mloop-body": "PredictRequest"},
}
FEEDBACK: dict[str, Any] = {
    "responses": {
        200: _json("FeedbackAccepted", "Labels accepted"),
        **_errors("Error", 404, 405, 408, 409, 413, 415, 422, 503),
    },
    "openapi_extra": {"x-mloop-body": "FeedbackRequest"},
}
METRICS: dict[str, Any] = {
    "response_class": PlainTextResponse,
    "responses": {
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **_errors("Error", 404, 405),
    },
}


_TIME = {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}
_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}  # the prediction log's type


def _row(service: Any) -> dict[str, Any]:
    production = service.slots.production
    if production is None:
        return {"type": "object"}
    properties = {}
    for column in production.loaded.columns:
        kind = production.loaded.rules[column].get("type")
        if kind in ("int", "float"):
            schema: dict[str, Any] = (
                _INT64 if kind == "int" else {"type": "number", "minimum": -LARGEST, "maximum": LARGEST}
            )
        elif kind == "bool":
            schema = {"type": "boolean"}
        elif kind == "string":
            schema = {"type": "string"}
        elif kind == "datetime":  # JSON has no time type: ISO-8601 text, as /predict checks
            schema = _TIME
        else:
            schema = {}
        properties[column] = schema
    columns = list(properties)
    keys = service.features.entity_keys(production.loaded.version, columns)
    if not keys:
        row = {"type": "object", "properties": properties, "required": columns}
        return {**row, "additionalProperties": False}
    # a model with a feature service: a row gives its entity keys (the store fills the features it
    # reads; request-time ones are still needed), or every column itself
    looked_up = {c for c in columns if ":" in c}
    for key in keys:
        properties.setdefault(key, {"type": ["string", "number"], "description": "entity key"})
    by_key = [*keys, *(c for c in columns if c not in looked_up and c not in keys)]
    return {
        "type": "object",
        "properties": properties,
        "anyOf": [{"required": by_key}, {"required": columns}],
        "additionalProperties": False,
    }


def _v2_request(service: Any) -> dict[str, Any]:
    """One row per request, one tensor per column, in the signature's order: the form every
    single change of which the service refuses (the spec's wider forms are accepted too)."""
    production = service.slots.production
    columns = production.loaded.columns if production is not None else []
    tensors = []
    for column in columns:
        kind = production.loaded.rules[column].get("type")
        datatype, item = {
            "int": ("INT64", _INT64),
            "float": ("FP64", {"type": "number", "minimum": -LARGEST, "maximum": LARGEST}),
            "bool": ("BOOL", {"type": "boolean"}),
            "datetime": ("BYTES", _TIME),
        }.get(kind, ("BYTES", {"type": "string"}))
        tensors.append(
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "additionalProperties": False,
                "properties": {
                    "name": {"const": column},
                    "shape": {"type": "array", "items": {"const": 1}, "minItems": 1, "maxItems": 2},
                    "datatype": {"const": datatype},
                    "data": {"type": "array", "items": item, "minItems": 1, "maxItems": 1},
                },
            }
        )
    return {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "inputs": {
                "type": "array",
                "prefixItems": tensors,
                "items": False,
                "minItems": len(tensors),
                "maxItems": len(tensors),
            },
        },
    }


def _schemas(service: Any) -> dict[str, Any]:
    row = _row(service)
    production = service.slots.production
    classes = production.loaded.classes if production is not None else None
    label = {
        "type": "object",
        "required": ["prediction_id", "label"],
        "additionalProperties": False,
        "properties": {
            "prediction_id": {"type": "string", "pattern": f"^{PREDICTION_ID.pattern}$"},
            "label": {"enum": classes} if classes else {"type": "number"},
        },
    }
    rows = {"type": "array", "items": row, "minItems": 1, "maxItems": service.config.max_batch_rows}
    nullable_str = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    parameters = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": nullable_str,
                    },
                }
            },
        },
        "V2Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "MlflowError": {
            "type": "object",
            "required": ["error_code", "message"],
            "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
        },
        "V2ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "V2Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "V2Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "V2ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "V2ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "platform": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "inputs": {"type": "array", "items": tensor_meta},
                "outputs": {"type": "array", "items": tensor_meta},
            },
        },
        "V2InferenceRequest": _v2_request(service),
        "V2InferenceResponse": {
            "type": "object",
            "required": ["model_name", "id", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": parameters,
                "outputs": {
                    "type": "array",
                    "items": {"type": "object", "required": ["name", "shape", "datatype"]},
                },
            },
        },
        "MlflowRequest": {
            "type": "object",
            "oneOf": [
                {"required": ["dataframe_records"]},
                {"required": ["instances"]},
                {"required": ["inputs"]},
            ],
            "properties": {"dataframe_records": rows, "instances": rows, "inputs": rows},
            # MLflow ignores keys that are not an input format (their numbers are still bounded)
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        },
        "MlflowPredictions": {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array"}},
        },
        "PredictRequest": {
            "type": "object",
            "required": ["instances"],
            # MLflow's row keys are accepted instead of instances (one of them, never two)
            "properties": {
                "instances": rows,
                "key": nullable_str,
                "dataframe_records": False,
                "dataframe_split": False,
            },
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},  # other keys are ignored
        },
        "Predictions": {
            "type": "object",
            "required": ["model", "version", "predictions", "prediction_ids"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer"},
                "predictions": {"type": "array"},
                "prediction_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "JsonValue": {
            "description": "Any JSON value whose numbers are within ±1e300 (every body is checked so)",
            "anyOf": [
                {"type": "string"},
                {"type": "boolean"},
                {"type": "null"},
                {"type": "number", "minimum": -LARGEST, "maximum": LARGEST},
                {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
                {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
            ],
        },
        "FeedbackRequest": {
            "oneOf": [
                label,
                {"type": "array", "items": label},
                {
                    "type": "object",
                    "required": ["feedback"],
                    "properties": {"feedback": {"type": "array", "items": label}},
                    "additionalProperties": False,
                },
            ]
        },
        "FeedbackAccepted": {
            "type": "object",
            "required": ["accepted"],
            "properties": {"accepted": {"type": "integer"}},
        },
    }


def install(app: FastAPI, service: Any) -> None:
    """Replace ``app.openapi`` with the document described here (built once, on first request)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        slots = (service.slots.production, service.slots.canary, service.slots.shadow)
        served = {  # path parameters: what this service serves (anything else is a documented 404)
            "name": [service.config.model],
            "version": sorted({str(p.loaded.version.version) for p in slots if p is not None}) or ["1"],
        }
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in list(operation.get("responses", {}).items()):
                    if "HTTPValidationError" in str(response):
                        del operation["responses"][status]
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter["name"] in served:
                        parameter["schema"] = {"type": "string", "enum": served[parameter["name"]]}
                body = operation.pop("x-mloop-body", None)
                if body is not None:
                    operation["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": _REF + body}}},
                    }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components.update(_schemas(service))
        if service.slots.production is not None:
            app.openapi_schema = schema  # the signature is known: keep it
        return schema

    app.openapi = document  # type: ignore[method-assign]
