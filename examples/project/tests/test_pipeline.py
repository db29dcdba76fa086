"""The project's own pipeline tests, written with mloop.testing (run by `mloop ci run`)."""

import numpy as np
import pandas as pd
from churn.features import add_features
from churn.pipeline import training
from sklearn.linear_model import LogisticRegression

from mloop.testing import (
    assert_artifacts,
    assert_converges,
    assert_finite,
    integration_run,
    sample_from_schema,
)

SCHEMA = "data/schema.json"


def test_features_are_finite_even_at_zero_tenure():
    df = pd.DataFrame({"tenure": [0, 12], "monthly": [50.0, 60.0], "plan": ["pro", "basic"]})
    out = add_features(df)
    assert list(out["plan_pro"]) == [1.0, 0.0]
    assert_finite(out[["charge_per_month"]].to_numpy(), step="features")


def test_training_end_to_end(mloop_workspace):  # the fixture comes from mloop's pytest plugin
    sample = sample_from_schema(SCHEMA, rows=400, seed=3)
    run = integration_run(mloop_workspace, training, sample=sample)  # lineage + finiteness
    assert_converges(run, step="train")
    assert_artifacts(
        run,
        {
            "load": (pd.DataFrame, (400, 5)),
            "split": {"train": (pd.DataFrame, (320, None)), "test": pd.DataFrame},
            "train": LogisticRegression,
            "evaluate": dict,
        },
    )
    assert 0.0 <= run.load("evaluate")["accuracy"] <= 1.0
    assert np.isfinite(run.load("evaluate")["log_loss"])
