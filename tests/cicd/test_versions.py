"""Pipeline CD: deploy freezes code + environment + CI verdict; aliases move; a deployed version runs
its frozen code (not the file on disk) and each run records the version."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import pytest
from commands import mloop_command

import mloop
from mloop.cicd.ci import ci_run, record_ci
from mloop.core.loader import load_pipeline
from mloop.errors import NotFoundError, PipelineLoadError
from mloop.testing import sample_from_schema, write_sample
from tests.cicd.projects import SCHEMA, make_project
from tests.cli.cli_helpers import run


def _ci(project: Path, ws_dir: Path) -> None:
    report = ci_run(project, tests=False)
    assert report.passed, [c.message for c in report.failures]
    with mloop.Workspace.open(ws_dir) as ws:
        record_ci(ws.pipelines, report)


def test_deploy_needs_a_passing_ci_run_or_force_with_a_reason(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    ws = str(tmp_path / "ws")
    ref = str(project / "toy" / "pipeline.py") + ":training"
    code, _, err = run(capsys, "pipelines", "deploy", ref, "--name", "toy", "--workspace", ws)
    assert code == 2 and "has no recorded `mloop ci run`" in err and err.count("\n") == 1
    code, _, err = run(capsys, "pipelines", "deploy", ref, "--name", "toy", "--force", "--workspace", ws)
    assert code == 2 and "needs a --reason" in err
    code, out, err = run(
        capsys,
        "pipelines",
        "deploy",
        ref,
        "--name",
        "toy",
        "--force",
        "--reason",
        "hotfix",
        "--json",
        "--workspace",
        ws,
    )
    assert code == 0, err
    version = json.loads(out)
    assert version["version"] == 1 and version["forced_reason"] == "hotfix" and version["ci"] is None


def test_deploy_records_code_environment_and_ci_and_becomes_staging(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    _ci(project, tmp_path / "ws")
    ref = str(project / "toy" / "pipeline.py") + ":training"
    code, out, err = run(
        capsys,
        "pipelines",
        "deploy",
        ref,
        "--name",
        "toy",
        "--param",
        "max_iter=300",
        "--json",
        "--workspace",
        str(tmp_path / "ws"),
    )
    assert code == 0, err
    v = json.loads(out)
    assert v["entry"] == "toy/pipeline.py:training" and v["params"] == {"max_iter": "300"}
    assert v["ci"]["passed"] is True and v["forced_reason"] is None
    assert v["python_version"] == platform.python_version() and "scikit-learn" in v["packages"]
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        assert ws.pipelines.aliases("toy") == {"staging": 1}
        snapshot = ws.metadata.get_artifact(v["snapshot_artifact_id"])
        assert snapshot.type == "pipeline_snapshot"


def test_a_deployed_version_runs_its_frozen_code_not_the_file_on_disk(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("MLOOP_CACHE_DIR", str(tmp_path / "cache"))
    project = make_project(tmp_path / "proj")  # v1 uses two features
    ws_dir = tmp_path / "ws"
    ref = str(project / "toy" / "pipeline.py") + ":training"
    _ci(project, ws_dir)
    assert run(capsys, "pipelines", "deploy", ref, "--name", "toy", "--workspace", str(ws_dir))[0] == 0
    make_project(project, features='["x1"]')  # the code on disk moves on: v2 uses one feature
    _ci(project, ws_dir)
    assert run(capsys, "pipelines", "deploy", ref, "--name", "toy", "--workspace", str(ws_dir))[0] == 0
    assert (
        run(capsys, "pipelines", "promote", "toy:1", "--alias", "production", "--workspace", str(ws_dir))[0]
        == 0
    )
    data = write_sample(sample_from_schema(SCHEMA, rows=200), tmp_path / "d.csv")
    with mloop.Workspace.open(ws_dir) as ws:
        results = {}
        for name in ("toy", "toy@staging", "toy:1", "toy:2"):
            pipe = load_pipeline(name, workspace=ws)
            result = ws.run(pipe, cache=False, data=str(data))
            results[name] = (
                result.load("fit").n_features_in_,
                ws.metadata.get_params(result.run.id)["pipeline.version"],
            )
            if name == "toy":  # a model the production version made
                ws.register_model("toy-model", result.load("fit"), run_id=result.run.id)
    assert results["toy"] == (2, "toy:1")  # production = v1, frozen with 2 features
    assert results["toy:1"][0] == 2
    assert results["toy@staging"] == (1, "toy:2")
    assert results["toy:2"][0] == 1
    assert load_pipeline(f"{project / 'toy' / 'pipeline.py'}:training").version_ref is None  # undeployed use
    # lineage: model → run → pipeline version → commit
    code, out, _ = run(capsys, "models", "show", "toy-model", "--json", "--workspace", str(ws_dir))
    shown = json.loads(out)
    assert (
        code == 0 and shown["pipeline_version"]["version"] == 1 and shown["pipeline_version"]["name"] == "toy"
    )
    assert "git_commit" in shown["pipeline_version"]
    code, out, _ = run(capsys, "models", "show", "toy-model", "--workspace", str(ws_dir))
    assert code == 0 and "deployed pipeline version toy:1 · commit" in out


def test_promote_rollback_history_and_their_errors(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    ws = str(tmp_path / "ws")
    ref = str(project / "toy" / "pipeline.py") + ":training"
    for _ in range(2):
        assert (
            run(
                capsys,
                "pipelines",
                "deploy",
                ref,
                "--name",
                "toy",
                "--force",
                "--reason",
                "t",
                "--workspace",
                ws,
            )[0]
            == 0
        )
    assert run(capsys, "pipelines", "promote", "toy:1", "--workspace", ws)[0] == 0
    code, out, _ = run(capsys, "pipelines", "promote", "toy:2", "--workspace", ws)
    assert code == 0 and "toy@production: v1 → v2" in out
    code, out, _ = run(capsys, "pipelines", "rollback", "toy", "--workspace", ws)
    assert code == 0 and "v2 → v1 (rollback" in out
    code, _, err = run(capsys, "pipelines", "rollback", "toy", "--workspace", ws)
    assert code == 2 and "no earlier version to roll back to" in err
    code, out, _ = run(capsys, "pipelines", "history", "toy", "--json", "--workspace", ws)
    assert [(e["alias"], e["action"], e["to_version"]) for e in json.loads(out)] == [
        ("staging", "promote", 1),
        ("staging", "promote", 2),
        ("production", "promote", 1),
        ("production", "promote", 2),
        ("production", "rollback", 1),
    ]
    code, out, _ = run(capsys, "pipelines", "list", "--json", "--workspace", ws)
    assert json.loads(out)["aliases"] == {"toy": {"production": 1, "staging": 2}}
    code, out, _ = run(capsys, "pipelines", "show", "toy@staging", "--json", "--workspace", ws)
    assert json.loads(out)["version"] == 2
    code, _, err = run(capsys, "pipelines", "promote", "toy:9", "--workspace", ws)
    assert code == 2 and "no version 9" in err
    code, _, err = run(capsys, "pipelines", "promote", "toy", "--workspace", ws)
    assert code == 2 and "expected NAME:VERSION" in err
    code, _, err = run(capsys, "pipelines", "deploy", "nope.py:training", "--name", "x", "--workspace", ws)
    assert code == 2 and "pipeline file nope.py does not exist" in err
    code, _, err = run(
        capsys, "pipelines", "deploy", ref.replace("training", "nope"), "--name", "x", "--workspace", ws
    )
    assert code == 2 and "no pipeline 'nope'" in err
    code, _, err = run(capsys, "pipelines", "show", "ghost", "--workspace", ws)
    assert code == 2 and "no deployed pipeline 'ghost'" in err


def test_a_trigger_naming_a_version_that_does_not_exist_is_one_error_at_start(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    ws = str(tmp_path / "ws")  # its mloop.toml is beside it, in tmp_path
    ref = str(project / "toy" / "pipeline.py") + ":training"
    deployed = run(
        capsys, "pipelines", "deploy", ref, "--name", "toy", "--force", "--reason", "t", "--workspace", ws
    )
    assert deployed[0] == 0, deployed[2]
    for pipeline, message in (("toy:9", "no version 9"), ("toy@production", "no alias 'production'")):
        (tmp_path / "mloop.toml").write_text(
            f'[[triggers]]\nname = "t"\nkind = "manual"\npipeline = "{pipeline}"\n'
        )
        # its own process: the daemon sets up logging to stderr, which must not outlive this test
        done = subprocess.run(
            [*mloop_command(), "scheduler", "run", "--once", "--workspace", ws],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        err = done.stderr
        assert done.returncode == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1, err


def test_trigger_references_resolve_or_fail_clearly(tmp_path: Path) -> None:
    with (
        mloop.Workspace.open(tmp_path / "ws") as ws,
        pytest.raises(NotFoundError, match="no deployed pipeline 'churn'"),
    ):
        load_pipeline("churn", workspace=ws)
    with pytest.raises(
        PipelineLoadError,
        match="a deployed pipeline version, NAME, NAME@ALIAS or NAME:VERSION, is loaded from a workspace",
    ):
        load_pipeline("churn@staging")
