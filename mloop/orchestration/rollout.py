"""Automatic rollout: a newly validated version becomes ``canary``; its live metrics decide.

One call to :func:`advance` moves a model's rollout at most one step and says what it did and why:

1. no canary, and a registered (validated) version newer than production that never was canary
   → with a gate (``mloop scheduler run`` passes the load test, :class:`CandidateGate`) and
   ``load_test.enabled``, the candidate is first served on loopback and replayed the most recent
   logged requests: a failure records a ``refuse`` event on ``canary`` with the numbers (and the
   numbers on the candidate's run) and the candidate never takes traffic; with no logged request
   yet the rollout waits. Then it becomes ``canary`` (the service routes ``canary_fraction`` of
   traffic to it). Backtests and the demo pass no gate: their decisions depend on the data only;
2. a canary with at least ``min_labelled`` labelled predictions since it started, or past its time
   budget with at least ``min_labelled_at_budget`` → its metric is compared with production's on the
   traffic of the same period: promoted only if it is no worse than production by more than
   ``max_degradation`` (the previous production stays in the alias history for ``mloop models
   rollback``), else rolled back (canary alias removed), the numbers in the reason. A canary that is
   already worse beyond ``z`` standard errors with ``min_labelled_at_budget`` labels is rolled back
   at once, so a known-worse model does not keep its share of the traffic while evidence gathers;
3. past the budget without enough labels → rolled back: no evidence, no promotion.

``judge = "paired"``: both versions re-predict every labelled row logged since the canary started
(from the logged inputs), so the evidence grows with all the traffic, not only the canary's share, and
the comparison is paired: per row, the candidate's loss minus production's. ``min_labelled`` then
counts those rows. A canary whose mean loss difference is beyond ``z`` standard errors either way,
on at least ``min_labelled_at_budget`` rows, is decided at once (promoted when clearly better, rolled
back when clearly worse); otherwise the metric on the same rows decides, as above.

Rejected versions (failed validation or the infrastructure check) are never considered, so they
never receive traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mloop.entities import ModelStatus, ModelVersion, id_floor
from mloop.errors import NotFoundError
from mloop.monitoring.log import labelled_predictions, recent_requests, wrong_answers
from mloop.monitoring.monitor import served_versions
from mloop.monitoring.windows import degradation, labels_and_predictions, logged_inputs
from mloop.orchestration.config import RolloutPolicy
from mloop.validation.model import LOWER_IS_BETTER, score_predictions
from mloop.workspace import Workspace, current_user

__all__ = ["CandidateGate", "GateReport", "RolloutDecision", "advance"]


@dataclass(frozen=True)
class RolloutDecision:
    """What one rollout step did (``action``: ``canary``, ``refuse``, ``promote``, ``rollback``,
    ``wait``, ``none``)."""

    model: str
    action: str
    version: int | None
    reason: str
    evidence: dict[str, Any] | None = None


class GateReport(Protocol):
    """What a candidate gate found (:class:`mloop.cicd.loadtest.LoadTestReport` is one)."""

    @property
    def passed(self) -> bool: ...

    @property
    def reasons(self) -> list[str]: ...

    def summary(self) -> str:
        """The numbers in one line."""
        ...

    def metrics(self) -> dict[str, float]:
        """The numbers, recorded on the candidate's run under ``load_test.``."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


class CandidateGate(Protocol):
    """Checks a candidate (``NAME:VERSION``) before it takes traffic: serves it, replays
    ``requests`` at ``concurrency`` and judges the budgets (:class:`mloop.cicd.gate.LoadTestGate`)."""

    def __call__(
        self,
        workspace: Workspace,
        candidate: str,
        requests: Sequence[Mapping[str, Any]],
        *,
        concurrency: int,
        p99_ms: float,
        max_error_rate: float,
        rounds: int,
    ) -> GateReport: ...


def _alias(workspace: Workspace, model: str, alias: str) -> ModelVersion | None:
    try:
        return workspace.model_version(f"{model}@{alias}")
    except NotFoundError:
        return None


def _tried(workspace: Workspace, model: str) -> set[int | None]:
    """Versions that were canary or production, or were refused canary traffic."""
    return {e.to_version for e in workspace.registry.history(model) if e.alias in ("canary", "production")}


def _next_candidate(
    workspace: Workspace, model: str, production: ModelVersion, versions: list[ModelVersion]
) -> ModelVersion | None:
    newer = [v for v in versions if v.version > production.version and v.status == ModelStatus.REGISTERED]
    if not newer:  # most passes: the alias history need not be read
        return None
    tried = _tried(workspace, model)
    return next((v for v in sorted(newer, key=lambda v: -v.version) if v.version not in tried), None)


def _canary_started(workspace: Workspace, model: str, version: int) -> datetime:
    moves = [e for e in workspace.registry.history(model, "canary") if e.to_version == version]
    return moves[-1].at


def advance(
    workspace: Workspace,
    policy: RolloutPolicy,
    now: datetime,
    *,
    log_dir: Path | None = None,
    gate: CandidateGate | None = None,
) -> RolloutDecision:
    """Take the next rollout step for ``policy.model`` (see the module docstring)."""
    model = policy.model
    root = log_dir or workspace.prediction_log_dir
    try:
        versions = workspace.registry.versions(model)  # one read for production, canary and candidates
    except NotFoundError:
        versions = []
    holders = {alias: v for v in versions for alias in v.aliases}
    production = holders.get("production")
    if production is None:
        return RolloutDecision(model, "none", None, "no production version yet")
    canary = holders.get("canary")
    if canary is None:
        candidate = _next_candidate(workspace, model, production, versions)
        if candidate is None:
            return RolloutDecision(
                model, "none", None, f"v{production.version} serves; no new validated version"
            )
        if policy.mode == "manual":
            return RolloutDecision(
                model,
                "wait",
                candidate.version,
                f"v{candidate.version} validated; manual mode waits for a promotion",
            )
        reason = f"validated v{candidate.version} goes to canary at {policy.canary_fraction:.0%} of traffic"
        evidence = None
        if gate is not None and policy.load_test.enabled:
            report = _load_test(workspace, policy, candidate, gate, root)
            if isinstance(report, RolloutDecision):
                return report
            reason += f"; its load test passed: {report.summary()}"
            evidence = {"load_test": report.to_dict()}
        workspace.promote(model, candidate.version, "canary", reason=reason)
        return RolloutDecision(model, "canary", candidate.version, reason, evidence)
    return _judge_canary(workspace, policy, production, canary, now, root)


def _load_test(
    workspace: Workspace, policy: RolloutPolicy, candidate: ModelVersion, gate: CandidateGate, root: Path
) -> GateReport | RolloutDecision:
    """The gate's report when the candidate passed; else the decision that refused it (or waits for
    requests to replay). Either way the numbers go to the candidate's run."""
    model, version, settings = policy.model, candidate.version, policy.load_test
    requests = recent_requests(root, model, settings.requests)
    if not requests:
        why = f"v{version} validated; its load test waits for logged requests of {model!r} to replay"
        return RolloutDecision(model, "wait", version, why)
    report = gate(
        workspace,
        f"{model}:{version}",
        requests,
        concurrency=settings.concurrency,
        p99_ms=settings.p99_ms,
        max_error_rate=settings.max_error_rate,
        rounds=settings.rounds,
    )
    if candidate.run_id is not None:
        workspace.metadata.log_metrics(
            candidate.run_id, [(f"load_test.{k}", v, 0) for k, v in report.metrics().items()]
        )
    if _alias(workspace, model, "canary") is not None or version in _tried(workspace, model):
        # the gate took seconds: another scheduler on this workspace may have decided meanwhile
        return RolloutDecision(model, "none", version, f"v{version} was decided by another scheduler")
    if report.passed:
        return report
    evidence = {"load_test": report.to_dict()}
    reason = (
        f"v{version} refused canary traffic by its load test: {'; '.join(report.reasons)} "
        f"({report.summary()})"
    )
    workspace.registry.refuse(model, "canary", version, who=current_user(), reason=reason, evidence=evidence)
    return RolloutDecision(model, "refuse", version, reason, evidence)


def _live(frame: pd.DataFrame, version: int, task: str, classes: list[Any] | None) -> dict[str, float]:
    part = frame[(frame["version"] == version) & frame["label"].notna()]
    if part.empty:
        return {"rows": 0.0}
    y, predicted, proba = labels_and_predictions(part, task, classes)
    classes = classes or sorted(pd.unique(part["label"]).tolist(), key=str)
    return {"rows": float(len(part)), **score_predictions(task, y, predicted, proba, classes)}


def _clearly_worse(policy: RolloutPolicy, live_c: dict[str, float], live_p: dict[str, float]) -> bool:
    """Worse than production beyond ``z`` standard errors on at least ``min_labelled_at_budget`` rows."""
    rows = int(min(live_c["rows"], live_p["rows"]))
    if rows < policy.min_labelled_at_budget or policy.metric not in live_c or policy.metric not in live_p:
        return False
    return degradation(
        policy.metric,
        live_c[policy.metric],
        int(live_c["rows"]),
        live_p[policy.metric],
        int(live_p["rows"]),
        margin=policy.max_degradation,
        z=policy.z,
    ).degraded


_ANSWERS = ("prediction_id", "ts", "version", "role", "prediction", "probability", "score")


def _judge_canary(
    workspace: Workspace,
    policy: RolloutPolicy,
    production: ModelVersion,
    canary: ModelVersion,
    now: datetime,
    root: Path,
) -> RolloutDecision:
    model = policy.model
    started = _canary_started(workspace, model, canary.version)
    # the paired judge re-predicts from the logged inputs; the live one needs the answers only
    columns = None if policy.judge == "paired" else _ANSWERS
    frame = labelled_predictions(root, model, since_segment=id_floor(started), columns=columns)
    if not frame.empty:
        frame = frame[pd.to_datetime(frame["ts"], utc=True) >= pd.Timestamp(started)]
    served = served_versions(workspace, model, [canary.version], known=[canary], statistics=False)
    info = served[canary.version]
    if frame.empty:
        live_c, live_p = {"rows": 0.0}, {"rows": 0.0}
    else:
        live_c = _live(frame, canary.version, info.task, info.classes)
        live_p = _live(frame, production.version, info.task, info.classes)
    over_budget = now - started >= policy.budget_td
    if policy.judge == "paired" and not frame.empty:
        paired = _paired(workspace, frame, production, canary, info.task, info.classes, policy.metric)
        if paired is not None:
            return _judge_paired(workspace, policy, production, canary, started, over_budget, paired)
    labelled, baseline_rows = int(live_c["rows"]), int(live_p["rows"])
    evidence = {"since": started.isoformat(), "canary": live_c, "production": live_p}
    early = min(labelled, baseline_rows) < policy.min_labelled and not over_budget
    if early and not _clearly_worse(policy, live_c, live_p):
        return RolloutDecision(
            model,
            "wait",
            canary.version,
            f"v{canary.version}: {labelled} labelled canary and {baseline_rows} production predictions "
            f"of {policy.min_labelled} needed",
            evidence,
        )
    enough = min(labelled, baseline_rows) >= policy.min_labelled_at_budget
    if not enough or policy.metric not in live_c or policy.metric not in live_p:
        reason = (
            f"canary v{canary.version} rolled back: budget {policy.budget} passed with {labelled} labelled "
            f"canary and {baseline_rows} production predictions (no evidence, no promotion)"
        )
        workspace.remove_alias(model, "canary", reason=reason)
        return RolloutDecision(model, "rollback", canary.version, reason, evidence)
    c, p = live_c[policy.metric], live_p[policy.metric]
    # the decision itself compares the two estimates: "not significantly worse" would promote a
    # canary that trails production on every sample too small to prove it
    verdict = degradation(policy.metric, c, labelled, p, baseline_rows, margin=policy.max_degradation, z=0)
    direction = "lower" if policy.metric in LOWER_IS_BETTER else "higher"
    numbers = (
        f"{policy.metric} {c:.4f} on {labelled} labelled canary predictions vs production "
        f"v{production.version} {p:.4f} on {int(live_p['rows'])} "
        f"({direction} is better, allowed {policy.max_degradation:g} worse)"
    )
    if verdict.degraded:
        reason = f"canary v{canary.version} rolled back: {numbers}"
        workspace.remove_alias(model, "canary", reason=reason)
        return RolloutDecision(model, "rollback", canary.version, reason, evidence)
    reason = f"canary v{canary.version} promoted: {numbers}"
    workspace.promote(model, canary.version, "production", reason=reason)
    workspace.remove_alias(model, "canary", reason=f"v{canary.version} is production now")
    return RolloutDecision(model, "promote", canary.version, reason, evidence)


def _fitted_columns(model: Any, x: pd.DataFrame) -> pd.DataFrame:
    """``x`` with the columns ``model`` was fitted on, in that order (as they are when it names none)."""
    names = getattr(model, "feature_names_in_", None)
    return x[list(names)] if names is not None else x


def _predict(model: Any, x: pd.DataFrame, task: str, classes: list[Any] | None) -> tuple[Any, Any]:
    """Labels (or values) and, for a binary model, the probabilities of ``classes`` in that order."""
    predicted = np.asarray(model.predict(x))
    proba = None
    if task == "classification" and classes and len(classes) == 2 and hasattr(model, "predict_proba"):
        order = [str(c) for c in getattr(model, "classes_", classes)]
        if sorted(order) == sorted(str(c) for c in classes):
            p = np.asarray(model.predict_proba(x), dtype=float)
            proba = p[:, [order.index(str(c)) for c in classes]]
    return predicted, proba


def _row_losses(
    metric: str, task: str, classes: list[Any] | None, y: Any, predicted: Any, proba: Any
) -> np.ndarray:
    """One loss per row, of the kind ``metric`` averages (or ranks, for ROC-AUC: the Brier score)."""
    if task == "regression":
        err = y.astype(float) - predicted.astype(float)
        return np.asarray(err**2 if metric in ("rmse", "mse") else np.abs(err))
    if proba is not None and classes and metric in ("roc_auc", "log_loss", "brier"):
        positive = np.asarray([str(v) == str(classes[1]) for v in y], dtype=float)
        s = np.clip(proba[:, 1], 1e-15, 1 - 1e-15)
        if metric == "log_loss":
            return np.asarray(-(positive * np.log(s) + (1 - positive) * np.log(1 - s)))
        return np.asarray((positive - s) ** 2)
    return wrong_answers(predicted, y)


@dataclass(frozen=True)
class _Paired:
    """Both versions on the same labelled rows: their metrics and the per-row loss difference."""

    rows: int
    canary: dict[str, float]
    production: dict[str, float]
    difference: float  # mean of candidate loss - production loss (negative: the candidate is better)
    se: float


def _paired(
    workspace: Workspace,
    frame: pd.DataFrame,
    production: ModelVersion,
    canary: ModelVersion,
    task: str,
    classes: list[Any] | None,
    metric: str,
) -> _Paired | None:
    """Re-predict every labelled row since the canary started with both versions (None when the
    logged inputs do not fit a version, e.g. a column it needs was not logged: judge live then)."""
    part = frame[frame["label"].notna() & frame["version"].isin([production.version, canary.version])]
    if part.empty:
        return _Paired(0, {"rows": 0.0}, {"rows": 0.0}, 0.0, math.inf)
    x = logged_inputs(part)
    y = labels_and_predictions(part, task, classes)[0]
    classes = classes or sorted(pd.unique(part["label"]).tolist(), key=str)
    scores, losses = [], []
    for version in (canary, production):
        model = workspace.load_artifact(version.artifact_id, shared=True)
        try:
            predicted, proba = _predict(model, _fitted_columns(model, x), task, classes)
        except (KeyError, ValueError, TypeError):
            return None
        scores.append({"rows": float(len(part)), **score_predictions(task, y, predicted, proba, classes)})
        losses.append(_row_losses(metric, task, classes, y, predicted, proba))
    d = losses[0] - losses[1]
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
    return _Paired(len(part), scores[0], scores[1], float(d.mean()), se)


def _judge_paired(
    workspace: Workspace,
    policy: RolloutPolicy,
    production: ModelVersion,
    canary: ModelVersion,
    started: datetime,
    over_budget: bool,
    paired: _Paired,
) -> RolloutDecision:
    model, n = policy.model, paired.rows
    evidence = {
        "since": started.isoformat(),
        "canary": paired.canary,
        "production": paired.production,
        "paired": {"rows": n, "loss_difference": paired.difference, "se": paired.se},
    }
    early = n >= policy.min_labelled_at_budget and paired.se < math.inf
    clear = early and abs(paired.difference) > policy.z * paired.se and paired.difference != 0
    if n < policy.min_labelled and not over_budget and not clear:
        return RolloutDecision(
            model,
            "wait",
            canary.version,
            f"v{canary.version}: {n} labelled rows since the canary started of {policy.min_labelled} needed",
            evidence,
        )
    if n < policy.min_labelled_at_budget or policy.metric not in paired.canary:
        reason = (
            f"canary v{canary.version} rolled back: budget {policy.budget} passed with {n} labelled rows "
            "(no evidence, no promotion)"
        )
        workspace.remove_alias(model, "canary", reason=reason)
        return RolloutDecision(model, "rollback", canary.version, reason, evidence)
    c, p = paired.canary[policy.metric], paired.production[policy.metric]
    direction = "lower" if policy.metric in LOWER_IS_BETTER else "higher"
    numbers = (
        f"{policy.metric} {c:.4f} vs production v{production.version} {p:.4f} on the same {n} labelled "
        f"rows ({direction} is better); mean loss difference {paired.difference:+.4f} "
        f"± {paired.se:.4f}"
    )
    if clear:
        worse = paired.difference > 0
        numbers += f", beyond {policy.z:g} standard errors"
    else:
        worse = degradation(policy.metric, c, n, p, n, margin=policy.max_degradation, z=0).degraded
        numbers += f", allowed {policy.max_degradation:g} worse"
    if worse:
        reason = f"canary v{canary.version} rolled back: {numbers}"
        workspace.remove_alias(model, "canary", reason=reason)
        return RolloutDecision(model, "rollback", canary.version, reason, evidence)
    reason = f"canary v{canary.version} promoted: {numbers}"
    workspace.promote(model, canary.version, "production", reason=reason)
    workspace.remove_alias(model, "canary", reason=f"v{canary.version} is production now")
    return RolloutDecision(model, "promote", canary.version, reason, evidence)
