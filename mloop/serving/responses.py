"""The prediction routes' JSON answers, encoded by one encoder built once.

Starlette's ``JSONResponse`` calls ``json.dumps`` with non-default options, which builds a new
``JSONEncoder`` for every response (~2 µs of a one-row answer's ~100 µs); the bytes are the same.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["AnswerResponse"]

_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode


class AnswerResponse(JSONResponse):
    """A ``JSONResponse`` (same bytes, same headers) rendered by the module's shared encoder."""

    def render(self, content: Any) -> bytes:
        return _ENCODE(content).encode("utf-8")
