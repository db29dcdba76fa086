"""Kept so that configs naming ``mloop.orchestration.retrain:retrain`` still load: the built-in
retraining pipeline lives in :mod:`mloop.steps.retrain` (public name ``mloop.retrain``)."""

from mloop.steps.retrain import (
    default_model,
    describe_default_model,
    estimator_factory,
    infer_task,
    retrain,
    training_rows,
)

__all__ = [
    "default_model",
    "describe_default_model",
    "estimator_factory",
    "infer_task",
    "retrain",
    "training_rows",
]
