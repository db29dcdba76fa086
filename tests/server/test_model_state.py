"""Evaluations, monitoring windows and manual rollouts over real HTTP: the API, ``mloop.Client`` and
``--server`` on the CLI's read commands (and the same commands on a local workspace)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import Server, _starter, _stop
from loop_helpers import MODEL, serve_rows, service, stream, train_first
from server_helpers import run

import mloop
from mloop.auth import create_token
from mloop.monitoring.monitor import monitor


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, mloop.Workspace, dict, str]]:
    """MODEL v1 through the built-in retraining pipeline (it records an evaluation, a verdict and an
    infra check), 400 labelled rows served, monitored in windows of 200; the server over it."""
    folder = tmp_path_factory.mktemp("trained")
    ws = mloop.Workspace.open(folder / ".mloop")
    data = stream(1200, drift_at=1000)
    train_first(ws, data.iloc[:800], folder)
    svc = service(ws, ws.prediction_log_dir)
    serve_rows(svc, data.iloc[800:1200])
    svc.stop()
    report = monitor(ws, MODEL, window=200)
    assert report.run_id is not None
    tokens = {"viewer": create_token(ws.tokens, "viewer", "viewer", created_by="test")[0]}
    start, servers = _starter()
    try:
        yield start(ws), ws, tokens, report.run_id
    finally:
        _stop(servers)
        ws.close()


def test_evaluations_of_a_version(trained: tuple) -> None:
    url, ws, tokens, _ = trained
    with mloop.Client(url, token=tokens["viewer"]) as api:
        body = api.evaluations(MODEL, 1)
        assert body["run_id"] == ws.model_version(f"{MODEL}:1").run_id
        kinds = {e["kind"]: e for e in body["evaluations"]}
        assert {"evaluation", "verdict", "infra_report"} <= set(kinds)
        assert 0.5 < kinds["evaluation"]["content"]["metrics"]["accuracy"] <= 1.0
        assert kinds["verdict"]["content"]["blessed"] is True
        artifact = ws.metadata.get_artifact(kinds["evaluation"]["artifact_id"])
        assert json.loads(ws.artifacts.get(artifact.digest))["rows"] == kinds["evaluation"]["content"]["rows"]
        with pytest.raises(mloop.NotFoundError):
            api.evaluations(MODEL, 9)
        with pytest.raises(mloop.NotFoundError):
            api.evaluations("nope", 1)
    with mloop.Client(url) as anon, pytest.raises(mloop.UnauthorizedError):
        anon.evaluations(MODEL, 1)


def test_monitoring_windows(trained: tuple) -> None:
    url, ws, tokens, monitor_run = trained
    with mloop.Client(url, token=tokens["viewer"]) as api:
        body = api.monitoring(MODEL)
        assert body["run"]["id"] == monitor_run and body["run"]["pipeline"] == f"monitor/{MODEL}"
        windows = body["report"]["windows"]
        assert [w["rows"] for w in windows] == [200, 200] and all(w["labelled"] == 200 for w in windows)
        assert all("accuracy" in w["metrics"] and set(w["feature_scores"]) for w in windows)
        assert body["report"]["deployments"][0]["alias"] == "production"
        assert api.monitoring(MODEL, run_id=monitor_run)["run"]["id"] == monitor_run
        other_run = ws.model_version(f"{MODEL}:1").run_id
        with pytest.raises(mloop.NotFoundError, match="not a monitoring run"):
            api.monitoring(MODEL, run_id=other_run)
    with httpx_client(url, tokens["viewer"]) as http:
        bad = http.get(f"/api/v1/models/{MODEL}/monitoring", params={"run_id": "../../etc"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "run_id"
        assert http.get("/api/v1/models/nope/monitoring").status_code == 404


def test_cli_reads_evaluations_and_monitoring_from_a_server_and_locally(
    trained: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    url, ws, tokens, monitor_run = trained
    remote = ["--server", url, "--token", tokens["viewer"]]
    local = ["--workspace", str(ws.root)]
    for where in (remote, local):
        code, stdout, stderr = run(capsys, "models", "evaluations", f"{MODEL}:1", *where, "--json")
        assert code == 0, stderr
        assert {e["kind"] for e in json.loads(stdout)["evaluations"]} >= {"evaluation", "verdict"}
        code, stdout, stderr = run(capsys, "models", "evaluations", f"{MODEL}:1", *where)
        assert code == 0 and "blessed" in stdout, stderr
        code, stdout, stderr = run(capsys, "models", "monitoring", MODEL, *where, "--json")
        assert code == 0 and json.loads(stdout)["run"]["id"] == monitor_run, stderr
        code, stdout, stderr = run(capsys, "models", "monitoring", MODEL, *where)
        assert code == 0 and "2 windows of 200" in stdout, stderr
    code, _, stderr = run(capsys, "models", "evaluations", MODEL, *local)
    assert code == 2 and stderr.startswith("error:") and "NAME:VERSION" in stderr
    assert len(stderr.splitlines()) == 1


def httpx_client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


# manual rollouts (seeded workspace: churn v1 production, v2 registered) ------------------------------


def _manual(server: Server) -> None:
    assert server.ws.root is not None
    (server.ws.root.parent / "mloop.toml").write_text('[[rollout]]\nmodel = "churn"\nmode = "manual"\n')


def test_manual_rollout_is_approved_or_rejected_by_editors_and_audited(server: Server) -> None:
    with server.client("viewer") as http:
        state = http.get("/api/v1/models/churn/rollout").json()
        assert state["policy"] is None and state["pending"] is None and state["production"] == 1
        refused = http.post("/api/v1/models/churn/rollout/approve", json={"version": 2, "reason": "x"})
        assert refused.status_code == 403
    _manual(server)
    with server.client("editor") as http:
        state = http.get("/api/v1/models/churn/rollout").json()
        assert state["policy"]["mode"] == "manual" and state["pending"]["version"] == 2
        wrong = http.post("/api/v1/models/churn/rollout/approve", json={"version": 1, "reason": "x"})
        assert wrong.status_code == 409 and wrong.json()["error"]["field"] == "version"
        no_reason = http.post("/api/v1/models/churn/rollout/reject", json={"version": 2})
        assert no_reason.status_code == 400 and no_reason.json()["error"]["field"] == "reason"
        rejected = http.post("/api/v1/models/churn/rollout/reject", json={"version": 2, "reason": "too slow"})
        assert rejected.status_code == 200, rejected.text
        body = rejected.json()
        assert body["pending"] is None and body["production"] == 1
        assert [(d["action"], d["reason"], d["who"]) for d in body["decisions"]] == [
            ("rollout.reject", "too slow", "editor-token")
        ]
        again = http.post("/api/v1/models/churn/rollout/approve", json={"version": 2, "reason": "x"})
        assert again.status_code == 409
    server.ws.register_model("churn", {"weights": [3]})  # v3 waits now
    with mloop.Client(server.url, token=server.seeded.tokens["editor"]) as api:
        assert api.rollout("churn")["pending"]["version"] == 3
        with pytest.raises(mloop.ConflictError):
            api.reject_rollout("churn", 2, reason="already decided")
        approved = api.approve_rollout("churn", 3, reason="canary looked fine")
        assert approved["production"] == 3 and approved["pending"] is None
        assert approved["decisions"][0]["action"] == "rollout.approve"
        history = api.history("churn", "production")
        assert (history[-1]["to_version"], history[-1]["reason"]) == (3, "canary looked fine")
        audit = api.audit(target="model:churn:3")
        assert audit[0]["action"] == "rollout.approve" and audit[0]["details"]["from_version"] == 1


def test_rollout_without_a_manual_policy_is_a_conflict(server: Server) -> None:
    assert server.ws.root is not None
    (server.ws.root.parent / "mloop.toml").write_text('[[rollout]]\nmodel = "churn"\nmode = "auto"\n')
    with server.client("editor") as http:
        answer = http.post("/api/v1/models/churn/rollout/approve", json={"version": 2, "reason": "x"})
        assert answer.status_code == 409 and "no manual rollout policy" in answer.json()["error"]["message"]
        assert http.get("/api/v1/models/nope/rollout").status_code == 404
        assert http.get("/api/v1/models/..%2Fx/rollout").status_code in (400, 404)


def test_cli_reads_the_rollout_from_a_server(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    _manual(server)
    code, stdout, stderr = run(
        capsys,
        "models",
        "rollout",
        "churn",
        "--server",
        server.url,
        "--token",
        server.seeded.tokens["viewer"],
    )
    assert code == 0 and "manual" in stdout and "waiting for a decision: v2" in stdout, stderr
    code, stdout, _ = run(capsys, "models", "rollout", "churn", "--workspace", str(server.ws.root), "--json")
    assert code == 0 and json.loads(stdout)["pending"]["version"] == 2


def test_client_fires_a_trigger(server: Server) -> None:
    """The client's body is the one the server takes (it used to send a ``pipeline`` the server refuses)."""
    assert server.ws.root is not None
    (server.ws.root.parent / "mloop.toml").write_text(
        '[[triggers]]\nname = "nightly"\nkind = "manual"\npipeline = "sample_pipelines.py:arithmetic"\n'
    )
    with mloop.Client(server.url, token=server.seeded.tokens["editor"]) as api:
        event = api.fire_trigger("nightly", reason="data fixed")
        assert event["status"] == "pending"
        # relative to mloop.toml's folder, recorded resolved
        assert event["pipeline"] == f"{server.ws.root.parent / 'sample_pipelines.py'}:arithmetic"
        assert [t["name"] for t in api.triggers()] == ["nightly"]
        assert api.trigger_events("nightly")[0]["id"] == event["id"]
        with pytest.raises(mloop.NotFoundError):
            api.fire_trigger("weekly", reason="x")


def test_openapi_describes_the_model_state_routes(server: Server) -> None:
    with server.client(None) as http:
        paths = set(http.get("/api/v1/openapi.json").json()["paths"])
    assert {
        "/api/v1/models/{name}/versions/{version}/evaluations",
        "/api/v1/models/{name}/monitoring",
        "/api/v1/models/{name}/rollout",
        "/api/v1/models/{name}/rollout/approve",
        "/api/v1/models/{name}/rollout/reject",
    } <= paths
