"""Serving by entity key over real HTTP: features come from the online store, unknown keys are 4xx."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import mloop
from mloop.monitoring.log import read_log

NOW = pd.Timestamp.now(tz="UTC").floor("s")

DEFINITIONS = """
from mloop.features import Entity, FeatureService, FeatureView

driver = Entity("driver", join_keys=["driver_id"])
stats = FeatureView("driver_stats", [driver], "stats.parquet", timestamp="event_timestamp", ttl="1d")
svc = FeatureService("driver_model", ["driver_stats:conv_rate", "driver_stats:trips"])
"""


def _setup(tmp_path: Path) -> mloop.Workspace:
    rows = []
    for d in range(10):
        rows.append((d, NOW - pd.Timedelta(hours=30), 0.0, 0))  # outside the TTL by now
        rows.append((d, NOW - pd.Timedelta(hours=1 + d), d / 10, d * 3))
    rows.append((50, NOW - pd.Timedelta(days=3), 0.9, 9))  # only a stale row
    pd.DataFrame(rows, columns=["driver_id", "event_timestamp", "conv_rate", "trips"]).to_parquet(
        tmp_path / "stats.parquet"
    )
    (tmp_path / "features.py").write_text(DEFINITIONS, encoding="utf-8")
    ws = mloop.Workspace.open(tmp_path / "ws")
    ws.features.apply(tmp_path / "features.py")
    entities = pd.DataFrame({"driver_id": list(range(10)) * 2, "event_timestamp": [NOW] * 20})
    train = ws.features.historical(entities, service="driver_model")
    train["hour"] = list(range(20))
    x = train[["driver_stats:conv_rate", "driver_stats:trips", "hour"]].astype(float)
    model = LogisticRegression().fit(x, [i % 2 for i in range(20)])
    inputs = mloop.infer_schema(mloop.compute_statistics(x)).to_dict()
    version = ws.register_model("clf", model, signature={"inputs": inputs, "feature_service": "driver_model"})
    ws.promote("clf", version.version)
    ws.features.materialize()
    return ws


def test_a_request_with_entity_keys_is_served_from_the_online_store(
    tmp_path: Path, serve: Callable[..., object]
) -> None:
    ws = _setup(tmp_path)
    try:
        served = serve(ws)
        client = served.client  # type: ignore[attr-defined]
        r = client.post(
            "/predict", json={"instances": [{"driver_id": 3, "hour": 5.0}, {"driver_id": "7", "hour": 1.0}]}
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 2

        # the same rows with the features spelled out give the same answer
        online = ws.features.online([{"driver_id": 3}, {"driver_id": 7}], service="driver_model")
        full = [{**o["features"], "hour": h} for o, h in zip(online, (5.0, 1.0), strict=True)]
        assert online[0]["features"]["driver_stats:trips"] == 9
        r2 = client.post("/predict", json={"instances": full})
        assert r2.json()["probabilities"] == r.json()["probabilities"]

        # unknown entity: a clear 404 naming it; a missing key: 422 naming it; never a 5xx
        r = client.post("/predict", json={"instances": [{"driver_id": 12345, "hour": 1.0}]})
        assert r.status_code == 404
        assert r.json()["error"]["field"] == "driver_id"
        assert "no online features for driver_id=12345" in r.json()["error"]["message"]
        r = client.post("/predict", json={"instances": [{"hour": 1.0}]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "driver_id"
        for bad in (None, [7], {"id": 7}, True):  # not a key at all: 422 naming it, not 404
            r = client.post("/predict", json={"instances": [{"driver_id": bad, "hour": 1.0}]})
            assert r.status_code == 422 and r.json()["error"]["field"] == "driver_id", (bad, r.text)
        # only stale values: null, refused by the signature's validation as any missing value would be
        r = client.post("/predict", json={"instances": [{"driver_id": 50, "hour": 1.0}]})
        assert 400 <= r.status_code < 500, r.text
        # the Open Inference Protocol route reads features the same way
        body = {"inputs": [{"name": "driver_id", "shape": [1], "datatype": "INT64", "data": [3]},
                           {"name": "hour", "shape": [1], "datatype": "FP64", "data": [5.0]}]}  # fmt: skip
        r = client.post("/v2/models/clf/infer", json=body)
        assert r.status_code == 200, r.text
        # its metadata says which tensors may stand for the features (it listed the features only)
        assert client.get("/v2/models/clf").json()["entity_keys"] == ["driver_id"]
        # the service's own OpenAPI says a row may carry the entity key instead of the features
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        row = schemas["PredictRequest"]["properties"]["instances"]["items"]
        assert row["properties"]["driver_id"]["type"] == ["string", "number"]
        assert {"required": ["driver_id", "hour"]} in row["anyOf"]
        assert {"required": ["driver_stats:conv_rate", "driver_stats:trips", "hour"]} in row["anyOf"]
    finally:
        ws.close()


def test_the_feature_values_used_are_logged(tmp_path: Path, serve: Callable[..., object]) -> None:
    ws = _setup(tmp_path)
    try:
        served = serve(ws)
        r = served.client.post("/predict", json={"instances": [{"driver_id": 4, "hour": 2.0}]})  # type: ignore[attr-defined]
        assert r.status_code == 200
        pid = r.json()["prediction_ids"][0]
        deadline = time.monotonic() + 20
        while True:
            table = read_log(tmp_path / "log", "clf")
            frame = table.to_pandas() if table.num_rows else None
            if frame is not None and pid in set(frame["prediction_id"]):
                break
            assert time.monotonic() < deadline, "prediction not logged"
            time.sleep(0.1)
        row = frame[frame["prediction_id"] == pid].iloc[0]
        assert row["entity"] == '{"driver_id": 4}'  # what a load test replays to a later candidate
        assert row["input.driver_stats:trips"] == 12
        assert row["input.driver_stats:conv_rate"] == pytest.approx(0.4)
        # monitoring shows how fresh the online features this version reads are
        report = mloop.monitor(ws, "clf", window=1, log_dir=tmp_path / "log", store=False)
        fresh = report.to_dict()["feature_freshness"]["driver_stats"]
        assert fresh["end"] is not None and fresh["ttl_seconds"] == 86400
    finally:
        ws.close()


def test_a_candidate_reading_other_features_is_replayed_the_logged_entities_with_its_own_features(
    tmp_path: Path, serve: Callable[..., object]
) -> None:
    """A load test of a version that reads one feature more than the logged traffic carried got 422
    'missing column' for every request and was refused for good; a version that reads fewer got
    'unexpected column'. The logged entity keys let the gate look the candidate's own features up."""
    from mloop.cicd.loadtest import fit_requests
    from mloop.monitoring.log import recent_requests

    ws = _setup(tmp_path)
    try:
        served = serve(ws)
        for driver in (1, 2, 3):
            r = served.client.post("/predict", json={"instances": [{"driver_id": driver, "hour": 2.0}]})  # type: ignore[attr-defined]
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while len(requests := recent_requests(tmp_path / "log", "clf", 10)) < 3:
            assert time.monotonic() < deadline, "predictions not logged"
            time.sleep(0.1)
        assert [r["driver_id"] for r in requests] == [1, 2, 3]
        requests.append({"driver_stats:conv_rate": 0.5, "driver_stats:trips": 3, "hour": 1.0})  # no keys

        # v2 reads conv_rate and hour only (fewer columns than were logged)
        x = pd.DataFrame({"driver_stats:conv_rate": [0.1, 0.9], "hour": [1.0, 2.0]})
        inputs = mloop.infer_schema(mloop.compute_statistics(x)).to_dict()
        ws.register_model("clf", LogisticRegression().fit(x, [0, 1]), signature={"inputs": inputs})
        fitted, left_out = fit_requests(ws, "clf:2", requests)
        assert left_out == 0 and all(set(r) == {"driver_stats:conv_rate", "hour"} for r in fitted)

        # v3 reads its features from another service, plus a request-time column: looked up by the keys
        (tmp_path / "features.py").write_text(
            DEFINITIONS
            + 'svc2 = FeatureService("driver_model2", ["driver_stats:trips", "driver_stats:conv_rate"])\n'
        )
        ws.features.apply(tmp_path / "features.py")
        x3 = pd.DataFrame({"driver_stats:trips": [1.0, 9.0], "driver_stats:conv_rate": [0.1, 0.9],
                           "hour": [1.0, 2.0], "hour2": [0.0, 1.0]})  # fmt: skip
        inputs3 = mloop.infer_schema(mloop.compute_statistics(x3)).to_dict()
        ws.register_model(
            "clf",
            LogisticRegression().fit(x3, [0, 1]),
            signature={"inputs": inputs3, "feature_service": "driver_model2"},
        )
        fitted, left_out = fit_requests(ws, "clf:3", [{**r, "hour2": 1.0} for r in requests])
        assert left_out == 0, fitted
        assert [r["driver_stats:trips"] for r in fitted[:3]] == [3, 6, 9]  # the online values (d * 3)
        assert set(fitted[0]) == {"driver_stats:trips", "driver_stats:conv_rate", "hour", "hour2"}
        # a logged row without its keys and without the new column cannot be fitted: left out
        fitted, left_out = fit_requests(ws, "clf:3", requests)
        assert (len(fitted), left_out) == (3, 1)
    finally:
        ws.close()
