"""The built-in retraining pipeline (``mloop.retrain``; in a config ``mloop.steps.retrain:retrain``),
which the loop (and ``mloop backtest``) deploys when a user has none.

``retrain``: training rows (a file, or the labelled prediction log from the trigger's ``since`` on)
→ time-ordered split → schema gate against production's signature (schema skew stops the run) →
statistics → drift check → fit the default model → evaluate → validate against production on the
same recent rows → infrastructure check → register (the first version becomes production; later
ones wait for the rollout policy).

The default model handles what a user's table usually holds: numeric and string/categorical
columns, missing values, and binary, multiclass or string labels (histogram gradient boosting,
which needs no scaling and treats missing values natively).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import hashlib
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mloop.core.context import log_metrics, log_params
from mloop.core.pipeline import pipeline
from mloop.core.serialize import serialize
from mloop.core.step import step
from mloop.errors import DataError, NotFoundError, ParameterError
from mloop.monitoring.log import label_values, labelled_predictions
from mloop.monitoring.windows import logged_inputs, window_frame
from mloop.steps.context import workspace as step_workspace
from mloop.steps.data import check_drift, statistics, validate_schema
from mloop.steps.model import evaluate_model, infra_check, register_model, validate_model
from mloop.validation.infra import InfraReport
from mloop.validation.infra import check_serving as measure_serving
from mloop.validation.io import read_table
from mloop.validation.model import LOWER_IS_BETTER
from mloop.validation.model import evaluate_model as score_model
from mloop.validation.schema import Schema
from mloop.validation.schema import infer_schema as _infer_schema
from mloop.validation.stats import compute_statistics
from mloop.validation.times import epoch_seconds, seconds_since_epoch, to_datetimes
from mloop.workspace import Workspace

__all__ = [
    "default_model",
    "describe_default_model",
    "estimator_factory",
    "infer_task",
    "labelled_rows",
    "refit_on_holdout",
    "retrain",
    "training_rows",
]


def infer_task(y: pd.Series) -> str:
    """``classification`` for strings, booleans and integers with few values; else ``regression``."""
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.dropna()
    integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    return "classification" if integral and values.nunique() <= 50 else "regression"


def _is_time(column: pd.Series) -> bool:
    """Datetimes, or an object column of dates/times (a CSV's date column as pyarrow reads it)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if column.dtype != object:
        return False
    first = column.dropna().head(1).tolist()
    return bool(first) and isinstance(first[0], datetime.date)


def _column_kinds(features: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """The default model's reading of ``features``: numeric, time and categorical columns."""
    times = [c for c in features.columns if _is_time(features[c])]
    categorical = [
        c for c in features.columns if c not in times and not pd.api.types.is_numeric_dtype(features[c])
    ]
    numeric = [c for c in features.columns if c not in categorical and c not in times]
    return numeric, times, categorical


def default_model(features: pd.DataFrame, task: str, *, seed: int = 0) -> Any:
    """An unfitted scikit-learn pipeline for ``features``: time columns as seconds since 1970 (the
    same number whether a date arrives as a datetime or as a request's ISO text), categorical columns
    ordinal-encoded (unknown and missing → NaN, rare levels grouped), then histogram gradient
    boosting."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    numeric, times, categorical = _column_kinds(features)
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        max_categories=250,
    )
    seconds = FunctionTransformer(epoch_seconds, feature_names_out="one-to-one")
    columns = ColumnTransformer(
        [
            ("numeric", "passthrough", numeric),
            ("time", seconds, times),
            ("categorical", encoder, categorical),
        ],
        verbose_feature_names_out=False,
    )
    mask = [False] * (len(numeric) + len(times)) + [True] * len(categorical)
    estimator = (
        HistGradientBoostingClassifier(categorical_features=mask, random_state=seed)
        if task == "classification"
        else HistGradientBoostingRegressor(categorical_features=mask, random_state=seed)
    )
    return Pipeline([("columns", columns), ("model", estimator)])


def _dates_as_text(features: pd.DataFrame, categorical: list[str]) -> list[str]:
    """Categorical columns whose text reads as ISO-8601 dates or times (nine in ten of the first 200
    values): text in a Parquet file, or a CSV column with one value that is not a date, is read as
    categories, where a date column would be a time feature. Said, not guessed at."""
    found = []
    for name in categorical:
        sample = features[name].dropna().head(200).tolist()
        texts = sample and all(isinstance(v, str) for v in sample)
        if texts and sum(seconds_since_epoch(v) is not None for v in sample) >= 0.9 * len(sample):
            found.append(str(name))
    return found


def describe_default_model(features: pd.DataFrame, task: str) -> str:
    """The default model for ``features`` in one line (a run's ``model`` parameter, a backtest's
    report), naming text columns that look like dates but are read as categories."""
    numeric, times, categorical = _column_kinds(features)
    kind = "HistGradientBoostingClassifier" if task == "classification" else "HistGradientBoostingRegressor"
    when = f"{len(times)} time (seconds since 1970), " if times else ""
    text = _dates_as_text(features, categorical)
    hint = (
        f"; {', '.join(repr(c) for c in text[:5])} hold{'s' if len(text) == 1 else ''} ISO-8601 dates as "
        "text, read as categories: store them as dates (Parquet date/timestamp, or CSV dates with no "
        "other values) to make them time features"
        if text
        else ""
    )
    return (
        f"{kind} on {features.shape[1]} columns ({len(numeric)} numeric, "
        f"{when}{len(categorical)} categorical, ordinal-encoded; missing values handled natively){hint}"
    )


def estimator_factory(estimator: str) -> Callable[[pd.DataFrame, str], Any]:
    """``"auto"`` → :func:`default_model`; ``"module:function"`` → that factory(features, task)."""
    if estimator == "auto":
        return default_model
    module, _, name = estimator.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ParameterError(
            f"estimator {estimator!r} is not 'auto' or an importable module:function", field="estimator"
        ) from exc
    except (Exception, SystemExit) as exc:  # the module itself fails on import: its error, named
        raise ParameterError(
            f"estimator {estimator!r}: importing {module!r} failed: {type(exc).__name__}: {exc}",
            field="estimator",
        ) from exc
    if not callable(factory):
        raise ParameterError(
            f"estimator {estimator!r} is a {type(factory).__name__}, not a factory(features, task)",
            field="estimator",
        )
    return factory


def _log_rows(frame: pd.DataFrame, target: str, times: Sequence[str] = ()) -> pd.DataFrame:
    """The logged inputs and labels as training rows. The log keeps datetime inputs as the text
    clients sent: those of a column the production version was trained on as datetime are parsed
    back, so the retrain sees the type its schema gate expects (left as text when any value does
    not parse: the gate then names them)."""
    rows = logged_inputs(frame)
    for name in times:
        if name in rows.columns and not pd.api.types.is_datetime64_any_dtype(rows[name]):
            parsed = to_datetimes(rows[name])  # UTC: one column may hold several offsets (DST)
            if parsed is not None:
                rows[name] = parsed
    rows[target] = label_values(frame["label"], frame.get("prediction"))
    return rows.reset_index(drop=True)


def _datetime_inputs(ws: Workspace, model_name: str) -> list[str]:
    """The inputs the production version of ``model_name`` was trained on as datetimes."""
    try:
        columns = ws.model_version(f"{model_name}@production").signature["inputs"]["columns"]
    except (NotFoundError, KeyError, TypeError):
        return []
    return [n for n, rule in columns.items() if isinstance(rule, dict) and rule.get("type") == "datetime"]


def _masked(dtype: Any) -> bool:
    """A pandas nullable integer, boolean or float dtype (``Int64``, ``boolean``: missing is ``pd.NA``)."""
    return (
        isinstance(dtype, pd.api.extensions.ExtensionDtype)
        and getattr(dtype, "kind", "") in "iufb"
        and hasattr(dtype, "numpy_dtype")
    )


def _unmasked(column: pd.Series) -> pd.Series:
    """A nullable (masked) integer, boolean or float column as NumPy types: as it is when it has no
    missing value, else as floats with NaN for the missing ones (scikit-learn refuses ``pd.NA``)."""
    if not column.isna().any():
        return column.astype(getattr(column.dtype, "numpy_dtype"))  # noqa: B009 (an extension dtype's)
    return pd.Series(column.to_numpy(dtype="float64", na_value=np.nan), index=column.index, name=column.name)


def labelled_rows(rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """``rows`` with a label, the target typed again without the blanks and decimals as floats; refused
    in one line when a model could not learn or answer them: no target column, times as the target,
    integers beyond 64 bits (the prediction log stores classes as 64-bit integers), a feature column
    without a value."""
    if target not in rows.columns:
        raise DataError(f"no target column {target!r} (columns: {list(rows.columns)[:20]})", field="target")
    labelled = rows[rows[target].notna()].reset_index(drop=True)
    for name in labelled.columns:
        if name != target and labelled[name].isna().all():
            raise DataError(f"column {name!r} holds no values: drop it", field=str(name))
        if _masked(labelled[name].dtype):  # Parquet's nullable ints and bools: pd.NA
            labelled[name] = _unmasked(labelled[name])
        first = labelled[name].dropna().head(1).tolist() if labelled[name].dtype == object else []
        if first and isinstance(first[0], decimal.Decimal):  # a number (the schema's float), not a category
            labelled[name] = pd.to_numeric(labelled[name].astype(float))
    y = labelled[target].infer_objects()
    present = y.head(1).tolist()
    if (
        pd.api.types.is_datetime64_any_dtype(y)
        or pd.api.types.is_timedelta64_dtype(y)
        or (present and isinstance(present[0], datetime.date | datetime.time | datetime.timedelta))
    ):
        raise DataError(f"target {target!r} holds times: it is neither classes nor numbers", field="target")
    if y.dtype == np.uint64 or y.dtype == object:
        big = [v for v in y.tolist() if isinstance(v, int | np.integer) and not -(2**63) <= int(v) < 2**63]
        if big:
            raise DataError(
                f"target {target!r} holds integers beyond 64 bits such as {int(big[0])}: give the classes "
                "as text",
                field="target",
            )
    labelled[target] = y
    return labelled


@step(outputs=["rows", "older"])
def training_rows(
    data: str, model_name: str, target: str, since: str = "", max_rows: int = 0, min_rows: int = 0
) -> tuple:
    """The rows to train on: a CSV/Parquet file, or (``data = "log"``) the labelled prediction log of
    ``model_name`` from ``since`` on (the trigger's change point: the current regime), extended back
    to the newest ``min_rows`` when fewer rows followed it; at most the newest ``max_rows`` (0 = all).
    ``older``: the labelled rows just before them, up to ``max_rows`` in all (none for a file)."""
    older: pd.DataFrame | None = None
    if data == "log":
        ws = step_workspace()
        everything = labelled_predictions(ws.prediction_log_dir, model_name)
        everything = everything[everything["label"].notna()]
        frame = window_frame(everything, since or None)
        if len(frame) < min_rows:
            frame = everything.iloc[-min_rows:]
        times = _datetime_inputs(ws, model_name)
        rows = _log_rows(frame, target, times)
        if max_rows and len(frame) < max_rows:
            before = everything.iloc[: len(everything) - len(frame)]
            older = _log_rows(before.iloc[-(max_rows - len(frame)) :], target, times)
    else:
        read = read_table(Path(data)).to_pandas()
        rows = labelled_rows(read, target)
        if len(rows) < len(read):
            log_params({"unlabelled_rows": len(read) - len(rows)})  # not trained on
    if max_rows and len(rows) > max_rows:
        rows = rows.iloc[-max_rows:].reset_index(drop=True)
    if len(rows) < 20:
        raise DataError(f"only {len(rows)} labelled rows to train on (need at least 20)", field="data")
    if older is None or set(older.columns) != set(rows.columns):
        older = rows.iloc[:0]
    log_params(
        {
            "training_source": data,
            "since": since,
            "rows": len(rows),
            "min_rows": min_rows,
            "older": len(older),
        }
    )
    # reports downstream (e.g. the schema gate's anomalies) name the data, not "<DataFrame>"
    rows.attrs["source"] = f"prediction log of {model_name}" if data == "log" else str(data)
    return rows, older


@step(outputs=["train", "test"])
def split_recent(rows: pd.DataFrame, holdout_fraction: float = 0.2) -> tuple:
    """Train on the older rows, hold out the newest ``holdout_fraction`` (time order is kept)."""
    cut = int(len(rows) * (1 - holdout_fraction))
    return rows.iloc[:cut], rows.iloc[cut:]


@step
def latency_gate(
    model: Any, sample: pd.DataFrame, target: str, budget_p99_ms: float = 200.0, enforce_latency: bool = True
) -> InfraReport:
    """The infrastructure check as registration uses it. Enforced (a deployment): the model is loaded
    and timed in a fresh serving process (:func:`mloop.steps.infra_check`) and its verdict stands.
    With ``enforce_latency=False`` (what ``mloop backtest`` runs) latencies and load time are measured
    in this process (an interpreter start per candidate was most of a backtest's CPU) and recorded,
    but do not decide: they depend on the machine's load, and a replay's decisions may depend only on
    the data, the configuration and the seed. A model that cannot be loaded, or cannot predict its
    own input rows, is refused either way."""
    if enforce_latency:
        return infra_check(model, sample, target, budget_p99_ms=budget_p99_ms)
    _, data = serialize(model, what="model")
    names = getattr(model, "feature_names_in_", None)
    rows = sample[list(names)] if names is not None else sample.drop(columns=[target], errors="ignore")
    digest = hashlib.sha256(data).hexdigest()
    infra = measure_serving(data, digest, rows, budget_p99_ms=budget_p99_ms, repeats=50, in_process=True)
    log_metrics({k: v for k in ("cold_load_s", "p50_ms", "p99_ms") if (v := getattr(infra, k)) is not None})
    if infra.passed or infra.p99_ms is None:
        return infra
    return dataclasses.replace(infra, passed=True, error=f"recorded, not enforced: {infra.error}")


def _production_holder(workspace: Workspace, params: dict[str, Any]) -> str:
    try:
        return workspace.model_version(f"{params['model_name']}@production").id
    except NotFoundError:
        return "none"


@step(external=_production_holder)
def production_schema(rows: pd.DataFrame, model_name: str, target: str) -> Schema:
    """The structure production was trained on (its signature's columns, types and nulls); the data's
    own for a first model. Value ranges and vocabularies are left out: new values are what a retrain
    is for, and the drift check reports them."""
    ws = step_workspace()
    try:
        version = ws.model_version(f"{model_name}@production")
    except NotFoundError:
        return _infer_schema(compute_statistics(rows.drop(columns=[target])))
    schema = Schema.from_dict(version.signature["inputs"])
    for column in schema.columns.values():
        column.min = column.max = None
        column.vocabulary = None
    return schema


@step
def features_of(rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """The input columns (what the schema gate checks)."""
    if target not in rows.columns:
        raise DataError(f"no target column {target!r} (columns: {list(rows.columns)})", field="target")
    return rows.drop(columns=[target])


@step(outputs=["model", "fitted"])
def fit_model(
    train: pd.DataFrame,
    target: str,
    estimator: str = "auto",
    older: pd.DataFrame | None = None,
    test: pd.DataFrame | None = None,
    compare_wider: bool = False,
) -> tuple:
    """Fit the estimator ``estimator`` names (task inferred from the target column); returns the model
    and the rows it was fitted on (its training statistics and size are recorded from them). With
    ``compare_wider``, given ``older`` rows (the ones before the current regime) and ``test`` (the
    newest rows, held out), a second fit on ``older`` + ``train`` is kept instead when it scores better
    on ``test``: after an abrupt change the regime's own rows win, under slow drift or a false alarm
    the longer window does."""
    task = infer_task(train[target])
    window = "regime"
    if task == "classification" and train[target].nunique() < 2:
        # a regime of one class (a stretch of "no", say) has nothing to learn: a model of it answers
        # that class whatever it is asked, and its hold-out of the same class would bless it
        wider = pd.concat([older[train.columns], train], ignore_index=True) if older is not None else train
        if wider[target].nunique() < 2:
            only = train[target].dropna().unique()
            shown = repr(only[0].item() if hasattr(only[0], "item") else only[0]) if len(only) else "none"
            raise DataError(
                f"the {len(wider)} labelled rows to train on hold a single class ({shown}): nothing to learn",
                field="target",
            )
        train, older, compare_wider, window = wider, None, False, "wider: the regime holds one class"
    features, y = train.drop(columns=[target]), train[target]
    factory = estimator_factory(estimator)
    model = factory(features, task).fit(features, y)
    fitted = train
    chosen = {"window": window, "n_train": len(train)}
    comparable = older is not None and test is not None and len(older) > 0 and len(test) > 0
    if compare_wider and comparable and older is not None and test is not None:
        wide = pd.concat([older[train.columns], train], ignore_index=True)
        wide_model = factory(wide.drop(columns=[target]), task).fit(wide.drop(columns=[target]), wide[target])
        narrow_eval, wide_eval = score_model(model, test, target), score_model(wide_model, test, target)
        metric = narrow_eval.primary
        sign = -1 if metric in LOWER_IS_BETTER else 1
        narrow_score = narrow_eval.metrics.get(metric, float("nan"))
        wide_score = wide_eval.metrics.get(metric, float("nan"))
        if sign * (wide_score - narrow_score) > 0:
            model, fitted, chosen = wide_model, wide, {"window": "wider", "n_train": len(wide)}
        log_metrics({f"regime_{metric}": narrow_score, f"wider_{metric}": wide_score})
    described = describe_default_model(features, task) if estimator == "auto" else estimator
    log_params({"model": described, "task": task, **chosen})
    return model, fitted


@step(outputs=["model", "fitted"])
def refit_on_holdout(
    model: Any,
    fitted: pd.DataFrame,
    test: pd.DataFrame,
    target: str,
    estimator: str = "auto",
    refit: bool = False,
) -> tuple:
    """With ``refit``, the validated model's recipe fitted again on its own rows and the held-out
    rows after them, which are the newest: the version serves a model that has seen them. Its
    metrics stay those the held-out rows gave the validated fit (a fair, if slightly pessimistic,
    estimate for a fit on more of the same rows). Without ``refit``: ``model`` and ``fitted`` as
    they are.

    Why: the hold-out is the newest fifth of the rows. Under drift that never settles (a model is
    good for about a window) a version that never saw its newest rows starts out already old, and
    right after a change the held-out rows are a fifth of all there is of the new regime."""
    if not refit or len(test) == 0:
        return model, fitted
    rows = pd.concat([fitted[test.columns], test], ignore_index=True)
    features = rows.drop(columns=[target])
    task = infer_task(rows[target])
    return estimator_factory(estimator)(features, task).fit(features, rows[target]), rows


@pipeline
def retrain(
    model_name: str,
    target: str,
    data: str = "log",
    since: str = "",
    max_rows: int = 0,
    min_rows: int = 0,
    holdout_fraction: float = 0.2,
    estimator: str = "auto",
    budget_p99_ms: float = 200.0,
    enforce_latency: bool = True,
    compare_wider: bool = False,
    refit: bool = False,
) -> None:
    """Train the default model on recent labelled rows, validate it against production, register it
    (with ``refit``, fitted again on the held-out rows too once validated: :func:`refit_on_holdout`)."""
    rows, older = training_rows(data, model_name, target, since=since, max_rows=max_rows, min_rows=min_rows)
    schema = production_schema(rows, model_name, target)
    validate_schema(features_of(rows, target), schema)
    train, test = split_recent(rows, holdout_fraction=holdout_fraction)
    model, fitted = fit_model(
        train, target, estimator=estimator, older=older, test=test, compare_wider=compare_wider
    )
    check_drift(statistics(fitted), test)
    evaluation = evaluate_model(model, test, target)
    verdict = validate_model(evaluation, test, model_name)
    final, rows_fitted = refit_on_holdout(model, fitted, test, target, estimator=estimator, refit=refit)
    # the version's training statistics (its signature, drift reference and size) are those of the
    # rows the registered model was fitted on: the longer window when that one was kept, and the
    # held-out rows too when it was refitted
    reference = statistics(rows_fitted)
    infra = latency_gate(final, test, target, budget_p99_ms=budget_p99_ms, enforce_latency=enforce_latency)
    register_model(final, model_name, evaluation, verdict, infra, reference)
