"""The built-in retraining pipeline: one public name, the old config path still loads, and it runs."""

from __future__ import annotations

from pathlib import Path

from loop_helpers import MODEL, stream

import mloop
from mloop.core.loader import load_pipeline


def test_one_pipeline_behind_the_public_name_and_both_config_paths() -> None:
    assert isinstance(mloop.retrain, mloop.Pipeline)
    assert load_pipeline("mloop.steps.retrain:retrain") is mloop.retrain
    # configs written before the move keep working
    assert load_pipeline("mloop.orchestration.retrain:retrain") is mloop.retrain


def test_the_public_pipeline_trains_validates_and_registers(
    workspace: mloop.Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "rows.parquet"
    stream(600).to_parquet(path)
    result = workspace.run(mloop.retrain, model_name=MODEL, target="y", data=str(path), enforce_latency=False)
    registered = result.load("register_model")
    assert registered["alias"] == "production", registered["reasons"]
    version = workspace.model_version(f"{MODEL}@production")
    assert version.version == 1 and version.run_id == result.run.id
