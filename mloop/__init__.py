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
from mloop.deprecations import warn_renamed
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
from mloop.errors import (
    ArtifactCorruptedError,
    ArtifactNotFoundError,
    BodyTooLargeError,
    BusyError,
    ConfigurationError,
    ConflictError,
    DataError,
    ForbiddenError,
    InputError,
    MetadataStoreError,
    MloopError,
    NotFiniteError,
    NotFoundError,
    ParameterError,
    PipelineDefinitionError,
    PipelineLoadError,
    ReadTimeoutError,
    SchemaSkewError,
    SchemaVersionError,
    SerializationError,
    StepFailedError,
    StoreUnavailableError,
    StoreUnreachableError,
    UnauthorizedError,
    UnsupportedEncodingError,
    UnsupportedMediaTypeError,
    WorkspaceGoneError,
)
from mloop.stores.base import RunQuery
from mloop.workspace import TrackingRun, Workspace

if TYPE_CHECKING:
    from mloop import steps
    from mloop.backtesting.backtest import BacktestReport, backtest
    from mloop.monitoring.monitor import MonitorReport, monitor
    from mloop.orchestration.config import LoopConfig, RolloutPolicy, TriggerSpec
    from mloop.orchestration.scheduler import Scheduler
    from mloop.server.client import Client
    from mloop.steps.retrain import retrain
    from mloop.validation.drift import DriftReport, FeatureDrift, detect_drift, training_serving_skew
    from mloop.validation.infra import InfraReport
    from mloop.validation.model import Evaluation, Thresholds, Verdict, evaluate_model, validate_evaluation
    from mloop.validation.schema import Anomalies, Anomaly, Schema, infer_schema, validate_schema
    from mloop.validation.stats import Statistics, compute_statistics

__version__ = "0.1.0"

logging.getLogger("mloop").addHandler(logging.NullHandler())  # the application decides what is shown


def _lazy_names() -> dict[str, str]:
    """name → module of every lazily loaded name, read from the ``if TYPE_CHECKING:`` block above: that
    block is the one list of them (type checkers read it; this reads it for the runtime)."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
    )
    return {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "mloop"
        for alias in node.names
    }


_LAZY: dict[str, str] = {}
# old name → new name, kept for one release (tests/test_deprecations.py); not in __all__
_RENAMED = {"evaluate": "evaluate_model", "judge": "validate_evaluation", "validate": "validate_schema"}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "steps":
        return importlib.import_module("mloop.steps")
    if name in _RENAMED:
        warn_renamed(__name__, name, _RENAMED[name])
        name = _RENAMED[name]
    if not _LAZY:
        _LAZY.update(_lazy_names())
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mloop' has no attribute {name!r}")


__all__ = [
    "AliasEvent",
    "Anomalies",
    "Anomaly",
    "ArtifactCorruptedError",
    "ArtifactNotFoundError",
    "ArtifactRef",
    "BacktestReport",
    "BodyTooLargeError",
    "BusyError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "DataError",
    "DriftReport",
    "Evaluation",
    "Event",
    "FeatureDrift",
    "ForbiddenError",
    "InfraReport",
    "InputError",
    "LineageGraph",
    "LoopConfig",
    "MetadataStoreError",
    "Metric",
    "MloopError",
    "Model",
    "ModelStatus",
    "ModelVersion",
    "MonitorReport",
    "NotFiniteError",
    "NotFoundError",
    "ParameterError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineLoadError",
    "ReadTimeoutError",
    "RolloutPolicy",
    "Run",
    "RunQuery",
    "RunResult",
    "RunStatus",
    "Scheduler",
    "Schema",
    "SchemaSkewError",
    "SchemaVersionError",
    "SerializationError",
    "Statistics",
    "Step",
    "StepFailedError",
    "StepRun",
    "StepStatus",
    "StoreUnavailableError",
    "StoreUnreachableError",
    "Thresholds",
    "TrackingRun",
    "TriggerSpec",
    "UnauthorizedError",
    "UnsupportedEncodingError",
    "UnsupportedMediaTypeError",
    "Verdict",
    "Workspace",
    "WorkspaceGoneError",
    "__version__",
    "backtest",
    "compute_statistics",
    "detect_drift",
    "evaluate_model",
    "infer_schema",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "monitor",
    "pipeline",
    "retrain",
    "step",
    "steps",
    "training_serving_skew",
    "validate_evaluation",
    "validate_schema",
]
