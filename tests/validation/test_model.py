"""Model evaluation (overall, per slice, sanity) and the validation gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression, LogisticRegression

from mloop.errors import DataError, ParameterError
from mloop.validation.model import (
    Evaluation,
    SliceSpec,
    Thresholds,
    Verdict,
    evaluate_model,
    validate_evaluation,
)


@pytest.fixture
def data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 1200
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    city = rng.choice(["paris", "rome"], n)
    y = ((x1 + 0.5 * x2 + (city == "rome") * 0.8 + rng.normal(scale=0.8, size=n)) > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "city": city, "age": rng.integers(18, 80, n), "y": y})


@pytest.fixture
def model(data: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression().fit(data[["x1", "x2"]], data["y"])


def test_classification_metrics_equal_sklearn(model: LogisticRegression, data: pd.DataFrame) -> None:
    ev = evaluate_model(model, data, "y", inputs=["x1", "x2"])
    x, y = data[["x1", "x2"]], data["y"]
    p = model.predict_proba(x)[:, 1]
    assert ev.task == "classification" and ev.rows == len(data)
    assert ev.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, model.predict(x)))
    assert ev.metrics["f1"] == pytest.approx(skm.f1_score(y, model.predict(x)))
    assert ev.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert ev.metrics["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert sum(b["count"] for b in ev.calibration) == len(data)
    assert 0 <= ev.metrics["calibration_error"] < 0.1
    assert ev.sanity["converged"] is True and ev.sanity["probabilities_out_of_range"] == 0


@pytest.mark.parametrize("seed", range(12))
def test_metrics_from_predictions_equal_sklearn_on_generated_cases(seed: int) -> None:
    """mloop computes the metrics with numpy (sklearn's validation cost ~10 ms a call); sklearn is
    the reference: binary and multiclass, ints and strings, ties, classes never predicted or absent,
    a constant regression target."""
    import warnings

    from mloop.validation.model import score_predictions

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    k = [2, 2, 3, 4][seed % 4]
    classes = [f"c{i}" for i in range(k)] if seed % 3 == 0 else list(range(k))
    y = np.array([classes[i] for i in rng.integers(0, k, n)])
    raw = rng.random((n, k)).round(int(rng.integers(1, 4)))  # rounding makes ties
    proba = (raw + 1e-3) / (raw + 1e-3).sum(axis=1, keepdims=True)
    predicted = np.array([classes[i] for i in proba.argmax(axis=1)])
    if seed % 5 == 1:
        predicted[:] = classes[0]  # one class never predicted
    ours = score_predictions("classification", y, predicted, proba, classes)
    binary = k == 2
    kw = {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
        for name, fn in (
            ("precision", skm.precision_score),
            ("recall", skm.recall_score),
            ("f1", skm.f1_score),
        ):
            assert ours[name] == pytest.approx(fn(y, predicted, zero_division=0, **kw), abs=1e-12), name
        assert ours["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=classes), abs=1e-9)
        if len(set(y.tolist())) == k:
            expected = (
                skm.roc_auc_score(y == classes[1], proba[:, 1])
                if binary
                else skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
            )
            assert ours["roc_auc"] == pytest.approx(expected, abs=1e-12)
        if binary:
            assert ours["brier"] == pytest.approx(
                skm.brier_score_loss(y == classes[1], proba[:, 1]), abs=1e-12
            )
        target = rng.normal(size=n) * (seed % 4 != 3)  # every fourth: a constant target
        guess = target + rng.normal(size=n) * (seed % 2)  # every other: predicted exactly
        reg = score_predictions("regression", target, guess, None, [])
        assert reg["mae"] == pytest.approx(skm.mean_absolute_error(target, guess), abs=1e-12)
        assert reg["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(target, guess)), abs=1e-12)
        assert reg["r2"] == pytest.approx(skm.r2_score(target, guess), abs=1e-12)


def test_a_class_the_model_never_saw_scores_without_probability_metrics() -> None:
    """Labels of a class that first appears after training (a backtest's stream): the model's
    probabilities have no column for it; the label metrics are still scored."""
    from mloop.validation.model import score_predictions

    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = score_predictions("classification", y, np.array([0, 1, 0, 1]), proba, [0, 1, 2])
    assert out["accuracy"] == 0.5 and "log_loss" not in out and "roc_auc" not in out


def test_slices_by_value_and_by_range(model: LogisticRegression, data: pd.DataFrame) -> None:
    ev = evaluate_model(model, data, "y", slices=["city", "age:18,40,80"], inputs=["x1", "x2"])
    assert set(ev.slices) == {"city=paris", "city=rome", "age in [18, 40)", "age in [40, 80)"}
    rome = data["city"] == "rome"
    expected = skm.accuracy_score(data["y"][rome], model.predict(data[["x1", "x2"]][rome]))
    assert ev.slices["city=rome"]["accuracy"] == pytest.approx(expected)
    assert ev.slices["city=rome"]["rows"] == rome.sum()
    assert SliceSpec.parse("city=rome").masks(data).keys() == {"city=rome"}


def test_regression_metrics(data: pd.DataFrame) -> None:
    reg = LinearRegression().fit(data[["x1"]], data["x2"] + 3)
    frame = data.assign(target=data["x2"] + 3)
    ev = evaluate_model(reg, frame, "target", inputs=["x1"])
    pred = reg.predict(frame[["x1"]])
    assert ev.task == "regression"
    assert ev.metrics["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(frame["target"], pred)))
    assert ev.metrics["mae"] == pytest.approx(skm.mean_absolute_error(frame["target"], pred))
    assert ev.metrics["r2"] == pytest.approx(skm.r2_score(frame["target"], pred))


class Broken:
    """A model that returns NaN: the sanity checks must catch it."""

    classes_ = np.array([0, 1])

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        return np.full(len(x), np.nan)

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        return np.column_stack([np.full(len(x), 1.5), np.full(len(x), -0.5)])


def test_sanity_checks_fail_the_gate(data: pd.DataFrame) -> None:
    ev = evaluate_model(Broken(), data, "y", inputs=["x1", "x2"])
    assert ev.sanity["non_finite_predictions"] == len(data)
    assert ev.sanity["probabilities_out_of_range"] == 2 * len(data)
    verdict = validate_evaluation(ev)
    assert not verdict.blessed
    assert {c.name for c in verdict.failed} >= {
        "sanity:non_finite_predictions",
        "sanity:probabilities_out_of_range",
    }


def test_non_converged_model_is_flagged(data: pd.DataFrame) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = LogisticRegression(max_iter=1).fit(data[["x1", "x2"]], data["y"])
    assert evaluate_model(lazy, data, "y").sanity["converged"] is False


def test_gate_absolute_relative_and_slice_checks(model: LogisticRegression, data: pd.DataFrame) -> None:
    good = evaluate_model(model, data, "y", slices=["city"])
    weak_model = LogisticRegression().fit(data[["x1", "x2"]].assign(x1=0.0), data["y"])
    weak = evaluate_model(weak_model, data, "y", slices=["city"])
    assert validate_evaluation(good, weak).blessed  # better than production
    verdict = validate_evaluation(weak, good, {"minimum": {"accuracy": 0.99}})
    names = {c.name for c in verdict.failed}
    assert "minimum:accuracy" in names and "vs_production:accuracy" in names
    assert any(n.startswith("slice:city=") for n in names)
    lenient = validate_evaluation(
        weak, good, Thresholds(max_degradation={"accuracy": 1.0}, slice_max_degradation=None)
    )
    assert lenient.blessed and lenient.baseline == good.metrics
    needs_gain = validate_evaluation(good, good, {"min_improvement": {"accuracy": 0.01}})
    assert [c.name for c in needs_gain.failed] == ["improvement:accuracy"]
    lower_is_better = validate_evaluation(good, good, {"maximum": {"log_loss": 0.01}})
    assert [c.name for c in lower_is_better.failed] == ["maximum:log_loss"]


def test_verdict_and_evaluation_roundtrip(model: LogisticRegression, data: pd.DataFrame) -> None:
    ev = evaluate_model(model, data, "y", slices=["city"])
    assert Evaluation.from_bytes(ev.to_bytes()) == ev
    verdict = validate_evaluation(ev, ev)
    assert Verdict.from_bytes(verdict.to_bytes()) == verdict


def test_bad_evaluation_input(model: LogisticRegression, data: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="no label column 'label'"):
        evaluate_model(model, data, "label")
    with pytest.raises(DataError, match="lacks the model's input columns"):
        evaluate_model(model, data.drop(columns=["x2"]), "y")
    with pytest.raises(DataError, match="does not match the model's signature: missing input columns"):
        evaluate_model(Broken(), data, "y", inputs=["x1", "zz"])
    with pytest.raises(DataError, match="slice column 'town' is not in the evaluation data"):
        evaluate_model(model, data, "y", slices=["town"])
    with pytest.raises(DataError, match="zero rows"):
        evaluate_model(model, data.iloc[:0], "y")
    with pytest.raises(ParameterError, match="bins must be numbers"):
        SliceSpec.parse("age:young,old")
    with pytest.raises(ParameterError, match="unknown threshold setting 'minimal'"):
        validate_evaluation(evaluate_model(model, data, "y"), None, {"minimal": {}})


def test_a_label_the_model_never_saw_is_a_miss_not_an_error() -> None:
    """A class that appeared after training: it counts against accuracy and log-loss (probability 0,
    clipped), and the metrics that rank the known classes are left out rather than made up."""
    from mloop.validation.model import score_predictions

    y = np.array(["a", "b", "c", "c"], dtype=object)
    predicted = np.array(["a", "b", "a", "b"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = score_predictions("classification", y, predicted, proba, ["a", "b"])
    assert out["accuracy"] == 0.5
    assert "roc_auc" not in out and "brier" not in out
    assert out["log_loss"] > 15  # two rows at the clipped probability (-log 1e-15 ≈ 34.5 each)
