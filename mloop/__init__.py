"""mloop: MLOps levels 0-2 in one tool. This module is the whole public API; everything else is private."""

from mloop.core.context import log_metric, log_metrics, log_param, log_params
from mloop.core.lineage import LineageGraph
from mloop.core.pipeline import Pipeline, pipeline
from mloop.core.runner import RunResult
from mloop.core.step import Step, step
from mloop.entities import ArtifactRef, Event, Metric, Run, RunStatus, StepRun, StepStatus
from mloop.stores.base import RunQuery
from mloop.workspace import TrackingRun, Workspace

__version__ = "0.1.0"

__all__ = [
    "ArtifactRef",
    "Event",
    "LineageGraph",
    "Metric",
    "Pipeline",
    "Run",
    "RunQuery",
    "RunResult",
    "RunStatus",
    "Step",
    "StepRun",
    "StepStatus",
    "TrackingRun",
    "Workspace",
    "__version__",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "pipeline",
    "step",
]
