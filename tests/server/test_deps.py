"""What the routes share: ``json_response`` gives the bytes FastAPI's own response serialisation gives."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from mloop.server.deps import json_response


def test_json_response_is_fastapis_serialisation_byte_for_byte() -> None:
    content = {
        "runs": [{"id": "01ABC", "params": {"lr": 0.1, "name": 'é\u2028<&>"\\'}, "pid": None, "ok": True}],
        "odd": [float("nan"), float("inf"), -float("inf"), 1e-05, 1e300, -0.0, 10**30, 0.1 + 0.2],
        "next_cursor": None,
    }
    response = json_response(content)
    # what FastAPI does for a route declaring ``-> dict[str, Any]`` (validate, then dump as JSON)
    adapter = TypeAdapter(dict[str, Any])
    assert response.body == adapter.dump_json(adapter.validate_python(content), by_alias=True)
    assert response.media_type == "application/json"
    assert response.headers["content-type"] == "application/json"
