"""``mloop demo``: a real training pipeline on the bundled rainfall data.

load → split (time-ordered) → validate against the versioned schema → statistics → drift check →
train (scikit-learn) → evaluate; run twice to show the cache, the model's lineage traced back to the
data file's digest and the code version, and then one incoming batch with a dropped column refused
by the schema gate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from mloop.core.context import log_metrics, log_params
from mloop.core.lineage import LineageGraph
from mloop.core.pipeline import pipeline
from mloop.core.runner import RunResult, StepListener
from mloop.core.step import step
from mloop.errors import StepFailedError
from mloop.validation.model_steps import evaluate_model, infra_check, register_model, validate_model
from mloop.validation.schema import Anomalies
from mloop.validation.steps import check_drift, statistics, validate_schema
from mloop.workspace import Workspace

__all__ = ["DemoReport", "dataset_path", "rainfall_training", "run_demo"]

TARGET = "rain"


def dataset_path(name: str = "rainfall.csv.gz") -> Path:
    """A bundled file: the rainfall CSV (see ``mloop/datasets/README.md``) or its schema."""
    return Path(str(resources.files("mloop.datasets").joinpath(name)))


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


@pipeline
def rainfall_training(
    data: Path,
    schema: Path,
    initial_fraction: float = 0.2,
    holdout_fraction: float = 0.2,
    C: float = 1.0,
    model_name: str = "rainfall",
) -> None:
    """Validate data, train a rain classifier on the first part of the stream, validate the model
    against production and the serving environment, and register it."""
    df = load_rainfall(data)
    train, test = split_time(df, initial_fraction=initial_fraction, holdout_fraction=holdout_fraction)
    validate_schema(train, schema)
    validate_schema.named("validate_holdout")(test, schema)
    reference = statistics(train)
    check_drift(reference, test)
    model = train_model(train, C=C)
    evaluation = evaluate_model(model, test, TARGET, ["rain", "temperature:-5,-0.5,0.5,5"])
    verdict = validate_model(evaluation, test, model_name, {"minimum": {"accuracy": 0.7, "roc_auc": 0.75}})
    infra = infra_check(model, test, TARGET)
    register_model(model, model_name, evaluation, verdict, infra, reference)


@dataclass
class DemoReport:
    """What the demo did: both runs, their timings, the evaluation, the model's lineage, the refusal."""

    first: RunResult
    first_s: float
    rerun: RunResult
    rerun_s: float
    metrics: dict[str, float]
    registered: dict[str, Any]
    lineage: LineageGraph
    drifted_features: list[str]
    refused_run: str
    refused_batch: Path
    anomalies: Anomalies

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
            "registered": self.registered,
            "model_artifact": self.first.outputs["train_model"]["output"].id,
            "lineage": self.lineage.to_dict(),
            "drifted_features": self.drifted_features,
            "refused": {
                "run_id": self.refused_run,
                "batch": str(self.refused_batch),
                "anomalies": self.anomalies.to_dict()["anomalies"],
            },
        }


def run_demo(workspace: Workspace, *, listener: StepListener | None = None) -> DemoReport:
    """Run the demo pipeline, rerun it unchanged (every step cached), trace the model, and feed the
    pipeline one incoming batch that lost a column: the schema gate stops that run."""
    data, schema = str(dataset_path()), str(dataset_path("rainfall.schema.json"))
    started = time.perf_counter()
    first = workspace.run(rainfall_training, data=data, schema=schema, cache=False, listener=listener)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    rerun = workspace.run(rainfall_training, data=data, schema=schema, listener=listener)
    rerun_s = time.perf_counter() - started
    model = first.outputs["train_model"]["output"]
    lineage = workspace.lineage(model.id, "upstream")
    batch = _batch_without_a_column(workspace, Path(data))
    try:
        workspace.run(rainfall_training, data=str(batch), schema=schema, listener=listener)
        raise AssertionError("the schema gate let a batch with a missing column through")
    except StepFailedError as refused:
        anomalies = _anomalies_of(workspace, refused.run_id)
        refused_run = refused.run_id
    drift = first.load("check_drift")
    return DemoReport(
        first,
        first_s,
        rerun,
        rerun_s,
        first.load("evaluate_model").metrics,
        first.load("register_model"),
        lineage,
        drift.drifted_features,
        refused_run,
        batch,
        anomalies,
    )


def _batch_without_a_column(workspace: Workspace, data: Path) -> Path:
    """An incoming batch whose producer silently stopped sending ``visibility``."""
    folder = (workspace.root or Path.cwd()) / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    batch = folder / "rainfall-batch-without-visibility.csv"
    pd.read_csv(data, index_col=0).drop(columns=["visibility"]).to_csv(batch)
    return batch


def _anomalies_of(workspace: Workspace, run_id: str) -> Anomalies:
    for step_run in workspace.metadata.list_steps(run_id):
        for event in workspace.metadata.events(step_run_ids=[step_run.id], kind="output"):
            if event.name == "anomalies":
                found: Anomalies = workspace.load_artifact(event.artifact_id)
                return found
    raise LookupError(f"run {run_id} recorded no anomalies")
