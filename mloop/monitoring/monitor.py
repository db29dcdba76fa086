"""``monitor(workspace, model)``: the prediction log and its delayed labels, measured window by window
against the training statistics of the version that served each window, and recorded.

Each call is one ``monitor/<model>`` run in the metadata store: one step whose input is the served
model's artifact and whose output is the :class:`MonitorReport`, with the per-window metrics logged
(step = window index). So the lineage of a model version leads to every verdict made about it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from mloop.entities import ModelVersion, utcnow
from mloop.errors import DataError, NotFoundError
from mloop.monitoring.log import LogHealth, labelled_predictions
from mloop.monitoring.windows import WindowResult, parse_window, score_window, split_windows
from mloop.validation.stats import Statistics
from mloop.workspace import Workspace

__all__ = ["MonitorReport", "ServedVersion", "monitor", "served_versions"]


@dataclass
class MonitorReport:
    """Every window of a model's log, measured; what triggers and rollouts read."""

    __mloop_artifact__: ClassVar[str] = "monitor_report"

    model: str
    window: str
    windows: list[WindowResult]
    generated_at: str
    run_id: str | None = None
    deployments: list[dict[str, Any]] = field(default_factory=list)
    # what reading the log worked around: quarantined_segments, uncastable_values,
    # unmatched_labels, conflicting_labels (see monitoring.log.LogHealth)
    log_health: dict[str, int] = field(default_factory=dict)
    # per feature view of the served version's feature service: last materialization and its age
    feature_freshness: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> list[WindowResult]:
        return [w for w in self.windows if w.complete]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), default=str).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> MonitorReport:
        d = json.loads(data)
        d["windows"] = [WindowResult(**w) for w in d["windows"]]
        return cls(**d)


@dataclass
class ServedVersion:
    """What monitoring needs to know about one served version."""

    version: ModelVersion
    reference: Statistics | None
    task: str
    label: str
    classes: list[Any] | None


def served_versions(
    workspace: Workspace,
    model: str,
    versions: list[int],
    *,
    known: Sequence[ModelVersion] = (),
    statistics: bool = True,
) -> dict[int, ServedVersion]:
    """Signature and training statistics of each version that answered requests (``known``: versions
    the caller has just read, which are not asked for again; ``statistics=False``: the signature
    alone, for callers that score answers and compare no distributions)."""
    out: dict[int, ServedVersion] = {}
    at_hand = {v.version: v for v in known if v.name == model}
    for number in versions:
        try:
            v = at_hand.get(number) or workspace.model_version(f"{model}:{number}")
        except NotFoundError:
            continue
        output = v.signature.get("output", {})
        stats_id = v.signature.get("training_statistics")
        reference = workspace.load_artifact(stats_id, shared=True) if stats_id and statistics else None
        out[number] = ServedVersion(
            v,
            reference,
            output.get("task", "classification"),
            output.get("label", "label"),
            output.get("classes"),
        )
    return out


def _window_text(window: int | timedelta) -> str:
    return f"{window} rows" if isinstance(window, int) else str(window)


def measure(
    workspace: Workspace,
    model: str,
    frame: pd.DataFrame,
    window: int | timedelta,
    *,
    slices: list[str] | None = None,
    share_threshold: float = 0.5,
    after: int = -1,
    complete_only: bool = False,
) -> list[WindowResult]:
    """Score the windows of ``frame`` (a labelled log) against their serving version's statistics;
    only those numbered above ``after`` (and only complete ones if ``complete_only``)."""
    info = served_versions(workspace, model, sorted({int(v) for v in frame["version"].unique()}))
    if not info:
        raise NotFoundError(
            f"none of the versions in {model!r}'s prediction log is registered", field="model"
        )
    results = []
    for i, (lo, hi, complete) in enumerate(split_windows(frame, window)):
        if i <= after or (complete_only and not complete):
            continue
        part = frame.iloc[lo:hi]
        main = info.get(int(part["version"].mode().iloc[0])) or next(iter(info.values()))
        results.append(
            score_window(
                part,
                reference=main.reference,
                task=main.task,
                label=main.label,
                classes=main.classes,
                slices=slices,
                index=i,
                complete=complete,
                share_threshold=share_threshold,
            )
        )
    return results


def monitor(
    workspace: Workspace,
    model: str,
    *,
    window: str | int | timedelta = 1000,
    log_dir: Path | None = None,
    slices: list[str] | None = None,
    share_threshold: float = 0.5,
    store: bool = True,
) -> MonitorReport:
    """Measure ``model``'s prediction log window by window and (``store``) record the result."""
    size = parse_window(window)
    root = log_dir or workspace.prediction_log_dir
    frame = labelled_predictions(root, model)
    if frame.empty:
        raise DataError(f"model {model!r} has no logged predictions under {root}", field="model")
    windows = measure(workspace, model, frame, size, slices=slices, share_threshold=share_threshold)
    history = workspace.registry.history(model)
    report = MonitorReport(
        model,
        _window_text(size),
        windows,
        utcnow().isoformat(),
        deployments=[
            {
                "at": e.at.isoformat(),
                "alias": e.alias,
                "action": e.action,
                "version": e.to_version,
                "reason": e.reason,
            }
            for e in history
        ],
        log_health=frame.attrs.get("log_health", LogHealth()).to_dict(),
    )
    report.log_health["labels_outside_classes"] = _labels_outside_classes(workspace, model, frame)
    latest = _newest_registered(workspace, model, frame)
    report.feature_freshness = _feature_freshness(workspace, latest)
    if store:
        report.run_id = _record(workspace, model, report, latest)
    return report


def _labels_outside_classes(workspace: Workspace, model: str, frame: pd.DataFrame) -> int:
    """Labels none of the serving version's classes: scored as wrong answers (a class the model
    cannot predict is one it gets wrong), and counted so that a report says where its errors came
    from (a new class in the world, or labels from another encoding)."""
    labelled = frame[frame["label"].notna()]
    if labelled.empty:
        return 0
    outside = 0
    versions = sorted({int(v) for v in labelled["version"].unique()})
    for number, served in served_versions(workspace, model, versions, statistics=False).items():
        if served.classes is None:
            continue
        part = labelled.loc[labelled["version"] == number, "label"]
        outside += int((~part.isin(served.classes)).sum())  # by value: 1.0 (a nullable int column) is 1
    return outside


def _newest_registered(workspace: Workspace, model: str, frame: pd.DataFrame) -> ModelVersion:
    """The version that answered the newest logged rows among those registered here: a log may name
    a version this registry does not hold (copied from another workspace, or written by hand), which
    must not refuse the report on the versions it does hold (``measure`` ensured there is one)."""
    for number in reversed(frame["version"].drop_duplicates(keep="last").tolist()):
        try:
            return workspace.model_version(f"{model}:{int(number)}")
        except NotFoundError:
            continue
    raise NotFoundError(f"none of the versions in {model!r}'s prediction log is registered", field="model")


def _feature_freshness(workspace: Workspace, version: ModelVersion) -> dict[str, Any]:
    """Freshness of the online features a version reads by key (empty when it has no feature service)."""
    service = version.signature.get("feature_service")
    return dict(workspace.features.freshness(service=service)) if service else {}


def _record(workspace: Workspace, model: str, report: MonitorReport, version: ModelVersion) -> str:
    metrics = [
        (f"{key}", float(value), w.index)
        for w in report.windows
        for key, value in {
            **w.metrics,
            "rows": w.rows,
            "labelled": w.labelled,
            "drift_share": w.drift_share,
        }.items()
        if isinstance(value, int | float) and value == value
    ]
    run = workspace.record_step_run(
        f"monitor/{model}",
        "monitor",
        params={"model": model, "window": report.window, "version": version.version},
        step_params={"window": report.window},
        inputs={"model": version.artifact_id},
        outputs={"report": report},
        metrics=metrics,
        trigger="monitor",
    )
    return run.id
