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


def test_a_validated_model_is_refitted_with_its_held_out_rows_only_when_asked() -> None:
    """refit_on_holdout: the registered model has seen the newest (held-out) rows when ``refit``."""
    from mloop.steps.retrain import default_model, refit_on_holdout

    rows = stream(300, seed=3)
    fitted, test = rows.iloc[:240], rows.iloc[240:]
    model = default_model(fitted.drop(columns=["y"]), "classification").fit(
        fitted.drop(columns=["y"]), fitted["y"]
    )
    same, same_rows = refit_on_holdout(model, fitted, test, "y")
    assert same is model and same_rows is fitted
    refitted, all_rows = refit_on_holdout(model, fitted, test, "y", refit=True)
    assert refitted is not model and len(all_rows) == 300
    assert all_rows.iloc[-60:].reset_index(drop=True).equals(test.reset_index(drop=True))
    assert refitted.predict(test.drop(columns=["y"])).shape == (60,)
