"""What the team server (and the CLI, locally) shows about a model beyond its registry rows: where a
version came from (its run, the deployed pipeline version that run ran), the evaluations recorded by
that run, the monitoring windows of its served traffic, and its rollout, with a person's approval or
rejection of a manual one.

Only reports are read back, never models: an artifact is decoded here only when its recorded class is
one of mloop's JSON reports, so no request makes the server unpickle anything.

Under a ``mode = "manual"`` rollout policy the scheduler never moves an alias: the newest validated
version that never served waits for a person (``orchestration.rollout``). Approving it promotes it to
``production`` with the approver's reason (the alias history and the audit trail both record it);
rejecting it records the decision in the audit trail, and the version is no longer pending.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mloop.entities import ArtifactRef, ModelVersion, PipelineVersion, Run, RunStatus, jsonable
from mloop.errors import ConflictError, NotFoundError
from mloop.orchestration.config import load_loop_config
from mloop.orchestration.rollout import _next_candidate
from mloop.stores.base import RunQuery
from mloop.workspace import Workspace

__all__ = [
    "REPORTS",
    "decide_rollout",
    "evaluations",
    "finite",
    "monitoring",
    "rollout_state",
    "version_card",
]

# recorded class → the kind of report it is
REPORTS = {
    "mloop.validation.model.Evaluation": "evaluation",
    "mloop.validation.model.Verdict": "verdict",
    "mloop.validation.infra.InfraReport": "infra_report",
}
_MONITOR_REPORT = "mloop.monitoring.monitor.MonitorReport"
_DECISIONS = ("rollout.approve", "rollout.reject")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def _report(ws: Workspace, art: ArtifactRef) -> Any:
    """A JSON report's content, read by digest (the artifact store verifies the bytes)."""
    return finite(json.loads(ws.artifacts.get(art.digest)))


def _outputs(ws: Workspace, run_id: str) -> list[tuple[str, str, ArtifactRef]]:
    """(step name, output name, artifact) of every output of a run's steps."""
    steps = ws.metadata.list_steps(run_id)
    names = {s.id: s.name for s in steps}
    events = ws.metadata.events(step_run_ids=list(names), kind="output") if steps else []
    return [(names[e.step_run_id], e.name, ws.metadata.get_artifact(e.artifact_id)) for e in events]


def version_card(ws: Workspace, ref: str) -> dict[str, Any]:
    """The version ``ref`` names (``NAME``: the newest, ``NAME:VERSION``, ``NAME@ALIAS``), the run that
    made it and the deployed pipeline version that run ran (its ``pipeline.version`` param), if any:
    lineage model → run → pipeline version → commit."""
    version = ws.model_version(ref)
    run = ws.metadata.get_run(version.run_id) if version.run_id else None
    return {
        "version": version,
        "run": run,
        "pipeline_version": _pipeline_version(ws, run.id) if run is not None else None,
    }


def _pipeline_version(ws: Workspace, run_id: str) -> PipelineVersion | None:
    ref = ws.metadata.get_params(run_id).get("pipeline.version")
    if not isinstance(ref, str) or ":" not in ref:
        return None
    name, _, number = ref.rpartition(":")
    try:
        return ws.pipelines.get_version(name, int(number))
    except (NotFoundError, ValueError):
        return None


def evaluations(ws: Workspace, name: str, version: int) -> dict[str, Any]:
    """The evaluations, validation verdicts and infra checks recorded by the run that made a version."""
    found = ws.registry.get(name, version=version)
    reports = [
        {
            "kind": REPORTS[art.python_type],
            "step": step,
            "output": output,
            "artifact_id": art.id,
            "content": _report(ws, art),
        }
        for step, output, art in (_outputs(ws, found.run_id) if found.run_id else [])
        if art.python_type in REPORTS
    ]
    return {"model": found.name, "version": found.version, "run_id": found.run_id, "evaluations": reports}


def monitoring(ws: Workspace, name: str, run_id: str | None = None) -> dict[str, Any]:
    """A model's monitoring report (its windows: live metrics, drift per feature, slices; and the
    deployments): the latest recorded by ``mloop monitor``, or that of the monitor run ``run_id``."""
    run, art = monitoring_report(ws, name, run_id)
    return {"run": jsonable(run), "report": _report(ws, art)}


def monitoring_report(ws: Workspace, name: str, run_id: str | None = None) -> tuple[Run, ArtifactRef]:
    """The monitor run of ``name`` (the latest succeeded, or ``run_id``) and its report's artifact;
    NotFoundError naming what is missing."""
    ws.registry.versions(name)  # NotFoundError for an unknown model
    if run_id is not None:
        run = ws.metadata.get_run(run_id)
        if run.pipeline != f"monitor/{name}":
            raise NotFoundError(f"run {run.id} is not a monitoring run of {name!r}", field="run_id")
    else:
        query = RunQuery(pipeline=f"monitor/{name}", status=RunStatus.SUCCEEDED, limit=1)
        found = ws.metadata.search_runs(query)
        if not found:
            raise NotFoundError(
                f"model {name!r} has no recorded monitoring (run `mloop monitor {name}`)", field="name"
            )
        run = found[0]
    for _, _, art in _outputs(ws, run.id):
        if art.python_type == _MONITOR_REPORT:
            return run, art
    raise NotFoundError(f"monitoring run {run.id} recorded no report", field="run_id")


def _target(name: str, version: int) -> str:
    return f"model:{name}:{version}"


def _holder(ws: Workspace, name: str, alias: str) -> ModelVersion | None:
    try:
        return ws.model_version(f"{name}@{alias}")
    except NotFoundError:
        return None


def rollout_state(ws: Workspace, name: str) -> dict[str, Any]:
    """The rollout policy, production, canary, the version a manual rollout waits with (None once a
    person rejected it) and the decisions people took, newest first."""
    versions = ws.registry.versions(name)  # NotFoundError for an unknown model
    policy = load_loop_config(ws.config_dir).policy(name)
    production, canary = _holder(ws, name, "production"), _holder(ws, name, "canary")
    known = {_target(name, v.version) for v in versions}
    tokens = ws.tokens
    decisions = [e for action in _DECISIONS for e in tokens.audit_entries(action=action, limit=1000)]
    decisions = sorted((e for e in decisions if e.target in known), key=lambda e: e.id, reverse=True)
    pending = None
    if policy is not None and policy.mode == "manual" and production is not None and canary is None:
        candidate = _next_candidate(ws, name, production, versions)
        if candidate is not None and _target(name, candidate.version) not in {e.target for e in decisions}:
            pending = candidate
    return finite(
        {
            "model": name,
            "policy": policy.model_dump() if policy is not None else None,
            "production": production.version if production else None,
            "canary": canary.version if canary else None,
            "pending": jsonable(pending) if pending else None,
            "decisions": [jsonable(e) for e in decisions],
        }
    )


def decide_rollout(
    ws: Workspace, name: str, version: int, *, approve: bool, who: str, reason: str
) -> dict[str, Any]:
    """Approve (promote to production) or reject the version a manual rollout waits with, in ``who``'s
    name with ``reason``, recorded in the audit trail. ConflictError when it is not waiting."""
    state = rollout_state(ws, name)
    if state["policy"] is None or state["policy"]["mode"] != "manual":
        raise ConflictError(
            f"model {name!r} has no manual rollout policy: its aliases move by the scheduler's rollout "
            "or by an alias move",
            field="name",
        )
    pending = state["pending"]
    if pending is None or pending["version"] != version:
        waiting = f"v{pending['version']} is" if pending else "no version is"
        raise ConflictError(f"{name} v{version} is not waiting for a decision ({waiting})", field="version")
    details: dict[str, Any] = {}
    if approve:
        event = ws.registry.set_alias(name, "production", version, who=who, reason=reason)
        details = {"from_version": event.from_version, "to_version": event.to_version}
    action = "rollout.approve" if approve else "rollout.reject"
    ws.tokens.record_audit(who, action, _target(name, version), reason=reason, details=details)
    return rollout_state(ws, name)
