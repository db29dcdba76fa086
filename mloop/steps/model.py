"""Built-in model steps: evaluate_model → validate_model → infra_check → register_model.

``validate_model`` and ``register_model`` consult the workspace's registry (the current production
model, the next version number) through :func:`mloop.steps.workspace`, so they run with the in-process
executor; ``validate_model`` is never
served from cache because production may have moved since.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pandas as pd

from mloop.core.context import current_input_artifact, current_run_id, log_metrics
from mloop.core.serialize import serialize
from mloop.core.step import step
from mloop.entities import ModelStatus, ModelVersion
from mloop.errors import NotFoundError
from mloop.steps.context import workspace as step_workspace
from mloop.validation.infra import InfraReport, check_serving
from mloop.validation.model import Evaluation, Verdict, validate_evaluation
from mloop.validation.model import evaluate_model as _evaluate
from mloop.validation.schema import infer_schema
from mloop.validation.stats import Statistics
from mloop.workspace import Workspace

__all__ = ["evaluate_model", "infra_check", "model_signature", "register_model", "validate_model"]


def _finite(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


@step
def evaluate_model(model: Any, data: pd.DataFrame, label: str, slices: list | None = None) -> Evaluation:
    """Metrics overall and per slice (e.g. ``["city", "age:0,30,60,120"]``), logged as ``eval_*``."""
    evaluation = _evaluate(model, data, label, slices=slices or [])
    log_metrics(_finite(evaluation.metrics, "eval_"))
    return evaluation


def _holder(workspace: Workspace, params: dict[str, Any]) -> str:
    """Which version holds the alias now: part of validate_model's cache key."""
    ref = f"{params['model_name']}@{params.get('alias', 'production')}"
    try:
        return f"{ref}={workspace.model_version(ref).id}"
    except NotFoundError:
        return f"{ref}=none"


@step(external=_holder)
def validate_model(
    evaluation: Evaluation,
    data: pd.DataFrame,
    model_name: str,
    thresholds: dict | None = None,
    slices: list | None = None,
    alias: str = "production",
) -> Verdict:
    """The gate: candidate vs the model holding ``alias`` on the same data (absolute checks only when
    there is none yet)."""
    ws = step_workspace()
    try:
        current = ws.model_version(f"{model_name}@{alias}")
    except NotFoundError:
        verdict = validate_evaluation(evaluation, None, thresholds)
    else:
        baseline = _evaluate(
            ws.load_artifact(current.artifact_id), data, evaluation.label, slices=slices or []
        )
        verdict = validate_evaluation(evaluation, baseline, thresholds, baseline_version=current.version)
    log_metrics({"blessed": float(verdict.blessed), "failed_checks": float(len(verdict.failed))})
    return verdict


@step
def infra_check(
    model: Any,
    sample: pd.DataFrame,
    label: str = "",
    budget_p99_ms: float = 50.0,
    budget_load_s: float = 10.0,
) -> InfraReport:
    """Load the model in a fresh serving process and measure cold load and single-row latency."""
    _, data = serialize(model, what="model")
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        rows = sample[list(names)]  # exactly what the model takes, as the service will send it
    else:
        rows = sample.drop(columns=[label]) if label in sample.columns else sample
    report = check_serving(
        data, hashlib.sha256(data).hexdigest(), rows, budget_p99_ms=budget_p99_ms, budget_load_s=budget_load_s
    )
    log_metrics(
        {
            k: v
            for k, v in (
                ("cold_load_s", report.cold_load_s),
                ("p50_ms", report.p50_ms),
                ("p99_ms", report.p99_ms),
            )
            if v is not None
        }
    )
    return report


@step
def register_model(
    model: Any,
    model_name: str,
    evaluation: Evaluation,
    verdict: Verdict,
    infra: InfraReport,
    training: Statistics,
    first_alias: str = "production",
    compile: bool = True,
) -> dict:
    """Register the model with its signature; ``rejected`` unless blessed and infra-checked. The first
    registered version takes ``first_alias``; later ones wait for a rollout or a promotion.
    ``compile``: also store the compiled serving form where it proves equal (the onnx extra)."""
    ws = step_workspace()
    status = ModelStatus.REGISTERED if verdict.blessed and infra.passed else ModelStatus.REJECTED
    signature = model_signature(ws, model, training, evaluation.label, evaluation.task)
    reasons = [c.detail for c in verdict.failed] + ([infra.error] if infra.error else [])
    artifact = current_input_artifact("model") or ws.store_artifact(model)  # the exact bytes training wrote
    same = _already_registered(ws, model_name, artifact.digest)
    if same is not None:  # the same bytes are already a version: registering is idempotent
        return {
            "name": model_name,
            "version": same.version,
            "status": same.status.value,
            "alias": None,
            "reasons": reasons,
        }
    version = ws.register_model(
        model_name,
        artifact,
        signature=signature,
        metrics=evaluation.metrics,
        run_id=current_run_id(),
        status=status,
        compile=compile and status == ModelStatus.REGISTERED,
        tags={
            "blessed": verdict.blessed,
            "infra_passed": infra.passed,
            "rejected_because": reasons,
            "evaluated_rows": evaluation.rows,  # how sure the metrics are: monitoring's noise allowance
            "trained_rows": training.rows,  # a version fitted on few rows is refitted when more come
        },
    )
    alias = None
    if status == ModelStatus.REGISTERED and first_alias:
        try:
            ws.model_version(f"{model_name}@{first_alias}")
        except NotFoundError:
            ws.promote(model_name, version.version, first_alias, reason="first validated version")
            alias = first_alias
    log_metrics(
        {"registered_version": float(version.version), "rejected": float(status == ModelStatus.REJECTED)}
    )
    return {
        "name": model_name,
        "version": version.version,
        "status": status.value,
        "alias": alias,
        "reasons": reasons,
    }


def model_signature(
    ws: Workspace, model: Any, training: Statistics, label: str, task: str | None = None
) -> dict[str, Any]:
    """What a version promises its callers: input schema (the training range itself), output (task,
    label, classes) and the training statistics (stored), from which serving validates and skew is
    measured. ``task`` defaults to classification when the model has ``classes_``."""
    inputs = Statistics(
        {k: v for k, v in training.columns.items() if k != label}, training.rows, training.source
    )
    classes = getattr(model, "classes_", None)
    return {
        "inputs": infer_schema(inputs, range_margin=0, numeric_text=False).to_dict(),
        "output": {
            "task": task or ("classification" if classes is not None else "regression"),
            "label": label,
            "classes": classes.tolist() if classes is not None else None,
        },
        "training_statistics": ws.store_artifact(training).id,
    }


def _already_registered(ws: Workspace, name: str, digest: str) -> ModelVersion | None:
    try:
        versions = ws.registry.versions(name)
    except NotFoundError:
        return None
    for v in versions:
        if ws.metadata.get_artifact(v.artifact_id).digest == digest:
            return v
    return None
