"""The prediction service: ``create_app(workspace, name)`` → a FastAPI app that serves a registry alias.

Routes wiring only: each route reads the body within the limits (:mod:`mloop.serving.limits`),
hands it to its protocol's module (:mod:`mloop.serving.protocols`) to decode, calls the one
:class:`~mloop.serving.service.ModelService`, and lets the protocol shape the answer and its
errors. Protocols: the Open Inference Protocol v2 (``/v2/…``), MLflow's scoring server
(``/invocations``, ``/ping``, ``/version``) and mloop's own ``POST /predict`` and
``POST /feedback``; ``GET /metrics`` is Prometheus text. Bodies above ``offload_bytes`` are parsed
and predicted in a worker thread so one-row requests stay fast beside them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from mloop.auth import ROLES, check_token
from mloop.errors import BusyError, MloopError, UnsupportedEncodingError
from mloop.names import decimal
from mloop.serving import openapi
from mloop.serving.batching import Batcher, alone
from mloop.serving.hotpath import ServiceApp
from mloop.serving.limits import json_only, json_or_binary, read_body
from mloop.serving.metrics import RequestCounter
from mloop.serving.protocols import mlflow, oip_v2, predict
from mloop.serving.responses import AnswerResponse
from mloop.serving.service import ModelService, ServeConfig
from mloop.workspace import Workspace

__all__ = ["ModelService", "ServeConfig", "app_from_env", "create_app"]

log = logging.getLogger("mloop.serving")
T = TypeVar("T")
PREDICTING = frozenset(
    {"/predict", "/invocations", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"}
)


def _version() -> str:
    try:
        return package_version("mloop")
    except PackageNotFoundError:
        return "0.0.0"


def _error_shape(path: str) -> Callable[..., Response]:
    """Which protocol's error body a path answers with."""
    if path == "/v2" or path.startswith("/v2/"):
        return oip_v2.error_response
    if path in ("/invocations", "/ping", "/version"):
        return mlflow.error_response
    return predict.error


FEEDBACK_ROLES = ("feedback", "editor", "admin")  # who may post labels (they drive retraining)


def create_app(workspace: Workspace, config: ServeConfig | str, *, log_root: Path | None = None) -> FastAPI:
    """The service for ``config.model``; the model is loaded when the app starts (lifespan)."""
    if isinstance(config, str):
        config = ServeConfig(model=config)
    service = ModelService(workspace, config, log_root)
    batcher = Batcher(service, config.batch_rows)
    model = config.model
    offload = anyio.CapacityLimiter(2)  # large requests share two threads; small ones never wait

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = ServiceApp(title=f"mloop: {model}", version=_version(), lifespan=lifespan)
    app.state.service = service
    app.add_middleware(RequestCounter, metrics=service.metrics, model=model, predicting=PREDICTING)
    counter = RequestCounter(None, service.metrics, model, PREDICTING)  # the hot routes count here

    def fail(request: Request, status: int, code: str, message: str, field: str | None = None) -> Response:
        return _error_shape(request.url.path)(status, code, message, field)

    @app.exception_handler(MloopError)
    async def mloop_error(request: Request, exc: MloopError) -> Response:
        response = fail(request, exc.http_status, exc.code, exc.message, exc.field)
        if exc.http_status in (408, 413):  # the rest of the body is not wanted: stop reading it
            response.headers["connection"] = "close"
        if isinstance(exc, UnsupportedEncodingError):
            response.headers["accept-encoding"] = "identity"
        if isinstance(exc, BusyError):
            response.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        message = (
            f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        )
        response = fail(request, exc.status_code, code, str(message))
        response.headers.update(exc.headers or {})  # 405 carries Allow
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return fail(request, 422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}", where)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error serving %s", request.url.path)
        return fail(request, 500, "internal_error", f"{type(exc).__name__}: {exc}")

    async def body_of(request: Request) -> bytes:
        return await read_body(request, config.max_body_bytes, config.read_timeout_s)

    async def run(request: Request, size: int, work: Callable[[], T]) -> T:
        """``work()`` (decode, predict, encode), in a worker thread when the body is large."""
        started = time.perf_counter()
        result = (
            await anyio.to_thread.run_sync(work, limiter=offload) if size > config.offload_bytes else work()
        )
        version = getattr(request.state, "version", None)
        if version is not None:
            metrics = service.metrics
            metrics.of(metrics.latency, model, version).observe(time.perf_counter() - started)
        return result

    async def answer(
        request: Request,
        size: int,
        decode: Callable[[], tuple[list[dict[str, Any]], str | None, int | None]],
        encode: Callable[[dict[str, Any]], Response],
    ) -> Response:
        """Decode the rows, predict (coalesced with concurrent requests by the batcher; a large body
        alone, in a worker thread), encode the answer."""
        if size > config.offload_bytes:

            def work() -> Response:
                rows, key, version = decode()
                return encode(predicted(request, service.predict(rows, key, version)))

            return await run(request, size, work)
        started = time.perf_counter()
        rows, key, version = decode()
        response = encode(
            predicted(request, await batcher.predict(rows, key, version, lone=alone(request.scope)))
        )
        metrics = service.metrics
        metrics.of(metrics.latency, model, request.state.version).observe(time.perf_counter() - started)
        return response

    def authorize(request: Request, roles: tuple[str, ...]) -> None:
        """The request's bearer token must hold one of ``roles`` (the team server's token store)."""
        check_token(workspace.tokens, request.headers.get("authorization"), roles)

    def predicted(request: Request, result: dict[str, Any]) -> dict[str, Any]:
        request.state.version = str(result["version"])
        return result

    def served(name: str, version: str | None = None) -> Any:
        if name != model:
            raise oip_v2.not_served(model, name)
        production = service.slots.production
        if production is None:
            raise oip_v2.ModelNotReady(f"{model!r} is not loaded yet")
        if version is None:
            return production, None
        number = decimal(version)
        pinned = service.serving(number) if number is not None else None
        if pinned is None or number is None:
            raise oip_v2.not_served(model, name, version)
        return pinned[1], number

    def versions() -> list[str]:
        slots = (service.slots.production, service.slots.canary, service.slots.shadow)
        return list(dict.fromkeys(str(p.loaded.version.version) for p in slots if p is not None))

    # Open Inference Protocol v2 ------------------------------------------------------------------

    @app.get("/v2", **openapi.V2_SERVER)
    async def server_metadata() -> Response:
        return JSONResponse({"name": "mloop", "version": _version(), "extensions": ["binary_tensor_data"]})

    @app.get("/v2/health/live", **openapi.V2_LIVE)
    async def live() -> Response:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", **openapi.V2_READY)
    async def ready() -> Response:
        ok = service.slots.production is not None
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}", **openapi.V2_METADATA)
    @app.get("/v2/models/{name}/versions/{version}", **openapi.V2_METADATA)
    async def model_metadata(name: str, version: str | None = None) -> Response:
        predictor, _ = served(name, version)
        keys = service.features.entity_keys(predictor.loaded.version, predictor.loaded.columns)
        return JSONResponse(oip_v2.metadata(model, predictor, versions(), service.describe(), keys))

    @app.get("/v2/models/{name}/ready", **openapi.V2_MODEL_READY)
    @app.get("/v2/models/{name}/versions/{version}/ready", **openapi.V2_MODEL_READY)
    async def model_ready(name: str, version: str | None = None) -> Response:
        served(name, version)
        return JSONResponse({"name": model, "ready": True})

    @app.post("/v2/models/{name}/infer", **openapi.V2_INFER)
    @app.post("/v2/models/{name}/versions/{version}/infer", **openapi.V2_INFER)
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        if config.predict_auth:
            authorize(request, ROLES)
        predictor, pinned = served(name, version)
        json_or_binary(request.headers.get("content-type"))  # before the body: a form post is refused
        raw = await body_of(request)
        header_length = request.headers.get(oip_v2.HEADER_LENGTH)
        key = request.headers.get("x-request-key")

        decoded: list[oip_v2.InferRequest] = []

        def decode() -> tuple[list[dict[str, Any]], str | None, int | None]:
            keys = service.features.entity_keys(predictor.loaded.version, predictor.loaded.columns)
            decoded.append(oip_v2.decode_request(raw, header_length, config.max_json_depth, predictor, keys))
            return decoded[0].rows, key, pinned

        return await answer(
            request, len(raw), decode, lambda result: oip_v2.infer_response(model, decoded[0], result)
        )

    # MLflow scoring server ------------------------------------------------------------------------

    @app.get("/ping", **openapi.PING)
    async def ping() -> Response:
        ok = service.slots.production is not None
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/version", **openapi.VERSION)
    async def version_route() -> Response:
        return PlainTextResponse(_version())

    @app.post("/invocations", **openapi.INVOCATIONS)
    async def invocations(request: Request) -> Response:
        if config.predict_auth:
            authorize(request, ROLES)
        raw = await body_of(request)
        content_type = request.headers.get("content-type", "application/json")
        key = request.headers.get("x-request-key")

        def decode() -> tuple[list[dict[str, Any]], str | None, int | None]:
            production = service.slots.production
            rules = production.loaded.rules if production is not None else {}
            return mlflow.rows_from_body(raw, content_type, config.max_json_depth, rules), key, None

        def encode(result: dict[str, Any]) -> Response:
            return AnswerResponse(
                {"predictions": result["predictions"], "prediction_ids": result["prediction_ids"]}
            )

        return await answer(request, len(raw), decode, encode)

    # mloop's own ------------------------------------------------------------------------------------

    @app.post("/predict", **openapi.PREDICT)
    async def predict_route(request: Request) -> Response:
        if config.predict_auth:
            authorize(request, ROLES)
        json_only(request.headers.get("content-type"))  # before the body: a form post is refused
        raw = await body_of(request)
        header_key = request.headers.get("x-request-key")

        def decode() -> tuple[list[dict[str, Any]], str | None, int | None]:
            body = predict.parse(raw, config.max_json_depth)
            return predict.rows_from(body), predict.request_key(body, header_key), None

        # a ready Response skips FastAPI's element-by-element jsonable_encoder (slow on large batches)
        return await answer(request, len(raw), decode, AnswerResponse)

    @app.post("/feedback", **openapi.FEEDBACK)
    async def feedback(request: Request) -> Response:
        if config.feedback_auth:  # refused before the body is read: a forged label changes nothing
            authorize(request, FEEDBACK_ROLES)
        json_only(request.headers.get("content-type"))
        raw = await body_of(request)

        def work() -> Response:
            items = predict.feedback_items(predict.parse(raw, config.max_json_depth))
            return JSONResponse({"accepted": service.feedback(items)})

        return await run(request, len(raw), work)

    @app.get("/metrics", **openapi.METRICS)
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    openapi.install(app, service)
    app.hot_routes(PREDICTING, counter)
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
