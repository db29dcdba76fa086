"""``mloop demo``: a real training pipeline on the bundled rainfall data, run twice to show the cache.

load → split (time-ordered) → train (scikit-learn) → evaluate, with metrics recorded and the lineage of
the trained model traced back to the data file's digest and the code version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from mloop.core.context import log_metrics, log_params
from mloop.core.lineage import LineageGraph
from mloop.core.pipeline import pipeline
from mloop.core.runner import RunResult, StepListener
from mloop.core.step import step
from mloop.workspace import Workspace

__all__ = ["DemoReport", "dataset_path", "rainfall_training", "run_demo"]

TARGET = "rain"


def dataset_path() -> Path:
    """The bundled rainfall CSV (see ``mloop/datasets/README.md`` for provenance and licence)."""
    return Path(str(resources.files("mloop.datasets").joinpath("rainfall.csv.gz")))


def _snake(name: str) -> str:
    return name.strip().replace("-", " ").replace(" ", "_")


@step
def load_rainfall(path: Path) -> pd.DataFrame:
    """The stream in time order, with snake_case columns and the day number as index."""
    df = pd.read_csv(path, index_col=0)
    df.index.name = "day"
    return df.rename(columns=_snake)


@step(outputs=["train", "test"])
def split_time(df: pd.DataFrame, initial_fraction: float = 0.2, holdout_fraction: float = 0.2) -> tuple:
    """The first ``initial_fraction`` of days, minus its last ``holdout_fraction`` kept for evaluation."""
    initial = df.iloc[: int(len(df) * initial_fraction)]
    cut = int(len(initial) * (1 - holdout_fraction))
    return initial.iloc[:cut], initial.iloc[cut:]


@step
def train_model(train: pd.DataFrame, C: float = 1.0) -> SkPipeline:
    """Standardised logistic regression; records whether the solver converged."""
    model = SkPipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=C, max_iter=1000))])
    model.fit(train.drop(columns=[TARGET]), train[TARGET])
    n_iter = int(model.named_steps["clf"].n_iter_.max())
    log_params({"n_features": train.shape[1] - 1, "n_train": len(train)})
    log_metrics({"n_iter": n_iter, "converged": float(n_iter < 1000)})
    return model


@step
def evaluate(model: SkPipeline, test: pd.DataFrame) -> dict:
    """Hold-out accuracy, F1, ROC-AUC and log loss, logged as metrics and returned as an artifact."""
    x, y = test.drop(columns=[TARGET]), test[TARGET]
    proba = model.predict_proba(x)[:, 1]
    predicted = (proba >= 0.5).astype(int)
    metrics = {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted)),
        "roc_auc": float(roc_auc_score(y, proba)),
        "log_loss": float(log_loss(y, proba)),
        "n_test": float(len(test)),
    }
    log_metrics(metrics)
    return metrics


@pipeline
def rainfall_training(
    data: Path, initial_fraction: float = 0.2, holdout_fraction: float = 0.2, C: float = 1.0
) -> None:
    """Train and evaluate a rain classifier on the first part of the rainfall stream."""
    df = load_rainfall(data)
    train, test = split_time(df, initial_fraction=initial_fraction, holdout_fraction=holdout_fraction)
    model = train_model(train, C=C)
    evaluate(model, test)


@dataclass
class DemoReport:
    """What the demo did: both runs, their timings, the evaluation and the model's lineage."""

    first: RunResult
    first_s: float
    rerun: RunResult
    rerun_s: float
    metrics: dict[str, float]
    lineage: LineageGraph

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.first.run.id,
            "rerun_id": self.rerun.run.id,
            "first_run_s": round(self.first_s, 4),
            "cached_rerun_s": round(self.rerun_s, 4),
            "steps": [
                {"name": s.name, "status": s.status.value, "duration_s": s.duration_s}
                for s in self.first.steps
            ],
            "rerun_steps": [{"name": s.name, "status": s.status.value} for s in self.rerun.steps],
            "metrics": self.metrics,
            "model_artifact": self.first.outputs["train_model"]["output"].id,
            "lineage": self.lineage.to_dict(),
        }


def run_demo(workspace: Workspace, *, listener: StepListener | None = None) -> DemoReport:
    """Run the demo pipeline, then rerun it unchanged (every step cached), and trace the model."""
    data = dataset_path()
    started = time.perf_counter()
    first = workspace.run(rainfall_training, data=str(data), cache=False, listener=listener)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    rerun = workspace.run(rainfall_training, data=str(data), listener=listener)
    rerun_s = time.perf_counter() - started
    metrics = first.load("evaluate")
    model = first.outputs["train_model"]["output"]
    return DemoReport(first, first_s, rerun, rerun_s, metrics, workspace.lineage(model.id, "upstream"))
