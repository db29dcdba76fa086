"""The prediction service: ``create_app(workspace, name)`` → a FastAPI app that serves a registry alias.

It speaks the Open Inference Protocol v2 (``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/{name}``, ``/v2/models/{name}/infer``) and ``POST /predict`` (``instances``, or MLflow's
``dataframe_split`` / ``dataframe_records``); ``POST /feedback`` takes delayed labels by prediction
id; ``GET /metrics`` is Prometheus text. A watcher follows the aliases: when ``production`` (or the
canary or shadow alias) moves, the new version is loaded, digest-verified and smoke-tested in the
background, then swapped in with one reference assignment — requests in flight finish on the version
they started with, none fails. A version that fails to load is not swapped in; the old one keeps
serving and the failure is reported.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mloop.core.compiled import OnnxModel
from mloop.entities import ModelVersion, new_id, utcnow
from mloop.errors import MloopError, NotFoundError
from mloop.monitoring.log import PredictionLog, encode
from mloop.serving.predictor import InputError, LoadedModel, Predictor
from mloop.workspace import Workspace

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("mloop.serving")


@dataclass(frozen=True)
class ServeConfig:
    """How the service serves one model name."""

    model: str
    alias: str = "production"
    canary_alias: str = "canary"
    canary_fraction: float = 0.0
    shadow_alias: str | None = None
    max_batch_rows: int = 1000
    out_of_domain: str = "count"
    poll_interval_s: float = 1.0
    log_predictions: bool = True
    flush_interval_s: float = 1.0
    recent_ids: int = 1_000_000
    compiled: bool = True  # serve a version's proven-equal compiled form (ONNX) when it has one


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mloop_requests", "Requests answered", ["model", "version", "status"], registry=r
        )
        self.latency = Histogram(
            "mloop_request_latency_seconds",
            "Request latency",
            ["model", "version"],
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.rows = Counter(
            "mloop_predicted_rows", "Rows predicted", ["model", "version", "role"], registry=r
        )
        self.invalid = Counter(
            "mloop_validation_failures", "Requests refused by input validation", ["model"], registry=r
        )
        self.out_of_domain = Counter(
            "mloop_out_of_domain_values", "Accepted out-of-domain values", ["model", "column"], registry=r
        )
        self.loads = Counter(
            "mloop_model_loads", "Model load attempts", ["model", "version", "outcome"], registry=r
        )
        self.alias = Gauge(
            "mloop_alias_version", "Version currently served per alias", ["model", "alias"], registry=r
        )
        self.dropped = Gauge(
            "mloop_prediction_log_dropped", "Log records dropped (buffer full)", ["model"], registry=r
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def of(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the lookup is ~3 µs, a tenth of a single-row answer."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class _Slots:
    """The versions being served, swapped by assignment (atomic in Python)."""

    def __init__(self) -> None:
        self.production: Predictor | None = None
        self.canary: Predictor | None = None
        self.shadow: Predictor | None = None
        self.last_error: str | None = None


class ModelService:
    """Everything behind the endpoints; kept apart from FastAPI so it can be driven directly."""

    def __init__(self, workspace: Workspace, config: ServeConfig, log_root: Path | None = None) -> None:
        self.ws = workspace
        self.config = config
        self.slots = _Slots()
        self.metrics = _Metrics()
        root = log_root or ((workspace.root or Path.cwd()) / "prediction-log")
        self.log = (
            PredictionLog(root, config.model, flush_interval_s=config.flush_interval_s)
            if config.log_predictions
            else None
        )
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._stop = threading.Event()
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mloop-shadow")
        self._watcher: threading.Thread | None = None

    # loading ------------------------------------------------------------------------------------

    def _load(self, alias: str) -> Predictor | None:
        try:
            version = self.ws.model_version(f"{self.config.model}@{alias}")
        except NotFoundError:
            return None
        current = getattr(self.slots, self._slot_of(alias))
        if current is not None and current.loaded.version.id == version.id:
            return current
        try:
            model = self._model_of(version)
            loaded = LoadedModel.from_version(version, model)
            predictor = Predictor(loaded, out_of_domain=self.config.out_of_domain)
            predictor.predict_rows([loaded.sample_row()])  # smoke test before it takes traffic
        except Exception as exc:
            self.metrics.loads.labels(self.config.model, str(version.version), "failed").inc()
            self.slots.last_error = (
                f"v{version.version} ({alias}) failed to load: {type(exc).__name__}: {exc}"
            )
            log.error("%s; still serving the previous version", self.slots.last_error)
            return current
        self.metrics.loads.labels(self.config.model, str(version.version), "loaded").inc()
        self.metrics.alias.labels(self.config.model, alias).set(version.version)
        return predictor

    def _model_of(self, version: ModelVersion) -> Any:
        """The compiled form when the version has one (starts without scikit-learn, model call ~20x
        faster, proven equal at registration), else the model itself; both digest-verified."""
        form = version.signature.get("serving_form") or {}
        if self.config.compiled and form.get("format") == "onnx":
            try:
                return self.ws.load_artifact(form["artifact_id"])
            except MloopError as exc:  # e.g. onnxruntime not installed here: the model itself still serves
                log.warning("v%s: its ONNX form did not load (%s); serving the model", version.version, exc)
        return self.ws.load_artifact(version.artifact_id)

    def _slot_of(self, alias: str) -> str:
        if alias == self.config.alias:
            return "production"
        return "canary" if alias == self.config.canary_alias else "shadow"

    def refresh(self) -> None:
        """Follow the aliases now: load what moved, swap it in (or keep the old one if it fails)."""
        production = self._load(self.config.alias)
        if production is None and self.slots.production is None:
            raise NotFoundError(f"model {self.config.model!r} has no alias {self.config.alias!r} to serve")
        if production is not None:
            self.slots.production = production
        if self.config.canary_fraction > 0:
            self.slots.canary = self._load(self.config.canary_alias)
        if self.config.shadow_alias:
            self.slots.shadow = self._load(self.config.shadow_alias)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.poll_interval_s):
            try:
                self.refresh()
            except Exception as exc:  # the registry may be briefly unreachable: keep serving
                log.warning("could not refresh %s: %s", self.config.model, exc)

    def start(self) -> None:
        self.refresh()
        if self.log is not None:
            self.log.start()
        self._watcher = threading.Thread(target=self._watch, name="mloop-alias-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._shadow_pool.shutdown(wait=True)
        if self.log is not None:
            self.log.close()

    # predicting ---------------------------------------------------------------------------------

    def _route(self, key: str | None) -> tuple[str, Predictor]:
        canary, fraction = self.slots.canary, self.config.canary_fraction
        production = self.slots.production
        assert production is not None
        if canary is None or fraction <= 0:
            return "production", production
        if key is not None:  # sticky: one caller always sees one model
            u = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
        else:
            u = random.random()
        return ("canary", canary) if u < fraction else ("production", production)

    def predict(self, rows: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
        if not rows:
            raise InputError("no rows to predict", field="instances")
        if len(rows) > self.config.max_batch_rows:
            raise InputError(
                f"{len(rows)} rows exceed the limit of {self.config.max_batch_rows} per request",
                field="instances",
            )
        role, predictor = self._route(key)
        started = time.perf_counter()
        try:
            checked = predictor.validate(rows)
        except InputError:
            self.metrics.invalid.labels(self.config.model).inc()
            raise
        for column, n in checked.out_of_domain.items():
            self.metrics.out_of_domain.labels(self.config.model, column).inc(n)
        predictions, probabilities = predictor.predict_rows(rows, checked)
        latency = time.perf_counter() - started
        version = predictor.loaded.version
        request_id = new_id()  # one ULID per request; rows are numbered within it (sortable, unique)
        ids = [f"{request_id}-{i}" for i in range(len(rows))]
        self.metrics.of(self.metrics.rows, self.config.model, str(version.version), role).inc(len(rows))
        self._remember(ids)
        self._record(checked.columns, ids, predictions, probabilities, version.version, role, latency, key)
        shadow = self.slots.shadow
        if shadow is not None:
            self._shadow_pool.submit(self._shadow_predict, shadow, rows, ids, key)
        answer: dict[str, Any] = {
            "model": self.config.model,
            "version": version.version,
            "predictions": predictions,
            "prediction_ids": ids,
        }
        if probabilities is not None:
            answer["probabilities"] = probabilities
            answer["classes"] = predictor.loaded.classes
        return answer

    def _shadow_predict(
        self, shadow: Predictor, rows: list[dict[str, Any]], ids: list[str], key: str | None
    ) -> None:
        try:
            checked = shadow.validate(rows)
            started = time.perf_counter()
            predictions, probabilities = shadow.predict_rows(rows, checked)
            self._record(
                checked.columns,
                ids,
                predictions,
                probabilities,
                shadow.loaded.version.version,
                "shadow",
                time.perf_counter() - started,
                key,
            )
        except Exception as exc:  # a shadow must never hurt the live path
            log.warning("shadow prediction failed: %s", exc)

    def _record(
        self,
        columns: dict[str, list[Any]],
        ids: list[str],
        predictions: list[Any],
        probabilities: list[list[float]] | None,
        version: int,
        role: str,
        latency: float,
        key: str | None,
    ) -> None:
        if self.log is None:
            return
        n = len(ids)
        chunk: dict[str, list[Any]] = {
            "prediction_id": ids,
            "ts": [utcnow()] * n,
            "model": [self.config.model] * n,
            "version": [version] * n,
            "role": [role] * n,
            "latency_ms": [latency * 1000 / n] * n,
            "request_key": [key] * n,
            "prediction": [encode(p) for p in predictions],
            "probability": [max(p) for p in probabilities] if probabilities else [None] * n,
            # binary models: P(second class), what ROC-AUC needs when the labels arrive
            "score": [p[1] for p in probabilities]
            if probabilities and len(probabilities[0]) == 2
            else [None] * n,
        }
        chunk.update({f"input.{name}": values for name, values in columns.items()})
        self.log.append(chunk)
        self.metrics.of(self.metrics.dropped, self.config.model).set(self.log.dropped)

    def _remember(self, ids: list[str]) -> None:
        with self._recent_lock:
            for pid in ids:
                self._recent[pid] = None
            while len(self._recent) > self.config.recent_ids:
                self._recent.popitem(last=False)

    def feedback(self, items: list[dict[str, Any]]) -> int:
        """Attach delayed labels to prediction ids this service answered."""
        classes = self.slots.production.loaded.classes if self.slots.production else None
        records = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "prediction_id" not in item or "label" not in item:
                raise InputError(
                    f"feedback[{i}]: expected {{'prediction_id': …, 'label': …}}", field=f"feedback[{i}]"
                )
            pid, label = item["prediction_id"], item["label"]
            with self._recent_lock:
                known = pid in self._recent
            if not known:
                raise NotFoundError(f"feedback[{i}]: unknown prediction id {pid!r}", field="prediction_id")
            if classes is not None and label not in classes:
                raise InputError(
                    f"feedback[{i}]: label {label!r} is not one of the model's classes {classes}",
                    field="label",
                )
            if classes is None and (isinstance(label, bool) or not isinstance(label, int | float)):
                raise InputError(f"feedback[{i}]: label {label!r} is not a number", field="label")
            records.append({"prediction_id": pid, "label": encode(label), "ts": utcnow()})
        if self.log is not None and records:
            self.log.feedback({key: [r[key] for r in records] for key in ("prediction_id", "label", "ts")})
        return len(records)

    def describe(self) -> dict[str, Any]:
        def slot(p: Predictor | None) -> dict[str, Any] | None:
            if p is None:
                return None
            v = p.loaded.version
            return {
                "version": v.version,
                "id": v.id,
                "inputs": p.loaded.columns,
                "classes": p.loaded.classes,
                "runtime": "onnx" if isinstance(p.loaded.model, OnnxModel) else "python",
            }

        return {
            "name": self.config.model,
            "versions": [str(self.slots.production.loaded.version.version)] if self.slots.production else [],
            "platform": "mloop",
            "production": slot(self.slots.production),
            "canary": slot(self.slots.canary),
            "canary_fraction": self.config.canary_fraction,
            "shadow": slot(self.slots.shadow),
            "last_error": self.slots.last_error,
            "inputs": [
                {"name": c, "datatype": _datatype(self.slots.production.loaded.rules[c]), "shape": [-1]}
                for c in self.slots.production.loaded.columns
            ]
            if self.slots.production
            else [],
        }


def _datatype(rule: dict[str, Any]) -> str:
    return {"int": "INT64", "float": "FP64", "bool": "BOOL"}.get(rule.get("type", ""), "BYTES")


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status)


def _rows_from(body: Any) -> list[dict[str, Any]]:
    """``instances`` or MLflow's ``dataframe_split`` / ``dataframe_records``."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object", field="body")
    if "instances" in body:
        rows = body["instances"]
    elif "dataframe_records" in body:
        rows = body["dataframe_records"]
    elif "dataframe_split" in body:
        split = body["dataframe_split"]
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
                raise InputError(
                    f"dataframe_split.data[{i}] must list {len(columns)} values", field=f"data[{i}]"
                )
            rows.append(dict(zip(columns, values, strict=True)))
    else:
        raise InputError("expected 'instances', 'dataframe_split' or 'dataframe_records'", field="body")
    if not isinstance(rows, list):
        raise InputError("the rows must be a JSON array", field="instances")
    return rows


def _rows_from_v2(body: Any) -> list[dict[str, Any]]:
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


def create_app(workspace: Workspace, config: ServeConfig | str, *, log_root: Path | None = None) -> FastAPI:
    """The service for ``config.model``; the model is loaded when the app starts (lifespan)."""
    if isinstance(config, str):
        config = ServeConfig(model=config)
    service = ModelService(workspace, config, log_root)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title=f"mloop: {config.model}", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(MloopError)
    async def mloop_error(request: Request, exc: MloopError) -> JSONResponse:
        return _error(exc.http_status, exc.code, exc.message, exc.field)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(
            422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}", where or None
        )

    async def body_of(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError as exc:
            raise InputError("the body is not valid JSON", field="body") from exc

    def timed(fn: Any) -> Any:
        started = time.perf_counter()
        try:
            result = fn()
        except MloopError as exc:
            service.metrics.requests.labels(config.model, "-", str(exc.http_status)).inc()
            raise
        version = str(result["version"])
        metrics = service.metrics
        metrics.of(metrics.requests, config.model, version, "200").inc()
        metrics.of(metrics.latency, config.model, version).observe(time.perf_counter() - started)
        return result

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        ok = service.slots.production is not None
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        _check_name(name)
        return service.describe()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        _check_name(name)
        body = await body_of(request)
        key = request.headers.get("x-request-key")
        result = timed(lambda: service.predict(_rows_from_v2(body), key))
        outputs = [
            {
                "name": "predict",
                "shape": [len(result["predictions"])],
                "datatype": _tensor_type(result["predictions"]),
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
        return JSONResponse(
            {
                "model_name": config.model,
                "model_version": str(result["version"]),
                "id": request_id or new_id(),
                "outputs": outputs,
                "parameters": {"prediction_ids": result["prediction_ids"]},
            }
        )

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = await body_of(request)
        key = request.headers.get("x-request-key") or (body.get("key") if isinstance(body, dict) else None)
        # a ready Response skips FastAPI's element-by-element jsonable_encoder (slow on large batches)
        return JSONResponse(timed(lambda: service.predict(_rows_from(body), key)))

    @app.post("/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        items = body.get("feedback", [body]) if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise InputError("expected {'prediction_id', 'label'} or {'feedback': [...]}", field="body")
        return {"accepted": service.feedback(items)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _check_name(name: str) -> None:
        if name != config.model:
            raise NotFoundError(f"this service serves model {config.model!r}, not {name!r}", field="name")

    return app


def _tensor_type(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def app_from_env() -> FastAPI:
    """The app ``mloop serve`` starts in each uvicorn worker (configuration via the environment)."""
    import json
    import os

    config = ServeConfig(**json.loads(os.environ["MLOOP_SERVE_CONFIG"]))
    log_root = os.environ.get("MLOOP_SERVE_LOG_ROOT")
    return create_app(
        Workspace.open(os.environ.get("MLOOP_WORKSPACE")),
        config,
        log_root=Path(log_root) if log_root else None,
    )
