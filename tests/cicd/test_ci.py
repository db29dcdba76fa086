"""`mloop ci run` / `mloop ci init` on real projects: checks pass, or fail naming check, step and value."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import mloop
from mloop.cicd.ci import ci_run, find_pipelines
from mloop.core.sources import collect_sources, sources_hash
from tests.cicd.projects import make_project
from tests.cli.cli_helpers import run


def test_healthy_project_passes_every_check_and_records_the_verdict(tmp_path: Path, capsys) -> None:
    project = make_project(tmp_path / "proj")
    junit = tmp_path / "ci.xml"
    code, out, err = run(
        capsys,
        "ci",
        "run",
        str(project),
        "--no-tests",
        "--json",
        "--junit",
        str(junit),
        "--workspace",
        str(tmp_path / "ws"),
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] is True
    checks = {c["check"]: c for c in report["checks"]}
    assert {"smoke", "artifacts", "lineage", "finite", "converges", "infra"} <= set(checks)
    assert checks["converges"]["step"] == "fit" and checks["infra"]["status"] == "passed"
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == len(report["checks"])
    code_hash = sources_hash(collect_sources(project / "toy" / "pipeline.py")[1])
    assert report["code_hashes"] == {"toy/pipeline.py:training": code_hash}
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        record = ws.pipelines.get_ci(code_hash)
    assert record is not None and record.passed and record.pipeline == "toy/pipeline.py:training"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("nan", r"check finite failed at step 'predict': output\[3\] is not finite \(value: nan\)"),
        (
            "raises",
            r"check smoke failed at step 'fit': the step raised \(value: ValueError: bad feature x3\)",
        ),
        pytest.param(
            "empty",
            r"check artifacts failed at step 'summary': output 'output' is empty \(value: \(0, 3\)\)",
            marks=pytest.mark.slow,
        ),
        (
            "slow_model",
            r"check infra failed at step 'fit': the model failed the infrastructure check \(value: single",
        ),
        (
            "slow_fit",
            r"check converges failed at step 'fit': LogisticRegression stopped at max_iter=1.*value: 1\)",
        ),
    ],
)
def test_a_failing_check_exits_1_naming_check_step_and_value(
    tmp_path: Path, capsys, kind: str, expected: str
) -> None:
    project = make_project(tmp_path / "proj", kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, printed, err = run(
            capsys, "ci", "run", str(project), "--no-tests", "--workspace", str(tmp_path / "ws")
        )
    assert code == 1 and "[/]" not in printed and "failed" in printed, printed  # statuses styled, not raw
    import re

    assert re.search(expected, err), err
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        code_hash = sources_hash(collect_sources(project / "toy" / "pipeline.py")[1])
        assert ws.pipelines.get_ci(code_hash).passed is False


def test_the_projects_failing_test_is_named(tmp_path: Path) -> None:
    tests = (
        "from mloop.testing import sample_from_schema\n\n"
        "def test_ok(mloop_workspace):\n    assert mloop_workspace.root.exists()\n\n"
        "def test_rows():\n    assert len(sample_from_schema('schema.json', rows=5)) == 6, 'five rows'\n"
    )
    project = make_project(tmp_path / "proj", tests=tests)
    report = ci_run(project, tests=True)
    [failed] = report.failures
    assert (failed.check, failed.step) == ("tests", "tests.test_toy::test_rows")
    assert "five rows" in (failed.value or "")


def test_pipelines_are_found_by_reading_the_sources(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", tests="def test_x():\n    pass\n")
    assert find_pipelines(project) == ["toy/pipeline.py:training"]


def test_bad_input_is_one_error_line_exit_2(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "ci", "run", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("error: project folder") and err.count("\n") == 1
    project = make_project(tmp_path / "proj")
    code, _, err = run(capsys, "ci", "run", str(project), "--pipeline", "nope", "--no-tests")
    assert code == 2 and "no pipeline 'nope'" in err
    code, _, err = run(capsys, "ci", "init", str(project))
    assert code == 2 and "exactly one of --github or --gitlab" in err


def test_an_unreadable_mloop_toml_is_one_configuration_error(tmp_path: Path) -> None:
    """The project's mloop.toml is read as every mloop.toml is (settings.read_config_file): a file that
    is not UTF-8 is a ConfigurationError naming it, not an unexpected UnicodeDecodeError."""
    from mloop.cicd.ci import smoke_specs
    from mloop.errors import ConfigurationError

    project = make_project(tmp_path / "proj")
    (project / "mloop.toml").write_bytes(b"[ci]\nrows = 10\n# caf\xe9\n")
    with pytest.raises(ConfigurationError, match=r"mloop\.toml"):
        smoke_specs(project)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("ci = 5\n", r"ci must be a table \(\[ci\]\)"),
        ("[ci]\nrowz = 50\n", r"\[ci\] has no key 'rowz' \(known: pipelines, rows\)"),
        (
            '[[ci.pipelines]]\nref = "p.py:t"\nbudget_p99_ms = -5\n',
            r"budget_p99_ms must be a number >= 0",
        ),
        (
            '[[ci.pipelines]]\nref = "p.py:t"\nbudget_load_s = nan\n',
            r"budget_load_s must be a number >= 0",
        ),
        ('[ci]\nrows = "abc"\n', r"\[ci\] rows must be an integer >= 1, got 'abc'"),
        ("[ci]\nrows = 0\n", r"\[ci\] rows must be an integer >= 1, got 0"),
        ('[ci]\npipelines = "p.py:training"\n', r"ci\.pipelines must be a list of tables"),
        ("[ci]\npipelines = [5]\n", r"ci\.pipelines\[0\] must be a table"),
        (
            '[[ci.pipelines]]\nref = "p.py:t"\nparams = 5\n',
            r"ci\.pipelines\[0\]\.params must be a table, got 5",
        ),
        (
            '[[ci.pipelines]]\nref = "p.py:t"\nrows = true\n',
            r"ci\.pipelines\[0\]\.rows must be int, got True",
        ),
    ],
)
def test_a_ci_table_of_the_wrong_shape_is_one_configuration_error(
    tmp_path: Path, toml: str, message: str
) -> None:
    from mloop.cicd.ci import smoke_specs
    from mloop.errors import ConfigurationError

    project = make_project(tmp_path / "proj")
    (project / "mloop.toml").write_text(toml)
    with pytest.raises(ConfigurationError, match=message):
        smoke_specs(project)


def test_init_writes_a_valid_github_workflow_and_a_gitlab_pipeline(tmp_path: Path, capsys) -> None:
    code, _, _ = run(capsys, "ci", "init", str(tmp_path), "--github")
    assert code == 0
    workflow = tmp_path / ".github" / "workflows" / "mloop-ci.yml"
    assert "mloop ci run . --junit mloop-ci.xml" in workflow.read_text()
    check = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(workflow),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert run(capsys, "ci", "init", str(tmp_path), "--github")[0] == 2  # no overwrite without --force
    assert run(capsys, "ci", "init", str(tmp_path), "--gitlab")[0] == 0
    assert "junit: mloop-ci.xml" in (tmp_path / ".gitlab-ci.yml").read_text()


def test_the_example_projects_workflow_is_the_generated_one(tmp_path: Path, capsys) -> None:
    run(capsys, "ci", "init", str(tmp_path), "--github")
    example = Path(__file__).parents[2] / "examples" / "project" / ".github" / "workflows" / "mloop-ci.yml"
    assert example.read_text() == (tmp_path / ".github" / "workflows" / "mloop-ci.yml").read_text()


def test_output_paths_are_refused_before_any_check_runs(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "suite-ran"
    project = make_project(
        tmp_path / "proj", tests=f"def test_x():\n    open({str(marker)!r}, 'w').close()\n"
    )
    for option, value, message in (
        ("--junit", str(tmp_path / "nowhere" / "x.xml"), "does not exist"),
        ("--junit", "/", "is a directory"),
        ("--workspace", "/dev/null", "is not a folder"),
    ):
        code, _, err = run(capsys, "ci", "run", str(project), option, value)
        assert code == 2 and err.startswith(f"error: {option} ") and message in err, err
        assert err.count("\n") == 1, err
    assert not marker.exists()  # refused up front: the project's suite never ran


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_init_follows_the_branch_and_installs_the_projects_own_dependencies(tmp_path: Path, capsys) -> None:
    _git(tmp_path, "init", "-q", "-b", "trunk")
    (tmp_path / "requirements.txt").write_text("pandas\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\ndependencies = []\n')
    code, out, _ = run(capsys, "ci", "init", str(tmp_path), "--github")
    assert code == 0 and "wrote" in out and ".gitignore" in out
    workflow = tmp_path / ".github" / "workflows" / "mloop-ci.yml"
    text = workflow.read_text()
    assert "branches: [trunk]" in text, text
    assert "python -m pip install -r requirements.txt . mloop pytest" in text, text
    check = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
         str(workflow)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert run(capsys, "ci", "init", str(tmp_path), "--gitlab")[0] == 0
    gitlab = (tmp_path / ".gitlab-ci.yml").read_text()
    assert "python -m pip install -r requirements.txt . mloop pytest" in gitlab
    assert ".mloop/" in (tmp_path / ".gitignore").read_text().splitlines()
    (tmp_path / ".gitignore").write_text("mine\n")  # the user's own is left alone
    assert run(capsys, "ci", "init", str(tmp_path), "--gitlab", "--force")[0] == 0
    assert (tmp_path / ".gitignore").read_text() == "mine\n"


def test_the_example_project_ignores_its_workspace_like_ci_init_does() -> None:
    from mloop.cicd.workflows import GITIGNORE

    example = Path(__file__).parents[2] / "examples" / "project" / ".gitignore"
    assert example.read_text() == GITIGNORE


NAN_FEATURES = """
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

import mloop


@mloop.step
def load(data: Path) -> pd.DataFrame:
    return pd.read_csv(data)


@mloop.step
def features(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["r"] = np.log(out["x1"])  # NaN for every negative x1: HistGradientBoosting accepts it silently
    return out


@mloop.step
def fit(df: pd.DataFrame) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=20).fit(df[["x1", "r"]], df["y"])


@mloop.pipeline
def training(data: Path):
    fit(features(load(data)))
"""


def test_feature_logic_that_makes_nan_fails_the_finite_check_naming_step_and_column(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    (project / "toy" / "pipeline.py").write_text(NAN_FEATURES)
    report = ci_run(project, tests=False)
    [finite] = [c for c in report.checks if c.check == "finite"]
    assert finite.status == "failed" and finite.step == "features", finite
    assert "column 'r'" in finite.detail and int(finite.value or 0) > 0, finite
