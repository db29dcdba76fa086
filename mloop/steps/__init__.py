"""mloop's built-in steps: ordinary steps to compose into your own pipelines.

from mloop import steps

@mloop.pipeline
def training(data: Path, schema: Path):
    df = load(data)
    steps.validate_schema(df, schema)          # stops the run on schema skew
    reference = steps.statistics(df)
    ...
"""

from mloop.steps.context import workspace
from mloop.steps.data import (
    check_drift,
    data_statistics,
    file_statistics,
    infer_schema,
    statistics,
    validate_schema,
)
from mloop.steps.features import historical_features
from mloop.steps.model import evaluate_model, infra_check, register_model, validate_model

__all__ = [
    "check_drift",
    "data_statistics",
    "evaluate_model",
    "file_statistics",
    "historical_features",
    "infer_schema",
    "infra_check",
    "register_model",
    "statistics",
    "validate_model",
    "validate_schema",
    "workspace",
]
