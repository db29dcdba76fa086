"""mloop.testing: each check passes on a healthy pipeline and fails naming the check, step and value."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

import mloop
from mloop.errors import DataError
from mloop.testing import (
    CheckFailed,
    assert_artifacts,
    assert_converges,
    assert_finite,
    assert_lineage,
    integration_run,
    run_pipeline,
    run_step,
    sample_from_file,
    sample_from_schema,
)
from mloop.validation.schema import Schema, validate_schema
from tests.testing.toy_pipeline import SCHEMA, split, training


def test_schema_sample_respects_types_ranges_vocabularies_and_nulls() -> None:
    df = sample_from_schema(SCHEMA, rows=2000, seed=1)
    assert list(df.columns) == ["x1", "x2", "y", "city"] and len(df) == 2000
    assert df["x1"].between(-3, 3).all() and set(df["y"]) == {0, 1} and df["x2"].between(0, 9).all()
    assert set(df["city"].dropna()) == {"oslo", "rome"}
    assert 0 < df["city"].isna().mean() <= 0.2
    assert validate_schema(df, Schema.from_dict(SCHEMA)).ok  # the sample passes the schema gate
    assert sample_from_schema(SCHEMA, rows=50, seed=1).equals(sample_from_schema(SCHEMA, rows=50, seed=1))


def test_file_sample_draws_rows_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"a": range(100)}).to_csv(path, index=False)
    df = sample_from_file(path, rows=10)
    assert len(df) == 10 and df["a"].is_monotonic_increasing
    with pytest.raises(DataError, match="does not exist"):
        sample_from_file(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="at least one row"):
        sample_from_schema(SCHEMA, rows=0)


def test_healthy_pipeline_passes_every_check(mloop_workspace) -> None:
    sample = sample_from_schema(SCHEMA, rows=300)
    run = integration_run(mloop_workspace, training, sample=sample)
    assert_converges(run, step="fit")
    assert_finite(run)
    assert_artifacts(
        run,
        {
            "load": (pd.DataFrame, (300, 4)),
            "split": {"train": (pd.DataFrame, (240, None)), "test": pd.DataFrame},
            "fit": LogisticRegression,
            "predict": (np.ndarray, (60,)),
        },
    )
    assert_lineage(mloop_workspace.metadata, run, training)
    assert run.run.trigger == "ci"


def test_run_step_calls_one_step_on_a_sample() -> None:
    train, test = run_step(split, pd.DataFrame({"a": range(10)}), fraction=0.7)
    assert len(train) == 7 and len(test) == 3


def test_non_converging_fit_fails_naming_step_and_iterations(mloop_workspace) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        run = run_pipeline(mloop_workspace, training, sample=sample_from_schema(SCHEMA, rows=300), max_iter=1)
    with pytest.raises(
        CheckFailed, match=r"check converges failed at step 'fit'.*max_iter=1.*value: 1"
    ) as info:
        assert_converges(run, step="fit")
    assert (info.value.check, info.value.step, info.value.value) == ("converges", "fit", 1)


def test_loss_curves() -> None:
    assert_converges([1.0, 0.5, 0.2])
    with pytest.raises(CheckFailed, match="check converges failed: the loss did not decrease"):
        assert_converges([0.5, 0.6, 0.7])
    with pytest.raises(CheckFailed, match="not finite"):
        assert_converges([1.0, float("nan")])


def test_nan_predictions_fail_naming_step_and_position(mloop_workspace) -> None:
    run = run_pipeline(mloop_workspace, training, sample=sample_from_schema(SCHEMA, rows=300), poison=True)
    with pytest.raises(
        CheckFailed, match=r"check finite failed at step 'predict': output\[3\] is not finite"
    ):
        assert_finite(run)
    with pytest.raises(CheckFailed, match=r"metrics\['auc'\] is not finite \(value: inf\)"):
        assert_finite({"auc": float("inf")}, what="metrics")
    assert_finite({"auc": 0.9, "n": 3})


def test_missing_or_misshapen_artifacts_fail_naming_step(mloop_workspace) -> None:
    run = run_pipeline(mloop_workspace, training, sample=sample_from_schema(SCHEMA, rows=100))
    with pytest.raises(CheckFailed, match=r"check artifacts failed at step 'evaluate': the step produced no"):
        assert_artifacts(run, {"evaluate": dict})
    with pytest.raises(CheckFailed, match=r"at step 'split': output 'valid' is missing"):
        assert_artifacts(run, {"split": {"valid": pd.DataFrame}})
    with pytest.raises(CheckFailed, match=r"at step 'fit': output 'output' should be a ndarray.*LogisticReg"):
        assert_artifacts(run, {"fit": np.ndarray})
    with pytest.raises(CheckFailed, match=r"at step 'predict': .*shape \(21,\) \(value: \(20,\)\)"):
        assert_artifacts(run, {"predict": (np.ndarray, (21,))})


def test_broken_lineage_is_named(mloop_workspace) -> None:
    first = run_pipeline(mloop_workspace, training, sample=sample_from_schema(SCHEMA, rows=100))
    second = run_pipeline(mloop_workspace, training, sample=sample_from_schema(SCHEMA, rows=100, seed=7))
    spliced = type(first)(
        first.run, first.steps, {**first.outputs, "load": second.outputs["load"]}, first.artifacts
    )
    with pytest.raises(CheckFailed, match=r"check lineage failed at step 'split': input 'df' is not linked"):
        assert_lineage(mloop_workspace.metadata, spliced, training)


def test_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"mloop": "mloop.testing.fixtures"}


@mloop.step
def _raw(data: Path) -> pd.DataFrame:
    return pd.read_csv(data)


@mloop.step
def _features(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["r"] = np.log(out["a"])  # NaN where a is negative: a feature-logic bug
    return out


@mloop.step
def _keep(df: pd.DataFrame) -> pd.DataFrame:
    return df[["a", "m"]].copy()  # carries the raw data's missing values along


@mloop.pipeline
def nan_features(data: Path):
    raw = _raw(data)
    _keep(raw)
    _features(raw)


@mloop.pipeline
def missing_only(data: Path):
    _keep(_raw(data))


def test_nan_a_step_introduces_is_named_but_the_raw_datas_missing_values_are_left_alone(
    mloop_workspace,
) -> None:
    sample = pd.DataFrame({"a": [1.0, -2.0, 3.0, -4.0, 5.0], "m": [1.0, np.nan, 2.0, np.nan, 3.0]})
    run = run_pipeline(mloop_workspace, missing_only, sample=sample)
    assert_finite(run)  # 'm' is missing in the raw data: legitimate input
    run = run_pipeline(mloop_workspace, nan_features, sample=sample)
    with pytest.raises(
        CheckFailed, match=r"at step '_features': output 'output' column 'r' has 2 NaN"
    ) as info:
        assert_finite(run)
    assert (info.value.step, info.value.value) == ("_features", 2)


@mloop.step
def _load_and_log(data: Path) -> pd.DataFrame:
    out = pd.read_csv(data)
    out["r"] = np.log(out["a"])  # loaded and derived in one step: the same bug, one step earlier
    return out


@mloop.pipeline
def load_and_log(data: Path):
    _load_and_log(data)


def test_nan_introduced_by_the_step_that_loads_the_file_is_named(mloop_workspace) -> None:
    """A step that reads the CSV and computes log(x) in one go passed: it read no table, so all its
    NaN counted as the raw data's. The file it read is its input now."""
    sample = pd.DataFrame({"a": [1.0, -2.0, 3.0, -4.0, 5.0], "m": [1.0, np.nan, 2.0, np.nan, 3.0]})
    run = run_pipeline(mloop_workspace, load_and_log, sample=sample)
    with pytest.raises(CheckFailed, match=r"at step '_load_and_log': output 'output' column 'r' has 2 NaN"):
        assert_finite(run)
    assert_finite(run_pipeline(mloop_workspace, missing_only, sample=sample))  # 'm': the file's own NaN
