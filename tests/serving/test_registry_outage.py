"""The prediction service through a registry outage: it keeps serving what it loaded, reports the
outage as last_error while it lasts, and clears it when the registry is back (PostgreSQL behind a
proxy the test takes down)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from serving_helpers import fit, register, training_data
from tcp_proxy import TcpProxy

import mloop
from mloop.serving.service import ModelService, ServeConfig

COLS = ["a", "b"]


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    url = sa.engine.make_url(postgres_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_last_error_reports_an_unreachable_registry_and_clears(tmp_path: Path, proxied) -> None:
    proxy, url = proxied
    ws = mloop.Workspace.open(tmp_path / "ws", metadata_url=url)
    try:
        df = training_data()
        ws.promote("clf", register(ws, fit(df, COLS), df, COLS).version)
        service = ModelService(ws, ServeConfig(model="clf", poll_interval_s=0.1, log_predictions=False))
        service.start()
        try:
            row = training_data(5, 1)[COLS].to_dict("records")
            assert service.describe()["last_error"] is None
            proxy.down()
            _wait_for(lambda: service.describe()["last_error"] is not None, "the outage to be reported")
            assert "registry unreachable" in service.describe()["last_error"]
            assert service.predict(row)["version"] == 1  # still serving what it loaded
            proxy.up()
            _wait_for(lambda: service.describe()["last_error"] is None, "the error to clear")
        finally:
            service.stop()
    finally:
        ws.close()
