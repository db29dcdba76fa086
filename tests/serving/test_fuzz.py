"""Arbitrary bodies against every endpoint: 4xx or 2xx, never a 5xx, and the log stays readable.

JSON of every type in every position: keys, ids, columns (``dataframe_split.columns`` as objects
or nested lists), request keys (with a canary, so they are hashed), lone surrogates, ±1e308,
deep nesting. Each error body is in its protocol's shape.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import fit, register, training_data

import mloop
from mloop.monitoring.log import read_log

COLS = ["a", "b"]

texts = st.one_of(st.text(max_size=8), st.sampled_from(["\ud800", "a\udfff", "a", "b", "é", ""]))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 5e-324]),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
values = st.one_of(scalars, json_values)
near_valid_rows = st.lists(
    st.one_of(
        st.fixed_dictionaries({"a": values, "b": values}, optional={"c": values}),
        st.dictionaries(texts, values, max_size=3),
        values,
    ),
    max_size=5,
)
tensor = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from([*COLS, "x"]), values),
        "data": st.one_of(st.lists(values, max_size=3), values),
    },
    optional={
        "shape": st.one_of(st.lists(st.integers(-2, 4), max_size=3), values),
        "datatype": st.one_of(st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "NOPE"]), values),
        "parameters": st.one_of(st.dictionaries(texts, values, max_size=2), values),
    },
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"instances": st.one_of(near_valid_rows, values)}, optional={"key": values}),
    st.fixed_dictionaries({"dataframe_records": near_valid_rows}, optional={"inputs": values}),
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {
                    "columns": st.one_of(st.just(COLS), st.lists(values, max_size=3), values),
                    "data": st.one_of(st.lists(st.lists(values, max_size=3), max_size=3), values),
                }
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "inputs": st.one_of(
                st.lists(tensor, max_size=3), st.dictionaries(texts, values, max_size=3), values
            )
        },
        optional={"id": values, "outputs": values, "parameters": values},
    ),
    st.fixed_dictionaries({"prediction_id": values, "label": values}),
    st.fixed_dictionaries(
        {"feedback": st.lists(st.fixed_dictionaries({"prediction_id": values, "label": values}))}
    ),
)
PATHS = ["/predict", "/v2/models/clf/infer", "/v2/models/clf/versions/1/infer", "/invocations", "/feedback"]


def error_message(path: str, body: object) -> str:
    """The message of an error body in ``path``'s protocol shape."""
    assert isinstance(body, dict), body
    if path.startswith("/v2"):
        assert isinstance(body["error"], str)
        return body["error"]
    if path == "/invocations":
        assert body["error_code"] == "BAD_REQUEST" or body["error_code"].isupper()
        return body["message"]
    assert body["error"]["code"]
    return body["error"]["message"]


@pytest.fixture
def served(tmp_path: Path, serve):
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        df = training_data()
        ws.promote("clf", register(ws, fit(df, COLS), df, COLS).version)
        ws.promote("clf", 1, alias="canary", reason="fuzz the canary path")
        yield serve(ws, canary_fraction=0.5)


def post(client, path: str, body: object, headers: dict[str, str] | None = None):
    # ensure_ascii keeps lone surrogates as \ud800 escapes, as a client in another language would send them
    raw = json.dumps(body, ensure_ascii=True, allow_nan=False).encode()
    return client.post(path, content=raw, headers={"content-type": "application/json", **(headers or {})})


def test_no_body_produces_a_server_error(served, tmp_path: Path) -> None:
    client = served.client

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, path=st.sampled_from(PATHS))
    def check(body: object, path: str) -> None:
        response = post(client, path, body)
        assert response.status_code < 500, (path, body, response.text)
        if response.status_code >= 400:
            assert error_message(path, response.json())

    check()
    hostile = [
        "[" * 50_000 + "]" * 50_000,
        '{"instances": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"\\ud800": 1}',
        '{"instances": [{"a": 1e308, "b": -1e308}]}',
        '{"instances": [{"\\ud800": 1, "b": 2}]}',
        '{"dataframe_split": {"columns": ["\\ud800", "b"], "data": [[1, 2]]}}',
        '{"dataframe_split": {"columns": {"a": 1}, "data": [[1, 2]]}}',
        '{"dataframe_split": {"columns": [["a"], "b"], "data": [[1, 2]]}}',
        '{"instances": [{"a": 1, "b": 2}], "key": 123}',
        '{"instances": [{"a": 1, "b": 2}], "key": "\\ud800"}',
        '{"prediction_id": ["x"], "label": 1}',
        '{"prediction_id": {"x": 1}, "label": 1}',
        '{"a": NaN}',
    ]
    for raw in hostile:
        for path in PATHS:
            response = client.post(path, content=raw, headers={"content-type": "application/json"})
            assert response.status_code < 500, (path, raw[:80], response.text[:300])
            if path != "/invocations":  # MLflow ignores keys that are not an input format
                assert response.status_code >= 400, (path, raw[:80], response.text[:300])
            assert len(response.content) < 2_000, "an error quotes at most ~200 characters of the input"
    # the prediction log written meanwhile stays readable
    time.sleep(0.5)
    read_log(tmp_path / "log", "clf")


def test_a_non_finite_prediction_is_an_error_not_a_served_answer(served, tmp_path: Path) -> None:
    client = served.client
    before = client.get("/metrics").text
    assert 'status="422"' not in before
    response = post(client, "/predict", {"instances": [{"a": 1e308, "b": -1e308}]})
    assert response.status_code == 422, response.text
    assert "not a finite number" in response.json()["error"]["message"]
    text = client.get("/metrics").text
    assert 'mloop_requests_total{model="clf",status="422",version="-"} 1.0' in text
    assert 'mloop_http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert "mloop_predicted_rows_total" not in text.replace("# HELP mloop_predicted_rows_total", "").replace(
        "# TYPE mloop_predicted_rows_total", ""
    )


@pytest.mark.parametrize(
    "body",
    [
        {"prediction_id": ["a", "b"], "label": 1},
        {"prediction_id": {"a": 1}, "label": 1},
        {"prediction_id": 5, "label": 1},
    ],
)
def test_feedback_with_a_non_string_id_is_a_4xx(served, body: object) -> None:
    response = served.client.post("/feedback", json=body)
    assert response.status_code == 422 and response.json()["error"]["field"] == "prediction_id"


def test_a_long_request_key_and_a_huge_label_batch_are_refused_naming_the_limit(served) -> None:
    """A 100 KB key was logged with every row; 115,000 labels in one body raised RSS for good."""
    row = {"instances": [{"a": 0.1, "b": 0.2}]}
    r = served.client.post("/predict", json={**row, "key": "k" * 257})
    assert r.status_code == 422 and r.json()["error"]["field"] == "key"
    assert "limit of 256" in r.json()["error"]["message"]
    assert served.client.post("/predict", json={**row, "key": "k" * 256}).status_code == 200
    labels = [{"prediction_id": f"01M9{i:022d}-0", "label": 1} for i in range(10_001)]
    r = served.client.post("/feedback", json={"feedback": labels})
    assert r.status_code == 422 and "limit of 10000" in r.json()["error"]["message"]


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A3", "1" * 5000])
def test_a_non_ascii_or_huge_version_is_a_404(served, version: str) -> None:
    """``'²'.isdigit()`` is true but ``int('²')`` fails: that was a 500 on every version route."""
    for method, suffix in (("GET", ""), ("GET", "/ready"), ("POST", "/infer")):
        answer = served.client.request(method, f"/v2/models/clf/versions/{version}{suffix}", json={})
        assert answer.status_code == 404 and isinstance(answer.json()["error"], str), answer.text


@pytest.mark.parametrize("length", ["\xb2".encode("latin-1"), b"9" * 5000, b"-1", "٣".encode()])
def test_a_binary_header_length_that_is_not_a_number_is_a_400(served, length: bytes) -> None:
    answer = served.client.post(
        "/v2/models/clf/infer",
        content=b"{}",
        headers={"Inference-Header-Content-Length": length},
    )
    assert answer.status_code == 400 and "Inference-Header-Content-Length" in answer.json()["error"]


def test_a_number_beyond_1e300_is_refused_on_every_encoding(served) -> None:
    """The ±1e300 guard held for JSON only: 1e308 through CSV or a binary tensor got a confident answer
    where the model itself refuses the row."""
    import struct

    client = served.client
    csv = client.post("/invocations", content=b"a,b\n1e308,0.5\n", headers={"content-type": "text/csv"})
    assert csv.status_code == 400 and "1e308" in csv.json()["message"], csv.text
    tensors = [
        {"name": c, "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}} for c in COLS
    ]
    header = json.dumps({"inputs": tensors}).encode()
    binary = client.post(
        "/v2/models/clf/infer",
        content=header + struct.pack("<d", 1e308) + struct.pack("<d", 0.5),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "content-type": "application/octet-stream",
        },
    )
    assert binary.status_code == 400 and "finite" in binary.json()["error"], binary.text
    fp32 = {"inputs": [{"name": c, "shape": [1], "datatype": "FP32", "data": [1e300 * 10]} for c in COLS]}
    assert client.post("/v2/models/clf/infer", json=fp32).status_code in (400, 422)
    fine = client.post("/invocations", content=b"a,b\n1e3,0.5\n", headers={"content-type": "text/csv"})
    assert fine.status_code == 200, fine.text
