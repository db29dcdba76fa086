"""Kept so that configs naming ``mloop.orchestration.retrain:retrain`` still load: the built-in
retraining pipeline lives in :mod:`mloop.steps.retrain` (public name ``mloop.retrain``)."""

from mloop.steps.retrain import *  # noqa: F403
from mloop.steps.retrain import __all__ as __all__
