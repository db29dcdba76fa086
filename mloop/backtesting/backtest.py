"""``backtest``: replay a time-ordered table through the continuous-training loop and compare it with
a model left alone (``static``) and with retraining before every window (``every_window``).

Protocol (the one the bundled dataset's survey uses): rows in time order; the first ``initial``
fraction trains the first model (through the retraining pipeline, so it is validated and registered
like any other); the rest is replayed in ``windows`` equal windows. ``static`` is that first version
scoring every window. ``every_window`` refits the same kind of model on the newest ``initial``-sized
slice before each window. ``loop`` is whatever the service answered while the scheduler's triggers,
the pipeline's gates and the rollout policy reacted to the labels and drift they saw.

A policy's gain over ``static`` comes with its standard error (``gain_se``): the spread of the gain
over resamples of the replayed rows (a paired bootstrap, rows redrawn within each window, both
policies scored on the same draw). It says how much of a gain the rows' sampling noise alone could
make, so a reader can tell a gain from none.
"""

from __future__ import annotations

import datetime
import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mloop import errors
from mloop.backtesting.policy import MODEL, adapt, default_loop_config
from mloop.backtesting.replay import LoopEvent, Replay, replay_stream
from mloop.backtesting.targets import check_target, choose_metric
from mloop.entities import new_id
from mloop.errors import DataError, MloopError, NotFoundError, ParameterError, StepFailedError
from mloop.orchestration.config import LoopConfig
from mloop.serving.predictor import PROBABILITY_DECIMALS
from mloop.steps.retrain import describe_default_model, estimator_factory, infer_task, labelled_rows
from mloop.validation.io import read_table, separator_hint
from mloop.validation.model import LOWER_IS_BETTER, score_predictions
from mloop.workspace import Workspace

__all__ = [
    "BacktestReport",
    "PolicyResult",
    "backtest",
    "gain_se",
    "load_stream",
    "score_policies",
]

MIN_WINDOW_ROWS = 20
RESAMPLES = 200  # bootstrap draws for a gain's standard error (its own relative error is about 5 %)


@dataclass
class PolicyResult:
    """One policy's scores: overall, per window, and how many times it retrained."""

    metrics: dict[str, float]
    windows: list[dict[str, float]]
    retrains: int  # runs started (``failed_runs`` of them ended in an error)
    # what it answered, row by row (labels, predictions, positive-class scores): for gain_se
    answers: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = field(
        default=None, repr=False, compare=False
    )
    failed_runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "retrains": self.retrains,
            "failed_runs": self.failed_runs,
            "windows": self.windows,
        }


@dataclass
class BacktestReport:
    """Everything ``mloop backtest`` prints: choices made, per-policy scores, the loop's events."""

    rows: int
    task: str
    target: str
    initial_rows: int
    window_rows: int
    model: str
    triggers: list[dict[str, Any]]
    rollout: dict[str, Any] | None
    loop: PolicyResult
    static: PolicyResult
    every_window: PolicyResult
    metric: str = "accuracy"
    events: list[LoopEvent] = field(default_factory=list)
    refused_rows: int = 0
    seconds: float = 0.0
    workspace: str = ""
    # standard error of each policy's gain over static, by policy name (module docstring)
    gain_se: dict[str, float] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        return self.metric

    @property
    def recovered(self) -> float | None:
        """Share of every_window's gain over static that the loop kept (None if there was no gain)."""
        m = self.primary
        if any(m not in p.metrics for p in (self.loop, self.static, self.every_window)):
            return None
        sign = -1 if m in LOWER_IS_BETTER else 1
        gain = sign * (self.every_window.metrics[m] - self.static.metrics[m])
        if gain <= 1e-9:
            return None
        return sign * (self.loop.metrics[m] - self.static.metrics[m]) / gain

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "task": self.task,
            "target": self.target,
            "metric": self.metric,
            "initial_rows": self.initial_rows,
            "window_rows": self.window_rows,
            "model": self.model,
            "triggers": self.triggers,
            "rollout": self.rollout,
            "loop": self.loop.to_dict(),
            "static": self.static.to_dict(),
            "every_window": self.every_window.to_dict(),
            "recovered_gain": self.recovered,
            "gain_se": self.gain_se,
            "events": [_event_dict(e) for e in self.events],
            "refused_rows": self.refused_rows,
            "seconds": round(self.seconds, 2),
            "workspace": self.workspace,
        }


def _event_dict(event: LoopEvent) -> dict[str, Any]:
    """An event as the report prints it: without the wall-clock time it was seen at, which differs
    between two replays of one history (everything else is decided by the data, config and seed)."""
    out = event.to_dict()
    out.pop("at", None)
    return out


def load_stream(
    source: Path | pd.DataFrame, target: str, time_col: str | None = None, encoding: str = "utf-8"
) -> pd.DataFrame:
    """The table in time order, rows without a target dropped, the time column removed."""
    frame = (
        source
        if isinstance(source, pd.DataFrame)
        else read_table(Path(source), encoding=encoding).to_pandas()
    )
    if len(frame) == 0:
        where = "the table" if isinstance(source, pd.DataFrame) else str(source)
        raise DataError(f"{where}: no rows, only column names: nothing to replay", field="data")
    if target not in frame.columns:
        hint = separator_hint(str(frame.columns[0])) if len(frame.columns) == 1 else ""
        raise DataError(f"no target column {target!r} (columns: {list(frame.columns)}){hint}", field="target")
    named = pd.Index([str(c) for c in frame.columns])
    if named.has_duplicates:
        twice = sorted(set(named[named.duplicated()]))
        raise DataError(f"column {twice[0]!r} appears twice: name each column once", field=twice[0])
    if len(frame.columns) < 2:
        raise DataError(f"no feature columns: the table holds only the target {target!r}", field="data")
    for name in [c for c in frame.columns if pd.api.types.is_timedelta64_dtype(frame[c])]:
        raise DataError(
            f"column {name!r} holds durations: give them as numbers (seconds, say) or drop the column",
            field=str(name),
        )
    for name in [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c])]:  # before any run
        first = frame[name].dropna()
        if len(first) and isinstance(first.iloc[0], datetime.time | datetime.timedelta):
            raise DataError(
                f"column {name!r} holds times of day or durations such as {str(first.iloc[0])!r}: give "
                "them as numbers (seconds since midnight, say) or drop the column",
                field=str(name),
            )
        if len(first) and isinstance(first.iloc[0], bytes | bytearray):
            raise DataError(
                f"column {name!r} holds bytes such as {first.iloc[0]!r:.40}: decode them to text "
                "(categories) or drop the column",
                field=str(name),
            )
        if len(first) and isinstance(first.iloc[0], list | tuple | dict | set | np.ndarray):
            value = first.iloc[0]
            shown = repr(value.tolist() if isinstance(value, np.ndarray) else value)[:60]
            raise DataError(
                f"column {name!r} holds nested values such as {shown}: a model takes flat columns; "
                "flatten it into columns or drop it",
                field=str(name),
            )
    if time_col is not None:
        if time_col not in frame.columns:
            raise DataError(f"no time column {time_col!r} (columns: {list(frame.columns)})", field="time_col")
        order = frame[time_col]
        if pd.api.types.is_bool_dtype(order):
            raise DataError(
                f"time column {time_col!r} holds true/false values, not times: name the column that "
                "orders the rows",
                field="time_col",
            )
        if pd.api.types.is_numeric_dtype(order) and np.isinf(order.to_numpy(dtype=float)).any():
            raise DataError(
                f"time column {time_col!r} has {int(np.isinf(order.to_numpy(dtype=float)).sum())} "
                "infinite value(s), which order no rows in time: drop or fix them",
                field="time_col",
            )
        if not (pd.api.types.is_numeric_dtype(order) or pd.api.types.is_datetime64_any_dtype(order)):
            try:  # strings sort as text: only ISO-like dates sort in time order
                order = _as_time(order)
            except (ValueError, TypeError):
                raise DataError(
                    f"time column {time_col!r} is not sortable as time: {_unsortable(order)}",
                    field="time_col",
                ) from None
        untimed = int(pd.isna(order).sum())
        if untimed:  # sorted last, they would be replayed as the newest rows
            raise DataError(
                f"time column {time_col!r} has {untimed} row(s) without a time: drop or fill them",
                field="time_col",
            )
        try:
            frame = frame.assign(**{time_col: order}).sort_values(time_col, kind="stable")
            frame = frame.drop(columns=[time_col])
        except TypeError as exc:
            kinds = sorted({type(v).__name__ for v in frame[time_col].dropna()})
            raise DataError(
                f"time column {time_col!r} cannot be sorted: it mixes {', '.join(kinds)} values ({exc})",
                field="time_col",
            ) from None
    # the labelled rows, a target column that held blanks beside bools or ints typed again without them
    frame = labelled_rows(frame, target)
    check_target(frame[target], target)
    frame.columns = [str(c) for c in frame.columns]
    _check_values(frame, target)
    if len(frame) < 100:
        raise DataError(f"{len(frame)} labelled rows: a backtest needs at least 100", field="data")
    return frame


LARGEST = 1e150  # beyond it, a column's squares overflow its statistics (variance, histogram)


def _as_time(order: pd.Series) -> pd.Series:
    """An object column as a sortable time: numbers as numbers (Python ints from JSON, say), anything
    else as ISO 8601 text (ValueError otherwise)."""
    present = order.dropna()
    if len(present) and all(_is_number(v) for v in present):
        return pd.to_numeric(order)
    return pd.to_datetime(order.where(order.isna(), order.astype(str)), utc=True, format="ISO8601")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _unsortable(order: pd.Series) -> str:
    """What keeps an object column from being a time: numbers mixed with text, or the first value
    that is not an ISO date."""
    present = [v for v in order.tolist() if not pd.isna(v)]
    numbers = [v for v in present if _is_number(v)]
    if numbers and len(numbers) < len(present):
        text = next(v for v in present if v not in numbers)
        return f"it mixes numbers (such as {numbers[0]!r}) and other values (such as {text!r:.60})"
    for v in present:
        try:
            pd.to_datetime(str(v), utc=True, format="ISO8601")
        except (ValueError, TypeError):
            return f"values like {v!r:.60} are neither numbers nor ISO dates"
    return "its values are neither numbers nor ISO dates"


def _last_window(rows: int, windows: int) -> int:
    """Rows left for the last of ``windows`` windows of ``ceil(rows / windows)`` rows."""
    return rows - (windows - 1) * int(np.ceil(rows / windows))


def _most_windows(rows: int) -> int | None:
    """The most windows (at least 2) ``rows`` make with a last one of at least MIN_WINDOW_ROWS."""
    top = rows // MIN_WINDOW_ROWS
    return next((w for w in range(top, 1, -1) if _last_window(rows, w) >= MIN_WINDOW_ROWS), None)


def _window_rows(rows: int, windows: int) -> int:
    """Rows per window: equal windows of ``rows``, the last one shorter by the remainder. Refused when
    the last would fall below MIN_WINDOW_ROWS (or not exist): 49 windows of 2,549 rows are 48 of 53
    and a last one of 5."""

    size = int(np.ceil(rows / windows))
    if _last_window(rows, windows) >= MIN_WINDOW_ROWS:
        return size
    below = next((w for w in range(windows - 1, 1, -1) if _last_window(rows, w) >= MIN_WINDOW_ROWS), None)
    top = rows // MIN_WINDOW_ROWS
    above = next((w for w in range(windows + 1, top + 1) if _last_window(rows, w) >= MIN_WINDOW_ROWS), None)
    fits = " or ".join(str(w) for w in (below, above) if w)
    hint = f"; the nearest counts that fit: {fits}" if fits else ""
    raise ParameterError(
        f"windows: {rows} replayed rows cannot make {windows} windows of about {size} "
        f"rows with a last one of at least {MIN_WINDOW_ROWS} "
        f"(it would have {max(_last_window(rows, windows), 0)}){hint}",
        field="windows",
    )


def _check_values(frame: pd.DataFrame, target: str) -> None:
    """Numbers a model and the statistics can take (a column without a value: ``labelled_rows``)."""
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            x = column.to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isinf(x) | (np.abs(np.nan_to_num(x)) > LARGEST)
            if bad.any():
                raise DataError(
                    f"column {name!r} holds {int(bad.sum())} value(s) like {float(x[bad][0])!r} beyond "
                    f"±{LARGEST:g}: drop or clip them",
                    field=name,
                )


def _scores(
    task: str,
    y: np.ndarray,
    predicted: np.ndarray,
    score: np.ndarray | None,
    classes: list[Any],
    metric: str = "",
) -> dict[str, float]:
    proba = np.column_stack([1 - score, score]) if score is not None else None
    full = score_predictions(task, y, predicted, proba, classes)
    keep = ("accuracy", "roc_auc", metric) if task == "classification" else ("mae", "rmse", metric)
    return {k: round(full[k], 6) for k in keep if k in full}


def _policy(
    task: str,
    y: np.ndarray,
    predicted: np.ndarray,
    score: np.ndarray | None,
    bounds: list[int],
    classes: list[Any],
    retrains: int,
    metric: str = "",
    failed_runs: int = 0,
) -> PolicyResult:
    windows = [
        {
            "rows": float(hi - lo),
            **_scores(
                task, y[lo:hi], predicted[lo:hi], None if score is None else score[lo:hi], classes, metric
            ),
        }
        for lo, hi in itertools.pairwise(bounds)
    ]
    return PolicyResult(
        _scores(task, y, predicted, score, classes, metric),
        windows,
        retrains,
        (y, predicted, score),
        failed_runs,
    )


def _metric(
    task: str,
    answers: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    rows: np.ndarray,
    classes: list[Any],
    metric: str,
) -> float | None:
    """``metric`` of ``answers`` on ``rows`` (indices); accuracy and MAE as the per-row means they
    are (a bootstrap scores hundreds of draws), any other metric as :func:`_scores` computes it."""
    y, predicted, score = answers
    if metric == "accuracy":
        return float(np.mean(predicted[rows] == y[rows]))
    if metric == "mae" and task == "regression":
        return float(np.mean(np.abs(y[rows].astype(float) - predicted[rows].astype(float))))
    part = None if score is None else score[rows]
    return _scores(task, y[rows], predicted[rows], part, classes, metric).get(metric)


def gain_se(
    task: str,
    policy: PolicyResult,
    static: PolicyResult,
    bounds: list[int],
    classes: list[Any],
    metric: str,
    resamples: int = RESAMPLES,
) -> float | None:
    """Standard error of ``policy``'s gain over ``static`` on ``metric``: its standard deviation over
    ``resamples`` paired bootstrap draws of the rows, each window's rows redrawn within that window
    (so every draw keeps the stream's drift where it was). Seeded: the same answers give the same
    figure. None when either policy has no row-by-row answers or the metric is undefined on a draw."""
    if policy.answers is None or static.answers is None:
        return None
    rng = np.random.default_rng(0)
    spans = list(itertools.pairwise(bounds))
    diffs = []
    for _ in range(resamples):
        rows = np.concatenate([rng.integers(lo, hi, hi - lo) for lo, hi in spans if hi > lo])
        a = _metric(task, policy.answers, rows, classes, metric)
        b = _metric(task, static.answers, rows, classes, metric)
        if a is None or b is None or not np.isfinite(a - b):
            return None
        diffs.append(a - b)
    return float(np.std(diffs, ddof=1))


def _positive(model: Any, x: pd.DataFrame) -> np.ndarray | None:
    classes = getattr(model, "classes_", None)
    if classes is None or len(classes) != 2 or not hasattr(model, "predict_proba"):
        return None
    # at the precision the service answers with: the loop's scores are what it answered, and a metric
    # of rankings (ROC-AUC) differs between full and rounded precision where many scores are near 0 or 1
    return np.asarray(model.predict_proba(x), dtype=float)[:, 1].round(PROBABILITY_DECIMALS)


def backtest(
    source: Path | pd.DataFrame,
    target: str,
    *,
    time_col: str | None = None,
    encoding: str = "utf-8",
    initial: float = 0.2,
    windows: int = 8,
    config: LoopConfig | None = None,
    estimator: str = "auto",
    metric: str | None = None,
    http: bool = False,
    workspace_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_event: Callable[[LoopEvent], None] | None = None,
) -> BacktestReport:
    """Replay ``source`` through the loop and through the two reference policies (module docstring)."""
    started = time.perf_counter()
    if not 0 < initial < 1:
        raise ParameterError(f"initial must be a fraction in (0, 1), got {initial}", field="initial")
    if windows < 2:
        raise ParameterError(
            f"windows must be at least 2 (policies are compared across windows), got {windows}",
            field="windows",
        )
    frame = load_stream(source, target, time_col, encoding)
    n, n0 = len(frame), int(len(frame) * initial)
    if n0 < 50:
        raise DataError(
            f"{initial:.0%} of {n} rows is {n0} initial rows: the first model needs at least 50 "
            f"(raise --initial to {int(np.ceil(50 / n * 100)) if n >= 100 else 100}% or more, or add rows)",
            field="initial",
        )
    if n - n0 < windows * MIN_WINDOW_ROWS:
        fits = _most_windows(n - n0)
        hint = f"; at most {fits} windows fit" if fits else "; lower --initial"
        raise DataError(
            f"{n} rows are too few for {initial:.0%} initial rows and {windows} windows of at least "
            f"{MIN_WINDOW_ROWS} rows{hint}",
            field="data",
        )
    task = infer_task(frame[target])
    requested, metric = metric, choose_metric(task, frame[target], metric)
    if task == "classification":  # else the first model answers one class and every check fails
        check_target(frame[target].iloc[:n0], target, f"the initial rows (the first {n0}, {initial:.0%})")
    window_rows = _window_rows(n - n0, windows)
    factory = estimator_factory(estimator)
    features = frame.drop(columns=[target])
    if config is not None:
        loop_config = adapt(
            config, MODEL, target, window_rows, n0, task=task, metric=requested, default_metric=metric
        )
        for where, named in [(f"trigger {t.name!r}", t.metric) for t in loop_config.triggers] + [
            ("rollout", p.metric) for p in loop_config.rollout
        ]:
            try:  # a metric the task has not got: every check would fail, and the replay exit 0
                choose_metric(task, frame[target], named)
            except ParameterError as exc:
                raise ParameterError(f"--config {where}: {exc.message}", field="metric") from None
        metric = next((t.metric for t in loop_config.triggers if t.kind == "degradation"), metric)
    else:
        loop_config = default_loop_config(task, target, window_rows, n0, metric=metric)
    if estimator != "auto":
        loop_config = LoopConfig(
            triggers=[
                t.model_copy(update={"params": {**t.params, "estimator": estimator}})
                for t in loop_config.triggers
            ],
            rollout=loop_config.rollout,
        )
    tmp = None
    if workspace_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mloop-backtest-")
        workspace_dir = Path(tmp.name) / ".mloop"
    try:
        with Workspace.open(workspace_dir) as ws:
            try:  # its registry would answer with the earlier replay's model
                earlier = ws.model_version(f"{MODEL}@production")
            except NotFoundError:
                earlier = None
            if earlier is not None:
                raise ParameterError(
                    f"workspace {workspace_dir} already holds a backtest (model {MODEL!r} v"
                    f"{earlier.version}): replay in a new folder",
                    field="workspace",
                )
            stage = (lambda name, done, total: progress(name, done, total)) if progress else (lambda *a: None)
            stage("initial model", 0, 1)
            # a new file of its own: a folder given as --workspace may hold the user's files (it
            # replaced an 'initial.parquet' there, the replayed data itself included)
            initial_path = Path(workspace_dir) / f"backtest-initial-{new_id()}.parquet"
            with open(initial_path, "xb") as fh:
                frame.iloc[:n0].to_parquet(fh)
            from mloop.core.loader import load_pipeline

            pipeline = load_pipeline(loop_config.triggers[0].pipeline, workspace=ws)
            params = {
                **loop_config.triggers[0].params,
                "model_name": MODEL,
                "target": target,
                "data": str(initial_path),
            }
            accepted = set(pipeline.signature.parameters)
            try:
                result = ws.run(pipeline, **{k: v for k, v in params.items() if k in accepted})
            except StepFailedError as exc:
                raise _initial_failed(exc, n0, estimator) from None
            try:
                first = ws.model_version(f"{MODEL}@production")
            except NotFoundError:
                registered = result.load("register_model") if "register_model" in result.outputs else {}
                reasons = "; ".join(registered.get("reasons", [])) or "the pipeline registered no version"
                raise DataError(f"the initial model was not accepted: {reasons}", field="data") from None
            if metric not in first.metrics:  # its validation rows could not score it (one class, say)
                raise DataError(
                    f"the first model could not be scored by {metric!r} on its validation rows (the "
                    f"newest of the initial {n0}): raise --initial, or choose another --metric",
                    field="metric",
                )
            static_model = ws.load_artifact(first.artifact_id)
            stage("initial model", 1, 1)
            stream = frame.iloc[n0:].reset_index(drop=True)
            done = [0]

            def advance(rows: int) -> None:
                done[0] += rows
                stage("replay", done[0], len(stream))

            replay = replay_stream(
                ws,
                stream,
                target,
                model=MODEL,
                window_rows=window_rows,
                config=loop_config,
                batch_rows=max(1, min(500, window_rows // 10)),
                http=http,
                progress=advance,
                on_event=on_event,
            )
        loop, static, every = score_policies(
            frame, target, task, n0, window_rows, static_model, replay, factory, progress=stage, metric=metric
        )
        bounds = [*range(0, n - n0, window_rows), n - n0]
        classes = sorted(pd.unique(frame[target]).tolist(), key=str) if task == "classification" else []
        noise = {
            name: gain_se(task, p, static, bounds, classes, metric)
            for name, p in (("every_window", every), ("loop", loop))
        }
    finally:
        if tmp is not None:
            tmp.cleanup()
    return BacktestReport(
        rows=n,
        task=task,
        target=target,
        initial_rows=n0,
        window_rows=window_rows,
        model=describe_default_model(features, task) if estimator == "auto" else estimator,
        triggers=[t.model_dump(exclude_defaults=True) for t in loop_config.triggers],
        rollout=loop_config.rollout[0].model_dump() if loop_config.rollout else None,
        loop=loop,
        static=static,
        every_window=every,
        metric=metric,
        events=replay.events,
        refused_rows=replay.refused_rows,
        seconds=time.perf_counter() - started,
        workspace="" if tmp is not None else str(workspace_dir),
        gain_se={k: round(v, 6) for k, v in noise.items() if v is not None},
    )


def _initial_failed(exc: StepFailedError, n0: int, estimator: str) -> MloopError:
    """What a failed first training run says: the data's problem (one class in its training part, a
    column it cannot use) is bad input naming ``--initial``; a user estimator's failure names the
    estimator; anything else is the run's own failure."""
    kind = getattr(errors, exc.error_type, None)
    where = f"the initial model could not be trained on the first {n0} rows (step {exc.step!r})"
    if isinstance(kind, type) and issubclass(kind, MloopError) and kind.exit_code == 2:
        return DataError(
            f"{where}: {exc.error_message}; raise --initial, or order the rows by another --time-col",
            field="initial",
        )
    if estimator != "auto":
        return ParameterError(
            f"--estimator {estimator}: {where}: {exc.error_type}: {exc.error_message}", field="estimator"
        )
    return exc


def score_policies(
    frame: pd.DataFrame,
    target: str,
    task: str,
    n0: int,
    window_rows: int,
    static_model: Any,
    replay: Replay,
    factory: Callable[[pd.DataFrame, str], Any],
    *,
    progress: Callable[[str, int, int], None] | None = None,
    metric: str = "",
) -> tuple[PolicyResult, PolicyResult, PolicyResult]:
    """``loop`` (what was served), ``static`` (the first model) and ``every_window`` (a refit on the
    newest ``n0`` rows before each window) on the replayed rows ``frame[n0:]``."""
    stream = frame.iloc[n0:].reset_index(drop=True)
    features = frame.drop(columns=[target])
    y = stream[target].to_numpy()
    bounds = [*range(0, len(stream), window_rows), len(stream)]
    windows = len(bounds) - 1
    classes = sorted(pd.unique(frame[target]).tolist(), key=str) if task == "classification" else []
    x_stream = stream.drop(columns=[target])
    static_pred = np.asarray(static_model.predict(x_stream))
    static = _policy(task, y, static_pred, _positive(static_model, x_stream), bounds, classes, 0, metric)
    every_pred, every_score = static_pred.copy().astype(object), _positive(static_model, x_stream)
    for w in range(1, windows):
        if progress is not None:
            progress("every_window", w, windows - 1)
        hi = n0 + bounds[w]  # the newest initial-sized slice before window w
        lo = max(0, hi - n0)
        part = x_stream.iloc[bounds[w] : bounds[w + 1]]
        try:
            refit = factory(features.iloc[lo:hi], task).fit(features.iloc[lo:hi], frame[target].iloc[lo:hi])
            every_pred[bounds[w] : bounds[w + 1]] = refit.predict(part)
        except Exception as exc:  # the user's estimator, most likely: said as such, not as a bug
            empty = [str(c) for c in features.columns if features[c].iloc[lo:hi].isna().all()]
            if empty:  # the data, not the estimator: a column with no value in the rows it refitted on
                raise DataError(
                    f"column {empty[0]!r} holds no values in rows {lo}-{hi}, on which the every-window "
                    f"baseline refits before window {w + 1} ({type(exc).__name__}: {exc}): drop the column "
                    "or fill it",
                    field=empty[0],
                ) from exc
            raise ParameterError(
                f"the estimator failed refitting the every-window baseline on rows {lo}-{hi} before "
                f"window {w + 1}: {type(exc).__name__}: {exc}",
                field="estimator",
            ) from exc
        if every_score is not None:
            s = _positive(refit, part)
            if s is not None:
                every_score[bounds[w] : bounds[w + 1]] = s
    every = _policy(
        task, y, every_pred.astype(static_pred.dtype), every_score, bounds, classes, windows - 1, metric
    )
    return _loop_result(task, y, replay, bounds, classes, metric), static, every


def _loop_result(
    task: str, y: np.ndarray, replay: Replay, bounds: list[int], classes: list[Any], metric: str = ""
) -> PolicyResult:
    answered = np.array([v is not None for v in replay.versions])
    predicted = np.array(replay.predictions, dtype=object)
    scores = None
    if task == "classification" and all(
        s is not None for s, a in zip(replay.scores, answered, strict=True) if a
    ):
        scores = np.array([s if s is not None else 0.5 for s in replay.scores], dtype=float)
    if not answered.all():  # refused rows count as wrong: a refusal is not an answer
        predicted[~answered] = None
    if task == "regression":
        predicted = np.array([np.nan if p is None else p for p in predicted], dtype=float)
    else:
        predicted = predicted.astype(y.dtype) if answered.all() else predicted
    return _policy(
        task,
        y if task == "regression" or answered.all() else y.astype(object),
        predicted,
        scores,
        bounds,
        classes,
        replay.retrains,
        metric,
        replay.failed_runs,
    )
