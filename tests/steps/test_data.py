"""Built-in validation steps inside real pipeline runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mloop
from mloop import steps
from mloop.errors import StepFailedError


@mloop.step
def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@mloop.pipeline
def gated(data: Path, reference: Path, schema: Path):
    df = read(data)
    ref = read.named("read_reference")(reference)
    steps.validate_schema(df, schema)
    steps.check_drift(steps.statistics(ref), df)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=2000), "k": rng.choice(list("ab"), 2000)})
    ref.to_csv(tmp_path / "ref.csv", index=False)
    ref.assign(x=ref["x"] + 0.001).to_csv(tmp_path / "same.csv", index=False)
    ref.assign(x=ref["x"] * 0.5 + 0.5).to_csv(tmp_path / "shifted.csv", index=False)
    ref.drop(columns=["k"]).to_csv(tmp_path / "dropped.csv", index=False)
    schema = mloop.infer_schema(mloop.compute_statistics(ref))
    (tmp_path / "schema.json").write_text(schema.to_json())
    return {p.stem: p for p in tmp_path.iterdir()}


def test_conforming_data_passes_and_drift_is_reported(
    workspace: mloop.Workspace, files: dict[str, Path]
) -> None:
    result = workspace.run(
        gated, data=str(files["shifted"]), reference=str(files["ref"]), schema=str(files["schema"])
    )
    assert result.run.status == mloop.RunStatus.SUCCEEDED
    report = result.load("check_drift")
    assert isinstance(report, mloop.DriftReport) and report.drifted_features == ["x"]
    metrics = {m.key: m.value for m in workspace.metadata.get_metrics(result.run.id)}
    assert metrics["drift_share"] == 0.5 and metrics["drifted_features"] == 1 and metrics["anomalies"] == 0
    assert isinstance(result.load("statistics"), mloop.Statistics)
    again = workspace.run(
        gated, data=str(files["same"]), reference=str(files["ref"]), schema=str(files["schema"])
    )
    assert again.load("check_drift").drifted_features == []
    assert again.step("statistics").status == mloop.StepStatus.CACHED  # same reference: stats reused


def test_schema_skew_stops_the_run_with_the_anomalies_attached(
    workspace: mloop.Workspace, files: dict[str, Path]
) -> None:
    with pytest.raises(StepFailedError, match="schema skew: 1 anomaly: k: missing_column") as info:
        workspace.run(
            gated, data=str(files["dropped"]), reference=str(files["ref"]), schema=str(files["schema"])
        )
    run = workspace.metadata.get_run(info.value.run_id)
    assert run.status == mloop.RunStatus.STOPPED and "stopped the run" in (run.error or "")
    by_name = {s.name: s for s in workspace.metadata.list_steps(run.id)}
    gate = by_name["validate_schema"]
    assert gate.status == mloop.StepStatus.STOPPED and gate.error_type == "SchemaSkewError"
    # nothing starts once the gate has stopped the run (a step on another branch, such as the
    # drift check, may already be running beside it: steps run as soon as their inputs are there)
    assert gate.ended_at is not None
    assert all(s.started_at <= gate.ended_at for s in by_name.values()), by_name
    [event] = workspace.metadata.events(step_run_ids=[gate.id], kind="output")
    art = workspace.metadata.get_artifact(event.artifact_id)
    assert event.name == "anomalies" and art.python_type == "mloop.validation.schema.Anomalies"
    from mloop.core.serialize import deserialize

    anomalies = deserialize(art.type, workspace.artifacts.get(art.digest), art.python_type)
    assert [(a.column, a.kind) for a in anomalies.items] == [("k", "missing_column")]


def test_a_stopped_gate_is_not_cached(workspace: mloop.Workspace, files: dict[str, Path]) -> None:
    for _ in range(2):
        with pytest.raises(StepFailedError):
            workspace.run(
                gated, data=str(files["dropped"]), reference=str(files["ref"]), schema=str(files["schema"])
            )
    runs = workspace.runs()
    assert [r.status for r in runs] == [mloop.RunStatus.STOPPED] * 2
