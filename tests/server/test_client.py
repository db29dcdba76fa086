"""``mloop.Client`` and ``--server`` on the CLI's read commands, against a real team server."""

from __future__ import annotations

import json

import pytest
from conftest import Server
from server_helpers import run

import mloop


def test_client_reads_pages_and_maps_errors(server: Server) -> None:
    with mloop.Client(server.url, token=server.seeded.tokens["viewer"]) as api:
        assert len(list(api.iter_runs(pipeline="sweep", limit=7))) == 20
        page = api.runs(where=["metric.accuracy>0.9"], sort="-metric.accuracy")
        assert [r["sort_value"] for r in page["runs"]] == [0.95]
        detail = api.run(server.seeded.model_run[:20])  # a unique prefix, as the CLI takes
        assert detail["run"]["id"] == server.seeded.model_run
        assert [m["name"] for m in api.models()] == ["churn"]
        assert [v["version"] for v in api.versions("churn")] == [1, 2]
        assert api.lineage("churn@production")["models"][0]["version"] == 1
        version = server.ws.model_version("churn:1")
        assert api.artifact_content(version.artifact_id) == server.ws.artifacts.get(
            server.ws.metadata.get_artifact(version.artifact_id).digest
        )
        with pytest.raises(mloop.NotFoundError):
            api.versions("nope")
        with pytest.raises(mloop.ForbiddenError):
            api.promote("churn", 2, reason="viewer tries")
    with mloop.Client(server.url, token="mloop_wrong") as api, pytest.raises(mloop.UnauthorizedError):
        api.models()
    with mloop.Client(server.url, token=server.seeded.tokens["editor"]) as api:
        assert api.promote("churn", 2, reason="client promotes")["to_version"] == 2
        assert api.audit()[0]["reason"] == "client promotes"
        assert api.rollback("churn", reason="back")["to_version"] == 1


def test_cli_reads_from_a_server(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOOP_TOKEN", server.seeded.tokens["viewer"])
    code, stdout, stderr = run(
        capsys, "runs", "list", "--server", server.url, "--pipeline", "sweep", "--json"
    )
    assert code == 0, stderr
    assert len(json.loads(stdout)) == 20
    code, stdout, _ = run(capsys, "runs", "show", server.seeded.model_run, "--server", server.url)
    assert code == 0 and "add" in stdout and "arithmetic" in stdout
    code, stdout, _ = run(capsys, "models", "list", "--server", server.url)
    assert code == 0 and "production→v1" in stdout
    code, stdout, _ = run(capsys, "models", "versions", "churn", "--server", server.url, "--json")
    assert [v["version"] for v in json.loads(stdout)] == [1, 2]
    code, stdout, _ = run(capsys, "models", "history", "churn", "--server", server.url)
    assert code == 0 and "first" in stdout
    # lineage from the server: the same tree and JSON as from the workspace
    for args in (["churn:1"], [server.seeded.model_run, "--downstream"]):
        code, remote_out, stderr = run(capsys, "lineage", *args, "--server", server.url, "--json")
        assert code == 0, stderr
        code, local_out, _ = run(capsys, "lineage", *args, "--workspace", str(server.ws.root), "--json")
        assert json.loads(remote_out) == json.loads(local_out)
    code, stdout, _ = run(capsys, "lineage", "churn:1", "--server", server.url)
    assert code == 0 and "add" in stdout and "square" in stdout
    monkeypatch.delenv("MLOOP_TOKEN")
    code, _, stderr = run(capsys, "models", "list", "--server", server.url)
    assert code == 2 and stderr.startswith("error:") and "Bearer" in stderr and len(stderr.splitlines()) == 1
    code, _, stderr = run(capsys, "models", "list", "--server", "http://127.0.0.1:9", "--token", "mloop_x")
    assert code != 0 and stderr.startswith("error:") and "mloop_x" not in stderr


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_segments_reach_the_route_they_name(server: Server, name: str) -> None:
    """``/runs/.`` was normalised by the HTTP library to ``/runs/``: the client got the runs list."""
    with mloop.Client(server.url, token=server.seeded.tokens["viewer"]) as api:
        for call in (api.run, api.versions, api.pipeline_version, api.run_metrics):
            with pytest.raises((mloop.NotFoundError, mloop.ParameterError)) as refused:
                call(name)
            assert repr(name) in str(refused.value), str(refused.value)
