"""The prediction service: ``create_app(workspace, name)`` → a FastAPI app that serves a registry alias.

Routes wiring only. It speaks the Open Inference Protocol v2 (``/v2/health/live``,
``/v2/health/ready``, ``/v2/models/{name}``, ``/v2/models/{name}/infer``) and ``POST /predict``
(``instances``, or MLflow's ``dataframe_split`` / ``dataframe_records``); ``POST /feedback`` takes
delayed labels by prediction id; ``GET /metrics`` is Prometheus text. The model service (alias
following, swaps) is :mod:`mloop.serving.service`; each protocol's shapes live in
:mod:`mloop.serving.protocols`.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mloop.errors import MloopError, NotFoundError
from mloop.serving.predictor import InputError
from mloop.serving.protocols import oip_v2, predict
from mloop.serving.service import ModelService, ServeConfig
from mloop.workspace import Workspace

__all__ = ["ModelService", "ServeConfig", "app_from_env", "create_app"]

log = logging.getLogger("mloop.serving")


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
        return predict.error(exc.http_status, exc.code, exc.message, exc.field)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return predict.error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return predict.error(
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
        result = timed(lambda: service.predict(oip_v2.rows_from_v2(body), key))
        return JSONResponse(oip_v2.infer_response(config.model, body, result))

    @app.post("/predict")
    async def predict_route(request: Request) -> Response:
        body = await body_of(request)
        key = request.headers.get("x-request-key") or (body.get("key") if isinstance(body, dict) else None)
        # a ready Response skips FastAPI's element-by-element jsonable_encoder (slow on large batches)
        return JSONResponse(timed(lambda: service.predict(predict.rows_from(body), key)))

    @app.post("/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        return {"accepted": service.feedback(predict.feedback_items(body))}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _check_name(name: str) -> None:
        if name != config.model:
            raise NotFoundError(f"this service serves model {config.model!r}, not {name!r}", field="name")

    return app


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
