"""Arbitrary bodies against every endpoint: 4xx or 2xx, never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import fit, register, training_data

import mloop

COLS = ["a", "b"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
near_valid_rows = st.lists(
    st.fixed_dictionaries({"a": scalars, "b": scalars}, optional={"c": scalars}), max_size=5
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"instances": near_valid_rows}),
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {"columns": st.just(COLS), "data": st.lists(st.lists(scalars, max_size=3), max_size=3)}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from([*COLS, "x"]), "data": st.lists(scalars, max_size=3)}
                ),
                max_size=3,
            )
        }
    ),
    st.fixed_dictionaries({"prediction_id": st.text(max_size=30), "label": scalars}),
)


@pytest.fixture
def app_client(tmp_path: Path, serve):
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        df = training_data()
        ws.promote("clf", register(ws, fit(df, COLS), df, COLS).version)
        yield serve(ws).client


def test_no_body_produces_a_server_error(app_client) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=bodies, path=st.sampled_from(["/predict", "/v2/models/clf/infer", "/feedback"]))
    def check(body: object, path: str) -> None:
        response = app_client.post(path, json=body)
        assert response.status_code < 500, (path, body, response.text)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["message"] and error["code"]

    check()
