"""Evaluating triggers: each kind looks at the world and says whether an event happened, with the
evidence, an idempotency key and parameters for the run.

The key names the event, not the evaluation: ``schedule/2026-12-02T03:00:00+00:00``,
``drift/rainfall/1000/7`` (window 7 of 1,000 rows), a digest of the new files' names. The scheduler
claims keys in the metadata store, so an event starts one run however often it is seen.
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mloop.entities import ModelVersion, TriggerState, id_floor
from mloop.errors import ConfigurationError, NotFoundError, ParameterError, PipelineLoadError
from mloop.monitoring.log import count_logged, labelled_predictions
from mloop.monitoring.monitor import measure, served_versions
from mloop.monitoring.windows import (
    WindowResult,
    degradation,
    labels_and_predictions,
    logged_inputs,
    parse_window,
)
from mloop.orchestration import changepoint
from mloop.orchestration.config import TriggerSpec
from mloop.validation.model import LOWER_IS_BETTER, score_predictions
from mloop.workspace import Workspace

__all__ = ["Firing", "TriggerCheck", "check_trigger", "next_due", "persisted", "validate_trigger"]

log = logging.getLogger(__name__)


@dataclass
class Firing:
    """An event: its key, why it fired, and parameters it adds to the pipeline run."""

    key: str
    evidence: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TriggerCheck:
    """One evaluation of one trigger."""

    result: str
    fired: Firing | None = None
    watermark: dict[str, Any] | None = None
    next_due: datetime | None = None
    # True while what the trigger reads is as it was at this evaluation, so that evaluating it again
    # could not fire nor move its watermark: a scheduler may skip it until then (see Scheduler.tick)
    unchanged: Callable[[], bool] | None = None


def validate_trigger(spec: TriggerSpec, workspace: Workspace, *, first_version_later: bool = False) -> None:
    """Check what only the running system can: the pipeline loads, the watched path exists, the
    monitored model is registered (with ``first_version_later``, when another trigger may train its
    first version, a model not registered yet is accepted: the trigger waits for it)."""
    try:
        _validate(spec, workspace, first_version_later)
    except (NotFoundError, PipelineLoadError) as exc:  # say which trigger: a file may hold hundreds
        if exc.message.startswith("trigger "):
            raise
        raise type(exc)(f"trigger {spec.name!r}: {exc.message}", field=exc.field) from exc


def _validate(spec: TriggerSpec, workspace: Workspace, first_version_later: bool = False) -> None:
    from mloop.core.loader import load_pipeline

    pipeline = load_pipeline(spec.pipeline, workspace=workspace)
    accepted = sorted(inspect.signature(pipeline.fn).parameters)
    for key, value in spec.params.items():  # the run would refuse it, at the first firing
        if key not in accepted:
            raise ConfigurationError(
                f"trigger {spec.name!r}: params.{key} is not a parameter of pipeline {spec.pipeline!r} "
                f"(parameters: {', '.join(accepted)})",
                field=f"params.{key}",
            )
        try:
            pipeline.coerce(key, value)
        except ParameterError as exc:
            raise ConfigurationError(
                f"trigger {spec.name!r}: params.{key}: {exc.message}", field=f"params.{key}"
            ) from None
    if spec.param is not None and spec.param not in accepted:  # the new files would reach no parameter
        raise ConfigurationError(
            f"trigger {spec.name!r}: param {spec.param!r} is not a parameter of pipeline {spec.pipeline!r}, "
            f"so the new files would reach no run (parameters: {', '.join(accepted)})",
            field="param",
        )
    if spec.kind == "new_data" and spec.path is not None and not _exists(spec.path, spec.name):
        raise ConfigurationError(
            f"trigger {spec.name!r}: watched path {spec.path} does not exist", field="path"
        )
    if spec.kind == "new_data" and spec.url is not None:
        import sqlalchemy as sa

        try:
            sa.create_engine(spec.url).dispose()  # a URL it cannot parse, or a driver not installed
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigurationError(
                f"trigger {spec.name!r}: url {spec.url[:200]!r} is not a database URL mloop can open ({exc})",
                field="url",
            ) from None
    if spec.kind in ("drift", "degradation") and spec.model is not None:
        try:
            newest = workspace.registry.get(spec.model)  # NotFoundError names the model
        except NotFoundError:
            if not first_version_later:
                raise
            log.warning(
                "trigger %s: model %r has no version yet; the trigger waits for its first one",
                spec.name,
                spec.model,
            )
            return
        if spec.kind == "degradation":
            check_live_metric(newest, spec.metric, f"trigger {spec.name!r}")


def check_live_metric(version: ModelVersion, metric: str, who: str) -> None:
    """ConfigurationError when ``metric`` cannot judge ``version``'s live predictions (a regression
    model judged by accuracy would never degrade, and its canaries never be promoted)."""
    from mloop.validation.model import live_metric_problem

    output = version.signature.get("output", {})
    task, classes = output.get("task", "classification"), output.get("classes")
    problem = live_metric_problem(metric, task, classes, version.metrics)
    if problem is not None:
        raise ConfigurationError(f"{who}: {problem} ({version.name} v{version.version})", field="metric")


def _exists(path: str, trigger: str) -> bool:
    if "://" not in path:
        return Path(path).expanduser().exists()
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package is not installed
        raise ConfigurationError(f"trigger {trigger!r}: cannot watch {path}: {exc}", field="path") from None
    return bool(fs.exists(root))


def check_trigger(
    spec: TriggerSpec,
    workspace: Workspace,
    state: TriggerState,
    now: datetime,
    *,
    log_dir: Path | None = None,
    monitor_cache: dict[Any, Any] | None = None,
) -> TriggerCheck:
    """Evaluate ``spec`` now, given what it saw before (``state``)."""
    if spec.kind == "manual":
        return TriggerCheck("manual: fires only on request")
    if spec.kind == "schedule":
        return _schedule(spec, state, now)
    if spec.kind == "new_data":
        return _new_files(spec, state) if spec.path is not None else _new_rows(spec, state)
    cache: dict[Any, Any] = monitor_cache if monitor_cache is not None else {}
    return _monitored(spec, workspace, state, log_dir or workspace.prediction_log_dir, cache)


def next_due(spec: TriggerSpec, state: TriggerState, now: datetime) -> datetime | None:
    """When schedule trigger ``spec`` is next due: the stored due time while it was computed from
    ``spec.cron`` (the watermark records the expression), else the expression's next time after
    ``now`` (the file was edited). A due time stored without its expression (by an older mloop) is
    kept only if it is the earlier. None before its first evaluation."""
    from croniter import croniter

    assert spec.cron is not None
    due = state.next_due_at
    if due is None or state.watermark.get("cron") == spec.cron:
        return due
    following: datetime = croniter(spec.cron, now).get_next(datetime)
    return following if "cron" in state.watermark else min(due, following)


def _schedule(spec: TriggerSpec, state: TriggerState, now: datetime) -> TriggerCheck:
    from croniter import croniter

    assert spec.cron is not None
    due = next_due(spec, state, now)
    following = croniter(spec.cron, now).get_next(datetime)
    mark = {"cron": spec.cron}  # what the next due time is computed from
    if due is None:
        return TriggerCheck(f"next run at {following.isoformat()}", watermark=mark, next_due=following)
    if now < due:
        return TriggerCheck(f"next run at {due.isoformat()}", watermark=mark, next_due=due)
    firing = Firing(f"schedule/{due.isoformat()}", {"cron": spec.cron, "due": due.isoformat()})
    return TriggerCheck(f"due at {due.isoformat()}", firing, mark, next_due=following)


def _list_files(spec: TriggerSpec) -> dict[str, list[Any]]:
    assert spec.path is not None
    if "://" not in spec.path:
        root = Path(spec.path).expanduser()
        if not root.exists():
            raise ConfigurationError(
                f"trigger {spec.name!r}: watched path {spec.path} does not exist", field="path"
            )
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        return {
            str(p): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in files
            if fnmatch.fnmatch(p.name, spec.pattern) and not p.name.startswith(".")
        }
    import fsspec

    fs, root_path = fsspec.core.url_to_fs(spec.path)
    found = fs.find(root_path, detail=True)
    protocol = spec.path.split("://", 1)[0]
    return {
        f"{protocol}://{name}": [info.get("size"), str(info.get("mtime") or info.get("LastModified") or "")]
        for name, info in found.items()
        if fnmatch.fnmatch(name.rsplit("/", 1)[-1], spec.pattern)
    }


def _new_files(spec: TriggerSpec, state: TriggerState) -> TriggerCheck:
    seen: dict[str, list[Any]] = state.watermark.get("files", {})
    listed = _list_files(spec)
    # a local file modified within `settle` may still be written: left for a later pass, unseen
    settling = {name for name, sig in listed.items() if _modified_within(sig, spec.settle_s)}
    new = sorted(name for name, sig in listed.items() if seen.get(name) != sig and name not in settling)
    kept = {n: sig for n, sig in listed.items() if n not in settling}
    kept.update({n: seen[n] for n in settling if n in seen})  # the version seen whole before
    watermark = {"files": kept}
    if not new:
        held = f"; {len(settling)} still being written" if settling else ""
        return TriggerCheck(
            f"no new files under {spec.path} ({len(listed)} seen{held})",
            watermark=watermark,
            # while a file settles, the next pass must look again even if nothing else changes
            unchanged=None if settling else lambda: _list_files(spec) == listed,
        )
    digest = hashlib.sha256("\n".join(f"{n}:{listed[n]}" for n in new).encode()).hexdigest()[:24]
    params = {spec.param: new if len(new) > 1 else new[0]} if spec.param else {}
    evidence = {"path": spec.path, "new_files": new[:1000], "count": len(new)}
    return TriggerCheck(
        f"{len(new)} new file(s) under {spec.path}", Firing(f"files/{digest}", evidence, params), watermark
    )


def _modified_within(sig: list[Any], seconds: float) -> bool:
    """Whether a listed file's modification time is under ``seconds`` old: local files' is
    nanoseconds; an fsspec listing's is text, epoch seconds (``file://``) or a time (S3's
    ``LastModified``). One without a readable time is not held."""
    mtime = sig[1] if len(sig) > 1 else None
    if seconds <= 0 or mtime is None:
        return False
    if isinstance(mtime, int):
        return time.time_ns() - mtime < seconds * 1e9
    at = _listed_time(str(mtime))
    return at is not None and time.time() - at < seconds


def _listed_time(text: str) -> float | None:
    """An fsspec listing's modification time as epoch seconds (None: none, or unreadable)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def _new_rows(spec: TriggerSpec, state: TriggerState) -> TriggerCheck:
    import sqlalchemy as sa

    assert spec.url and spec.table and spec.column
    engine = sa.create_engine(spec.url)
    try:
        table = sa.Table(spec.table, sa.MetaData(), autoload_with=engine)
        if spec.column not in table.c:
            raise ConfigurationError(
                f"trigger {spec.name!r}: table {spec.table} has no column {spec.column!r}", field="column"
            )
        col = table.c[spec.column]
        last = state.watermark.get("value")
        query = sa.select(sa.func.max(col), sa.func.count()).select_from(table)
        if last is not None:
            query = query.where(col > last)
        with engine.connect() as conn:
            newest, count = conn.execute(query).one()
    except sa.exc.NoSuchTableError as exc:
        raise ConfigurationError(
            f"trigger {spec.name!r}: no table {spec.table!r} at {spec.url}", field="table"
        ) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigurationError(
            f"trigger {spec.name!r}: cannot read {spec.table}: {exc}", field="table"
        ) from exc
    finally:
        engine.dispose()
    if not count:
        return TriggerCheck(f"no rows in {spec.table} past {spec.column} = {last}")
    newest = newest.isoformat() if hasattr(newest, "isoformat") else newest
    evidence = {"table": spec.table, "column": spec.column, "after": last, "until": newest, "rows": count}
    params = {spec.param: {"after": last, "until": newest}} if spec.param else {}
    firing = Firing(f"rows/{spec.table}/{last}/{newest}", evidence, params)
    return TriggerCheck(f"{count} new row(s) in {spec.table}", firing, {"value": newest})


def _monitored(
    spec: TriggerSpec,
    workspace: Workspace,
    state: TriggerState,
    root: Path,
    cache: dict[Any, Any],
) -> TriggerCheck:
    """``drift`` and ``degradation`` judge the production version on its own traffic: windows of
    ``spec.window`` over the rows it answered since it took the alias (canary and shadow rows, and
    rows older versions answered, say nothing about it)."""
    model = spec.model
    assert model is not None
    try:
        holders = {a: v.version for v in workspace.registry.versions(model) for a in v.aliases}
    except NotFoundError:
        holders = {}
    if "production" not in holders:
        return TriggerCheck(f"{model} has no production version yet")
    if "canary" in holders:
        # nothing to judge until the canary is decided: passes skip this trigger while no alias moves
        return TriggerCheck(
            f"waiting: {model} v{holders['canary']} is in canary rollout",
            unchanged=lambda: workspace.registry.aliases(model) == holders,
        )
    version = holders["production"]
    since = _held_since(workspace, model, version)
    held = since.isoformat() if since else ""
    mark = state.watermark
    same = (mark.get("window"), mark.get("version"), mark.get("held")) == (str(spec.window), version, held)
    last = int(mark.get("index", -1)) if same else -1
    key = (model, str(spec.window), version, last)
    size = parse_window(spec.window)
    floor = id_floor(since) if since else None
    quiet_until: int | None = None
    if isinstance(size, int):
        rows_logged = count_logged(root, model, since_segment=floor)
        if rows_logged < (last + 2) * size:
            # too few rows logged for a new complete window: no need to read them, and nothing can
            # fire before the log has grown by the rest of that window (the scheduler waits for it)
            cache.setdefault(key, [])
            quiet_until = count_logged(root, model) - rows_logged + (last + 2) * size
    if key not in cache:
        served = (model, version, held)  # one read of the log per pass, shared by every trigger
        if served not in cache:
            frame = labelled_predictions(root, model, since_segment=floor)
            if not frame.empty:
                frame = frame[frame["version"] == version]
                frame = window_frame(frame, since.isoformat() if since else None).reset_index(drop=True)
            cache[served] = frame
        frame = cache[served]
        cache[key] = (
            [] if frame.empty else measure(workspace, model, frame, size, after=last, complete_only=True)
        )
    fresh: list[WindowResult] = cache[key]
    if spec.kind == "drift":
        check = _drift(spec, model, version, fresh, last)
    else:
        streak = list(mark.get("streak", [])) if same else []
        acted = int(mark.get("acted", -1)) if same else -1
        rebased = mark.get("rebased") if same else None
        retry = mark.get("retry") if same else None
        # how long recent versions served before they degraded: kept across versions (a cadence)
        lives = [int(n) for n in mark.get("lives", [])]
        scheduled = bool(mark.get("scheduled")) if same else False
        lived = bool(mark.get("lived")) if same else False
        challenged = bool(mark.get("challenged")) if same else False
        logged: pd.DataFrame | None = cache.get((model, version, held)) if fresh else None

        def history() -> pd.DataFrame:
            """The whole labelled log, whichever version answered (read once a pass)."""
            if (model, "history") not in cache:
                cache[(model, "history")] = labelled_predictions(root, model)
            return cache[(model, "history")]

        check = _degradation(
            spec,
            workspace,
            model,
            version,
            fresh,
            streak,
            last,
            logged,
            acted,
            rebased,
            retry,
            cadence=Cadence(lives, scheduled, lived),
            history=history,
            challenged=challenged,
        )
    if check.watermark is not None:
        check.watermark["held"] = held  # a version promoted again starts its windows afresh
    if check.fired is not None:
        check.fired.key += f"@{held}"
    elif quiet_until is not None and not fresh:
        # the log must grow by the rest of a window first; a count taken after another scheduler
        # promoted or evaluated can only be larger against this bound (it evaluates sooner)
        bound = quiet_until
        check.unchanged = lambda: count_logged(root, model) < bound
    return check


def _held_since(workspace: Workspace, model: str, version: int) -> datetime | None:
    moves = [e for e in workspace.registry.history(model, "production") if e.to_version == version]
    return moves[-1].at if moves else None


def _drift(spec: TriggerSpec, model: str, version: int, fresh: list[WindowResult], last: int) -> TriggerCheck:
    watermark = {
        "window": str(spec.window),
        "version": version,
        "index": max([last, *(w.index for w in fresh)]),
    }
    drifted = [w for w in fresh if w.drift_share >= spec.share]
    if not drifted:
        shares = ", ".join(f"{w.drift_share:.2f}" for w in fresh[-3:]) or "no new complete window"
        return TriggerCheck(f"v{version}: no dataset drift ({shares})", watermark=watermark)
    w = drifted[0]
    evidence = {
        "model": model,
        "version": version,
        "window": {k: getattr(w, k) for k in ("index", "start", "end", "rows", "drift_share", "drifted")},
        "feature_scores": w.feature_scores,
        "share_threshold": spec.share,
    }
    result = (
        f"v{version}: drift in window {w.index}: {len(w.drifted)} feature(s) drifted "
        f"(share {w.drift_share:.2f})"
    )
    firing = Firing(f"drift/{model}/v{version}/{spec.window}/{w.index}", evidence, {"since": w.start})
    return TriggerCheck(result, firing, watermark)


def _degradation(
    spec: TriggerSpec,
    workspace: Workspace,
    model: str,
    version: int,
    fresh: list[WindowResult],
    streak: list[dict[str, Any]],
    last: int,
    frame: pd.DataFrame | None = None,
    acted: int = -1,
    rebased: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    cadence: Cadence | None = None,
    history: Callable[[], pd.DataFrame] | None = None,
    challenged: bool = False,
) -> TriggerCheck:
    """Fire when a complete window falls below the production version's baseline beyond noise (its
    hold-out score: its validation on the newest rows it was trained on), or (``detector``) when its
    live loss rose at a change point followed by ``min_rows`` labelled rows, or (``trend_z``) when it
    rises steadily. The run then trains on the rows since the change point (or since the degraded
    streak began; the newest rows for a trend). While a change point has fewer than ``min_rows`` rows
    after it nothing fires: a run then would train across the change.

    Once the trigger has fired and the version is still in production (its candidate was refused),
    the level it was at when it fired is its baseline (``rebased``): retraining did not beat it, so it
    is what the current regime allows, and the same shortfall does not start run after run. A run
    that trained on few rows of a new regime (``retry``) is tried once more, as a version trained on
    few rows is refitted, once the regime has ``REFRESH`` times as many rows (at most ``max_rows``).

    With ``cadence`` (drift that never stops: :class:`Cadence`), the version is also retrained once it
    has served ``spec.cadence`` times the median life of the last versions that degraded."""
    cadence = cadence or Cadence([], False, False)
    info = served_versions(workspace, model, [version])[version]
    baseline = info.version.metrics.get(spec.metric)
    if baseline is None and spec.threshold is None:
        raise ConfigurationError(
            f"trigger {spec.name!r}: {model} v{version} has no {spec.metric!r} metric to compare with "
            "(set 'threshold' or choose another metric)",
            field="metric",
        )
    baseline_rows = int(info.version.tags.get("evaluated_rows", 1000))
    holdout_rows = baseline_rows
    trained_rows = int(info.version.tags.get("trained_rows", 0))
    if rebased is not None:
        baseline, baseline_rows = float(rebased["value"]), int(rebased["rows"])
    size = parse_window(spec.window)
    judged_to = last
    for w in fresh:
        if w.labelled < max(spec.min_labelled, w.rows // 2):
            break  # labels are late: wait for them rather than judge on a few
        judged_to = w.index
        if spec.metric not in w.metrics:
            # labelled, but the metric is undefined here (ROC-AUC of a window of one class): the
            # window neither degrades nor clears the streak; waiting for it would wait forever
            continue
        verdict = degradation(
            spec.metric,
            w.metrics[spec.metric],
            w.labelled,
            baseline if baseline is not None else float(spec.threshold or 0),
            baseline_rows,
            margin=spec.margin,
            z=spec.z,
            threshold=spec.threshold,
        )
        change = _change_point(spec, info, frame, w.end, size, w.index, acted)
        # a change point too recent to train on: wait for its rows, rather than refit across it
        pending = change is not None and change.get("pending", False)
        change = None if pending else change
        if change is None and acted != -2 and not pending:
            change = _grown(spec, holdout_rows, frame, size, w.index, trained_rows)
        if change is None and not pending and retry is not None:
            change = _retry(frame, w.end, size, w.index, retry, _losses(info), spec.z)
        if change is None and not pending:
            change = _trend(spec, info, frame, w.end, size, w.index, acted)
        if change is None and not pending and not challenged:
            change = _challenger(spec, workspace, info, frame, size, w.index, acted, history)
        if change is None and not pending and not verdict.degraded:
            upto = _labelled_upto(frame, w.end, size, w.index) if frame is not None else None
            change = cadence.due(spec, upto, _losses(info))
        if not verdict.degraded:
            streak = []
            if change is None:
                continue
        else:
            streak.append(
                {"index": w.index, "start": w.start, "value": verdict.value, "limit": verdict.limit}
            )
        if not pending and (change is not None or len(streak) >= spec.windows):
            if change is None or change.get("trend") or change.get("cadence"):
                # no change point found it: estimate where the regime began, and wait for its rows
                regime = _regime(spec, info, frame, w.end, size, w.index, acted)
                if regime is not None and regime.get("pending"):
                    continue
                if regime is not None and change is None:
                    change = regime
                elif regime is not None and change is not None:  # a trend restarts after its rows
                    change = {
                        **change,
                        "start": regime["start"],
                        "rows_since": regime["rows_since"],
                        "regime_row": regime["row"],
                    }
            since = change["start"] if change is not None else streak[0]["start"]
            if verdict.degraded or change is None:
                detail = verdict.detail
            elif change.get("cadence"):
                detail = (
                    f"v{version} has served {change['served']} labelled rows; the last versions "
                    f"degraded after {', '.join(str(n) for n in change['lives'])}: retrain on schedule, "
                    "before it degrades too"
                )
            elif change.get("challenger"):
                more = (
                    f", more than the {trained_rows} v{version} was trained on"
                    if trained_rows and change["fitted"] > trained_rows
                    else ""
                )
                detail = (
                    f"a challenger (v{version}'s own recipe refitted on the newest {change['fitted']} "
                    f"labelled rows logged before the last window{more}) scored {spec.metric} "
                    f"{change['challenger_score']:.4f} on that window's {change['rows']} labelled rows, "
                    f"v{version} {change['production_score']:.4f} (loss lower by "
                    f"{-change['difference']:.4f} a row, {change['z']:.1f} standard errors): a model "
                    "of the newest rows is better"
                )
            elif change.get("trend"):
                detail = (
                    f"loss rising steadily: {change['rise']:+.4f} over {change['rows']} labelled rows "
                    f"(slope {change['z']:.1f} standard errors)"
                )
            elif change.get("retry"):
                detail = (
                    f"v{version} is still in production: the run on about {change['trained_rows']} "
                    "rows of this regime did not replace it (its candidate was refused, or it failed); "
                    f"{change['rows_since']} labelled rows of it are there now: retrain once on them"
                )
            elif change.get("refresh"):
                detail = (
                    f"v{version} was trained on about {change['trained_rows']} rows; "
                    f"{change['rows_since']} labelled rows of its regime are there now: refit once on them"
                )
            else:
                detail = (
                    f"loss rose from {change['before']:.4f} to {change['after']:.4f} at a change point "
                    f"{change['rows_since']} labelled rows ago (ADWIN, delta {spec.delta:g})"
                )
            evidence = {
                "model": model,
                "version": version,
                "metric": spec.metric,
                "baseline": verdict.baseline,
                "limit": verdict.limit,
                "windows": streak,
                "change_point": change,
                "detail": detail,
            }
            watermark: dict[str, Any] = {
                "window": str(spec.window),
                "version": version,
                "index": w.index,
                "streak": [],
                "acted": (-2 if change.get("refresh") else change["row"]) if change is not None else acted,
                **cadence.fired(change, frame, w, size),
                # one challenger run a version: if its candidate did not replace it, the other tests
                # (degradation, change point, trend, cadence) judge it from then on
                "challenged": challenged or bool(change is not None and change.get("challenger")),
            }
            if baseline is not None and spec.threshold is None:
                worse = max if spec.metric in LOWER_IS_BETTER else min
                watermark["rebased"] = {"value": worse(baseline, verdict.value), "rows": w.labelled}
            max_rows = int(spec.params.get("max_rows") or 0)
            if change is not None and "rows_since" in change and not change.get("retry") and max_rows:
                trained = min(max(int(change["rows_since"]), spec.min_rows), max_rows)
                if trained * 2 <= max_rows:
                    need = min(REFRESH * trained, max_rows)
                    start = 0 if change.get("refresh") else change.get("regime_row", change["row"])
                    fired = len(_labelled_upto(frame, w.end, size, w.index)) if frame is not None else 0
                    watermark["retry"] = {
                        "row": start,
                        "start": since,
                        "trained": trained,
                        "need": need,
                        "fired": fired,
                    }
            params: dict[str, Any] = {"since": since}
            if spec.min_rows:
                params["min_rows"] = spec.min_rows
            if change is not None and change.get("challenger"):
                detail += f"; trains on the newest {change['rows_since']} labelled rows"
            elif change is not None and "rows_since" in change and not change.get("refresh"):
                detail += f"; trains on the {change['rows_since']} labelled rows since the change"
            firing = Firing(f"degradation/{model}/v{version}/{spec.window}/{w.index}", evidence, params)
            return TriggerCheck(f"degraded: {detail}", firing, watermark)
    watermark = {
        "window": str(spec.window),
        "version": version,
        "index": judged_to,
        "streak": streak,
        "acted": acted,
        **cadence.state(),
        "challenged": challenged,
    }
    if rebased is not None:
        watermark["rebased"] = rebased
    if retry is not None:
        watermark["retry"] = retry
    text = (
        f"{spec.metric} within bounds" if not streak else f"{len(streak)}/{spec.windows} degraded window(s)"
    )
    if spec.detector != "none" and not changepoint.available():
        text += " (river is not installed: change-point detection is off)"
    if judged_to == last:
        text = "no new labelled window to judge"
    return TriggerCheck(text, watermark=watermark)


REFRESH = 3
CADENCE_LIVES = 1  # lives (versions that degraded) a cadence is estimated from: their median
LIVES_KEPT = 4


@dataclass
class Cadence:
    """A trigger's memory of how long production versions lasted: ``lives``, the labelled rows each of
    the last versions served before the trigger fired on it for degrading (a change point, a trend, a
    degraded window; not a refit). When drift never stops, each version's life is about as long as
    the last ones', and waiting for the next to degrade costs the part of its life spent degraded
    and then detected. ``scheduled``: a scheduled run already fired for the version in production
    (if it is still there, its candidate did not beat it: no second one); ``lived``: its own life is
    recorded (it degraded; if it still serves, retraining did not beat it yet)."""

    lives: list[int]
    scheduled: bool
    lived: bool

    def due(
        self,
        spec: TriggerSpec,
        served: pd.DataFrame | None,
        losses: Callable[[pd.DataFrame], np.ndarray] | None = None,
    ) -> dict[str, Any] | None:
        """A scheduled retrain, when the version has served its share of recent lives. A version that
        degraded itself and still serves (its candidate was refused or rolled back) is scheduled only
        while its shortfall persists: its loss since it fired is still above the first half of its
        life's (:func:`persisted`); after a false alarm it is not."""
        if spec.cadence is None or self.scheduled or served is None or len(self.lives) < CADENCE_LIVES:
            return None
        recent = self.lives[-CADENCE_LIVES:]
        if len(served) < max(spec.min_rows, 1) or len(served) < spec.cadence * float(np.median(recent)):
            return None
        if self.lived:
            life = self.lives[-1]
            if losses is None or len(served) - life < max(spec.min_rows, 1):
                return None
            loss = losses(served)
            if not persisted(loss[: life // 2], loss[life:], spec.z):
                return None
        return {"cadence": True, "row": len(served), "start": "", "served": len(served), "lives": recent}

    def fired(
        self, change: dict[str, Any] | None, frame: pd.DataFrame | None, w: WindowResult, size: Any
    ) -> dict[str, Any]:
        """The watermark's cadence fields after the trigger fired with ``change``."""
        if change is not None and change.get("cadence"):
            return {**self.state(), "scheduled": True}
        if (change is not None and (change.get("refresh") or change.get("retry"))) or self.lived:
            return self.state()
        life = len(_labelled_upto(frame, w.end, size, w.index)) if frame is not None else 0
        return {"lives": [*self.lives, life][-LIVES_KEPT:], "scheduled": self.scheduled, "lived": True}

    def state(self) -> dict[str, Any]:
        return {"lives": self.lives, "scheduled": self.scheduled, "lived": self.lived}


def _grown(
    spec: TriggerSpec,
    holdout_rows: int,
    frame: pd.DataFrame | None,
    size: Any,
    index: int,
    trained_rows: int = 0,
) -> dict[str, Any] | None:
    """A version trained on few rows right after a change point (``min_rows`` of them) is refitted
    once, when its own regime has given ``REFRESH`` times as many labelled rows (at most the trigger's
    ``max_rows``): the first fit reacted fast, the second catches up with a full-sized one."""
    max_rows = int(spec.params.get("max_rows") or 0)
    if spec.detector == "none" or frame is None or frame.empty or not spec.min_rows or not max_rows:
        return None
    # the rows it was fitted on (the longer window, when the pipeline kept it), else as the built-in
    # pipeline sizes them: its newest 20 % held out
    trained = trained_rows or int(holdout_rows / 0.2 * 0.8)
    if trained * 2 > max_rows:
        return None
    part = frame.iloc[: (index + 1) * size] if isinstance(size, int) else frame
    part = part[part["label"].notna()]
    if len(part) < min(REFRESH * trained, max_rows):
        return None
    return {
        "refresh": True,
        "trained_rows": trained,
        "row": 0,
        "start": pd.to_datetime(part["ts"], utc=True).iloc[0].isoformat(),
        "rows_since": len(part),
    }


def _labelled_upto(frame: pd.DataFrame, end: Any, size: Any, index: int) -> pd.DataFrame:
    """The labelled rows of the version's log up to the end of window ``index``."""
    if isinstance(size, int):
        part = frame.iloc[: (index + 1) * size]
    else:
        part = frame[pd.to_datetime(frame["ts"], utc=True) <= pd.Timestamp(end)]
    return part[part["label"].notna()]


def _trend(
    spec: TriggerSpec,
    info: Any,
    frame: pd.DataFrame | None,
    end: Any,
    size: Any,
    index: int,
    acted: int,
) -> dict[str, Any] | None:
    """A steady rise of the live loss since the version took production (or since the trigger last
    acted): slope beyond ``spec.trend_z`` standard errors over at least twice ``min_rows`` labelled
    rows, rising by at least ``margin`` (relative for regression). The run trains on the rows since
    the split where the loss rose most (:func:`_regime`)."""
    if spec.trend_z is None or frame is None or frame.empty:
        return None
    upto = _labelled_upto(frame, end, size, index)
    part = upto.iloc[max(acted, 0) :]
    if len(part) < 2 * max(spec.min_rows, 1):
        return None
    regression = info.task == "regression"
    scale = info.version.metrics.get("mae") if regression else None
    losses = changepoint.row_losses(part, info.task, info.classes, scale)
    slope, z = changepoint.trend(losses)
    rise = slope * (len(losses) - 1)
    start = float(losses.mean()) - rise / 2  # the fitted loss at the first row
    effect = rise / max(start, 1e-12) if regression or spec.metric in LOWER_IS_BETTER else rise
    if z < spec.trend_z or effect < spec.margin:
        return None
    return {
        "trend": True,
        "row": len(upto),
        "start": "",
        "rows": len(part),
        "rise": round(rise, 6),
        "z": round(z, 3),
    }


def _challenger(
    spec: TriggerSpec,
    workspace: Workspace,
    info: Any,
    frame: pd.DataFrame | None,
    size: Any,
    index: int,
    acted: int,
    history: Callable[[], pd.DataFrame] | None = None,
) -> dict[str, Any] | None:
    """Drift that never stops, seen in what production has not learnt: the version's own recipe
    (``sklearn.base.clone`` of its model) fitted on the newest labelled rows logged before window
    ``index`` (at most ``max_rows``, whichever version answered them: ``history``, else the
    version's own) beats it on that window's labelled rows, by more than ``spec.challenger_z``
    standard errors of the paired loss difference and by ``margin`` (relative for regression and
    lower-is-better metrics). It waits for ``min_rows`` rows served since the trigger last acted.

    Why: under continuous drift a version can stay within noise of its own hold-out score while a
    model of the newest rows is far better; no degradation test sees it, and a stationary stream
    never gives a challenger fitted on fewer rows the win. None when the model cannot be cloned or
    fitted on the logged inputs (a custom model, a regime of one class)."""
    if spec.challenger_z is None or frame is None or frame.empty or not isinstance(size, int):
        return None
    from sklearn.base import clone

    from mloop.orchestration.rollout import _fitted_columns, _predict, _row_losses

    window = frame.iloc[index * size : (index + 1) * size]
    window = window[window["label"].notna()]
    before = frame.iloc[: index * size]
    before = before[before["label"].notna()]
    if len(window) < max(spec.min_labelled, 2) or len(before) - max(acted, 0) < max(spec.min_rows, 1):
        return None
    # as many rows as a retrain takes (else as the version was trained on, else four windows)
    limit = int(spec.params.get("max_rows") or 0) or int(info.version.tags.get("trained_rows", 0))
    limit = limit or (4 * size)
    served = before
    if history is not None and len(before) < limit:  # a young version: rows others answered count
        logged = history()
        logged = logged[logged["label"].notna()]
        first = pd.Timestamp(window["ts"].iloc[0])
        served = logged[pd.to_datetime(logged["ts"], utc=True) < first]
    served = served.iloc[-limit:]
    classes = info.classes
    if info.task == "classification" and served["label"].nunique() < 2:
        return None  # one class has nothing to learn (the run it started would refuse it too)
    try:
        from threadpoolctl import threadpool_limits

        model = workspace.load_artifact(info.version.artifact_id, shared=True)
        x_fit = _fitted_columns(model, logged_inputs(served))
        x = _fitted_columns(model, logged_inputs(window))
        y_fit = labels_and_predictions(served, info.task, classes)[0]
        y = labels_and_predictions(window, info.task, classes)[0]
        with threadpool_limits(1):  # a scheduler pass: one core, not a team fighting a busy machine
            probe = clone(model).fit(x_fit, y_fit)
        losses, scores = [], []
        for candidate in (probe, model):
            predicted, proba = _predict(candidate, x, info.task, classes)
            losses.append(_row_losses(spec.metric, info.task, classes, y, predicted, proba))
            scores.append(score_predictions(info.task, y, predicted, proba, classes).get(spec.metric))
    except Exception as exc:  # a user's recipe may fail in any way; the trigger must not fail with it
        log.warning(
            "challenger of %s v%s not fitted: %s: %s",
            info.version.name, info.version.version, type(exc).__name__, exc,
        )  # fmt: skip
        return None
    d = losses[1] - losses[0]  # positive: the challenger is better
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    mean = float(d.mean())
    relative = info.task == "regression" or spec.metric in LOWER_IS_BETTER
    effect = mean / max(float(losses[1].mean()), 1e-12) if relative else mean
    ours, theirs = scores
    if mean <= spec.challenger_z * max(se, 1e-12) or effect < spec.margin or ours is None or theirs is None:
        return None
    # the per-row loss is the metric's only for accuracy-like metrics (0/1), MAE, log-loss, Brier;
    # precision, recall, F1 and ROC-AUC must also agree that the challenger is better by margin
    gain = (theirs - ours) if spec.metric in LOWER_IS_BETTER else (ours - theirs)
    if relative:
        gain /= max(abs(theirs), 1e-12)
    if gain < spec.margin:
        return None
    start = pd.to_datetime(served["ts"], utc=True).iloc[0].isoformat()
    return {
        "challenger": True,
        "row": len(before) + len(window),
        "start": start,
        "rows_since": len(served) + len(window),
        "fitted": len(served),
        "rows": len(window),
        "challenger_score": round(float(ours), 6),
        "production_score": round(float(theirs), 6),
        "difference": round(-mean, 6),
        "z": round(mean / max(se, 1e-12), 3),
    }


def _losses(info: Any) -> Callable[[pd.DataFrame], np.ndarray]:
    """Per-row losses of the version ``info`` describes (:func:`changepoint.row_losses`)."""
    scale = info.version.metrics.get("mae") if info.task == "regression" else None
    return lambda part: changepoint.row_losses(part, info.task, info.classes, scale)


def persisted(before: np.ndarray, since: np.ndarray, z: float) -> bool:
    """Whether the loss on the rows logged since the trigger fired is still above the loss before the
    regime it fired on, by more than ``z`` standard errors (Welch). Only rows the trigger had not seen
    count: the regime's own rows were chosen for being bad."""
    if len(before) < 2 or len(since) < 2:
        return True  # nothing to compare with: the rule as before
    se = math.sqrt(float(before.var(ddof=1)) / len(before) + float(since.var(ddof=1)) / len(since))
    return float(since.mean() - before.mean()) > z * max(se, 1e-12)


def _retry(
    frame: pd.DataFrame | None,
    end: Any,
    size: Any,
    index: int,
    retry: dict[str, Any],
    losses: Callable[[pd.DataFrame], np.ndarray] | None = None,
    z: float = 2.0,
) -> dict[str, Any] | None:
    """The regime of a refused run has grown to ``retry["need"]`` labelled rows: train on them, if the
    shortfall it fired on persisted (:func:`persisted`): after a false alarm the version's loss goes
    back to what it was, the refused candidate said as much, and a second run would be a second
    false alarm."""
    if frame is None or frame.empty:
        return None
    upto = _labelled_upto(frame, end, size, index)
    row = int(retry["row"])
    grown = len(upto) - row
    if grown < int(retry["need"]):
        return None
    fired = int(retry.get("fired") or 0)
    if losses is not None and row > 0 and fired:
        loss = losses(upto)
        if not persisted(loss[:row], loss[fired:], z):
            return None
    return {
        "retry": True,
        "row": int(retry["row"]),
        "start": retry["start"],
        "rows_since": grown,
        "trained_rows": int(retry["trained"]),
    }


def _regime(
    spec: TriggerSpec,
    info: Any,
    frame: pd.DataFrame | None,
    end: Any,
    size: Any,
    index: int,
    acted: int,
) -> dict[str, Any] | None:
    """Where the current regime began when no change point marked it (a degraded window, a trend):
    the split of the version's labelled rows since the trigger last acted that maximises the rise of
    the loss (:func:`changepoint.split`); ``{"pending": True}`` while fewer than ``min_rows`` rows
    followed it. None when the trigger does not size its runs (``min_rows`` = 0)."""
    if not spec.min_rows or frame is None or frame.empty:
        return None
    upto = _labelled_upto(frame, end, size, index)
    offset = max(acted, 0)
    part = upto.iloc[offset:]
    if len(part) < 2:
        return None
    scale = info.version.metrics.get("mae") if info.task == "regression" else None
    losses = changepoint.row_losses(part, info.task, info.classes, scale)
    cut = changepoint.split(losses, lo_rows=min(30, max(1, len(part) // 4)))
    if len(part) - cut < spec.min_rows:
        return {"pending": True}
    return {
        "regime": True,
        "row": offset + cut,
        "start": pd.to_datetime(part["ts"], utc=True).iloc[cut].isoformat(),
        "rows_since": len(part) - cut,
    }


def _change_point(
    spec: TriggerSpec,
    info: Any,
    frame: pd.DataFrame | None,
    end: Any,
    size: Any,
    index: int,
    acted: int,
) -> dict[str, Any] | None:
    """A new change point (after ``acted``) in the rows up to window ``index``, followed by at least
    ``spec.min_rows`` labelled rows (``{"pending": True}`` while fewer followed it); None if there is
    none or detection is off."""
    if spec.detector == "none" or frame is None or frame.empty:
        return None
    part = _labelled_upto(frame, end, size, index)
    if part.empty:
        return None
    lower = spec.metric in LOWER_IS_BETTER and info.task == "regression"
    scale = info.version.metrics.get("mae") if info.task == "regression" else None
    losses = changepoint.row_losses(part, info.task, info.classes, scale)
    found = changepoint.detect(
        losses, delta=spec.delta, min_effect=spec.margin, relative=lower or info.task == "regression"
    )
    if found is None or found.row <= acted:
        return None
    if len(part) - found.row < max(spec.min_rows, 1):
        return {"pending": True, "row": found.row}
    return {
        **found.to_dict(),
        "start": pd.to_datetime(part["ts"], utc=True).iloc[found.row].isoformat(),
        "rows_since": len(part) - found.row,
    }


def window_frame(frame: pd.DataFrame, since: str | None) -> pd.DataFrame:
    """Rows of a labelled log from ``since`` (an ISO timestamp) on."""
    if since is None or frame.empty:
        return frame
    return frame[pd.to_datetime(frame["ts"], utc=True) >= pd.Timestamp(since)]
