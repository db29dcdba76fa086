"""mloop: MLOps levels 0-2 in one tool. This module is the whole public API; everything else is private.

Data-validation names load on first use (they pull in scipy), so ``import mloop`` and the CLI stay fast.
"""

import logging
from typing import TYPE_CHECKING, Any

from mloop.core.context import log_metric, log_metrics, log_param, log_params
from mloop.core.lineage import LineageGraph
from mloop.core.pipeline import Pipeline, pipeline
from mloop.core.runner import RunResult
from mloop.core.step import Step, step
from mloop.entities import (
    AliasEvent,
    ArtifactRef,
    Event,
    Metric,
    Model,
    ModelStatus,
    ModelVersion,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
)
from mloop.stores.base import RunQuery
from mloop.workspace import TrackingRun, Workspace

if TYPE_CHECKING:
    from mloop import steps
    from mloop.monitoring.monitor import MonitorReport, monitor
    from mloop.orchestration.backtest import BacktestReport, backtest
    from mloop.orchestration.config import LoopConfig, RolloutPolicy, TriggerSpec
    from mloop.orchestration.scheduler import Scheduler
    from mloop.validation.drift import DriftReport, FeatureDrift, detect_drift, training_serving_skew
    from mloop.validation.infra import InfraReport
    from mloop.validation.model import Evaluation, Thresholds, Verdict, evaluate, judge
    from mloop.validation.schema import Anomalies, Anomaly, Schema, infer_schema, validate
    from mloop.validation.stats import Statistics, compute_statistics

__version__ = "0.1.0"

logging.getLogger("mloop").addHandler(logging.NullHandler())  # the application decides what is shown

_LAZY = {
    "Anomalies": "mloop.validation.schema",
    "Anomaly": "mloop.validation.schema",
    "DriftReport": "mloop.validation.drift",
    "Evaluation": "mloop.validation.model",
    "InfraReport": "mloop.validation.infra",
    "Thresholds": "mloop.validation.model",
    "Verdict": "mloop.validation.model",
    "evaluate": "mloop.validation.model",
    "judge": "mloop.validation.model",
    "FeatureDrift": "mloop.validation.drift",
    "Schema": "mloop.validation.schema",
    "Statistics": "mloop.validation.stats",
    "compute_statistics": "mloop.validation.stats",
    "detect_drift": "mloop.validation.drift",
    "infer_schema": "mloop.validation.schema",
    "training_serving_skew": "mloop.validation.drift",
    "validate": "mloop.validation.schema",
    "BacktestReport": "mloop.orchestration.backtest",
    "backtest": "mloop.orchestration.backtest",
    "LoopConfig": "mloop.orchestration.config",
    "RolloutPolicy": "mloop.orchestration.config",
    "TriggerSpec": "mloop.orchestration.config",
    "MonitorReport": "mloop.monitoring.monitor",
    "monitor": "mloop.monitoring.monitor",
    "Scheduler": "mloop.orchestration.scheduler",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "steps":
        return importlib.import_module("mloop.steps")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mloop' has no attribute {name!r}")


__all__ = [
    "AliasEvent",
    "Anomalies",
    "Anomaly",
    "ArtifactRef",
    "BacktestReport",
    "DriftReport",
    "Evaluation",
    "Event",
    "FeatureDrift",
    "InfraReport",
    "LineageGraph",
    "LoopConfig",
    "Metric",
    "Model",
    "ModelStatus",
    "ModelVersion",
    "MonitorReport",
    "Pipeline",
    "RolloutPolicy",
    "Run",
    "RunQuery",
    "RunResult",
    "RunStatus",
    "Scheduler",
    "Schema",
    "Statistics",
    "Step",
    "StepRun",
    "StepStatus",
    "Thresholds",
    "TrackingRun",
    "TriggerSpec",
    "Verdict",
    "Workspace",
    "__version__",
    "backtest",
    "compute_statistics",
    "detect_drift",
    "evaluate",
    "infer_schema",
    "judge",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "monitor",
    "pipeline",
    "step",
    "steps",
    "training_serving_skew",
    "validate",
]
