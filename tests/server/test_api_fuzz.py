"""Hostile input from hypothesis on every run-query parameter and path id: never a 500, never a hang."""

from __future__ import annotations

from urllib.parse import quote

from conftest import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXT = st.text(st.characters(max_codepoint=0x2FF, blacklist_categories=("Cs",)), max_size=60)
SQLISH = st.sampled_from(
    ["'", '"', ";", "--", "/*", " OR 1=1", "../", "%", "_", "\\", "\x00", "metric.", "param."]
)
HOSTILE = st.lists(st.one_of(TEXT, SQLISH), max_size=4).map("".join)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(
        ["where", "sort", "cursor", "pipeline", "status", "trigger", "since", "until", "limit"]
    ),
    value=HOSTILE,
)
def test_run_query_parameters(shared_server: Server, field: str, value: str) -> None:
    with shared_server.client() as http:
        response = http.get("/api/v1/runs", params={field: value})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["field"] == field
    else:
        assert isinstance(response.json()["runs"], list)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(
        [
            "/api/v1/runs/{}",
            "/api/v1/artifacts/{}/content",
            "/api/v1/lineage/{}",
            "/api/v1/models/{}/history",
            "/api/v1/models/{}/rollout",
            "/api/v1/models/{}/monitoring",
            "/api/v1/models/{}/versions/1/evaluations",
            "/api/v1/runs/{}/metrics",
            "/api/v1/artifacts/{}",
            "/api/v1/model-versions/{}",
            "/api/v1/pipeline-versions/{}",
            "/api/v1/pipelines/{}/history",
            "/api/v1/features/definitions/{}",
        ]
    ),
    value=HOSTILE.filter(lambda v: v.strip(".") != ""),
)
def test_path_ids(shared_server: Server, route: str, value: str) -> None:
    with shared_server.client() as http:
        response = http.get(route.format(quote(value, safe="")))
    assert response.status_code in (400, 404), response.text
    assert set(response.json()["error"]) == {"code", "message", "field"}
