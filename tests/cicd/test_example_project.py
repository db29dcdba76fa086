"""The example project under examples/project: its trigger binds to the deployed version, and its own
CI (`mloop ci run examples/project`) passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mloop.cicd.ci import smoke_specs
from mloop.core.loader import parse_pipeline_ref
from mloop.orchestration.config import load_loop_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "project"


def test_the_example_binds_its_trigger_to_the_production_version_and_smoke_runs_on_its_schema() -> None:
    [trigger] = load_loop_config(EXAMPLE).triggers
    assert parse_pipeline_ref(trigger.pipeline) == ("churn", None, "production")
    [spec] = smoke_specs(EXAMPLE)
    assert (spec.ref, spec.schema, spec.rows) == ("churn/pipeline.py:training", "data/schema.json", 1000)


@pytest.mark.slow
def test_mloop_ci_run_on_the_example_project_passes(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mloop",
            "ci",
            "run",
            str(EXAMPLE),
            "--json",
            "--workspace",
            str(tmp_path / "ws"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MLOOP_WORKSPACE": str(tmp_path / "ws")},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and {c["check"] for c in report["checks"]} >= {
        "tests",
        "smoke",
        "converges",
        "infra",
    }
    assert next(c for c in report["checks"] if c["check"] == "tests")["status"] == "passed"
