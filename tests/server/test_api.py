"""The team server's REST API over real HTTP: reads, filters and pages, writes with the audit trail."""

from __future__ import annotations

import time

import pytest
from conftest import Server

from mloop.auth import TOKEN_CACHE_SECONDS


def test_runs_page_filters_sorts_and_pages(shared_server: Server) -> None:
    with shared_server.client() as http:
        page = http.get("/api/v1/runs", params={"pipeline": "sweep", "limit": 5}).json()
        assert len(page["runs"]) == 5 and page["next_cursor"]
        ids = [r["id"] for r in page["runs"]]
        assert ids == sorted(ids, reverse=True)
        seen = list(ids)
        cursor = page["next_cursor"]
        while cursor:
            page = http.get("/api/v1/runs", params={"pipeline": "sweep", "limit": 5, "cursor": cursor}).json()
            seen += [r["id"] for r in page["runs"]]
            cursor = page["next_cursor"]
        assert len(seen) == len(set(seen)) == 20

        params = [("where", "metric.accuracy>=0.5"), ("where", "param.lr=0.1"), ("sort", "-metric.accuracy")]
        body = http.get("/api/v1/runs", params=params).json()
        values = [r["sort_value"] for r in body["runs"]]
        assert values == sorted(values, reverse=True) and len(values) == 5 and min(values) >= 0.5
        assert all(r["params"]["lr"] == 0.1 for r in body["runs"])

        asc = http.get("/api/v1/runs", params={"sort": "metric.loss", "limit": 3}).json()
        nxt = http.get(
            "/api/v1/runs", params={"sort": "metric.loss", "limit": 3, "cursor": asc["next_cursor"]}
        )
        losses = [r["sort_value"] for r in asc["runs"] + nxt.json()["runs"]]
        assert losses == sorted(losses) and len(losses) == 6

        assert len(http.get("/api/v1/runs", params={"pipeline": "arithmetic"}).json()["runs"]) == 3
        assert http.get("/api/v1/runs", params={"trigger": "nope"}).json()["runs"] == []
        future = http.get("/api/v1/runs", params={"since": "2999-01-01T00:00:00"}).json()
        assert future["runs"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"where": "metric.accuracy>>1"}, "where"),
        ({"where": "metric.accuracy>high"}, "where"),
        ({"where": "param.lr>1"}, "where"),
        ({"where": "accuracy>1"}, "where"),
        ({"sort": "name; DROP TABLE runs"}, "sort"),
        ({"status": "done"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "9999-12-31T23:59:59-23:59"}, "since"),
        ({"until": "0001-01-01T00:00:00+14:00"}, "until"),
        ({"cursor": "!!!"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_malformed_run_queries_are_400_naming_the_problem(
    shared_server: Server, params: dict[str, str], field: str
) -> None:
    with shared_server.client() as http:
        response = http.get("/api/v1/runs", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_run_page_steps_params_metrics_and_lineage_to_the_model(shared_server: Server) -> None:
    with shared_server.client() as http:
        body = http.get(f"/api/v1/runs/{shared_server.seeded.model_run}").json()
        assert body["run"]["pipeline"] == "arithmetic" and body["params"] == {"n": 4, "tag": "x"}
        assert {s["name"] for s in body["steps"]} == {"seed", "square", "seed_b", "add"}
        assert all("duration_s" in s and "cache_hit" in s for s in body["steps"])
        assert [m["name"] for m in body["models"]] == ["churn"]
        output = next(a for a in body["artifacts"] if a["step"] == "add" and a["kind"] == "output")
        content = http.get(f"/api/v1/artifacts/{output['id']}/content")
        assert (
            content.status_code == 200 and content.headers["x-content-digest"] == f"sha256:{output['digest']}"
        )
        graph = http.get(f"/api/v1/lineage/{output['id']}").json()
        assert graph["models"][0]["name"] == "churn" and graph["models"][0]["aliases"] == ["production"]
        model_graph = http.get("/api/v1/lineage/churn@production").json()
        assert shared_server.seeded.model_run in {r["id"] for r in model_graph["runs"]}
        sweep = http.get("/api/v1/runs", params={"pipeline": "sweep", "limit": 1}).json()["runs"][0]
        series = http.get(f"/api/v1/runs/{sweep['id']}/metrics/accuracy").json()
        assert len(series["points"]) == 1


def test_artifacts_and_runs_by_the_references_the_cli_takes(shared_server: Server) -> None:
    """The API resolves what the CLI prints and takes: an artifact by id, digest, ``sha256:`` digest or a
    unique prefix of either; a run's sub-resources by a unique id prefix; lineage by a printed digest."""
    run_id = shared_server.seeded.model_run
    with shared_server.client() as http:
        body = http.get(f"/api/v1/runs/{run_id}").json()
        output = next(a for a in body["artifacts"] if a["step"] == "add" and a["kind"] == "output")
        digest = output["digest"]
        for ref in (output["id"], output["id"][:20], digest, f"sha256:{digest}", f"sha256:{digest[:12]}"):
            found = http.get(f"/api/v1/artifacts/{ref}")
            assert found.status_code == 200 and found.json()["id"] == output["id"], (ref, found.text)
            content = http.get(f"/api/v1/artifacts/{ref}/content")
            assert content.headers["x-content-digest"] == f"sha256:{digest}", ref
        graph = http.get(f"/api/v1/lineage/sha256:{digest[:12]}")
        assert graph.status_code == 200 and output["id"] in {a["id"] for a in graph.json()["artifacts"]}
        steps = http.get(f"/api/v1/runs/{run_id[:20]}/steps")
        assert steps.status_code == 200 and {s["run_id"] for s in steps.json()["steps"]} == {run_id}
        bad = http.get("/api/v1/artifacts/sha256:xyz")
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "artifact_id"


def test_corrupted_artifact_is_refused_not_served(server: Server) -> None:
    version = server.ws.model_version("churn:2")
    art = server.ws.metadata.get_artifact(version.artifact_id)
    path = server.ws.artifacts.uri(art.digest)
    with open(path, "r+b") as f:
        f.write(b"X")
    with server.client() as http:
        response = http.get(f"/api/v1/artifacts/{art.id}/content")
    assert response.status_code == 409 and response.json()["error"]["code"] == "artifact_corrupted"


def test_unknown_ids_are_404(shared_server: Server) -> None:
    with shared_server.client() as http:
        for path in (
            "/api/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "/api/v1/artifacts/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "/api/v1/models/nope/versions",
            "/api/v1/models/churn/versions/99",
            "/api/v1/nowhere",
        ):
            response = http.get(path)
            assert response.status_code == 404, path
            assert set(response.json()["error"]) == {"code", "message", "field"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/runs/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/runs/1'%20OR%20'1'='1",
        "/api/v1/artifacts/..%2Fmloop.db/content",
        "/api/v1/artifacts/%2Fetc%2Fpasswd/content",
        "/api/v1/lineage/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/lineage/x'%3B%20DROP%20TABLE%20runs%3B--",
        "/api/v1/models/..%2F..%2Fetc/versions",
        "/api/v1/models/churn'--/history",
        "/api/v1/runs?pipeline=x'%20OR%201=1--",
        "/api/v1/runs?where=param.lr='%20OR%20'1'='1",
        "/static/..%2F..%2F..%2Fauth.py",
        "/static/../app.py",
    ],
)
def test_traversal_and_injection_probes_are_refused(shared_server: Server, path: str) -> None:
    with shared_server.client() as http:
        response = http.get(path)
        assert response.status_code in (200, 400, 404), response.text
        if response.status_code == 200:  # a filter that matched nothing, parametrised
            assert response.json()["runs"] == []
        assert "def " not in response.text and "SQLite format" not in response.text
        assert len(http.get("/api/v1/runs", params={"limit": 500}).json()["runs"]) == 23


def test_auth_missing_invalid_revoked_and_underprivileged(server: Server) -> None:
    with server.client(None) as anonymous:
        response = anonymous.get("/api/v1/runs")
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        bad = anonymous.get("/api/v1/runs", headers={"Authorization": "Bearer mloop_forged"})
        assert bad.status_code == 401
    body = {"version": 2, "reason": "try"}
    for role in ("viewer", "feedback"):
        with server.client(role) as http:
            refused = http.post("/api/v1/models/churn/aliases/production", json=body)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
            assert server.seeded.tokens[role] not in refused.text
    assert server.ws.model_version("churn@production").version == 1
    token = next(t for t in server.ws.tokens.list_tokens() if t.role == "viewer")
    with server.client("viewer") as http:
        assert http.get("/api/v1/runs").status_code == 200  # the token is now in the server's cache
        server.ws.tokens.revoke_token(token.id)  # in the store, as `mloop server token revoke` does
        revoked = time.monotonic()
        while True:  # refused within the stated bound, however busy the machine
            sent = time.monotonic()
            status = http.get("/api/v1/runs").status_code
            if status != 200:
                break
            assert sent - revoked < TOKEN_CACHE_SECONDS, "a revoked token passed after the bound"
            time.sleep(0.05)
        assert status == 401


def test_writes_move_aliases_and_are_audited(server: Server) -> None:
    with server.client("editor") as http:
        moved = http.post(
            "/api/v1/models/churn/aliases/production", json={"version": 2, "reason": "better auc"}
        )
        assert moved.status_code == 200 and moved.json()["to_version"] == 2 and moved.json()["changed"]
        again = http.post("/api/v1/models/churn/aliases/production", json={"version": 2, "reason": "again"})
        assert again.status_code == 200 and again.json()["changed"] is False  # no event, no audit entry
        assert http.post("/api/v1/models/churn/aliases/production", json={"version": 2}).status_code == 400
        extra = http.post(
            "/api/v1/models/churn/aliases/production", json={"version": 2, "reason": "x", "sql": 1}
        )
        assert extra.status_code == 400 and extra.json()["error"]["field"] == "sql"
        for loose in ({"version": "1"}, {"version": True}, {"version": 1e3}, {"version": 1, "force": "yes"}):
            refused = http.post("/api/v1/models/churn/aliases/production", json={"reason": "x", **loose})
            assert refused.status_code == 400, (loose, refused.text)
        huge = http.get("/api/v1/models/churn/versions/99999999999999999999999")
        assert huge.status_code == 400 and huge.json()["error"]["field"] == "version"
        assert http.get("/api/v1/models/churn/versions/2").json()["version"] == 2
        back = http.post("/api/v1/models/churn/aliases/production/rollback", json={"reason": "regression"})
        assert back.json()["to_version"] == 1
        history = http.get("/api/v1/models/churn/history", params={"alias": "production"}).json()["events"]
        assert [(e["who"], e["reason"]) for e in history[-2:]] == [
            ("editor-token", "better auc"),
            ("editor-token", "regression"),
        ]
        audit = http.get("/api/v1/audit").json()["entries"]
        assert [(e["action"], e["who"], e["target"], e["reason"]) for e in audit[:2]] == [
            ("alias.rollback", "editor-token", "model:churn@production", "regression"),
            ("alias.move", "editor-token", "model:churn@production", "better auc"),
        ]
        unknown = http.post("/api/v1/triggers/nightly/fire", json={"reason": "now"})
        assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "trigger"


def test_openapi_describes_every_route(shared_server: Server) -> None:
    with shared_server.client(None) as http:
        spec = http.get("/api/v1/openapi.json").json()
    paths = set(spec["paths"])
    for expected in (
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/metrics/{key}",
        "/api/v1/artifacts/{artifact_id}/content",
        "/api/v1/lineage/{ref}",
        "/api/v1/models/{name}/aliases/{alias}",
        "/api/v1/triggers/{trigger}/fire",
        "/api/v1/audit",
        "/api/v1/runs/{run_id}/metrics",
        "/api/v1/model-versions/{ref}",
        "/api/v1/pipeline-versions",
        "/api/v1/pipeline-versions/{ref}",
        "/api/v1/pipelines/{name}/history",
        "/api/v1/scheduler/status",
        "/api/v1/features/definitions",
        "/api/v1/features/definitions/{name}",
        "/api/v1/features/freshness",
        "/api/v1/features/online",
    ):
        assert expected in paths, expected


def test_firing_a_trigger_records_a_pending_event_for_the_scheduler(server: Server) -> None:
    assert server.ws.root is not None
    (server.ws.root.parent / "mloop.toml").write_text(
        '[[triggers]]\nname = "nightly"\nkind = "manual"\npipeline = "sample_pipelines.py:arithmetic"\n'
    )
    with server.client("editor") as http:
        fired = http.post("/api/v1/triggers/nightly/fire", json={"reason": "data fixed"})
        assert fired.status_code == 200, fired.text
        event = fired.json()
        assert event["status"] == "pending" and event["evidence"]["by"] == "editor-token"
        listed = http.get("/api/v1/triggers/events", params={"trigger": "nightly"}).json()["events"]
        assert [e["id"] for e in listed] == [event["id"]]
        for status, found in (("pending", [event["id"]]), ("failed", [])):
            got = http.get("/api/v1/triggers/events", params={"status": status}).json()["events"]
            assert [e["id"] for e in got] == found
        refused = http.get("/api/v1/triggers/events", params={"status": "nope"})
        assert refused.status_code == 400 and "status" in refused.text
        triggers = http.get("/api/v1/triggers").json()["triggers"]
        assert [t["name"] for t in triggers] == ["nightly"]
        assert (
            http.get("/api/v1/audit", params={"target": "trigger:nightly"}).json()["entries"][0]["reason"]
            == "data fixed"
        )
    with server.client("viewer") as http:
        assert http.post("/api/v1/triggers/nightly/fire", json={"reason": "x"}).status_code == 403


def test_admins_manage_tokens_and_others_cannot(server: Server) -> None:
    with server.client("editor") as http:
        assert http.get("/api/v1/tokens").status_code == 403
        assert http.post("/api/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
    with server.client("admin") as http:
        listed = http.get("/api/v1/tokens").json()["tokens"]
        assert len(listed) == 4 and all("hash" not in str(t) and "token" not in t for t in listed)
        made = http.post("/api/v1/tokens", json={"name": "bot", "role": "feedback"}).json()
        assert made["token"].startswith("mloop_") and made["role"] == "feedback"
        assert http.post("/api/v1/tokens", json={"name": "bot", "role": "root"}).status_code == 400
        with server.client(None) as anon:
            bearer = {"Authorization": f"Bearer {made['token']}"}
            assert anon.get("/api/v1/whoami", headers=bearer).json() == {"name": "bot", "role": "feedback"}
            assert http.post(f"/api/v1/tokens/{made['id']}/revoke").json()["revoked_at"]
            assert anon.get("/api/v1/whoami", headers=bearer).status_code == 401
        actions = [e["action"] for e in http.get("/api/v1/audit").json()["entries"][:2]]
        assert actions == ["token.revoke", "token.create"]


def test_a_cursor_is_refused_outside_the_sort_it_was_given_for(shared_server: Server) -> None:
    """A cursor from another sort gave a silently empty or wrong page."""
    import base64
    import json

    with shared_server.client() as http:
        first = http.get("/api/v1/runs", params={"sort": "-metric.accuracy", "limit": 3}).json()
        cursor = first["next_cursor"]
        same = http.get("/api/v1/runs", params={"sort": "-metric.accuracy", "limit": 3, "cursor": cursor})
        assert same.status_code == 200 and same.json()["runs"][0]["id"] not in {
            r["id"] for r in first["runs"]
        }
        for sort in ("metric.accuracy", "-created_at", "-metric.loss"):
            other = http.get("/api/v1/runs", params={"sort": sort, "cursor": cursor})
            assert other.status_code == 400 and other.json()["error"]["field"] == "cursor", other.text
        run_id = first["runs"][0]["id"]
        for value in ("NaN", "Infinity", "true", "1e999", '"x"'):
            raw = f'[{value}, "{run_id}", "-metric.accuracy"]'.encode()
            forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            answer = http.get("/api/v1/runs", params={"sort": "-metric.accuracy", "cursor": forged})
            assert answer.status_code == 400 and answer.json()["error"]["field"] == "cursor", (
                value,
                answer.text,
            )
        assert json.loads(base64.urlsafe_b64decode(cursor + "==="))[-1] == "-metric.accuracy"


def test_a_run_page_reads_a_fixed_number_of_queries(server: Server) -> None:
    """A run's page read each artifact and every model's versions one query at a time (61 queries
    for a retraining run in a workspace of nine models); now a handful, however many there are."""
    import sqlalchemy as sa

    ws, run_id = server.ws, server.seeded.model_run
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    with server.client() as http:
        http.get(f"/api/v1/runs/{run_id}").raise_for_status()  # warm: token cache, resolvers
        sa.event.listen(ws.metadata.engine, "before_cursor_execute", count)
        try:
            few = http.get(f"/api/v1/runs/{run_id}").json()
            before = len(statements)
            for i in range(12):
                ws.register_model(f"other{i}", {"k": i})
            ws.register_model("churn", {"weights": [3]}, run_id=run_id)
            statements.clear()
            many = http.get(f"/api/v1/runs/{run_id}").json()
        finally:
            sa.event.remove(ws.metadata.engine, "before_cursor_execute", count)
    assert len(statements) == before <= 10, statements
    assert [m["name"] for m in few["models"]] == ["churn"]
    assert [(m["name"], m["version"]) for m in many["models"]] == [("churn", 1), ("churn", 3)]
    assert many["models"][0]["aliases"] == ["production"] and many["artifacts"] == few["artifacts"]
    assert {a["id"] for a in many["artifacts"]} >= {e.artifact_id for e in ws.metadata.events(
        step_run_ids=[s.id for s in ws.metadata.list_steps(run_id)])}  # fmt: skip


def _raw(url: str, head: bytes, body: bytes = b"", wait: float = 10.0) -> bytes:
    """Send ``head`` and ``body`` on one raw socket; what the server answers before ``wait`` s."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=wait) as sock:
        sock.sendall(head + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def test_a_body_is_not_read_before_the_caller_is_known(server: Server) -> None:
    # a 150 MB body was read whole before the 401; now the refusal comes with nothing read, and closes
    started = time.monotonic()
    head = (
        b"POST /api/v1/models/churn/aliases/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 157286400\r\n\r\n"
    )
    answer = _raw(server.url, head, b" " * 1024)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert time.monotonic() - started < 8  # answered, not waiting for the 150 MB


def test_large_slow_and_malformed_bodies_are_4xx_naming_the_body(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mloop.server import app as server_app

    token = server.seeded.tokens["editor"].encode()
    head = (
        b"POST /api/v1/models/churn/aliases/staging HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + token
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    )
    too_large = _raw(server.url, head % (server_app.MAX_BODY_BYTES + 1))
    assert too_large.startswith(b"HTTP/1.1 413") and b'"field":"body"' in too_large, too_large[:300]
    monkeypatch.setattr(server_app, "READ_TIMEOUT_S", 0.5)
    short = _raw(server.url, head % 100, b'{"version": 1')  # 13 of the 100 bytes it announced
    assert short.startswith(b"HTTP/1.1 408") and b"not received within" in short, short[:300]
    with server.client("editor") as c:
        bad = c.post(
            "/api/v1/models/churn/aliases/staging",
            content=b'{"version": 1,,}',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["field"] == "body"
        assert bad.json()["error"]["message"].startswith("the body is not valid JSON at character 14")
        ok = c.post("/api/v1/models/churn/aliases/staging", json={"version": 1, "reason": "gate test"})
        assert ok.status_code == 200, ok.text  # a body within the limits reaches the route whole
    assert server.ws.model_version("churn@staging").version == 1


def test_a_server_whose_workspace_database_was_deleted_answers_503(server: Server) -> None:
    """It went on answering from the deleted file, and recorded fired triggers where no scheduler
    would ever see them."""
    assert server.ws.root is not None
    (server.ws.root / "mloop.db").unlink()
    with server.client("editor") as http:
        r = http.get("/api/v1/runs")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "workspace_gone" and "was deleted" in r.json()["error"]["message"]
