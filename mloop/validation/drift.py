"""Value skew and drift between a reference and a current dataset, from their statistics.

The test for each feature is chosen by its type and the reference size, like Evidently's defaults so
verdicts agree: up to 1,000 reference rows, Kolmogorov–Smirnov (numbers) or chi² (categories),
drifted when p < 0.05; above that, Wasserstein distance normalised by the reference std (numbers)
or Jensen–Shannon distance (categories), drifted when ≥ 0.1. PSI is reported for every feature and
can be chosen instead (drifted when ≥ 0.2). A numeric column with at most 5 distinct reference
values is compared as categories. Any column's method and threshold can be overridden.

Tests use the exact values when both sides kept them (at most 5,000 values, see
:mod:`mloop.validation.stats`) and the quantile sketches otherwise; each result says which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from mloop.errors import DataError, ParameterError
from mloop.validation.io import Progress, Source
from mloop.validation.stats import ColumnStats, Statistics, compute_statistics

__all__ = ["METHODS", "DriftReport", "FeatureDrift", "detect_drift", "training_serving_skew"]

METHODS = ("ks", "wasserstein", "chi2", "jensenshannon", "psi")
DEFAULT_THRESHOLDS = {"ks": 0.05, "chi2": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1, "psi": 0.2}
P_VALUE_METHODS = ("ks", "chi2")
SMALL_REFERENCE = 1_000
CATEGORICAL_DISTINCT = 5
_EPS = 1e-4
_GRID = np.linspace(0.0005, 0.9995, 1000)


def _threshold(column: str, method: str, given: float | None) -> float:
    """A column's threshold: a p-value strictly between 0 and 1 for the tests, a positive finite
    distance for the others (nan read as no threshold, 1 divided by zero, 0 took a log of zero)."""
    if given is None:
        return DEFAULT_THRESHOLDS[method]
    value = float(given)
    if method in P_VALUE_METHODS and not 0 < value < 1:
        raise ParameterError(
            f"threshold for {column!r}: {method} compares a p-value, so its threshold must be between 0 "
            f"and 1 (e.g. {DEFAULT_THRESHOLDS[method]}), got {given!r}",
            field=column,
        )
    if method not in P_VALUE_METHODS and not (0 < value < math.inf):
        raise ParameterError(
            f"threshold for {column!r}: {method} is a distance, so its threshold must be a positive "
            f"number (e.g. {DEFAULT_THRESHOLDS[method]}), got {given!r}",
            field=column,
        )
    if value < 1e-300:  # below what a p-value's log can be compared at
        raise ParameterError(f"threshold for {column!r}: {given!r} is too small", field=column)
    return value


@dataclass
class FeatureDrift:
    """One feature's comparison. For p-value tests drift means p < threshold, for distances ≥ threshold."""

    column: str
    kind: str
    method: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    psi: float
    exact: bool
    reference: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """How strongly it drifted relative to its threshold (for ordering reports)."""
        if self.p_value is not None:
            return -math.log10(max(self.p_value, 1e-300)) / -math.log10(self.threshold)
        return self.statistic / self.threshold if self.threshold else 0.0


@dataclass
class DriftReport:
    """Per-feature results and the dataset-level verdict (share of drifted features vs a threshold)."""

    __mloop_artifact__: ClassVar[str] = "drift_report"

    features: list[FeatureDrift]
    drift_share: float
    share_threshold: float
    dataset_drift: bool
    reference_rows: int
    current_rows: int
    reference_source: str = ""
    current_source: str = ""
    only_in_reference: list[str] = field(default_factory=list)
    only_in_current: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    kind: str = "drift"

    @property
    def drifted_features(self) -> list[str]:
        return [f.column for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drifted_features"] = self.drifted_features
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), allow_nan=False, default=_json_default).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DriftReport:
        d = json.loads(data)
        d.pop("drifted_features", None)
        d["features"] = [FeatureDrift(**f) for f in d["features"]]
        return cls(**d)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _as_statistics(
    data: Statistics | Source, what: str, encoding: str, progress: Progress | None
) -> Statistics:
    stats = (
        data
        if isinstance(data, Statistics)
        else compute_statistics(data, encoding=encoding, progress=progress)
    )
    if stats.rows == 0:
        raise DataError(
            f"the {what} data ({stats.source or 'given'}) has zero rows; there is nothing to compare",
            field=what,
        )
    return stats


def detect_drift(
    reference: Statistics | Source,
    current: Statistics | Source,
    *,
    columns: list[str] | None = None,
    methods: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    share_threshold: float = 0.5,
    encoding: str = "utf-8",
    progress: Progress | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` feature by feature.

    Either side may be data (file, DataFrame) or :class:`Statistics` (e.g. a stored artifact).
    ``methods``/``thresholds`` override the choice per column; ``share_threshold`` is the share of
    drifted features at which the dataset as a whole counts as drifted.
    """
    for col, method in (methods or {}).items():
        if method not in METHODS:
            raise ParameterError(
                f"drift method for {col!r} must be one of {list(METHODS)}, got {method!r}", field=col
            )
    if not 0 < share_threshold <= 1:
        raise ParameterError(
            f"share_threshold must be in (0, 1], got {share_threshold}", field="share_threshold"
        )
    ref = _as_statistics(reference, "reference", encoding, progress)
    cur = _as_statistics(current, "current", encoding, progress)
    names = columns if columns is not None else [c for c in ref.columns if c in cur.columns]
    for what, overrides in (("method", methods), ("threshold", thresholds)):
        unknown = sorted(set(overrides or {}) - set(names))
        if unknown:
            raise ParameterError(
                f"{what} override for {unknown[0]!r}: no such column in both data sets"
                f" (columns: {', '.join(names[:10])}{', …' if len(names) > 10 else ''})",
                field=what,
            )
    for name in names:
        for side, stats in (("reference", ref), ("current", cur)):
            if columns is not None and name not in stats.columns:
                raise ParameterError(f"column {name!r} is not in the {side} data", field=name)
    features: list[FeatureDrift] = []
    skipped: dict[str, str] = {}
    for name in names:
        r, c = ref.columns[name], cur.columns[name]
        if r.count == 0 or c.count == 0:
            skipped[name] = "no values on the " + ("reference" if r.count == 0 else "current") + " side"
            continue
        chosen = (methods or {}).get(name)
        method = chosen or _default_method(r, c, ref.rows)
        if chosen is None:
            try:  # numbers on one side, categories on the other (a timestamp read as text, say)
                _as_categories(name, r, c, method)
            except ParameterError:
                skipped[name] = (
                    f"{r.kind} on the reference side, {c.kind} on the current side: not comparable"
                )
                continue
        threshold = _threshold(name, method, (thresholds or {}).get(name))
        features.append(_compare(name, r, c, method, threshold))
    features.sort(key=lambda f: (not f.drifted, -f.score))
    share = sum(f.drifted for f in features) / len(features) if features else 0.0
    return DriftReport(
        features=features,
        drift_share=share,
        share_threshold=share_threshold,
        dataset_drift=bool(features) and share >= share_threshold,
        reference_rows=ref.rows,
        current_rows=cur.rows,
        reference_source=ref.source,
        current_source=cur.source,
        only_in_reference=[n for n in ref.columns if n not in cur.columns],
        only_in_current=[n for n in cur.columns if n not in ref.columns],
        skipped=skipped,
    )


def training_serving_skew(training: Statistics, serving: Statistics, **options: Any) -> DriftReport:
    """Training–serving skew: the drift comparison between a model's training statistics and the
    statistics of what it was asked to predict (the prediction log, or any later batch)."""
    report = detect_drift(training, serving, **options)
    report.kind = "skew"
    return report


def _is_categorical(col: ColumnStats) -> bool:
    return col.kind == "categorical" or (col.counts is not None and len(col.counts) <= CATEGORICAL_DISTINCT)


def _default_method(ref: ColumnStats, cur: ColumnStats, rows: int) -> str:
    small = rows <= SMALL_REFERENCE
    countable = cur.kind == "categorical" or cur.counts is not None
    if ref.kind == "categorical" or (_is_categorical(ref) and countable):
        return "chi2" if small else "jensenshannon"
    return "ks" if small else "wasserstein"


def _as_categories(name: str, r: ColumnStats, c: ColumnStats, method: str) -> bool:
    """Whether to compare value frequencies (True) or numeric distributions (False)."""
    numeric = r.kind == "numeric" and c.kind == "numeric"
    countable = all(col.kind == "categorical" or col.counts is not None for col in (r, c))
    if method in ("ks", "wasserstein"):
        if not numeric:
            raise ParameterError(f"column {name!r} holds categories; {method} needs numbers", field=name)
        return False
    if method == "chi2":
        if not countable:
            raise ParameterError(f"column {name!r} holds numbers; chi2 needs categories", field=name)
        return True
    return not numeric or (_is_categorical(r) and countable)


def _compare(name: str, r: ColumnStats, c: ColumnStats, method: str, threshold: float) -> FeatureDrift:
    from scipy import stats as sps  # here, not at import: scipy.stats costs ~0.4 s to import

    if _as_categories(name, r, c, method):
        keys, p, q, exact = _category_counts(r, c)
        ref_dist = {"categories": [str(k) for k in keys], "proportions": (p / p.sum()).tolist()}
        cur_dist = {"categories": [str(k) for k in keys], "proportions": (q / q.sum()).tolist()}
        psi = _psi(p / p.sum(), q / q.sum())
        if method == "chi2":
            table = np.vstack([p, q])
            table = table[:, table.sum(axis=0) > 0]
            if table.shape[1] < 2:
                statistic, p_value = 0.0, 1.0
            else:
                res = sps.chi2_contingency(table, correction=False)
                statistic, p_value = float(res.statistic), float(res.pvalue)
        elif method == "jensenshannon":
            statistic, p_value = _js(p / p.sum(), q / q.sum()), None
        else:
            statistic, p_value = psi, None
        kind = "categorical"
    else:
        exact = r.sample is not None and c.sample is not None
        edges = _edges(r, c)
        p_hist, q_hist = _hist(r, edges), _hist(c, edges)
        ref_dist = {"edges": edges.tolist(), "proportions": p_hist.tolist()}
        cur_dist = {"edges": edges.tolist(), "proportions": q_hist.tolist()}
        psi = _numeric_psi(r, c)
        if method == "ks":
            if exact:
                res = sps.ks_2samp(r.sample, c.sample)
                statistic, p_value = float(res.statistic), float(res.pvalue)
            else:
                statistic = _ks_from_sketches(r, c)
                en = r.finite * c.finite / (r.finite + c.finite)
                p_value = float(sps.kstwo.sf(statistic, max(1, round(en))))
        elif method == "wasserstein":
            std = r.std or 0.0
            if exact:
                w = float(sps.wasserstein_distance(r.sample, c.sample))
            else:
                w = float(np.mean(np.abs(np.asarray(r.quantiles(_GRID)) - np.asarray(c.quantiles(_GRID)))))
            statistic, p_value = (w / std if std > 0 else (0.0 if w == 0 else math.inf)), None
        elif method == "psi":
            statistic, p_value = psi, None
        else:
            statistic, p_value = _js(p_hist, q_hist), None
        kind = "numeric"
    drifted = (
        (p_value < threshold) if method in P_VALUE_METHODS and p_value is not None else statistic >= threshold
    )
    if not math.isfinite(statistic):
        statistic = 1e300
    return FeatureDrift(
        name,
        kind,
        method,
        float(statistic),
        p_value,
        threshold,
        bool(drifted),
        float(psi),
        exact,
        ref_dist,
        cur_dist,
    )


def _category_counts(r: ColumnStats, c: ColumnStats) -> tuple[list[Any], np.ndarray, np.ndarray, bool]:
    rc, cc = r.counts or {}, c.counts or {}
    keys = sorted(set(rc) | set(cc), key=lambda k: (-(rc.get(k, 0) + cc.get(k, 0)), str(k)))
    p = np.array([rc.get(k, 0) for k in keys], dtype=float)
    q = np.array([cc.get(k, 0) for k in keys], dtype=float)
    if r.other or c.other:
        keys.append("(other)")
        p, q = np.append(p, r.other), np.append(q, c.other)
    return keys, p, q, r.other == 0 and c.other == 0


def _js(p: np.ndarray, q: np.ndarray) -> float:
    p = np.where(p == 0, _EPS, p)
    q = np.where(q == 0, _EPS, q)
    from scipy.spatial import distance

    return float(distance.jensenshannon(p, q))


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.where(p == 0, _EPS, p)
    q = np.where(q == 0, _EPS, q)
    return float(np.sum((q - p) * np.log(q / p)))


def _cdf(col: ColumnStats, points: np.ndarray) -> np.ndarray:
    """P(X ≤ x) at each point (right-continuous), exact from values when kept, else from the sketch."""
    if col.sample is not None:
        s = np.sort(col.sample)
        return np.searchsorted(s, points, side="right") / len(s)
    assert col.sketch is not None
    return np.asarray(col.sketch.get_cdf(points.tolist())[:-1])


def _numeric_psi(r: ColumnStats, c: ColumnStats) -> float:
    """PSI over the reference's deciles."""
    cuts = np.unique(np.asarray(r.quantiles(np.linspace(0.1, 0.9, 9))))
    p = np.diff(np.concatenate(([0.0], _cdf(r, cuts), [1.0])))
    q = np.diff(np.concatenate(([0.0], _cdf(c, cuts), [1.0])))
    return _psi(p, q)


def _ks_from_sketches(r: ColumnStats, c: ColumnStats) -> float:
    points = np.unique(np.concatenate([np.asarray(r.quantiles(_GRID)), np.asarray(c.quantiles(_GRID))]))
    return float(np.max(np.abs(_cdf(r, points) - _cdf(c, points))))


def _edges(r: ColumnStats, c: ColumnStats, bins: int = 30) -> np.ndarray:
    """Histogram edges for reports: the 1st–99th percentile span of both sides (outliers go to the ends)."""
    lo = min(r.quantiles([0.01])[0], c.quantiles([0.01])[0])
    hi = max(r.quantiles([0.99])[0], c.quantiles([0.99])[0])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _hist(col: ColumnStats, edges: np.ndarray) -> np.ndarray:
    cdf = _cdf(col, edges[1:-1])
    return np.diff(np.concatenate(([0.0], cdf, [1.0])))
