"""mloop's built-in steps: ordinary steps to compose into your own pipelines.

from mloop import steps

@mloop.pipeline
def training(data: Path, schema: Path):
    df = load(data)
    steps.validate_schema(df, schema)          # stops the run on schema skew
    reference = steps.statistics(df)
    ...
"""

from mloop.validation.steps import (
    check_drift,
    data_statistics,
    file_statistics,
    infer_schema,
    statistics,
    validate_schema,
)

__all__ = [
    "check_drift",
    "data_statistics",
    "file_statistics",
    "infer_schema",
    "statistics",
    "validate_schema",
]
