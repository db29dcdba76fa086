"""The protocols' own clients, unmodified, against a served model over real HTTP.

tritonclient (HTTP; binary tensors by default, and JSON), KServe's ``InferenceRESTClient`` and its
pydantic response models, MLflow's ``ScoringServerClient``, Prometheus' text parser. The clients
are in ``requirements-ci.txt`` (installed by ``.ci/run``); each test skips, saying which, when
its client is absent.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
from serving_helpers import fit, register, training_data

import mloop

COLS = ["a", "b"]


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / "ws") as workspace:
        df = training_data()
        workspace.promote("clf", register(workspace, fit(df, COLS), df, COLS).version)
        df2 = training_data(seed=1)
        workspace.promote("clf", register(workspace, fit(df2, COLS), df2, COLS).version, alias="canary")
        yield workspace


def sample(n: int = 5) -> pd.DataFrame:
    return training_data(7, n)[COLS]


def test_tritonclient_binary_and_json(ws, serve) -> None:
    httpclient = pytest.importorskip(
        "tritonclient.http", reason="needs tritonclient[http] (requirements-ci.txt)"
    )
    from tritonclient.utils import InferenceServerException

    served = serve(ws, canary_fraction=0.5)
    client = httpclient.InferenceServerClient(urlparse(served.url).netloc)
    try:
        assert client.is_server_live() and client.is_server_ready()
        server = client.get_server_metadata()
        assert server["name"] == "mloop" and "binary_tensor_data" in server["extensions"]
        assert (
            client.is_model_ready("clf")
            and client.is_model_ready("clf", "1")
            and client.is_model_ready("clf", "2")
        )
        assert not client.is_model_ready("clf", "7") and not client.is_model_ready("other")
        meta = client.get_model_metadata("clf", "1")
        assert [i["name"] for i in meta["inputs"]] == COLS
        assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
        x = sample()
        expected = {v: ws.load_model(f"clf:{v}").predict(x).tolist() for v in (1, 2)}
        proba = ws.load_model("clf:2").predict_proba(x)
        for binary in (True, False):
            inputs = []
            for col in COLS:
                tensor = httpclient.InferInput(col, [len(x)], "FP64")
                tensor.set_data_from_numpy(x[col].to_numpy(np.float64), binary_data=binary)
                inputs.append(tensor)
            for version in ("1", "2"):
                result = client.infer("clf", inputs, model_version=version, request_id="r-1")
                assert result.as_numpy("predict").tolist() == expected[int(version)], (binary, version)
                assert (
                    result.get_response()["model_version"] == version and result.get_response()["id"] == "r-1"
                )
            outputs = [httpclient.InferRequestedOutput("predict_proba", binary_data=binary)]
            result = client.infer("clf", inputs, model_version="2", outputs=outputs)
            assert np.allclose(result.as_numpy("predict_proba"), proba, atol=1e-5)
            assert result.as_numpy("predict") is None  # only the requested output
            ids = result.get_response()["parameters"]["prediction_ids"].split(",")
            assert len(ids) == len(x)
        with pytest.raises(InferenceServerException) as wrong:  # an error the client can format
            bad = httpclient.InferInput("a", [2], "FP64")
            bad.set_data_from_numpy(np.array([1.0, 2.0]))
            client.infer("clf", [bad])
        assert "missing column 'b'" in str(wrong.value) and wrong.value.status() == "400"
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata("clf", "9")
        assert unknown.value.status() == "404"
    finally:
        client.close()


def test_kserve_rest_client_and_models(ws, serve) -> None:
    kserve = pytest.importorskip("kserve", reason="needs kserve (requirements-ci.txt)")
    from kserve.inference_client import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest
    from kserve.protocol.rest.v2_datamodels import (
        InferenceResponse,
        ModelMetadataResponse,
        ModelReadyResponse,
        ServerMetadataResponse,
    )

    assert kserve
    served = serve(ws)
    x = sample(4)

    async def talk() -> None:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            assert await client.is_server_live(served.url)
            assert await client.is_server_ready(served.url)
            assert await client.is_model_ready(served.url, "clf")
            inputs = [InferInput(col, [len(x)], "FP64", x[col].tolist()) for col in COLS]
            answer = await client.infer(
                served.url, InferRequest("clf", inputs, request_id="k-1"), model_name="clf"
            )
            assert answer.id == "k-1"
            assert answer.outputs[0].data == ws.load_model("clf:1").predict(x).tolist()
        finally:
            await client.close()

    asyncio.run(talk())
    c = served.client
    ServerMetadataResponse.model_validate(c.get("/v2").json())
    ModelMetadataResponse.model_validate(c.get("/v2/models/clf").json())
    ModelReadyResponse.model_validate(c.get("/v2/models/clf/ready").json())
    tensors = [{"name": c, "shape": [4, 1], "datatype": "FP64", "data": [[v] for v in x[c]]} for c in COLS]
    body = {"id": "7", "inputs": tensors}
    answer = InferenceResponse.model_validate(c.post("/v2/models/clf/infer", json=body).json())
    assert answer.id == "7" and answer.model_version == "1"
    # JSON, or JSON and binary tensors (octet-stream); a form post or text is refused, naming the header
    for refused in ("text/plain", "application/x-www-form-urlencoded", "text/csv"):
        wrong = c.post("/v2/models/clf/infer", content=json.dumps(body), headers={"content-type": refused})
        assert wrong.status_code == 415 and "Content-Type" in wrong.json()["error"], wrong.text
    raw = c.post(
        "/v2/models/clf/infer", content=json.dumps(body), headers={"content-type": "application/octet-stream"}
    )
    assert raw.status_code == 200, raw.text


def test_mlflow_scoring_server_client(ws, serve) -> None:
    pytest.importorskip(
        "mlflow.pyfunc.scoring_server.client", reason="needs mlflow-skinny (requirements-ci.txt)"
    )
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    served = serve(ws)
    parsed = urlparse(served.url)
    client = ScoringServerClient(parsed.hostname, parsed.port)
    client.ping()
    assert client.get_version()
    x = sample(6)
    expected = ws.load_model("clf:1").predict(x).tolist()
    assert client.invoke(x)["predictions"] == expected  # dataframe_split
    assert (
        client.invoke({col: x[col].to_numpy() for col in COLS})["predictions"] == expected
    )  # inputs, columnar


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_records": "ROWS"},
        {"instances": "ROWS"},
        {"inputs": "ROWS"},
        {"inputs": "COLUMNS"},
        {"instances": "COLUMNS"},
        {"dataframe_split": "SPLIT"},
    ],
)
def test_invocations_json_formats(ws, serve, body: dict) -> None:
    served = serve(ws)
    x = sample(3)
    forms = {
        "ROWS": x.to_dict("records"),
        "COLUMNS": x.to_dict("list"),
        "SPLIT": json.loads(x.to_json(orient="split")),
    }
    key, form = next(iter(body.items()))
    response = served.client.post("/invocations", json={key: forms[form]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ws.load_model("clf:1").predict(x).tolist()


def test_invocations_csv_and_errors(ws, serve) -> None:
    served = serve(ws)
    c = served.client
    x = sample(3)
    csv = c.post("/invocations", content=x.to_csv(index=False), headers={"content-type": "text/csv"})
    assert csv.status_code == 200 and csv.json()["predictions"] == ws.load_model("clf:1").predict(x).tolist()
    excel = x.to_csv(index=False, encoding="utf-8-sig").encode("utf-8-sig")  # Excel's "CSV UTF-8": a BOM
    with_bom = c.post("/invocations", content=excel, headers={"content-type": "text/csv"})
    assert with_bom.status_code == 200, with_bom.text
    assert with_bom.json()["predictions"] == csv.json()["predictions"]
    two = c.post("/invocations", json={"instances": x.to_dict("records"), "inputs": x.to_dict("list")})
    assert (
        two.status_code == 400
        and two.json()["error_code"] == "BAD_REQUEST"
        and "exactly one" in two.json()["message"]
    )
    bad = c.post("/invocations", json={"inputs": [{"a": "x", "b": 1}]})
    assert bad.status_code == 400 and set(bad.json()) == {"error_code", "message"}
    assert c.post("/invocations", content=b"a", headers={"content-type": "text/plain"}).status_code == 415
    # media types are case-insensitive and a parameter value may be quoted (RFC 9110 8.3)
    for spelled in ("Application/JSON", 'application/json; Charset="UTF-8"', "TEXT/CSV; charset=utf-8"):
        body = (
            x.to_csv(index=False) if "csv" in spelled.lower() else json.dumps({"inputs": x.to_dict("list")})
        )
        answer = c.post("/invocations", content=body, headers={"content-type": spelled})
        assert answer.status_code == 200, (spelled, answer.text)
    latin = c.post(
        "/invocations", content=b"{}", headers={"content-type": "application/json; charset=latin-1"}
    )
    assert latin.status_code == 415 and "UTF-8" in latin.text
    assert c.get("/ping").status_code == 200 and c.get("/version").text


def test_metrics_parse_with_prometheus_parser(ws, serve) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    served = serve(ws, max_body_bytes=10_000)
    c = served.client
    c.post("/predict", json={"instances": sample(2).to_dict("records")})
    c.post("/predict", json={"instances": [{"a": 1}]})
    c.post("/v2/models/clf/infer", content=b"{")
    c.get("/v2/models/nope")
    c.get("/no/such/route")
    c.post("/predict", content=b"x" * 20_000)
    # the prediction routes skip FastAPI's routing (mloop.serving.hotpath): same answers, same counts
    assert c.get("/predict").status_code == 405
    missing = c.post("/v2/models/clf/versions/99/infer", json={"inputs": []})
    assert missing.status_code == 404 and isinstance(missing.json()["error"], str)
    assert c.post("/v2/models/other/infer", json={"inputs": []}).status_code == 404
    families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    http = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["mloop_http_requests"].samples
        if s.name == "mloop_http_requests_total"
    }
    assert http[("/predict", "POST", "200")] == 1 and http[("/predict", "POST", "422")] == 1
    assert http[("/v2/models/{name}/infer", "POST", "400")] == 1
    assert http[("/v2/models/{name}", "GET", "404")] == 1 and http[("unmatched", "GET", "404")] == 1
    assert http[("/predict", "POST", "413")] == 1
    assert http[("/v2/models/{name}/versions/{version}/infer", "POST", "404")] == 1
    assert http[("/v2/models/{name}/infer", "POST", "404")] == 1
    requests = {
        (s.labels["version"], s.labels["status"]): s.value
        for s in families["mloop_requests"].samples
        if s.name == "mloop_requests_total"
    }
    assert requests[("1", "200")] == 1 and requests[("-", "422")] == 1 and requests[("-", "400")] == 1
    assert families["mloop_prediction_log_dropped"].type == "counter"
