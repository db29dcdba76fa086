"""``/api/v1/pipelines``: deployed pipeline versions, aliases and history over real HTTP."""

from __future__ import annotations

from conftest import Server

from mloop.entities import PipelineVersion, utcnow


def _deploy(server: Server, code: str) -> PipelineVersion:
    draft = PipelineVersion(
        id="",
        name="training",
        version=0,
        entry="project/pipeline.py:training",
        snapshot_artifact_id="01ART",
        snapshot_digest="d" * 64,
        code_hash=code,
        params={"C": 0.5},
        git_commit="c" * 40,
        git_dirty=False,
        python_version="3.11.9",
        packages={"mloop": "0.1.0"},
        ci={"passed": True},
        forced_reason=None,
        created_at=utcnow(),
        created_by="alice",
    )
    return server.ws.pipelines.create_version(draft)


def test_pipeline_versions_aliases_and_history(server: Server) -> None:
    with server.client("viewer") as http:
        assert http.get("/api/v1/pipelines").json() == {"pipelines": []}
        v1, v2 = _deploy(server, "a" * 64), _deploy(server, "b" * 64)
        store = server.ws.pipelines
        store.move_alias("training", "production", v1.version, action="promote", who="alice", reason="first")
        store.move_alias(
            "training", "production", v2.version, action="promote", who="bob", reason="ci passed"
        )
        listed = http.get("/api/v1/pipelines").json()["pipelines"]
        assert [(p["name"], p["last_version"], p["aliases"]) for p in listed] == [
            ("training", 2, {"production": 2})
        ]
        body = http.get("/api/v1/pipelines/training").json()
        assert [v["version"] for v in body["versions"]] == [1, 2]
        assert body["versions"][1]["code_hash"] == "b" * 64 and body["versions"][1]["ci"] == {"passed": True}
        assert [(e["to_version"], e["who"], e["reason"]) for e in body["history"]] == [
            (1, "alice", "first"),
            (2, "bob", "ci passed"),
        ]
        assert http.get("/api/v1/pipelines/nope").status_code == 404
        bad = http.get("/api/v1/pipelines/..%2Fetc")
        assert bad.status_code in (400, 404)
    with server.client(None) as anon:
        assert anon.get("/api/v1/pipelines").status_code == 401
