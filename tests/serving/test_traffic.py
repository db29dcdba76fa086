"""Following the registry under load, canary fractions, stickiness, shadow traffic."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from serving_helpers import fit, register, training_data
from sklearn.dummy import DummyClassifier

import mloop
from mloop.monitoring.log import read_log

COLS = ["a", "b"]


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / "ws") as workspace:
        df = training_data()
        v1 = register(workspace, fit(df, COLS), df, COLS)
        workspace.promote("clf", v1.version)
        # v2 predicts the constant 1: easy to tell apart from v1
        register(workspace, DummyClassifier(strategy="constant", constant=1).fit(df[COLS], df["y"]), df, COLS)
        yield workspace


ROW = {"a": -3.0, "b": -3.0}  # v1 says 0 here, v2 says 1


def test_alias_move_under_load_drops_nothing(ws, serve) -> None:
    served = serve(ws)
    statuses: Counter[int] = Counter()
    versions: list[int] = []
    lock = threading.Lock()
    swapped = threading.Event()

    def client(n: int) -> None:
        import httpx

        # n requests, and more until the swap has been seen: on a busy machine loading v2 may take longer
        # than n requests do (a fixed count would end before the new version answers)
        with httpx.Client(base_url=served.url, timeout=60) as c:
            sent = 0
            while sent < n or (not swapped.is_set() and sent < 20 * n):
                r = c.post("/predict", json={"instances": [ROW]})
                sent += 1
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        versions.append(r.json()["version"])
                        if versions[-1] == 2:
                            swapped.set()

    threads = [threading.Thread(target=client, args=(250,), daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(versions) < 50:  # v1 has answered under load before the alias moves
        assert time.monotonic() < deadline and any(t.is_alive() for t in threads)
        time.sleep(0.01)
    ws.promote("clf", 2, reason="swap under load")
    for t in threads:
        t.join()
    assert set(statuses) == {200} and statuses[200] >= 2000  # zero non-2xx while the model changed
    assert versions[0] == 1 and 2 in versions
    deadline = time.monotonic() + 60
    while served.client.post("/predict", json={"instances": [ROW]}).json()["version"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert served.client.post("/predict", json={"instances": [ROW]}).json()["predictions"] == [1]


def test_a_version_that_fails_to_load_is_not_swapped_in(ws, serve) -> None:
    served = serve(ws)  # polls the registry every 0.1 s
    bad = ws.register_model("clf", _broken_model(), signature={})
    ws.promote("clf", bad.version, reason="bad build")
    deadline = time.monotonic() + 10
    while served.service.slots.last_error is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body = served.client.post("/predict", json={"instances": [ROW]})
    assert body.status_code == 200 and body.json()["version"] == 1
    meta = served.client.get("/v2/models/clf").json()
    assert "failed to load" in meta["last_error"] and meta["production"]["version"] == 1
    assert 'outcome="failed"' in served.client.get("/metrics").text
    # tried again after a pause that doubles, not at every poll (an ERROR line and a re-hash each)
    time.sleep(1.0)
    failed = f'mloop_model_loads_total{{model="clf",outcome="failed",version="{bad.version}"}} 1.0'
    loads = [line for line in served.client.get("/metrics").text.splitlines() if "model_loads_total{" in line]
    assert failed in loads, loads


def test_a_first_version_that_fails_to_load_is_named_not_called_missing(ws, tmp_path: Path) -> None:
    """With nothing loaded before, the service said the alias did not exist ("has no alias
    'production' to serve") and logged that it was "still serving the previous version"."""
    from mloop.errors import MloopError
    from mloop.serving.service import ModelService, ServeConfig

    bad = ws.register_model("other", _broken_model(), signature={})
    ws.promote("other", bad.version, reason="bad build")
    service = ModelService(ws, ServeConfig(model="other", log_predictions=False), log_root=tmp_path / "log")
    with pytest.raises(MloopError, match=r"'other': v1 \(production\) failed to load: \w+Error"):
        service.refresh()


def _broken_model() -> object:
    """A model that loads but fails its smoke prediction (a module-level name, so it pickles)."""
    from sklearn.base import BaseEstimator

    class Broken(BaseEstimator):
        classes_ = [0, 1]
        feature_names_in_ = ["a", "b"]

        def predict(self, x: object) -> list:
            raise RuntimeError("broken build")

    Broken.__module__ = __name__
    Broken.__qualname__ = "BrokenModel"
    globals()["BrokenModel"] = Broken
    return Broken()


def test_canary_fraction_and_stickiness(ws, serve) -> None:
    ws.promote("clf", 2, alias="canary", reason="try v2")
    served = serve(ws, canary_fraction=0.2)
    n = 3000
    versions = Counter(
        served.client.post("/predict", json={"instances": [ROW]}).json()["version"] for _ in range(n)
    )
    share = versions[2] / n
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / n) ** 0.5  # within four standard errors
    for key in ("alice", "bob", "carol", "dave"):
        seen = {
            served.client.post("/predict", json={"instances": [ROW]}, headers={"x-request-key": key}).json()[
                "version"
            ]
            for _ in range(30)
        }
        assert len(seen) == 1  # one caller always sees one model


def test_shadow_is_logged_never_returned(ws, serve, tmp_path: Path) -> None:
    ws.promote("clf", 2, alias="shadow", reason="shadow v2")
    served = serve(ws, shadow_alias="shadow")
    answers = [served.client.post("/predict", json={"instances": [ROW]}).json() for _ in range(40)]
    assert {a["version"] for a in answers} == {1} and {a["predictions"][0] for a in answers} == {0}
    deadline = time.monotonic() + 10
    while True:
        log = read_log(tmp_path / "log", "clf").to_pandas()
        if "role" in log and (log["role"] == "shadow").sum() >= 40:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shadow = log[log["role"] == "shadow"]
    assert set(shadow["version"]) == {2} and set(shadow["prediction"]) == {1}
    assert set(shadow["prediction_id"]) == set(log[log["role"] == "production"]["prediction_id"])
    # the shadow's rows are counted under their role, as the README's metrics table says
    metrics = served.client.get("/metrics").text
    assert 'mloop_predicted_rows_total{model="clf",role="shadow",version="2"} 40.0' in metrics, metrics
