"""A connection that does not finish sending its request headers in time is closed.

uvicorn times out idle keep-alive connections and the app times out slow bodies (408), but nothing
times out a request whose headers trickle in: 800 half-sent requests would hold 800 connections
forever. This subclass of uvicorn's httptools protocol arms a timer when a connection opens and
when each request begins, and disarms it when the headers are complete.

It also tells the app how busy the server is: each request's scope carries uvicorn's set of request
tasks in flight under :data:`~mloop.serving.batching.IN_FLIGHT`, so a request that is alone is
predicted at once instead of waiting a turn of the event loop for partners that are not coming.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mloop.serving.batching import IN_FLIGHT

__all__ = ["HeaderTimeoutProtocol"]


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes connections whose request headers take longer than ``header_timeout_s``."""

    header_timeout_s = float(os.environ.get("MLOOP_HEADER_TIMEOUT_S", "10"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self.scope[IN_FLIGHT] = self.tasks  # type: ignore[literal-required]  # the live set, not a count
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
