"""Small user projects for the CI/CD tests: a healthy pipeline and ways for it to break."""

from __future__ import annotations

import json
from pathlib import Path

PIPELINE = """
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import mloop
from toy.features import FEATURES


@mloop.step
def load(data: Path) -> pd.DataFrame:
    return pd.read_csv(data)


@mloop.step
def fit(df: pd.DataFrame, max_iter: int = 200) -> LogisticRegression:
    {fit_body}
    return LogisticRegression(max_iter=max_iter).fit(df[FEATURES], df["y"])


@mloop.step
def predict(model: LogisticRegression, df: pd.DataFrame) -> np.ndarray:
    proba = model.predict_proba(df[FEATURES])[:, 1]
    {predict_body}
    return proba


@mloop.step
def summary(df: pd.DataFrame) -> pd.DataFrame:
    return df.describe(){summary_tail}


@mloop.pipeline
def training(data: Path, max_iter: int = 200):
    df = load(data)
    predict(fit(df, max_iter=max_iter), df)
    summary(df)
"""

SCHEMA = {
    "mloop_schema_version": 1,
    "columns": {
        "x1": {"type": "float", "min": -3.0, "max": 3.0},
        "x2": {"type": "int", "min": 0, "max": 9},
        "y": {"type": "int", "min": 0, "max": 1},
    },
}

BREAKS = {
    "healthy": {},
    "nan": {"predict_body": "proba[3] = np.nan"},
    "raises": {"fit_body": "raise ValueError('bad feature x3')"},
    "empty": {"summary_tail": ".iloc[0:0]"},
    "slow_fit": {"params": {"max_iter": 1}},
    "slow_model": {"toml": "budget_p99_ms = 0.0\n"},
}


def make_project(
    root: Path, kind: str = "healthy", *, tests: str | None = None, features: str = '["x1", "x2"]'
) -> Path:
    """A project folder: package ``toy`` (pipeline + features), schema, mloop.toml, optional tests."""
    spec = {"fit_body": "pass", "predict_body": "pass", "summary_tail": "", **BREAKS[kind]}
    params = spec.pop("params", {})
    extra = spec.pop("toml", "budget_load_s = 120.0\nbudget_p99_ms = 2000.0\n")  # roomy: a busy machine
    (root / "toy").mkdir(parents=True, exist_ok=True)
    (root / "toy" / "__init__.py").write_text("")
    (root / "toy" / "features.py").write_text(f"FEATURES = {features}\n")
    (root / "toy" / "pipeline.py").write_text(PIPELINE.format(**spec))
    (root / "schema.json").write_text(json.dumps(SCHEMA))
    toml = (
        '[ci]\nrows = 300\n\n[[ci.pipelines]]\nref = "toy/pipeline.py:training"\nschema = "schema.json"\n'
        + extra
    )
    if params:
        toml += "params = { " + ", ".join(f"{k} = {v}" for k, v in params.items()) + " }\n"
    (root / "mloop.toml").write_text(toml)
    if tests is not None:
        (root / "tests").mkdir(exist_ok=True)
        (root / "tests" / "test_toy.py").write_text(tests)
    return root
