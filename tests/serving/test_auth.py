"""The prediction service's writes are protected: labels drive retraining and rollbacks, so with auth on
only a feedback, editor or admin token may post them (the team server's token store)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from serving_helpers import fit, register, training_data

import mloop
from mloop.auth import create_token
from mloop.cli.serve import _loopback
from mloop.monitoring.log import read_log

COLS = ["a", "b"]


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / "ws") as workspace:
        df = training_data()
        workspace.promote("clf", register(workspace, fit(df, COLS), df, COLS).version)
        yield workspace


def test_a_forged_label_without_a_token_is_refused_and_changes_nothing(ws, serve, tmp_path: Path) -> None:
    tokens = {role: create_token(ws.tokens, role, role, created_by="t")[0] for role in (
        "viewer", "feedback", "editor")}  # fmt: skip
    served = serve(ws, feedback_auth=True)
    rows = training_data(5, 3)[COLS].to_dict("records")
    ids = served.client.post("/predict", json={"instances": rows}).json()["prediction_ids"]  # still open
    label = {"prediction_id": ids[0], "label": 1}
    missing = served.client.post("/feedback", json=label)
    assert missing.status_code == 401 and missing.json()["error"]["field"] == "authorization"
    forged = served.client.post("/feedback", json=label, headers={"Authorization": "Bearer mloop_forged"})
    assert forged.status_code == 401 and "mloop_forged" not in forged.text
    viewer = served.client.post(
        "/feedback", json=label, headers={"Authorization": f"Bearer {tokens['viewer']}"}
    )
    assert viewer.status_code == 403 and "viewer" in viewer.json()["error"]["message"]
    time.sleep(0.5)  # two flush intervals: nothing was written
    assert read_log(tmp_path / "log", "clf", "feedback").num_rows == 0
    for role in ("feedback", "editor"):
        ok = served.client.post("/feedback", json=label, headers={"Authorization": f"Bearer {tokens[role]}"})
        assert ok.status_code == 200 and ok.json() == {"accepted": 1}, ok.text


def test_prediction_routes_take_a_token_by_option(ws, serve) -> None:
    secret, _ = create_token(ws.tokens, "reader", "viewer", created_by="t")
    served = serve(ws, predict_auth=True)
    body = {"instances": training_data(5, 1)[COLS].to_dict("records")}
    assert served.client.post("/predict", json=body).status_code == 401
    assert (
        served.client.post("/predict", json=body, headers={"Authorization": f"Bearer {secret}"}).status_code
        == 200
    )
    v2 = {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [0.1]} for c in COLS]}
    refused = served.client.post("/v2/models/clf/infer", json=v2)
    assert refused.status_code == 401 and isinstance(refused.json()["error"], str)  # the protocol's shape


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("example.org", False)],
)  # fmt: skip
def test_auth_is_on_by_default_off_loopback(host: str, local: bool) -> None:
    assert _loopback(host) is local


def test_a_non_ascii_token_is_a_401_with_a_challenge_on_every_protocol(ws, serve) -> None:
    """A token with a byte outside ASCII (latin-1 in the header) was a 500 from the comparison."""
    served = serve(ws, feedback_auth=True, predict_auth=True)
    bad = {"Authorization": "Bearer mloop_\xe9t\xe9".encode("latin-1")}
    row = training_data(5, 1)[COLS].to_dict("records")
    v2 = {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [0.1]} for c in COLS]}
    for path, body in [
        ("/feedback", {"prediction_id": "x", "label": 1}),
        ("/predict", {"instances": row}),
        ("/v2/models/clf/infer", v2),
        ("/invocations", {"dataframe_records": row}),
    ]:
        for headers in (bad, {}):
            answer = served.client.post(path, json=body, headers=headers)
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer"), path
    mlflow = served.client.post("/invocations", json={"dataframe_records": row}).json()
    assert mlflow["error_code"] == "UNAUTHENTICATED"
