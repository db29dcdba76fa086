"""Model evaluation and the model-validation gate: only a better model ships.

:func:`evaluate` scores a model overall and per slice, with sanity checks (finite predictions,
probabilities in [0, 1], convergence). :func:`validate_evaluation` compares a candidate's evaluation with the
production model's on the same data against thresholds and returns a :class:`Verdict`.

Any scikit-learn-compatible estimator works. Other frameworks need only ``predict(X)`` (and
``predict_proba(X)`` with ``classes_`` for probabilities) on a pandas DataFrame of the input columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mloop.deprecations import renamed
from mloop.errors import DataError, ParameterError

__all__ = [
    "Check",
    "Evaluation",
    "SliceSpec",
    "Thresholds",
    "Verdict",
    "evaluate_model",
    "validate_evaluation",
]

LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse", "mape", "calibration_error"})
# what live predictions are scored with (score_predictions), by task
LIVE_METRICS = {
    "regression": ("mae", "rmse", "r2", "mape"),
    "classification": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"),
}


PROBABILITY_METRICS = ("roc_auc", "log_loss", "brier")  # live: a binary classifier's logged score


def live_metric_problem(
    metric: str, task: str, classes: Sequence[Any] | None, evaluated: Mapping[str, Any] | None = None
) -> str | None:
    """Why ``metric`` cannot judge a ``task`` model's live predictions (None when it can): a trigger or
    a canary judged by it would wait for a number that never comes. ``evaluated``: the version's own
    evaluation metrics, which say whether it gives probabilities (no ``log_loss``: it does not)."""
    fits = LIVE_METRICS.get(task, ())
    if metric not in fits:
        use = ", ".join(fits)
        return f"metric {metric!r} is not measured on a {task} model's live predictions (use one of: {use})"
    if metric in PROBABILITY_METRICS:
        plain = ", ".join(m for m in fits if m not in PROBABILITY_METRICS)
        if classes is not None and len(classes) != 2:
            return (
                f"metric {metric!r} is measured live only for two classes (the logged score of the "
                f"second); the model has {len(classes)} (use one of: {plain})"
            )
        if evaluated and "log_loss" not in evaluated:
            return f"metric {metric!r} needs probabilities, and the model gives none (use one of: {plain})"
    return None


@dataclass(frozen=True)
class SliceSpec:
    """A segment to score separately: every value of ``column`` (or the listed ``values``), or the
    ranges between consecutive ``bins``. Parse ``"city"``, ``"city=paris,rome"`` or ``"age:0,30,60"``."""

    column: str
    values: tuple[Any, ...] | None = None
    bins: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | SliceSpec) -> SliceSpec:
        if isinstance(spec, SliceSpec):
            return spec
        if isinstance(spec, Mapping):
            bins = spec.get("bins")
            values = spec.get("values")
            return cls(
                str(spec["column"]),
                tuple(values) if values else None,
                _edges(tuple(map(float, bins)), dict(spec)) if bins else None,
            )
        if not str(spec).strip() or str(spec).startswith(("=", ":")):
            raise ParameterError(
                f"slice {spec!r} names no column: e.g. city, city=paris or age:0,30,60", field="slices"
            )
        if ":" in spec:
            column, _, edges = spec.partition(":")
            try:
                bins = tuple(float(b) for b in edges.split(","))
            except ValueError as exc:
                raise ParameterError(
                    f"slice {spec!r}: bins must be numbers, e.g. age:0,30,60", field="slices"
                ) from exc
            return cls(column, None, _edges(bins, spec))
        if "=" in spec:
            column, _, values = spec.partition("=")
            return cls(column, tuple(v for v in values.split(",") if v), None)
        return cls(spec)

    def masks(self, data: pd.DataFrame) -> dict[str, np.ndarray]:
        if self.column not in data.columns:
            raise DataError(
                f"slice column {self.column!r} is not in the evaluation data (columns: {list(data.columns)})",
                field="slices",
            )
        col = data[self.column]
        if self.bins is not None and (
            not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
        ):
            raise DataError(
                f"slice column {self.column!r} is not numeric ({col.dtype}): bin edges need "
                f"numbers; slice it by value instead ({self.column} or {self.column}=a,b)",
                field="slices",
            )
        if self.bins is not None:
            out = {}
            for lo, hi in zip(self.bins[:-1], self.bins[1:], strict=True):
                out[f"{self.column} in [{lo:g}, {hi:g})"] = ((col >= lo) & (col < hi)).to_numpy()
            return out
        present = col.dropna()
        flag = bool(
            pd.api.types.is_bool_dtype(col)
            or (col.dtype == object and len(present) and all(isinstance(v, bool) for v in present))
        )
        if self.values is None and not flag and pd.api.types.is_numeric_dtype(col) and col.nunique() > 20:
            raise DataError(
                f"slice column {self.column!r} holds {col.nunique():,} distinct numbers: give bin edges "
                f"({self.column}:0,10,20) or the values to score ({self.column}=1,2)",
                field="slices",
            )
        values = self.values if self.values is not None else tuple(col.value_counts().index[:20])
        # true/false as the schema writes them match a bool column's True/False
        text = col.astype(str).str.lower() if flag else col.astype(str)
        out = {
            f"{self.column}={v}": (text == (str(v).lower() if flag else str(v))).to_numpy() for v in values
        }
        missing = col.isna().to_numpy()
        if self.values is None and missing.any():  # rows without a value are a slice of their own
            out[f"{self.column}=(missing)"] = missing
        return out


def _edges(bins: tuple[float, ...], spec: object) -> tuple[float, ...]:
    if len(bins) < 2 or any(not lo < hi for lo, hi in pairwise(bins)):
        raise ParameterError(
            f"slice {spec!r}: give at least two increasing bin edges (no repeats, no nan)", field="slices"
        )
    return bins


@dataclass
class Evaluation:
    """Metrics of one model on one dataset, overall and per slice, with sanity findings."""

    __mloop_artifact__: ClassVar[str] = "evaluation"

    task: str
    label: str
    rows: int
    metrics: dict[str, float]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: list[dict[str, float]] = field(default_factory=list)
    sanity: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        return "accuracy" if self.task == "classification" else "rmse"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), allow_nan=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Evaluation:
        return cls(**json.loads(data))


def _feature_frame(model: Any, data: pd.DataFrame, label: str, inputs: Sequence[str] | None) -> pd.DataFrame:
    if label not in data.columns:
        raise DataError(
            f"evaluation data has no label column {label!r} (columns: {list(data.columns)})", field="label"
        )
    if inputs and getattr(model, "feature_names_in_", None) is None:
        missing = [c for c in inputs if c not in data.columns]
        if missing:
            raise DataError(
                f"evaluation data does not match the model's signature: missing input columns {missing}",
                field=missing[0],
            )
        return data[list(inputs)]
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        missing = [c for c in names if c not in data.columns]
        if missing:
            raise DataError(
                f"evaluation data lacks the model's input columns {missing}", field=str(missing[0])
            )
        return data[list(names)]
    return data.drop(columns=[label])


def _converged(model: Any) -> bool | None:
    """False when an iterative estimator stopped at its iteration cap; None when it does not say."""
    parts = [step for _, step in getattr(model, "steps", [])] or [model]
    verdicts = []
    for part in parts:
        if hasattr(part, "n_trees_per_iteration_"):
            continue  # boosting stops at max_iter by design: a tree budget, not a solver that failed
        n_iter, max_iter = getattr(part, "n_iter_", None), getattr(part, "max_iter", None)
        if n_iter is not None and isinstance(max_iter, int | float):
            verdicts.append(bool(np.all(np.asarray(n_iter) < max_iter)))
    return all(verdicts) if verdicts else None


def evaluate_model(
    model: Any,
    data: pd.DataFrame,
    label: str,
    *,
    slices: Sequence[str | Mapping[str, Any] | SliceSpec] = (),
    task: str | None = None,
    inputs: Sequence[str] | None = None,
) -> Evaluation:
    """Score ``model`` on ``data`` (labels in column ``label``), overall and for each slice."""
    if len(data) == 0:
        raise DataError("evaluation data has zero rows", field="data")
    x = _feature_frame(model, data, label, inputs)
    y = data[label].to_numpy()
    specs = [SliceSpec.parse(s) for s in slices]
    masks = {name: mask for spec in specs for name, mask in spec.masks(data).items()}
    if task is None:
        task = (
            "classification"
            if hasattr(model, "predict_proba") or hasattr(model, "classes_")
            else "regression"
        )
    try:
        predicted = np.asarray(model.predict(x))
        proba = (
            np.asarray(model.predict_proba(x), dtype=float)
            if task == "classification" and hasattr(model, "predict_proba")
            else None
        )
    except Exception as exc:
        raise DataError(
            f"the model could not predict on the evaluation data: {type(exc).__name__}: {exc}"
        ) from exc
    sanity = _sanity(model, predicted, proba, task)
    known = list(getattr(model, "classes_", []))
    if task == "classification" and known and not pd.Series(y).isin(known).any():
        seen = sorted({str(v) for v in y.tolist()})
        shown = np.asarray(known[:10]).tolist()
        raise DataError(
            f"no label in column {label!r} is one of the model's classes {shown} (labels: "
            f"{', '.join(seen[:5])}{', …' if len(seen) > 5 else ''}): the labels are written otherwise "
            "than the model learnt them (text for numbers?), or it is not this model's label",
            field="label",
        )
    classes = known or sorted(set(y.tolist()))
    score = _classification_metrics if task == "classification" else _regression_metrics
    metrics = score(y, predicted, proba, classes)
    per_slice = {}
    for name, mask in masks.items():
        if mask.sum() == 0:
            per_slice[name] = {"rows": 0.0}
            continue
        sub_proba = proba[mask] if proba is not None else None
        per_slice[name] = {"rows": float(mask.sum()), **score(y[mask], predicted[mask], sub_proba, classes)}
    calibration = _calibration(y, proba, classes) if proba is not None and len(classes) == 2 else []
    if calibration:
        metrics["calibration_error"] = float(
            sum(b["count"] * abs(b["mean_predicted"] - b["fraction_positive"]) for b in calibration) / len(y)
        )
    return Evaluation(task, label, len(data), metrics, per_slice, calibration, sanity)


def _sanity(model: Any, predicted: np.ndarray, proba: np.ndarray | None, task: str) -> dict[str, Any]:
    out: dict[str, Any] = {"converged": _converged(model)}
    if task == "regression" or np.issubdtype(predicted.dtype, np.number):
        numeric = predicted.astype(float) if np.issubdtype(predicted.dtype, np.number) else None
        out["non_finite_predictions"] = int((~np.isfinite(numeric)).sum()) if numeric is not None else 0
    if proba is not None:
        out["non_finite_probabilities"] = int((~np.isfinite(proba)).sum())
        out["probabilities_out_of_range"] = int(((proba < 0) | (proba > 1)).sum())
        out["probability_rows_not_summing_to_1"] = int((np.abs(proba.sum(axis=1) - 1) > 1e-6).sum())
    return out


def score_predictions(
    task: str, y: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None, classes: list
) -> dict[str, float]:
    """The metrics :func:`evaluate` reports, from predictions already made (e.g. a prediction log)."""
    score = _classification_metrics if task == "classification" else _regression_metrics
    return score(y, predicted, proba, classes)


def _classification_metrics(
    y: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None, classes: list
) -> dict[str, float]:
    """sklearn's definitions (``tests/validation/test_model.py`` checks them against sklearn on
    generated cases), computed with numpy: monitoring windows, the rollout judge and backtests score
    small slices hundreds of times, and sklearn's input validation cost ~10 ms a call, most of the
    loop's own time between a drift and the new model serving."""
    if np.issubdtype(predicted.dtype, np.floating) and not np.isfinite(predicted).all():
        return {"accuracy": float(np.mean(predicted == y))}  # the sanity checks reject such a model
    y, predicted = np.asarray(y), np.asarray(predicted)
    hit = predicted == y
    if len(classes) == 2:  # the positive class is the second: sklearn's average="binary"
        labels = [classes[1]]
    else:  # average="macro": over the labels present in y or the predictions
        labels = sorted(set(y.tolist()) | set(predicted.tolist()), key=lambda v: (str(type(v)), v))
    precision, recall, f1 = [], [], []
    for label in labels:
        is_true, is_pred = y == label, predicted == label
        tp, n_true, n_pred = int((hit & is_true).sum()), int(is_true.sum()), int(is_pred.sum())
        precision.append(tp / n_pred if n_pred else 0.0)
        recall.append(tp / n_true if n_true else 0.0)
        f1.append(2 * tp / (n_true + n_pred) if n_true + n_pred else 0.0)
    out = {
        "accuracy": float(hit.mean()) if len(y) else math.nan,
        "precision": float(np.mean(precision)) if labels else 0.0,
        "recall": float(np.mean(recall)) if labels else 0.0,
        "f1": float(np.mean(f1)) if labels else 0.0,
    }
    if (
        proba is not None
        and proba.ndim == 2
        and proba.shape[1] == len(classes)  # a model that never saw a class has no column for it
        and np.isfinite(proba).all()
        and ((proba >= 0) & (proba <= 1)).all()
    ):
        index = {c: i for i, c in enumerate(classes)}
        # a label the model never saw (a class that appeared after it was trained) has no column:
        # its probability is 0 for log-loss, and the metrics that rank known classes are undefined
        truth = np.array([index.get(v, -1) for v in y.tolist()], dtype=np.int64)
        unseen = truth < 0
        present = set(truth.tolist())
        if len(present) > 1 and not unseen.any():
            if len(classes) == 2:
                positive = truth == 1
                out["roc_auc"] = _auc(positive, proba[:, 1])
                out["brier"] = float(np.mean((proba[:, 1] - positive) ** 2))
            elif len(present) == len(classes):  # one-vs-rest, macro
                out["roc_auc"] = float(np.mean([_auc(truth == i, proba[:, i]) for i in range(len(classes))]))
        eps = np.finfo(float).eps
        chosen = np.where(unseen, 0.0, proba[np.arange(len(truth)), np.maximum(truth, 0)])
        chosen = np.clip(np.clip(chosen, 1e-15, 1), eps, 1 - eps)
        out["log_loss"] = float(-np.mean(np.log(chosen)))
    return out


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), which is what sklearn's trapezoids
    sum to."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _regression_metrics(
    y: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None, classes: list
) -> dict[str, float]:
    y, p = np.asarray(y).astype(float), np.asarray(predicted).astype(float)
    if not np.isfinite(p).all():
        return {"mae": math.inf, "rmse": math.inf, "r2": -math.inf, "mape": math.inf}
    error = y - p
    nonzero = y != 0
    residual, total = float(np.sum(error**2)), float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    if len(y) < 2:
        r2 = math.nan
    elif total == 0:  # sklearn's force_finite: a constant target is predicted perfectly or not at all
        r2 = 1.0 if residual == 0 else 0.0
    else:
        r2 = 1 - residual / total
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": r2,
        "mape": float(np.mean(np.abs(error[nonzero] / y[nonzero]))) if nonzero.any() else math.nan,
    }


def _calibration(y: np.ndarray, proba: np.ndarray, classes: list, bins: int = 10) -> list[dict[str, float]]:
    positive = proba[:, 1]
    hits = (y == classes[1]).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(positive, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "count": float(mask.sum()),
                    "mean_predicted": float(positive[mask].mean()),
                    "fraction_positive": float(hits[mask].mean()),
                }
            )
    return out


@dataclass
class Thresholds:
    """What a candidate must satisfy. Metric names are those of :class:`Evaluation`.

    ``minimum``/``maximum``: absolute bounds (``{"accuracy": 0.8}``, ``{"log_loss": 0.5}``).
    ``max_degradation``: how much worse than production a metric may be (absolute units, direction
    aware: 0.01 = no worse than -1 pp of accuracy, or +0.01 of RMSE). ``min_improvement``: how much
    better than production it must be. ``slice_max_degradation``: the most any slice's primary metric
    may fall behind production's on the same slice.
    """

    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    max_degradation: dict[str, float] = field(default_factory=lambda: {"__primary__": 0.01})
    min_improvement: dict[str, float] = field(default_factory=dict)
    slice_max_degradation: float | None = 0.05
    min_slice_rows: int = 30

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | Thresholds | None) -> Thresholds:
        if spec is None:
            return cls()
        if isinstance(spec, Thresholds):
            return spec
        known = set(cls.__dataclass_fields__)
        unknown = set(spec) - known
        if unknown:
            raise ParameterError(
                f"unknown threshold setting {sorted(unknown)[0]!r} (known: {sorted(known)})",
                field="thresholds",
            )
        return cls(**dict(spec))


@dataclass
class Check:
    """One check of the gate and its numbers."""

    name: str
    passed: bool
    detail: str


@dataclass
class Verdict:
    """The gate's decision: blessed or not, with every check."""

    __mloop_artifact__: ClassVar[str] = "verdict"

    blessed: bool
    checks: list[Check]
    candidate: dict[str, float]
    baseline: dict[str, float] | None = None
    baseline_version: int | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), allow_nan=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Verdict:
        d = json.loads(data)
        d["checks"] = [Check(**c) for c in d["checks"]]
        return cls(**d)


def _worse(metric: str, candidate: float, baseline: float) -> float:
    """How much worse the candidate is (positive = worse), in the metric's own units."""
    return candidate - baseline if metric in LOWER_IS_BETTER else baseline - candidate


def validate_evaluation(
    candidate: Evaluation,
    baseline: Evaluation | None = None,
    thresholds: Mapping[str, Any] | Thresholds | None = None,
    *,
    baseline_version: int | None = None,
) -> Verdict:
    """Bless ``candidate`` only if every check passes (``baseline`` = production on the same data)."""
    rules = Thresholds.parse(thresholds)
    c = candidate.metrics
    checks: list[Check] = []
    for key, value in candidate.sanity.items():
        bad = value is False or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
        checks.append(Check(f"sanity:{key}", not bad, f"{key} = {value}"))
    for metric, bound in rules.minimum.items():
        value = c.get(metric, math.nan)
        checks.append(Check(f"minimum:{metric}", value >= bound, f"{metric} {value:.4g} ≥ {bound:g}"))
    for metric, bound in rules.maximum.items():
        value = c.get(metric, math.nan)
        checks.append(Check(f"maximum:{metric}", value <= bound, f"{metric} {value:.4g} ≤ {bound:g}"))
    if baseline is not None:
        b = baseline.metrics
        for metric, allowed in rules.max_degradation.items():
            metric = candidate.primary if metric == "__primary__" else metric
            if metric in c and metric in b:
                worse = _worse(metric, c[metric], b[metric])
                checks.append(
                    Check(
                        f"vs_production:{metric}",
                        worse <= allowed,
                        f"{metric} {c[metric]:.4g} vs production {b[metric]:.4g} "
                        f"(worse by {worse:+.4g}, allowed {allowed:g})",
                    )
                )
        for metric, needed in rules.min_improvement.items():
            if metric in c and metric in b:
                better = -_worse(metric, c[metric], b[metric])
                checks.append(
                    Check(
                        f"improvement:{metric}",
                        better >= needed,
                        f"{metric} improves by {better:+.4g}, needs {needed:g}",
                    )
                )
        if rules.slice_max_degradation is not None:
            primary = candidate.primary
            for name, metrics in candidate.slices.items():
                base = baseline.slices.get(name)
                if (
                    not base
                    or primary not in metrics
                    or primary not in base
                    or metrics["rows"] < rules.min_slice_rows
                ):
                    continue
                worse = _worse(primary, metrics[primary], base[primary])
                checks.append(
                    Check(
                        f"slice:{name}",
                        worse <= rules.slice_max_degradation,
                        f"{primary} {metrics[primary]:.4g} vs production {base[primary]:.4g} "
                        f"on {int(metrics['rows'])} rows (worse by {worse:+.4g}, "
                        f"allowed {rules.slice_max_degradation:g})",
                    )
                )
    blessed = all(check.passed for check in checks)
    return Verdict(blessed, checks, dict(c), dict(baseline.metrics) if baseline else None, baseline_version)


# old names, for one release (mloop.deprecations)
__getattr__ = renamed(__name__, {"evaluate": "evaluate_model", "judge": "validate_evaluation"}, globals())
