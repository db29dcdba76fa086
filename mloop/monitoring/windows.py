"""Windows over the prediction log → what monitoring measures in each: input drift against the
model's training statistics, prediction drift, and (where labels arrived) the model's live metrics,
overall, per serving role (production / canary) and per slice.

The same functions score a live service's log (``monitor``) and a replayed history (``backtest``),
so a threshold tuned on history means the same thing in production.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from mloop.errors import ParameterError
from mloop.monitoring.log import label_values
from mloop.names import decimal
from mloop.validation.drift import detect_drift
from mloop.validation.model import LOWER_IS_BETTER, SliceSpec, score_predictions
from mloop.validation.stats import Statistics, compute_statistics

__all__ = [
    "Degradation",
    "WindowResult",
    "degradation",
    "labels_and_predictions",
    "parse_window",
    "score_window",
    "split_windows",
    "window_frame",
]

INPUT_PREFIX = "input."


def parse_window(spec: str | int | timedelta) -> int | timedelta:
    """``1000`` (rows) or ``"30m"``, ``"1h"``, ``"7d"`` (time) → a row count or a duration."""
    if isinstance(spec, timedelta | int) and not isinstance(spec, bool):
        if isinstance(spec, int) and spec < 1:
            raise ParameterError(f"window must be at least 1 row, got {spec}", field="window")
        return spec
    text = str(spec).strip().lower()
    rows = decimal(text, 18)
    if rows is not None:
        return parse_window(rows)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text[:-1], text[-1:]
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit not in units or not value > 0:
        raise ParameterError(
            f"window {spec!r} is neither a row count (1000) nor a duration (30m, 1h, 7d)", field="window"
        )
    try:
        duration = timedelta(**{units[unit]: value})
    except OverflowError:
        duration = timedelta.max
    longest = pd.Timedelta.max.to_pytimedelta()  # what a log's timestamps can be divided by
    if duration > longest:
        raise ParameterError(
            f"window {spec!r} is longer than a log's time can span (at most {longest.days}d)", field="window"
        )
    if duration < timedelta(microseconds=1):
        raise ParameterError(f"window {spec!r} is shorter than a microsecond", field="window")
    return duration


def split_windows(frame: pd.DataFrame, window: int | timedelta) -> list[tuple[int, int, bool]]:
    """``(start, end, complete)`` row ranges of consecutive windows over a log in arrival order."""
    n = len(frame)
    if n == 0:
        return []
    if isinstance(window, int):
        return [(lo, min(lo + window, n), lo + window <= n) for lo in range(0, n, window)]
    ts = pd.to_datetime(frame["ts"], utc=True)
    origin = ts.iloc[0].floor("s")
    index = ((ts - origin) // pd.Timedelta(window)).to_numpy()
    edges = np.flatnonzero(np.diff(index)) + 1
    starts, ends = [0, *edges.tolist()], [*edges.tolist(), n]
    return [(lo, hi, hi < n) for lo, hi in zip(starts, ends, strict=True)]


@dataclass
class WindowResult:
    """One window of served traffic, measured."""

    index: int
    start: str
    end: str
    rows: int
    labelled: int
    complete: bool
    versions: dict[str, int]
    metrics: dict[str, float] = field(default_factory=dict)
    by_role: dict[str, dict[str, float]] = field(default_factory=dict)
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    drift_share: float = 0.0
    dataset_drift: bool = False
    drifted: list[str] = field(default_factory=list)
    feature_scores: dict[str, float] = field(default_factory=dict)
    prediction_drift: float | None = None
    prediction_drifted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def logged_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The request inputs of a logged frame (its ``input.*`` columns) under their own names, indexed
    from 0: what a model is asked again, or its statistics computed on."""
    inputs = frame[[c for c in frame.columns if c.startswith(INPUT_PREFIX)]]
    return inputs.rename(columns=lambda c: c.removeprefix(INPUT_PREFIX)).reset_index(drop=True)


def labels_and_predictions(
    frame: pd.DataFrame, task: str, classes: list[Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y = label_values(frame["label"], frame["prediction"])
    predicted = frame["prediction"].to_numpy()
    if task == "regression":
        return y.astype(float), predicted.astype(float), None
    proba = None
    if classes is not None and len(classes) == 2 and "score" in frame and frame["score"].notna().all():
        s = frame["score"].to_numpy(dtype=float)
        proba = np.column_stack([1 - s, s])
    return y, predicted, proba


def score_window(
    frame: pd.DataFrame,
    *,
    reference: Statistics | None,
    task: str,
    label: str,
    classes: list[Any] | None,
    slices: list[str] | None = None,
    index: int = 0,
    complete: bool = True,
    share_threshold: float = 0.5,
) -> WindowResult:
    """Measure one window of the log (columns ``input.*``, ``prediction``, ``label``, ``role``, …)."""
    inputs = logged_inputs(frame)
    ts = pd.to_datetime(frame["ts"], utc=True) if "ts" in frame else None
    result = WindowResult(
        index=index,
        start=ts.iloc[0].isoformat() if ts is not None and len(ts) else "",
        end=ts.iloc[-1].isoformat() if ts is not None and len(ts) else "",
        rows=len(frame),
        labelled=int(frame["label"].notna().sum()) if "label" in frame else 0,
        complete=complete,
        versions={str(k): int(v) for k, v in frame["version"].value_counts().items()}
        if "version" in frame
        else {},
    )
    if reference is not None and len(frame):
        columns = [c for c in inputs.columns if c in reference.columns]
        current = compute_statistics(inputs[columns])
        report = detect_drift(reference, current, columns=columns, share_threshold=share_threshold)
        result.drift_share = report.drift_share
        result.dataset_drift = report.dataset_drift
        result.drifted = report.drifted_features
        result.feature_scores = {f.column: round(f.score, 4) for f in report.features}
        if label in reference.columns:
            served = compute_statistics(pd.DataFrame({label: frame["prediction"].to_numpy()}))
            pred = detect_drift(reference, served, columns=[label])
            if pred.features:
                result.prediction_drift = round(pred.features[0].score, 4)
                result.prediction_drifted = pred.features[0].drifted
    if result.labelled:
        labelled = frame[frame["label"].notna()]
        all_classes = list(classes or sorted(pd.unique(labelled["label"]).tolist(), key=str))
        y, predicted, proba = labels_and_predictions(labelled, task, classes)
        result.metrics = score_predictions(task, y, predicted, proba, all_classes)
        for role, part in labelled.groupby("role", sort=True) if "role" in labelled else []:
            y, predicted, proba = labels_and_predictions(part, task, classes)
            result.by_role[str(role)] = {
                "rows": float(len(part)),
                **score_predictions(task, y, predicted, proba, all_classes),
            }
        named = _sliceable(labelled)
        for spec in (SliceSpec.parse(s) for s in slices or []):
            for name, mask in spec.masks(named).items():
                if mask.sum():
                    y, predicted, proba = labels_and_predictions(labelled[mask], task, classes)
                    result.slices[name] = {
                        "rows": float(mask.sum()),
                        **score_predictions(task, y, predicted, proba, all_classes),
                    }
    return result


def _sliceable(frame: pd.DataFrame) -> pd.DataFrame:
    """The log's rows with its features under their own names, beside the log's own columns
    (``role``, ``version``, …) that no feature shadows: a feature named ``version`` is what
    ``--slice version`` means (the two under one name made pandas' grouping fail)."""
    features = {c.removeprefix(INPUT_PREFIX): c for c in frame.columns if c.startswith(INPUT_PREFIX)}
    own = [c for c in frame.columns if not c.startswith(INPUT_PREFIX) and c not in features]
    return frame[[*own, *features.values()]].set_axis([*own, *features], axis=1)


@dataclass(frozen=True)
class Degradation:
    """Whether a live metric fell below what the model promised, beyond sampling noise."""

    metric: str
    value: float
    baseline: float
    limit: float
    degraded: bool

    @property
    def detail(self) -> str:
        side = "above" if self.metric in LOWER_IS_BETTER else "below"
        verdict = "degraded" if self.degraded else "within"
        return (
            f"{self.metric} {self.value:.4f} vs baseline {self.baseline:.4f}: {verdict} "
            f"(limit {self.limit:.4f}, {side} it counts as degraded)"
        )


def degradation(
    metric: str,
    value: float,
    rows: int,
    baseline: float,
    baseline_rows: int,
    *,
    margin: float = 0.02,
    z: float = 2.0,
    threshold: float | None = None,
) -> Degradation:
    """Compare a window's ``metric`` with the model's ``baseline`` (its hold-out score).

    The allowance is the larger of ``margin`` and ``z`` standard errors of the difference, so a
    small window's noise is not mistaken for decay while a real drop on a large window is caught.
    Proportions use the binomial error; error metrics (MAE, RMSE, …) compare relatively.
    ``threshold`` replaces the baseline rule with a fixed bound.
    """
    lower_better = metric in LOWER_IS_BETTER
    if threshold is not None:
        limit = threshold
    elif lower_better:
        rel = math.sqrt(1 / (2 * max(rows, 1)) + 1 / (2 * max(baseline_rows, 1)))
        limit = baseline * (1 + max(margin, z * rel))
    else:
        b, v = min(max(baseline, 0.0), 1.0), min(max(value, 0.0), 1.0)
        se = math.sqrt(b * (1 - b) / max(baseline_rows, 1) + v * (1 - v) / max(rows, 1))
        limit = baseline - max(margin, z * se)
    bad = value > limit if lower_better else value < limit
    return Degradation(metric, value, baseline, limit, bool(bad and math.isfinite(value)))


def window_frame(frame: pd.DataFrame, since: str | None) -> pd.DataFrame:
    """Rows of a labelled log from ``since`` (an ISO timestamp) on; all of them when ``since`` is None."""
    if since is None or frame.empty:
        return frame
    return frame[pd.to_datetime(frame["ts"], utc=True) >= pd.Timestamp(since)]
