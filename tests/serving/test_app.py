"""The prediction service over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from serving_helpers import fit, register, training_data

import mloop
from mloop.monitoring.log import read_log

COLS = ["a", "b"]


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / "ws") as workspace:
        df = training_data()
        v = register(workspace, fit(df, COLS), df, COLS)
        workspace.promote("clf", v.version)
        yield workspace


def rows(n: int = 3, seed: int = 5) -> list[dict]:
    return training_data(seed, n)[COLS].to_dict("records")


def test_predictions_equal_in_process_predict(ws, serve) -> None:
    served = serve(ws)
    sample = rows(50)
    body = served.client.post("/predict", json={"instances": sample}).json()
    expected = ws.load_model("clf@production").predict(pd.DataFrame(sample))
    assert body["predictions"] == expected.tolist() and body["version"] == 1 and body["model"] == "clf"
    assert len(set(body["prediction_ids"])) == 50 and len(body["probabilities"][0]) == 2
    split = {"dataframe_split": {"columns": COLS, "data": [[r["a"], r["b"]] for r in sample]}}
    assert served.client.post("/predict", json=split).json()["predictions"] == expected.tolist()
    records = served.client.post("/predict", json={"dataframe_records": sample}).json()
    assert records["predictions"] == expected.tolist()


def test_open_inference_protocol(ws, serve) -> None:
    served = serve(ws)
    c = served.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    meta = c.get("/v2/models/clf").json()
    assert (
        meta["name"] == "clf"
        and [i["name"] for i in meta["inputs"]] == COLS
        and meta["production"]["version"] == 1
    )
    sample = rows(4)
    body = {
        "id": "req-1",
        "inputs": [
            {"name": col, "shape": [4], "datatype": "FP64", "data": [r[col] for r in sample]} for col in COLS
        ],
    }
    out = c.post("/v2/models/clf/infer", json=body).json()
    assert out["model_name"] == "clf" and out["model_version"] == "1" and out["id"] == "req-1"
    assert out["outputs"][0]["data"] == ws.load_model("clf:1").predict(pd.DataFrame(sample)).tolist()
    assert out["outputs"][1]["shape"] == [4, 2] and len(out["parameters"]["prediction_ids"].split(",")) == 4
    assert c.get("/v2/models/other").status_code == 404


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"instances": [{"a": 1.0}]}, "b", "row 0: missing column 'b'"),
        ({"instances": [{"a": 1.0, "b": 2.0, "c": 3}]}, "c", "unexpected column 'c'"),
        ({"instances": [{"a": "x", "b": 2.0}]}, "a", 'expected a number, got "x"'),
        ({"instances": [{"a": None, "b": 2.0}]}, "a", "is null"),
        ({"instances": [{"a": True, "b": 2.0}]}, "a", "expected a number, got true"),
        ({"instances": [{"a": 10**400, "b": 2.0}]}, "a", "is not a finite number"),
        ({"instances": []}, "instances", "no rows"),
        ({"instances": "nope"}, "instances", "must be a JSON array"),
        ({"rows": []}, "body", "expected one of 'instances'"),
        ({"instances": [], "dataframe_records": [{"a": 1.0, "b": 2.0}]}, "body", "got 'instances' and"),
        ({"dataframe_records": {"a": 1.0}}, "dataframe_records", "must be a JSON array"),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0]]}}, "data[0]", "must list 2 values"),
        ([1, 2], "body", "must be a JSON object"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(ws, serve, payload: object, field: str, message: str) -> None:
    served = serve(ws)
    response = served.client.post("/predict", json=payload)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field and message in error["message"], error


def test_not_json_and_too_many_rows(ws, serve) -> None:
    served = serve(ws, max_batch_rows=10)
    message = served.client.post("/predict", content=b"{nope").json()["error"]["message"]
    assert message.startswith("the body is not valid JSON")
    response = served.client.post("/predict", json={"instances": rows(11)})
    assert response.status_code == 422 and "exceed the limit of 10" in response.json()["error"]["message"]


def test_out_of_domain_counted_or_rejected(ws, serve) -> None:
    served = serve(ws)
    far = [{"a": 1e6, "b": 0.0}]
    assert served.client.post("/predict", json={"instances": far}).status_code == 200
    assert (
        'mloop_out_of_domain_values_total{column="a",model="clf"} 1.0' in served.client.get("/metrics").text
    )
    strict = serve(ws, out_of_domain="reject")
    response = strict.client.post("/predict", json={"instances": far})
    assert response.status_code == 422 and "outside the training range" in response.json()["error"]["message"]


def test_prediction_log_and_feedback(ws, serve, tmp_path: Path) -> None:
    served = serve(ws)
    body = served.client.post("/predict", json={"instances": rows(5)}).json()
    ids = body["prediction_ids"]
    ok = served.client.post(
        "/feedback", json={"feedback": [{"prediction_id": i, "label": 1} for i in ids[:3]]}
    )
    assert ok.json() == {"accepted": 3}
    # "-01" would join no prediction; a ULID starting 8-Z is beyond 128 bits: no prediction has it
    for nope in ("nope", f"{ids[0][:-2]}-01", f"{ids[0][:-2]}-00", "8" + ids[0][1:], "Z" * 26 + "-0"):
        malformed = served.client.post("/feedback", json={"prediction_id": nope, "label": 1})
        assert malformed.status_code == 422 and malformed.json()["error"]["field"] == "prediction_id", nope
    wrong = served.client.post("/feedback", json={"prediction_id": ids[3], "label": "rain"})
    assert (
        wrong.status_code == 422
        and "not of the type of the model's classes" in wrong.json()["error"]["message"]
    )
    for label in (True, 1.5, "1"):  # classes [0, 1]: a bool, a float, a string are other types
        refused = served.client.post("/feedback", json={"prediction_id": ids[3], "label": label})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "label", label
    beyond = {"feedback": [{"prediction_id": ids[3], "label": 1}, {"prediction_id": ids[3], "label": 2**63}]}
    refused = served.client.post("/feedback", json=beyond)
    assert refused.status_code == 422 and refused.json()["error"]["message"].startswith("feedback[1]: label")
    # a class the model never saw (one that appeared after training) is what the loop must see
    missing = served.client.post("/feedback", json={"prediction_id": ids[3], "label": None})
    assert missing.json()["error"]["message"] == (
        "feedback[0]: label null is not of the type of the model's classes [0, 1]"
    )  # the client's JSON spelling, not Python's None
    # a ULID reads either case (Crockford base32): the label joins its upper-case prediction id
    new_class = served.client.post("/feedback", json={"prediction_id": ids[4].lower(), "label": 2})
    assert new_class.json() == {"accepted": 1}
    deadline = time.monotonic() + 10
    while (
        read_log(tmp_path / "log", "clf").num_rows < 5
        or read_log(tmp_path / "log", "clf", "feedback").num_rows < 4
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    logged = read_log(tmp_path / "log", "clf").to_pandas()
    assert sorted(logged["prediction_id"]) == sorted(ids) and set(logged["version"]) == {1}
    assert {"input.a", "input.b", "prediction", "latency_ms", "role"} <= set(logged.columns)
    labels = read_log(tmp_path / "log", "clf", "feedback").to_pandas()
    assert sorted(labels["prediction_id"]) == sorted([*ids[:3], ids[4]])
    assert labels.set_index("prediction_id")["label"][ids[4]] == 2


def test_a_huge_integer_is_answered_and_logged(ws, serve, tmp_path: Path) -> None:
    served = serve(ws, out_of_domain="count")
    answer = served.client.post("/predict", json={"instances": [{"a": 2**70, "b": 0.5}, rows(1)[0]]})
    assert answer.status_code == 200
    deadline = time.monotonic() + 10
    while read_log(tmp_path / "log", "clf").num_rows < 2:  # the writer must not choke on 2**70
        assert time.monotonic() < deadline, "the prediction log lost the request"
        time.sleep(0.05)
    assert read_log(tmp_path / "log", "clf").to_pydict()["input.a"][0] == float(2**70)


def test_metrics_are_prometheus_text(ws, serve) -> None:
    served = serve(ws)
    served.client.post("/predict", json={"instances": rows(2)})
    served.client.post("/predict", json={"instances": [{"a": 1}]})
    text = served.client.get("/metrics").text
    assert 'mloop_requests_total{model="clf",status="200",version="1"} 1.0' in text
    assert 'mloop_validation_failures_total{model="clf"} 1.0' in text
    assert 'mloop_alias_version{alias="production",model="clf"} 1.0' in text
    assert "mloop_request_latency_seconds_bucket" in text


def test_fast_path_is_used_only_when_equivalent(ws) -> None:
    from mloop.serving.predictor import LoadedModel, Predictor

    version = ws.model_version("clf@production")
    fast = Predictor(LoadedModel.from_version(version, ws.load_model("clf@production")))
    assert fast.numpy_path and fast.proba_decides
    sample = rows(20)
    assert fast.predict_rows(sample) == fast.predict(fast.frame(sample))

    from serving_helpers import training_data as data
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = data()
    by_name = make_pipeline(
        ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough"),
        LogisticRegression(),
    ).fit(df[["a", "city"]], df["y"])
    mixed = ws.register_model(
        "mixed",
        by_name,
        signature={"inputs": mloop.infer_schema(mloop.compute_statistics(df[["a", "city"]])).to_dict()},
    )
    slow = Predictor(LoadedModel.from_version(mixed, by_name))
    assert not slow.numpy_path  # text columns: the DataFrame path
    some = df[["a", "city"]].head(10).to_dict("records")
    assert slow.predict_rows(some)[0] == by_name.predict(df[["a", "city"]].head(10)).tolist()


def test_sklearn_checks_stay_on_unless_validation_proved_the_values(ws) -> None:
    from mloop.serving.predictor import LoadedModel, Predictor

    version = ws.model_version("clf@production")
    loaded = LoadedModel.from_version(version, ws.load_model("clf@production"))
    loaded.rules["a"] = {**loaded.rules["a"], "nullable": True}  # the schema allows a null here…
    predictor = Predictor(loaded)
    sample = [{"a": None, "b": 0.5}]
    checked = predictor.validate(sample)
    assert "a" not in checked.finite  # …so the bulk numeric path did not vouch for column a
    with pytest.raises(ValueError, match="NaN"):  # scikit-learn still refuses it: no silent NaN answer
        predictor.predict_rows(sample, checked)


def test_labels_are_never_accepted_and_then_lost(ws, serve, tmp_path: Path) -> None:
    """A full label buffer refuses the whole request with 503 and Retry-After (it said "accepted" and
    dropped them); a server without a prediction log refuses labels (it said "accepted" and threw
    them away)."""
    served = serve(ws, log_buffer_rows=6)
    ids = served.client.post("/predict", json={"instances": rows(6)}).json()["prediction_ids"]
    served.service.log.flush()
    ids.append(ids[0])  # seven labels
    too_many = served.client.post(
        "/feedback", json={"feedback": [{"prediction_id": i, "label": 1} for i in ids]}
    )
    assert too_many.status_code == 503 and too_many.headers["retry-after"] == "1"
    assert (
        too_many.json()["error"]["code"] == "busy"
        and "send them again" in too_many.json()["error"]["message"]
    )
    ok = served.client.post(
        "/feedback", json={"feedback": [{"prediction_id": i, "label": 0} for i in ids[:5]]}
    )
    assert ok.json() == {"accepted": 5}
    served.service.log.flush()
    labels = read_log(tmp_path / "log", "clf", "feedback").to_pydict()
    assert sorted(labels["prediction_id"]) == sorted(ids[:5]) and set(labels["label"]) == {0}
    assert served.service.log.dropped == 0  # refused, not dropped: the caller knows
    unlogged = serve(ws, log_predictions=False)
    refused = unlogged.client.post("/feedback", json={"prediction_id": ids[0], "label": 1})
    assert refused.status_code == 409 and refused.json()["error"]["field"] == "feedback"
    assert "--no-log" in refused.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/predict", "/feedback"])
def test_only_json_bodies_reach_mloops_own_endpoints(ws, serve, tmp_path: Path, path: str) -> None:
    """A browser posts text/plain and form bodies to any origin without a CORS preflight: were they
    read as JSON, any web page could post labels to a server on localhost."""
    served = serve(ws)
    [pid] = served.client.post("/predict", json={"instances": rows(1)}).json()["prediction_ids"]
    body = json.dumps(
        {"/predict": {"instances": rows(1)}, "/feedback": {"prediction_id": pid, "label": 1}}[path]
    )
    for refused in (
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=latin-1",
        "application/json; version=2",
    ):
        answer = served.client.post(path, content=body, headers={"content-type": refused})
        assert answer.status_code == 415, (refused, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "unsupported_media_type" and error["field"] == "content-type", refused
    for taken in ("application/json", 'Application/JSON; charset="utf-8"', "application/vnd.api+json", None):
        headers = {"content-type": taken} if taken else {}
        answer = served.client.post(path, content=body, headers=headers)
        assert answer.status_code == 200, (taken, answer.text)
    served.service.log.flush()
    if path == "/feedback":  # only the four accepted posts were recorded
        assert read_log(tmp_path / "log", "clf", "feedback").num_rows == 4


def test_a_regression_label_may_be_an_integer_beyond_64_bits(tmp_path: Path) -> None:
    """The 64-bit bound names integer classes; a regression label is a float, and 2**64 is a finite one
    (without a production version, labels are taken as regression values)."""
    from mloop.monitoring.log import PredictionLog
    from mloop.serving.metrics import ServiceMetrics
    from mloop.serving.recording import Recorder

    log = PredictionLog(tmp_path / "log", "reg")
    recorder = Recorder("reg", log, ServiceMetrics())
    pid = "01M96QW4DG8YG2Y2427F1PHC9Q-0"
    assert recorder.feedback([{"prediction_id": pid, "label": 2**64}], None) == 1
    log.flush()
    assert read_log(tmp_path / "log", "reg", "feedback").to_pydict()["label"] == [float(2**64)]


def test_a_datetime_feature_takes_iso_text_and_refuses_anything_else(tmp_path: Path, serve) -> None:
    """Any value of a datetime feature was answered (garbage as a missing value, "now" as the clock),
    and dates beyond pandas' nanosecond range or ``true`` were HTTP 500s."""
    from mloop.steps.retrain import default_model

    cols = ["a", "b", "day"]
    df = training_data().assign(day=pd.date_range("2024-01-01", periods=600, freq="h"))
    model = default_model(df[cols], "classification").fit(df[cols], df["y"])
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.promote("clf", register(ws, model, df, cols).version)
        served = serve(ws)

        def post(day: object) -> httpx.Response:
            return served.client.post("/predict", json={"instances": [{"a": 0.1, "b": 0.2, "day": day}]})

        same = [
            post(d).json()["probabilities"]
            for d in ("2024-01-05", "2024-01-05T00:00:00", "2024-01-05T02:00:00+02:00")
        ]
        assert same[0] == same[1] == same[2]
        for day in ("someday", "2024-13-45", "now", "", "06/05/2024", True, 1717581600, [], {"y": 1}):
            refused = post(day)
            assert refused.status_code == 422, (day, refused.text)
            assert (
                "row 0: column 'day': expected an ISO-8601 date or time" in refused.json()["error"]["message"]
            )
        for day in ("2300-01-01", "0001-01-01", "9999-12-31"):  # far outside training: answered, counted
            assert post(day).status_code == 200, day
        metrics = served.client.get("/metrics").text
        assert 'mloop_out_of_domain_values_total{column="day",model="clf"} 3.0' in metrics
        assert 'status="500"' not in metrics


def test_errors_quote_the_clients_json_not_pythons_spelling(ws, serve) -> None:
    served = serve(ws)
    tensors = [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [True]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [None]},
    ]
    v2 = served.client.post("/v2/models/clf/infer", json={"inputs": tensors})
    assert v2.status_code == 400 and v2.json()["error"] == "input 'a': true is not a value of type FP64"
    odd = served.client.post("/predict", json={"instances": [{"a": {"x": None}, "b": 1.0}]})
    assert odd.json()["error"]["message"] == "row 0: column 'a': expected a number, got {\"x\": null}"


@pytest.mark.parametrize(
    ("datatype", "too_large", "fits"),
    [("FP16", 70000.0, 65504.0), ("FP32", 1e39, 3.4e38), ("BF16", 3.4e38, 3.3e38)],
)
def test_v2_float_values_must_fit_their_declared_type(
    ws, serve, datatype: str, too_large: float, fits: float
) -> None:
    # integers out of their type's range were refused (UINT8 300) but FP16 70000 was answered
    served = serve(ws)

    def infer(a: float) -> httpx.Response:
        tensors = [
            {"name": "a", "shape": [1], "datatype": datatype, "data": [a]},
            {"name": "b", "shape": [1], "datatype": "FP64", "data": [0.5]},
        ]
        return served.client.post("/v2/models/clf/infer", json={"inputs": tensors})

    refused = infer(-too_large)
    assert refused.status_code == 400
    assert refused.json()["error"].endswith(f"is not a value of type {datatype}"), refused.text
    assert infer(fits).status_code == 200
