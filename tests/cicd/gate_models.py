"""Candidates for the load-test gate that a served process can load (pickled by this module's path,
so the gate's ``mloop serve`` needs this checkout on its PYTHONPATH)."""

from __future__ import annotations

import time
from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin


class SlowClassifier(ClassifierMixin, BaseEstimator):
    """Answers exactly like the fitted ``model``, ``delay_s`` later: too slow for a latency budget."""

    def __init__(self, model: Any = None, delay_s: float = 0.3) -> None:
        self.model = model
        self.delay_s = delay_s

    def fit(self, x: Any, y: Any) -> SlowClassifier:
        self.model.fit(x, y)
        self.classes_ = self.model.classes_
        return self

    def predict(self, x: Any) -> Any:
        time.sleep(self.delay_s)
        return self.model.predict(x)

    def predict_proba(self, x: Any) -> Any:
        time.sleep(self.delay_s)
        return self.model.predict_proba(x)
