"""The team server's FastAPI application: REST API under ``/api/v1``, web UI at ``/``.

``create_server_app(workspace)`` builds it; ``mloop server start`` runs ``app_from_env`` under uvicorn.
Every error is mloop's JSON shape ``{"error": {"code", "message", "field"}}`` with its status; an
unexpected exception is logged (without request headers) and answered 500 with no detail.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mloop.auth import TokenCache, challenge
from mloop.errors import MloopError
from mloop.server.api import (
    artifacts,
    evaluations,
    features,
    models,
    pipelines,
    reports,
    runs,
    session,
    tokens,
    triggers,
    versions,
)
from mloop.server.deps import caller
from mloop.serving.limits import read_body
from mloop.stores.sql.run_index import LatestMetricsIndex
from mloop.workspace import Workspace

__all__ = ["app_from_env", "create_server_app"]

log = logging.getLogger("mloop.server")
STATIC = Path(__file__).parent / "static"
_SECURITY_HEADERS = {
    # reports are shown in sandboxed srcdoc frames, which inherit this policy: they need inline styles
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "style-src 'self' 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=challenge(status),
    )


# Requests served at once per process: the metadata engine's pool size (5), so a burst of viewers
# queues in the event loop instead of timing out on the pool (a 500), and every request reuses a pooled
# connection (beyond the pool, each request opened and closed its own: a new PostgreSQL backend, or
# SQLite's pragmas, per request). The work is CPU-bound under the GIL: more threads would not serve more.
CONCURRENT_REQUESTS = 5


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = CONCURRENT_REQUESTS
    engine = getattr(app.state.workspace.metadata, "engine", None)
    if engine is not None:  # read the metric columns before serving, not in the first viewers' requests
        with engine.connect() as conn:
            await anyio.to_thread.run_sync(lambda: app.state.run_index.warm(conn))
    yield


class _SecurityHeaders:
    """Adds the security headers to every response that lacks them. A plain ASGI middleware: the
    ``@app.middleware("http")`` form runs each request through an extra task and stream, about a
    tenth of a small request's cost."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in _SECURITY_HEADERS.items()
                    if k.lower().encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# The API's bodies are a few hundred bytes of JSON (a version, a reason, entity keys): a megabyte is
# a generous bound, and a body must arrive within READ_TIMEOUT_S (the prediction service's limits)
MAX_BODY_BYTES = 1024 * 1024
READ_TIMEOUT_S = 30.0
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


class _BodyGate:
    """A request that may carry a body is authenticated before its body is read, and the body is
    then read here whole, bounded (413 beyond MAX_BODY_BYTES) and timed (408 after READ_TIMEOUT_S).
    Before, the server read 150 MB from anyone before answering 401, and waited forever for a body
    short of its Content-Length. The route still checks the caller's role; this only checks that
    the caller is someone."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            await caller(request)  # someone with a token; the route checks the role
            body = await read_body(request, MAX_BODY_BYTES, READ_TIMEOUT_S)
        except MloopError as exc:
            # the body is not wanted (or not all of it was read): the connection cannot be reused
            headers = {**(challenge(exc.http_status) or {}), "Connection": "close"}
            refusal = JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)
            await refusal(scope, receive, send)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()  # only http.disconnect comes after the body
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_server_app(workspace: Workspace, *, auth: bool = True) -> FastAPI:
    """The team server over ``workspace``. ``auth=False`` serves without tokens (the caller makes sure
    it only listens on loopback, as ``mloop server start --no-auth`` does)."""
    app = FastAPI(
        lifespan=_lifespan,
        title="mloop team server",
        version="1",
        description="Runs, artifacts, lineage, models, triggers and the audit trail of one mloop workspace. "
        "Send `Authorization: Bearer <token>` (`mloop server token create`).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        # an id that decodes to "/" must be a 404, never a redirect to another resource
        redirect_slashes=False,
    )
    app.state.workspace = workspace
    app.state.auth = auth
    app.state.tokens = TokenCache(workspace.tokens)  # every request's token check (see mloop.auth)
    # the runs page's in-memory index of latest metric values, one per process (see run_index)
    app.state.run_index = LatestMetricsIndex()
    engine = getattr(workspace.metadata, "engine", None)
    if engine is not None:  # the runs page through that index (else the workspace's own pages)
        from mloop.stores.sql.run_pages import SqlRunPages

        app.state.run_pages = SqlRunPages(engine, index=app.state.run_index)
    for module in (
        runs,
        artifacts,
        models,
        features,
        evaluations,
        versions,
        pipelines,
        triggers,
        tokens,
        session,
        reports,
    ):
        app.include_router(module.router, prefix="/api/v1")

    @app.exception_handler(MloopError)
    async def _mloop_error(_: Request, exc: MloopError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=challenge(exc.http_status))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # its loc is (body, character offset): not a field
            at = next((p for p in first.get("loc", ()) if isinstance(p, int)), None)
            position = "" if at is None else f" at character {at}"
            detail = (first.get("ctx") or {}).get("error", "")
            message = f"the body is not valid JSON{position}" + (f" ({detail})" if detail else "")
            return _error(400, "bad_request", message, "body")
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(where) or None
        return _error(400, "bad_request", f"{field or 'request'}: {first.get('msg', 'invalid')}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc
        )
        return _error(500, "internal_error", "unexpected server error (logged)")

    app.add_middleware(_BodyGate)
    app.add_middleware(_SecurityHeaders)  # added last: the outermost, so the gate's answers get them too

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app ``mloop server start`` serves: workspace and auth from the environment it set."""
    ws = Workspace.open(os.environ.get("MLOOP_WORKSPACE"), create=False)
    return create_server_app(ws, auth=os.environ.get("MLOOP_SERVER_AUTH", "1") != "0")
