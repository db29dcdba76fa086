"""The prediction routes without FastAPI's per-request machinery.

A one-row answer costs ~70 µs inside the service, and FastAPI's middleware stack, router, endpoint
wrapper and exception middleware added several times that (a py-spy profile at concurrency 1: about
a third of the server's busy time). The prediction routes take the raw :class:`Request` and build
their own responses, so they need none of it: :class:`ServiceApp` dispatches their POSTs straight to
the same endpoint functions, answers their exceptions with the app's own exception handlers, and
counts them exactly as :class:`~mloop.serving.metrics.RequestCounter` does. Every other request,
and every other method on those paths, goes through FastAPI unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from mloop.serving.metrics import RequestCounter

__all__ = ["ServiceApp"]

Endpoint = Callable[..., Awaitable[Response]]


class _Hot:
    """One route taken off FastAPI's path: its template, matcher and endpoint."""

    def __init__(self, route: APIRoute) -> None:
        self.route = route
        self.path: str = route.path
        self.regex: re.Pattern[str] = route.path_regex
        self.convertors = route.param_convertors
        self.endpoint: Endpoint = route.endpoint
        self.static = not route.param_convertors

    def match(self, path: str) -> dict[str, Any] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        return {k: self.convertors[k].convert(v) for k, v in found.groupdict().items()}


class ServiceApp(FastAPI):
    """A FastAPI app whose prediction POSTs skip the framework (see the module docstring)."""

    _static: dict[str, _Hot]
    _templated: list[_Hot]
    _counter: RequestCounter | None = None

    def hot_routes(self, paths: Iterable[str], counter: RequestCounter) -> None:
        """Serve POSTs to ``paths`` (route templates already registered, taking ``request: Request``
        and path parameters only) directly; ``counter`` counts them as the middleware would."""
        wanted = set(paths)
        hot = [
            _Hot(r)
            for r in self.router.routes
            if isinstance(r, APIRoute) and r.path in wanted and "POST" in (r.methods or ())
        ]
        missing = wanted - {h.path for h in hot}
        if missing:
            raise ValueError(f"no POST route for {sorted(missing)}")
        self._static = {h.path: h for h in hot if h.static}
        self._templated = [h for h in hot if not h.static]
        self._counter = counter

    def _find(self, path: str) -> tuple[_Hot, dict[str, Any]] | None:
        hot = self._static.get(path)
        if hot is not None:
            return hot, {}
        for hot in self._templated:
            params = hot.match(path)
            if params is not None:
                return hot, params
        return None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if self._counter is not None and scope["type"] == "http" and scope["method"] == "POST":
            found = self._find(scope["path"])
            if found is not None:
                await self._answer(found[0], found[1], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer(
        self, hot: _Hot, params: dict[str, Any], scope: MutableMapping[str, Any], receive: Any, send: Any
    ) -> None:
        assert self._counter is not None
        scope["app"] = self
        scope["path_params"] = params
        scope["route"] = hot.route
        request = Request(scope, receive, send)
        status = 500
        try:
            try:
                response = await hot.endpoint(request=request, **params)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            self._counter.count(scope, hot.path, status)

    def _handler_for(self, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        for kind in type(exc).__mro__:
            handler = self.exception_handlers.get(kind)
            if handler is not None:
                return handler  # type: ignore[return-value]
        return None
