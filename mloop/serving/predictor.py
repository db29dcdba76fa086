"""A loaded model version and the checks every request's rows pass before it predicts.

Rows are validated against the version's signature (the training schema): missing or extra columns,
wrong types and nulls where not allowed are refused with the row and column named; out-of-domain
values (outside the training range, unseen categories) are refused or accepted and counted, by
configuration.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mloop.core.compiled import OnnxClassifier, OnnxModel
from mloop.entities import ModelVersion
from mloop.errors import InputError, MloopError
from mloop.validation.times import seconds_since_epoch

if TYPE_CHECKING:  # imported when a request needs a DataFrame, not before the first answer
    import pandas as pd

__all__ = ["InputError", "LoadedModel", "OneThreadPerCaller", "Predictor"]


def quoted(value: Any, limit: int = 60) -> str:
    """A client's value as it sent it, in JSON (``null``, ``true``, ``{"a": 1}``, not ``None``,
    ``True``), cut to ``limit`` characters: error messages quote what was sent."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


_NUMERIC = ("int", "float")
_INT64 = 2**63  # an integer column's values are 64-bit integers (the prediction log's type)
_SMALL_BATCH = 16
PROBABILITY_DECIMALS = 6  # answers carry probabilities to 6 decimals (what a backtest scores offline too)
_LARGEST = 1e308  # integers beyond a float's range cannot be predicted on


@dataclass
class LoadedModel:
    """A model version in memory, with what validation needs from its signature."""

    version: ModelVersion
    model: Any
    columns: list[str]
    rules: dict[str, dict[str, Any]]
    classes: list[Any] | None

    @classmethod
    def from_version(cls, version: ModelVersion, model: Any) -> LoadedModel:
        inputs = version.signature.get("inputs", {}).get("columns", {})
        names = getattr(model, "feature_names_in_", None)
        columns = [str(c) for c in names] if names is not None else list(inputs)
        if not columns:
            raise MloopError(f"{version.name} v{version.version} has no input signature and no feature names")
        classes = getattr(model, "classes_", None)
        return cls(version, model, columns, {c: inputs.get(c, {"type": "any"}) for c in columns},
                   classes.tolist() if classes is not None else None)  # fmt: skip

    def sample_row(self) -> dict[str, Any]:
        """A plausible row (domain midpoints, first known category) for smoke predictions."""
        row: dict[str, Any] = {}
        for column, rule in self.rules.items():
            kind = rule.get("type", "any")
            if kind in _NUMERIC:
                lo, hi = rule.get("min"), rule.get("max")
                value = (lo + hi) / 2 if lo is not None and hi is not None else 0.0
                row[column] = int(value) if kind == "int" else float(value)
            elif kind == "bool":
                row[column] = False
            else:
                vocab = rule.get("vocabulary") or ["x"]
                row[column] = vocab[0]
        return row


@dataclass
class Validation:
    """What validation learned: out-of-domain values accepted (by column) and the columns' values."""

    out_of_domain: Counter[str] = field(default_factory=Counter)
    columns: dict[str, list[Any]] = field(default_factory=dict)
    finite: set[str] = field(default_factory=set)  # numeric columns proven to hold finite numbers only
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # their values, for large batches


class OneThreadPerCaller:
    """Each thread that predicts runs OpenMP with one thread, set once per thread.

    scikit-learn's HistGradientBoosting (the loop's default estimator) starts a team of OpenMP threads
    for every call, even for one row; on a busy machine they spin and wait for each other (one-row p99
    381 ms vs 6 ms with one thread, 2 vCPUs). OpenMP's thread count is a per-thread setting, so it is
    set in each calling thread on its first prediction (~1 ms, once) and costs an attribute lookup
    (~50 ns) afterwards, against ~20 µs for a ``threadpool_limits`` context per call. Only OpenMP is
    limited: BLAS's setting is process-wide (it would slow training that shares a process with a
    replay), and BLAS does not split one-row products across threads anyway.
    """

    def __init__(self) -> None:
        self._seen = threading.local()

    def __call__(self) -> None:
        if getattr(self._seen, "limited", False):
            return
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="openmp")  # not a context: stays set for this thread
        except ImportError:  # threadpoolctl comes with scikit-learn; without it there is no OpenMP model
            pass
        self._seen.limited = True


class Predictor:
    """Validates rows and predicts with one loaded model version (one OpenMP thread per caller)."""

    def __init__(self, loaded: LoadedModel, *, out_of_domain: str = "count") -> None:
        if out_of_domain not in ("count", "reject"):
            raise MloopError(f"out_of_domain must be 'count' or 'reject', got {out_of_domain!r}")
        self._one_thread = OneThreadPerCaller()
        self._one_thread()  # the probe below predicts too
        self.loaded = loaded
        self.out_of_domain = out_of_domain
        self._vocab = {c: frozenset(r["vocabulary"]) for c, r in loaded.rules.items() if r.get("vocabulary")}
        self._probabilistic = loaded.classes is not None and hasattr(loaded.model, "predict_proba")
        self._compiled = isinstance(loaded.model, OnnxModel)
        self.numpy_path, self.proba_decides = self._probe()

    def _probe(self) -> tuple[bool, bool]:
        """Can requests skip the DataFrame (3x cheaper in scikit-learn) and the second model call?

        Both shortcuts are taken only if they give exactly what the plain DataFrame path gives on
        probe rows; otherwise the service keeps the plain path.
        """
        rows = self._probe_rows()
        model = self.loaded.model
        if isinstance(model, OnnxModel):  # takes a matrix by design, proven equal to the model
            proba_decides = False
            if isinstance(model, OnnxClassifier):
                x = self._matrix(rows)
                decided = np.asarray(self.loaded.classes)[model.predict_proba(x).argmax(axis=1)]
                proba_decides = bool(np.array_equal(decided, model.predict(x)))
            return True, proba_decides
        frame = self.frame(rows)
        expected = np.asarray(model.predict(frame))
        proba_decides = False
        if self._probabilistic:
            proba = np.asarray(model.predict_proba(frame))
            proba_decides = bool(
                np.array_equal(np.asarray(self.loaded.classes)[proba.argmax(axis=1)], expected)
            )
        numeric = all(r.get("type") in _NUMERIC for r in self.loaded.rules.values())
        if not numeric:
            return False, proba_decides
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                same = np.array_equal(np.asarray(model.predict(self._matrix(rows))), expected)
                if same and self._probabilistic:
                    same = np.allclose(model.predict_proba(self._matrix(rows)), proba, rtol=0, atol=1e-12)
        except Exception:
            return False, proba_decides
        return same, proba_decides

    def _probe_rows(self) -> list[dict[str, Any]]:
        base = self.loaded.sample_row()
        rows = [base]
        for end in ("min", "max"):
            row = dict(base)
            for column, rule in self.loaded.rules.items():
                if rule.get(end) is not None and rule.get("type") in _NUMERIC:
                    row[column] = rule[end] if rule.get("type") == "float" else int(rule[end])
            rows.append(row)
        return rows

    def _matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        columns = self.loaded.columns
        return np.array([[row[c] for c in columns] for row in rows], dtype=float)

    def validate(self, rows: Sequence[Mapping[str, Any]]) -> Validation:
        """Raise InputError naming the row and column of the first problem; count accepted oddities."""
        columns = self.loaded.columns
        expected = set(columns)
        found = Validation()
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(f"row {i}: expected an object of column → value", field=f"instances[{i}]")
            if row.keys() != expected:
                missing = [c for c in columns if c not in row]
                if missing:
                    raise InputError(f"row {i}: missing column {missing[0]!r}", field=missing[0])
                extra = sorted(k for k in row if k not in expected)
                raise InputError(
                    f"row {i}: unexpected column {extra[0]!r} "
                    f"(the model takes {', '.join(repr(c) for c in columns)})",
                    field=extra[0],
                )
        for column in columns:
            values = [row[column] for row in rows]
            found.columns[column] = values
            if not self._fast_numeric(column, values, found):
                for i, value in enumerate(values):  # the exact path: names the first bad row
                    self._check(i, column, value, found)
        return found

    def _fast_numeric(self, column: str, values: list[Any], found: Validation) -> bool:
        """Check a numeric column in bulk; False sends it to the per-value path (for the message).

        Small batches are checked in plain Python: numpy's per-call cost is ~5 µs, ten times a
        value's check, and single-row requests are the common case.
        """
        rule = self.loaded.rules[column]
        kind = rule.get("type")
        if kind not in _NUMERIC:
            return False
        lo, hi = rule.get("min"), rule.get("max")
        outside = 0
        if len(values) <= _SMALL_BATCH:
            for v in values:
                if type(v) is float:
                    if v - v != 0.0 or (kind == "int" and not v.is_integer()):  # NaN, ±inf or 2.5
                        return False
                elif type(v) is not int or not -_LARGEST < v < _LARGEST:  # bool, str, None, 10**400
                    return False
                if kind == "int" and not -_INT64 <= v < _INT64:  # the log stores 64-bit integers
                    return False
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    outside += 1
        else:
            if not all(type(v) is float or type(v) is int for v in values):
                return False
            try:
                array = np.fromiter(values, dtype=float, count=len(values))
            except OverflowError:
                return False
            if not np.isfinite(array).all() or (kind == "int" and not (array == np.round(array)).all()):
                return False
            if kind == "int" and not all(-_INT64 <= v < _INT64 for v in values):  # exact, not as floats
                return False
            if lo is not None:
                outside += int((array < lo).sum())
            if hi is not None:
                outside += int((array > hi).sum())
            found.arrays[column] = array
        if outside:
            if self.out_of_domain == "reject":
                return False
            found.out_of_domain[column] += outside
        found.finite.add(column)
        return True

    def _check(self, i: int, column: str, value: Any, found: Validation) -> None:
        rule = self.loaded.rules[column]
        kind = rule.get("type", "any")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not rule.get("nullable", False) and kind != "any":
                raise InputError(
                    f"row {i}: column {column!r} is null, which the model does not accept", field=column
                )
            return
        if kind in _NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"row {i}: column {column!r}: expected a number, got {quoted(value)}", field=column
                )
            if kind == "int" and isinstance(value, float) and not value.is_integer():
                raise InputError(
                    f"row {i}: column {column!r}: expected an integer, got {quoted(value)}", field=column
                )
            if kind == "int" and not -_INT64 <= value < _INT64:
                raise InputError(
                    f"row {i}: column {column!r}: {quoted(value)} is beyond a 64-bit integer (the column's "
                    "type)",
                    field=column,
                )
            try:
                finite = math.isfinite(value)
            except OverflowError:  # an integer too large for a float
                finite = False
            if not finite:
                raise InputError(
                    f"row {i}: column {column!r}: {quoted(value)} is not a finite number", field=column
                )
            lo, hi = rule.get("min"), rule.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                self._out_of_domain(i, column, f"{value!r} is outside the training range [{lo}, {hi}]", found)
        elif kind == "datetime":
            # JSON has no time type: ISO-8601 text, read as the model reads it (naive = UTC)
            seconds = seconds_since_epoch(value) if isinstance(value, str) else None
            if seconds is None:
                raise InputError(
                    f"row {i}: column {column!r}: expected an ISO-8601 date or time such as "
                    f"'2024-06-05' or '2024-06-05T10:00:00+02:00', got {quoted(value)}",
                    field=column,
                )
            lo, hi = rule.get("min"), rule.get("max")
            if (lo is not None and seconds < lo) or (hi is not None and seconds > hi):
                self._out_of_domain(i, column, f"{value!r} is outside the training range", found)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise InputError(
                    f"row {i}: column {column!r}: expected true or false, got {quoted(value)}", field=column
                )
        elif kind == "string":
            if not isinstance(value, str):
                raise InputError(
                    f"row {i}: column {column!r}: expected a string, got {quoted(value)}", field=column
                )
            vocab = self._vocab.get(column)
            if vocab is not None and value not in vocab:
                self._out_of_domain(i, column, f"{value!r} was never seen in training", found)

    def _out_of_domain(self, i: int, column: str, what: str, found: Validation) -> None:
        if self.out_of_domain == "reject":
            raise InputError(f"row {i}: column {column!r}: {what}", field=column)
        found.out_of_domain[column] += 1

    def frame(self, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame.from_records(rows, columns=self.loaded.columns)

    def predict(self, frame: pd.DataFrame) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (JSON-ready) and class probabilities when the model gives them."""
        self._one_thread()
        model = self.loaded.model
        predicted = np.asarray(model.predict(frame))
        proba = None
        if self._probabilistic:
            proba = np.asarray(model.predict_proba(frame), dtype=float).round(PROBABILITY_DECIMALS).tolist()
        return predicted.tolist(), proba

    def predict_rows(
        self, rows: Sequence[Mapping[str, Any]], checked: Validation | None = None
    ) -> tuple[list[Any], list[list[float]] | None]:
        """Validated rows → predictions, by the cheapest path the probe proved equivalent."""
        self._one_thread()
        model = self.loaded.model
        if self.numpy_path:
            columns = self.loaded.columns
            proven_finite = checked is not None and len(checked.finite) == len(columns)
            if checked is not None and len(checked.arrays) == len(columns):
                x: Any = np.column_stack([checked.arrays[c] for c in columns])
            else:
                x = self._matrix(rows)
            if self._compiled:
                return self._predict_compiled(x)
            with warnings.catch_warnings(), _skip_sklearn_checks(proven_finite):
                warnings.simplefilter("ignore", UserWarning)  # fitted with names; the order is the model's
                if self._probabilistic and self.proba_decides:
                    proba = np.asarray(model.predict_proba(x), dtype=float)
                    predicted = np.asarray(self.loaded.classes)[proba.argmax(axis=1)]
                    return predicted.tolist(), proba.round(PROBABILITY_DECIMALS).tolist()
                if not self._probabilistic:
                    return np.asarray(model.predict(x)).tolist(), None
                return np.asarray(model.predict(x)).tolist(), np.asarray(model.predict_proba(x)).round(
                    PROBABILITY_DECIMALS
                ).tolist()
        frame = self.frame(rows)
        if self._probabilistic and self.proba_decides:
            proba = np.asarray(model.predict_proba(frame), dtype=float)
            return np.asarray(self.loaded.classes)[proba.argmax(axis=1)].tolist(), proba.round(
                PROBABILITY_DECIMALS
            ).tolist()
        return self.predict(frame)

    def _predict_compiled(self, x: np.ndarray) -> tuple[list[Any], list[list[float]] | None]:
        """The compiled form on a matrix: no scikit-learn configuration to set and no feature-name
        warning to silence (a third of a one-row answer's model-call time went to those)."""
        model = self.loaded.model
        if self._probabilistic and self.proba_decides:
            proba = model.predict_proba(x)
            predicted = np.asarray(self.loaded.classes)[proba.argmax(axis=1)]
            return predicted.tolist(), proba.round(PROBABILITY_DECIMALS).tolist()
        if not self._probabilistic:
            return np.asarray(model.predict(x)).tolist(), None
        return np.asarray(model.predict(x)).tolist(), model.predict_proba(x).round(
            PROBABILITY_DECIMALS
        ).tolist()

    def predict_batch(
        self, parts: Sequence[tuple[Sequence[Mapping[str, Any]], Validation]]
    ) -> list[tuple[list[Any], list[list[float]] | None]]:
        """Several requests' validated rows in one model call; the answers split back by request.

        Row by row the same as :meth:`predict_rows` on each part (the model sees one matrix or frame
        of all rows; predictions of one row never depend on its neighbours).
        """
        if len(parts) == 1:
            return [self.predict_rows(*parts[0])]
        rows = [row for part, _ in parts for row in part]
        merged = Validation(finite=set.intersection(*(checked.finite for _, checked in parts)))
        columns = self.loaded.columns
        if all(len(checked.arrays) == len(columns) for _, checked in parts):
            merged.arrays = {c: np.concatenate([checked.arrays[c] for _, checked in parts]) for c in columns}
        predictions, probabilities = self.predict_rows(rows, merged)
        out, start = [], 0
        for part, _ in parts:
            end = start + len(part)
            out.append(
                (predictions[start:end], probabilities[start:end] if probabilities is not None else None)
            )
            start = end
        return out


def _skip_sklearn_checks(finite: bool) -> Any:
    """scikit-learn's own finiteness and parameter checks, off when validation already proved them
    (~17 % of a single-row prediction); a no-op for other frameworks."""
    import contextlib
    import sys

    sklearn = sys.modules.get("sklearn")
    if sklearn is None or not finite:
        return contextlib.nullcontext()
    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)
