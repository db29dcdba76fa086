"""Which metric judges a target: chosen from the label distribution, overridable, checked for fit.

Accuracy hides decay when one class dominates (a model that always answers the majority class keeps
95 % on a 95/5 target), so degradation and promotion use ROC-AUC there; regression uses MAE, which
one outlier does not dominate the way it does RMSE.
"""

from __future__ import annotations

import pandas as pd

from mloop.errors import DataError, ParameterError

__all__ = ["CLASSIFICATION_METRICS", "REGRESSION_METRICS", "check_target", "choose_metric"]

DOMINANT = 0.8  # a class with at least this share of the rows dominates
CLASSIFICATION_METRICS = ("accuracy", "f1", "precision", "recall")
BINARY_METRICS = ("roc_auc", "log_loss", "brier")  # need the positive class's score
REGRESSION_METRICS = ("mae", "rmse", "r2", "mape")  # as a live regression window is scored


def check_target(y: pd.Series, target: str, rows: str = "") -> None:
    """A target with a single value (in ``rows``, when named: the rows the first model learns from) has
    nothing to learn or to judge."""
    values = y.dropna().unique()
    if len(values) < 2:
        shown = repr(values[0].item() if hasattr(values[0], "item") else values[0]) if len(values) else "none"
        if rows:
            raise DataError(
                f"target {target!r} has a single value ({shown}) in {rows}: the first model has nothing "
                "to learn; raise --initial so they hold two classes",
                field="target",
            )
        raise DataError(
            f"target {target!r} has a single value ({shown}): nothing to learn or to judge", field="target"
        )


def choose_metric(task: str, y: pd.Series, requested: str | None = None) -> str:
    """``requested`` if it fits the task (else a ParameterError naming ``metric``); otherwise ROC-AUC for
    a binary target one class dominates, accuracy for other classification, MAE for regression."""
    binary = task == "classification" and y.nunique() == 2
    fits = (
        REGRESSION_METRICS
        if task == "regression"
        else CLASSIFICATION_METRICS + (BINARY_METRICS if binary else ())
    )
    if requested is not None:
        if requested not in fits:
            kind = "binary classification" if binary else task
            raise ParameterError(
                f"metric {requested!r} does not fit a {kind} target (use one of: {', '.join(fits)})",
                field="metric",
            )
        return requested
    if task == "regression":
        return "mae"
    if binary and float(y.value_counts(normalize=True).max()) >= DOMINANT:
        return "roc_auc"
    return "accuracy"
