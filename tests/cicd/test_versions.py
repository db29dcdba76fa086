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
    assert v["entry"] == "toy/pipeline.py:training" and v["params"] == {"max_iter": 300}
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
    for features in ('["x1", "x2"]', '["x1"]'):  # two different codes: two versions
        make_project(project, features=features)
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
    # numbers from outside: 5,000 digits (Python refuses to convert them), beyond a database
    # integer, a superscript digit that isdigit() accepts: each one error line
    for version in ("9" * 5000, "9" * 20, "²", "-1", "0"):
        code, _, err = run(capsys, "pipelines", "promote", f"toy:{version}", "--workspace", ws)
        assert code == 2 and "VERSION from 1 to 999999999" in err and len(err.splitlines()) == 1, err
    # where a pipeline reference is read (show, run, build, triggers), the same check: '٣' is not 3
    for version in ("9" * 5000, "9" * 20, "٣", "\uff11", "0"):
        code, _, err = run(capsys, "pipelines", "show", f"toy:{version}", "--workspace", ws)
        assert code == 2 and len(err.splitlines()) == 1 and "unexpected" not in err, err
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


def _deploy(capsys, ref: str, ws: str | Path, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "pipelines", "deploy", ref, "--name", "toy", *extra, "--workspace", str(ws))


def test_deploy_checks_param_values_as_mloop_run_does_and_stores_them_typed(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    _ci(project, tmp_path / "ws")
    ref = str(project / "toy" / "pipeline.py") + ":training"
    data = write_sample(sample_from_schema(SCHEMA, rows=50), tmp_path / "d.csv")
    for bad, message in (
        ("max_iter=abc", "parameter 'max_iter': expected int"),
        ("max_iter=1.5", "parameter 'max_iter': expected int, got 1.5"),
        ("max_iter=NaN", "parameter 'max_iter'"),
        ("data=/nonexistent.csv", "parameter 'data': file /nonexistent.csv does not exist"),
        ("nope=1", "unknown parameter 'nope'"),
    ):
        code, _, err = _deploy(capsys, ref, tmp_path / "ws", "--param", bad)
        assert code == 2 and err.startswith("error: ") and message in err, (bad, err)
        assert err.count("\n") == 1, err
    code, out, err = _deploy(
        capsys, ref, tmp_path / "ws", "-p", "max_iter=300", "-p", f"data={data}", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["params"] == {"max_iter": 300, "data": str(data)}
    # the CI verdict is for the code: deploy says plainly that CI did not run with these params
    assert (
        "warning: CI passed for this code with the pipeline's defaults; it did not run with max_iter=300"
        in err
    )
    assert err.count("\n") == 2, err  # that one, and the one line about git


def test_deploying_the_same_code_params_and_environment_twice_is_one_version(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    ws = tmp_path / "ws"
    _ci(project, ws)
    ref = str(project / "toy" / "pipeline.py") + ":training"
    assert _deploy(capsys, ref, ws)[0] == 0
    code, out, _ = _deploy(capsys, ref, ws)
    assert code == 0 and "already deployed as toy:1 (identical code, params and environment)" in out, out
    code, out, _ = _deploy(capsys, ref, ws, "--json")
    assert json.loads(out)["version"] == 1 and json.loads(out)["created"] is False
    assert _deploy(capsys, ref, ws, "-p", "max_iter=300")[0] == 0  # other params: a new version
    code, out, _ = run(capsys, "pipelines", "list", "--json", "--workspace", str(ws))
    assert [v["version"] for v in json.loads(out)["versions"]] == [1, 2]
    code, out, _ = run(capsys, "pipelines", "history", "toy", "--json", "--workspace", str(ws))
    assert [(e["alias"], e["to_version"]) for e in json.loads(out)] == [("staging", 1), ("staging", 2)]


def test_promoting_to_the_current_holder_is_a_no_op_and_rollback_goes_to_a_different_version(
    tmp_path: Path, capsys
) -> None:
    project = make_project(tmp_path / "proj")
    ws = str(tmp_path / "ws")
    ref = str(project / "toy" / "pipeline.py") + ":training"
    for iters in ("100", "200"):
        assert _deploy(capsys, ref, ws, "-p", f"max_iter={iters}", "--force", "--reason", "t")[0] == 0
    assert run(capsys, "pipelines", "promote", "toy:1", "--workspace", ws)[0] == 0
    assert run(capsys, "pipelines", "promote", "toy:2", "--workspace", ws)[0] == 0
    code, out, _ = run(capsys, "pipelines", "promote", "toy:2", "--workspace", ws)
    assert code == 0 and "toy@production is already v2: nothing moved" in out, out
    code, out, _ = run(
        capsys, "pipelines", "history", "toy", "--alias", "production", "--json", "--workspace", ws
    )
    assert [e["to_version"] for e in json.loads(out)] == [1, 2]  # the no-op is not recorded
    code, out, _ = run(capsys, "pipelines", "rollback", "toy", "--workspace", ws)
    assert code == 0 and "v2 → v1 (rollback" in out, out
    with mloop.Workspace.open(tmp_path / "ws") as w:  # a history recorded with a repeated promotion
        store = w.pipelines
        for version in (2, 2):
            store.move_alias("toy", "canary", version, action="promote", who="t", reason="")
        store.move_alias("toy", "canary", 1, action="promote", who="t", reason="")
        store.move_alias("toy", "canary", 2, action="promote", who="t", reason="")
        assert store.move_alias("toy", "canary", None, action="rollback", who="t", reason="").to_version == 1
        assert store.move_alias("toy", "canary", None, action="rollback", who="t", reason="").to_version == 2


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_a_clean_checkout_deploys_clean_and_runs_record_the_versions_commit(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("MLOOP_CACHE_DIR", str(tmp_path / "cache"))
    project = make_project(tmp_path / "proj")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "toy")
    commit = _git(project, "rev-parse", "HEAD")
    ws = project / ".mloop"  # the workspace inside the project, untracked (the project has no .gitignore)
    _ci(project, ws)
    code, out, err = _deploy(capsys, str(project / "toy" / "pipeline.py") + ":training", ws)
    assert code == 0 and f"commit {commit[:12]}," in out and "dirty" not in out, out + err
    data = write_sample(sample_from_schema(SCHEMA, rows=100), tmp_path / "d.csv")
    with mloop.Workspace.open(ws) as w:  # what the scheduler does with a trigger naming the version
        w.run(load_pipeline("toy@staging", workspace=w), data=str(data))
    code, out, _ = run(capsys, "runs", "list", "--json", "--workspace", str(ws))
    (listed,) = json.loads(out)
    assert listed["code_commit"] == commit
    code, out, _ = run(capsys, "runs", "show", listed["id"], "--json", "--workspace", str(ws))
    shown = json.loads(out)
    assert shown["run"]["code_commit"] == commit and shown["params"]["pipeline.version"] == "toy:1"


def test_deploying_outside_git_says_so_in_one_warning_line(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    _ci(project, tmp_path / "ws")
    code, out, err = _deploy(capsys, str(project / "toy" / "pipeline.py") + ":training", tmp_path / "ws")
    assert code == 0 and "no commit" in out
    assert err == "warning: not in a git repository: the version records no commit\n", err


def test_the_extracted_snapshot_is_checked_against_its_digest_and_re_extracted(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLOOP_CACHE_DIR", str(cache))
    project = make_project(tmp_path / "proj")
    ws_dir = tmp_path / "ws"
    _ci(project, ws_dir)
    assert _deploy(capsys, str(project / "toy" / "pipeline.py") + ":training", ws_dir)[0] == 0
    data = write_sample(sample_from_schema(SCHEMA, rows=100), tmp_path / "d.csv")
    with mloop.Workspace.open(ws_dir) as ws:
        digest = ws.pipelines.get_version("toy").snapshot_digest

        def features() -> int:
            return (
                ws.run(load_pipeline("toy:1", workspace=ws), cache=False, data=str(data))
                .load("fit")
                .n_features_in_
            )

        assert features() == 2
        extracted = cache / "pipelines" / digest
        (extracted / "toy" / "features.py").write_text('FEATURES = ["x1"]\n')  # edited in the cache
        assert features() == 2  # still the frozen code
        assert (extracted / "toy" / "features.py").read_text() == 'FEATURES = ["x1", "x2"]\n'
        (extracted / "toy" / "features.py").unlink()  # deleted in the cache
        assert features() == 2
        (extracted / "toy" / "extra.py").write_text("raise SystemExit\n")  # added in the cache
        assert features() == 2 and not (extracted / "toy" / "extra.py").exists()


def test_deploy_names_modules_imported_from_outside_the_project(tmp_path: Path, capsys, monkeypatch) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "extlib.py").write_text("SCALE = 2\n")
    monkeypatch.syspath_prepend(str(outside))  # as PYTHONPATH would put it there
    project = make_project(tmp_path / "proj")
    (project / "toy" / "features.py").write_text('import extlib  # noqa: F401\n\nFEATURES = ["x1", "x2"]\n')
    ref = str(project / "toy" / "pipeline.py") + ":training"
    code, _, err = _deploy(capsys, ref, tmp_path / "ws", "--force", "--reason", "t")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "not frozen" in line]
    assert len(lines) == 1 and f"extlib ({outside / 'extlib.py'})" in lines[0], err
    assert "numpy" not in lines[0] and "mloop" not in lines[0] and "pathlib" not in lines[0]


def test_relative_paths_in_mloop_toml_resolve_against_its_folder_not_the_current_one(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("MLOOP_CACHE_DIR", str(tmp_path / "cache"))
    project = make_project(tmp_path / "proj")
    (project / "data").mkdir()
    write_sample(sample_from_schema(SCHEMA, rows=100), project / "data" / "latest.csv")
    (project / "inbox").mkdir()
    (project / "inbox" / "batch.csv").write_text("1\n")
    ws = project / ".mloop"
    _ci(project, ws)
    monkeypatch.chdir(project)  # deploying from the project, with a relative data file
    code, _, err = _deploy(capsys, "toy/pipeline.py:training", ws, "-p", "data=data/latest.csv")
    assert code == 0, err
    config = (project / "mloop.toml").read_text()
    (project / "mloop.toml").write_text(
        config
        + '\n[[triggers]]\nname = "frozen"\nkind = "new_data"\npath = "inbox"\npipeline = "toy@staging"\n'
        + '\n[[triggers]]\nname = "file"\nkind = "new_data"\npath = "inbox"\n'
        + 'pipeline = "toy/pipeline.py:training"\nparams = { data = "data/latest.csv" }\n'
    )
    done = subprocess.run(
        [*mloop_command(), "scheduler", "run", "--once", "--workspace", str(ws)],
        cwd="/", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with mloop.Workspace.open(ws) as w:
        runs = w.runs(mloop.RunQuery(pipeline="training"))
        assert sorted(r.status.value for r in runs) == ["succeeded", "succeeded"], done.stderr
