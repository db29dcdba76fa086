"""Built-in data-validation steps: ordinary steps a user composes into their own pipelines.

``validate_schema`` is a gate: on anomalies it raises :class:`~mloop.errors.SchemaSkewError`, which
stops the run (status ``stopped``) with the anomaly report recorded as the step's output.
``check_drift`` never stops anything: its report is the signal later triggers act on.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mloop.core.context import log_metrics
from mloop.core.pipeline import pipeline
from mloop.core.step import step
from mloop.errors import SchemaSkewError
from mloop.validation.drift import DriftReport, detect_drift
from mloop.validation.schema import Anomalies, Schema
from mloop.validation.schema import infer_schema as _infer
from mloop.validation.schema import validate_schema as _validate
from mloop.validation.stats import Statistics, compute_statistics

__all__ = [
    "check_drift",
    "data_statistics",
    "file_statistics",
    "infer_schema",
    "statistics",
    "validate_schema",
]


@step
def statistics(data: pd.DataFrame) -> Statistics:
    """Mergeable statistics of a DataFrame (see :mod:`mloop.validation.stats`)."""
    return compute_statistics(data)


@step
def file_statistics(path: Path) -> Statistics:
    """Statistics of a CSV/Parquet file, streamed (works on files larger than memory)."""
    return compute_statistics(path).with_source(str(path))


@step
def infer_schema(stats: Statistics) -> Schema:
    """A schema the data behind ``stats`` satisfies (default tolerances)."""
    return _infer(stats)


@step
def validate_schema(data: pd.DataFrame, schema: Path | Schema) -> Anomalies:
    """Stop the run when ``data`` breaks ``schema`` (a schema file, or a Schema from another step)."""
    rules = schema if isinstance(schema, Schema) else Schema.load(schema)
    anomalies = _validate(data, rules)
    log_metrics({"anomalies": len(anomalies.items), "rows_validated": anomalies.rows})
    if not anomalies.ok:
        raise SchemaSkewError(
            f"schema skew: {len(anomalies.items)} anomal{'y' if len(anomalies.items) == 1 else 'ies'}: "
            f"{anomalies.summary()}",
            artifacts={"anomalies": anomalies},
        )
    return anomalies


@step
def check_drift(reference: Statistics, current: pd.DataFrame, share_threshold: float = 0.5) -> DriftReport:
    """Compare ``current`` with reference statistics; logs the drift share and the verdict."""
    report = detect_drift(reference, current, share_threshold=share_threshold)
    log_metrics(
        {
            "drift_share": report.drift_share,
            "drifted_features": len(report.drifted_features),
            "dataset_drift": float(report.dataset_drift),
        }
    )
    return report


@pipeline
def data_statistics(path: Path) -> None:
    """Statistics of one file as a stored, reusable artifact (``mloop data stats --save``)."""
    file_statistics(path)
