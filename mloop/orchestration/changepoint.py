"""Change points in a model's live loss: has its error risen since it took production, and since when?

The degradation trigger asks two questions of the production version's labelled traffic, in time
order:

1. **Did the loss rise?** ADWIN (river's implementation, a well-kept library) watches the per-row
   loss; it detects abrupt switches within a few hundred rows and slow decay once it adds up.
   Only detections where the recent loss is worse than the older one by more than ``min_effect``
   count: a model getting better is no reason to retrain.
2. **Since when?** ADWIN's own cut drops old rows a few buckets at a time, so it says little about
   where the change happened. The change point is the split that maximises the standardised
   difference of mean loss before and after it (the CUSUM estimate of a single change), searched
   over the rows up to the detection.

3. **Or is it creeping up?** Slow decay (a concept that moves a little with every row) may never
   make one split stand out; :func:`trend` is the least-squares slope of the loss over the rows and
   its z statistic, so a steady rise is seen once the rows make it significant.

river is an optional dependency (``pip install 'mloop[drift]'``): without it :func:`detect` returns
``None`` and the trigger falls back to comparing windows with the baseline alone (it says so).

Everything here is a pure function of the rows: the same log gives the same answer on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mloop.monitoring.log import label_values, wrong_answers

__all__ = ["ChangePoint", "available", "detect", "row_losses", "split", "trend"]


@dataclass(frozen=True)
class ChangePoint:
    """A rise of the loss: the row it started at, the row it was detected at, the means either side."""

    row: int
    detected_at: int
    before: float
    after: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "detected_at": self.detected_at,
            "before": round(self.before, 6),
            "after": round(self.after, 6),
        }


def available() -> bool:
    """Whether river (the change-point library) is installed."""
    try:
        import river.drift  # noqa: F401
    except ImportError:
        return False
    return True


def row_losses(frame: pd.DataFrame, task: str, classes: list[Any] | None, scale: float | None) -> np.ndarray:
    """One loss per labelled row, in [0, 1]: the Brier score of the true class for binary models
    that log a score (sensitive when one class dominates), else 0/1 error; for regression the
    absolute error over four times ``scale`` (the version's hold-out MAE), clipped at 1."""
    y = label_values(frame["label"], frame["prediction"])
    if task == "regression":
        err = np.abs(y.astype(float) - frame["prediction"].to_numpy(dtype=float))
        unit = 4 * scale if scale and scale > 0 else max(float(np.median(err)) * 4, 1e-12)
        return np.clip(np.nan_to_num(err / unit, nan=1.0), 0.0, 1.0)
    if classes is not None and len(classes) == 2 and "score" in frame and frame["score"].notna().all():
        positive = np.asarray([str(v) == str(classes[1]) for v in y], dtype=float)
        return np.asarray((positive - frame["score"].to_numpy(dtype=float)) ** 2)
    predicted = frame["prediction"].to_numpy()
    return wrong_answers(predicted, y)


def split(losses: np.ndarray, lo_rows: int) -> int:
    """The split maximising |mean after - mean before| · sqrt(n1·n2/n) (both sides ≥ ``lo_rows``)."""
    n = len(losses)
    k = np.arange(1, n)
    csum = np.cumsum(losses)[:-1]
    before = csum / k
    after = (losses.sum() - csum) / (n - k)
    stat = (after - before) * np.sqrt(k * (n - k) / n)
    ok = (k >= lo_rows) & (n - k >= lo_rows)
    if not ok.any():
        return n // 2
    stat = np.where(ok, stat, -np.inf)
    return int(k[int(np.argmax(stat))])


def detect(
    losses: np.ndarray, *, delta: float, min_effect: float, relative: bool = False
) -> ChangePoint | None:
    """The latest rise of ``losses`` ADWIN detects (module docstring), or None; None also when river
    is not installed. ``min_effect``: how much worse the loss after the change must be (absolute,
    or a fraction of the loss before it if ``relative``)."""
    try:
        from river.drift import ADWIN
    except ImportError:
        return None
    detector = ADWIN(delta=delta)
    found = None
    start = 0  # rows before the last accepted change belong to an older regime
    for i, value in enumerate(losses.tolist()):
        detector.update(value)
        if not detector.drift_detected:
            continue
        part = losses[start : i + 1]
        cut = split(part, lo_rows=min(30, max(1, len(part) // 4)))
        before, after = float(part[:cut].mean()), float(part[cut:].mean())
        rise = after - before if not relative else (after - before) / max(before, 1e-12)
        if rise >= min_effect:
            found = ChangePoint(start + cut, i, before, after)
            start += cut
    return found


def trend(losses: np.ndarray) -> tuple[float, float]:
    """The least-squares slope of ``losses`` per row and its z statistic (slope over its standard
    error; 0 for fewer than three rows or a constant loss)."""
    n = len(losses)
    if n < 3:
        return 0.0, 0.0
    t = np.arange(n, dtype=float) - (n - 1) / 2
    sxx = float((t**2).sum())
    centred = losses - losses.mean()
    slope = float((t * centred).sum()) / sxx
    residual = float(((centred - slope * t) ** 2).sum())
    se = math.sqrt(residual / (n - 2) / sxx)
    return slope, (slope / se if se > 0 else 0.0)
