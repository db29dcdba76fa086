"""Drift tests: equal to scipy on the same data, hand-checked distances, and the right columns flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mloop.errors import DataError, ParameterError
from mloop.validation.drift import DriftReport, detect_drift, training_serving_skew
from mloop.validation.stats import compute_statistics


def by_column(report: DriftReport) -> dict:
    return {f.column: f for f in report.features}


def test_ks_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(0.3, 1.2, size=300)
    f = by_column(detect_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})))["x"]
    expected = sps.ks_2samp(a, b)
    assert f.method == "ks" and f.exact
    assert f.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert f.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_chi2_equals_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.choice(["u", "v", "w"], size=600, p=[0.5, 0.3, 0.2])
    b = rng.choice(["u", "v", "w", "z"], size=400, p=[0.4, 0.3, 0.2, 0.1])
    f = by_column(detect_drift(pd.DataFrame({"c": a}), pd.DataFrame({"c": b})))["c"]
    table = pd.crosstab(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]).to_numpy()
    expected = sps.chi2_contingency(table, correction=False)
    assert f.method == "chi2"
    assert f.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert f.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_psi_and_js_match_hand_computed_values() -> None:
    ref = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 20})
    cur = pd.DataFrame({"c": ["a"] * 20 + ["b"] * 30 + ["c"] * 50})
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    psi = float(np.sum((q - p) * np.log(q / p)))  # 0.5497…
    m = (p + q) / 2
    js = float(np.sqrt((np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m))) / 2))
    f = by_column(detect_drift(ref, cur, methods={"c": "psi"}))["c"]
    assert f.statistic == pytest.approx(psi, rel=1e-12) and f.psi == pytest.approx(psi, rel=1e-12)
    f = by_column(detect_drift(ref, cur, methods={"c": "jensenshannon"}))["c"]
    assert f.statistic == pytest.approx(js, rel=1e-12)
    assert psi == pytest.approx(0.5497, abs=1e-4)


def test_wasserstein_is_normalised_by_reference_std() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 2, 3000), rng.normal(1, 2, 3000)
    f = by_column(detect_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})))["x"]
    assert f.method == "wasserstein" and f.exact
    assert f.statistic == pytest.approx(sps.wasserstein_distance(a, b) / np.std(a), rel=1e-12)


def test_sketch_path_approximates_the_exact_tests() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 200_000), rng.normal(0.2, 1, 200_000)
    f = by_column(detect_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})))["x"]
    assert not f.exact
    assert f.statistic == pytest.approx(sps.wasserstein_distance(a, b) / np.std(a), abs=0.02)
    f = by_column(detect_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b}), methods={"x": "ks"}))["x"]
    assert f.statistic == pytest.approx(sps.ks_2samp(a, b).statistic, abs=0.01)


@pytest.mark.parametrize("n", [800, 20_000])
def test_exactly_the_shifted_columns_are_flagged(n: int) -> None:
    rng = np.random.default_rng(4)
    cols = {f"num{i}": rng.normal(size=2 * n) for i in range(6)} | {
        f"cat{i}": rng.choice(list("abcd"), size=2 * n) for i in range(4)
    }
    data = pd.DataFrame(cols)
    ref, cur = data.iloc[:n].copy(), data.iloc[n:].copy()
    cur["num1"] += 0.8
    cur["num4"] *= 2.5
    cur["cat2"] = rng.choice(list("abcd"), size=n, p=[0.7, 0.1, 0.1, 0.1])
    report = detect_drift(ref, cur)
    assert set(report.drifted_features) == {"num1", "num4", "cat2"}
    assert report.drift_share == pytest.approx(0.3) and not report.dataset_drift
    assert report.features[0].drifted  # drifted first


def test_low_cardinality_numbers_are_compared_as_categories() -> None:
    ref = pd.DataFrame({"label": [0, 1] * 300})
    cur = pd.DataFrame({"label": [0] * 500 + [1] * 100})
    f = by_column(detect_drift(ref, cur))["label"]
    assert f.kind == "categorical" and f.method == "chi2" and f.drifted


def test_reference_may_be_stored_statistics() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"x": rng.normal(size=500)})
    cur = pd.DataFrame({"x": rng.normal(1, 1, size=500)})
    from_data = detect_drift(ref, cur)
    from_stats = detect_drift(compute_statistics(ref), compute_statistics(cur))
    assert from_data.to_dict() == from_stats.to_dict() | {
        "reference_source": from_data.reference_source,
        "current_source": from_data.current_source,
    }
    skew = training_serving_skew(compute_statistics(ref), compute_statistics(cur))
    assert skew.kind == "skew" and skew.drifted_features == ["x"]


def test_columns_on_one_side_only_are_reported() -> None:
    report = detect_drift(
        pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2]}), pd.DataFrame({"a": [1.0, 2.0], "c": [3, 4]})
    )
    assert report.only_in_reference == ["b"] and report.only_in_current == ["c"]
    assert [f.column for f in report.features] == ["a"]
    with pytest.raises(ParameterError, match="column 'b' is not in the current data"):
        detect_drift(pd.DataFrame({"b": [1.0]}), pd.DataFrame({"c": [1.0]}), columns=["b"])


def test_zero_row_reference_is_refused() -> None:
    with pytest.raises(DataError, match=r"reference data .* has zero rows"):
        detect_drift(pd.DataFrame({"a": pd.Series([], dtype=float)}), pd.DataFrame({"a": [1.0]}))


def test_all_null_columns_are_skipped_with_a_reason() -> None:
    report = detect_drift(
        pd.DataFrame({"a": [1.0, 2.0], "n": [None, None]}), pd.DataFrame({"a": [1.0, 3.0], "n": [1.0, 2.0]})
    )
    assert report.skipped == {"n": "no values on the reference side"}


def test_bad_overrides() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "k": ["x", "y"]})
    with pytest.raises(ParameterError, match="must be one of"):
        detect_drift(df, df, methods={"a": "magic"})
    with pytest.raises(ParameterError, match="holds categories; ks needs numbers"):
        detect_drift(df, df, methods={"k": "ks"})
    with pytest.raises(ParameterError, match="share_threshold"):
        detect_drift(df, df, share_threshold=0)


def test_report_roundtrips_through_bytes() -> None:
    rng = np.random.default_rng(6)
    report = detect_drift(
        pd.DataFrame({"x": rng.normal(size=300)}), pd.DataFrame({"x": rng.normal(size=300)})
    )
    assert DriftReport.from_bytes(report.to_bytes()).to_dict() == report.to_dict()


def test_method_overrides_on_numbers_and_small_domains() -> None:
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.normal(size=500), "label": rng.integers(0, 2, 500)})
    cur = pd.DataFrame(
        {"x": rng.normal(1, 1, size=500), "label": rng.normal(size=500)}
    )  # label now continuous
    report = by_column(detect_drift(ref, cur, methods={"x": "jensenshannon"}))
    assert report["x"].kind == "numeric" and 0 < report["x"].statistic < 1 and report["x"].drifted
    assert report["label"].kind == "numeric" and report["label"].drifted  # compared as numbers, not counts
    small = by_column(detect_drift(ref, ref.assign(label=1 - ref["label"]), methods={"label": "ks"}))
    assert small["label"].method == "ks" and small["label"].kind == "numeric"
    with pytest.raises(ParameterError, match="holds numbers; chi2 needs categories"):
        detect_drift(ref, cur, methods={"x": "chi2"})


def test_numbers_on_one_side_and_text_on_the_other_are_skipped_unless_a_method_is_asked_for() -> None:
    """A timestamp feature: numbers in the training data, ISO text in the prediction log. By default
    the column is skipped with the reason (every degradation check failed on it before); a method
    asked for by name still refuses it."""
    rng = np.random.default_rng(0)
    days = pd.date_range("2026-01-01", periods=5000, freq="min", tz="UTC")
    ref = pd.DataFrame({"ts": days.asi8 / 1e9, "x": rng.normal(size=5000)})
    cur = pd.DataFrame({"ts": days.astype(str), "x": rng.normal(size=5000) + 2})
    report = detect_drift(ref, cur)
    assert [f.column for f in report.features] == ["x"] and report.features[0].drifted
    assert "numeric on the reference side, categorical on the current side" in report.skipped["ts"]
    with pytest.raises(ParameterError, match="holds categories; ks needs numbers"):
        detect_drift(ref, cur, methods={"ts": "ks"})
