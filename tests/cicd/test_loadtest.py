"""The load-test gate: the candidate is served on loopback in its own process and replayed requests;
budgets decide, and the numbers say why."""

from __future__ import annotations

from pathlib import Path

import pytest

import mloop
from mloop.cicd.loadtest import load_test
from mloop.errors import NotFoundError, ParameterError
from tests.serving.serving_helpers import fit, register, training_data


@pytest.fixture
def candidate(tmp_path: Path):
    ws = mloop.Workspace.open(tmp_path / "ws")
    df = training_data()
    register(ws, fit(df, ["a", "b"]), df, ["a", "b"])
    try:
        yield ws
    finally:
        ws.close()


@pytest.mark.slow  # three service starts: ~10 s idle, minutes on a busy machine
def test_a_candidate_within_budget_passes_and_a_broken_replay_fails_naming_the_numbers(candidate) -> None:
    rows = training_data(seed=1, n=60)[["a", "b"]].to_dict(orient="records")
    bad = [{"a": 0.1}] * 10  # a required column missing: every answer is a 4xx
    report = load_test(
        candidate, "clf:1", rows + bad, concurrency=4, p99_budget_ms=60_000, max_error_rate=0.5
    )
    assert report.requests == 70 and report.concurrency == 4
    assert report.passed, report.reasons
    assert 0 < report.error_rate < 0.2 and report.p99_ms is not None and report.p50_ms <= report.p99_ms
    assert report.errors[0].startswith("HTTP 4")
    strict = load_test(
        candidate, "clf:1", bad, concurrency=2, p99_budget_ms=0.0, max_error_rate=0.0, rounds=3
    )
    assert not strict.passed and strict.error_rate == 1.0
    assert strict.reasons[0].startswith("error rate 100.0% exceeds 0.0% (first: HTTP 4")
    assert strict.rounds == 1  # an error-rate failure is final at once: no re-measuring
    slow = load_test(
        candidate, "clf:1", rows[:5], concurrency=1, p99_budget_ms=0.0, max_error_rate=0.0, rounds=2
    )
    assert (
        not slow.passed
        and slow.reasons[0].startswith("p99 latency")
        and "exceeds the 0 ms budget" in slow.reasons[0]
    )
    assert slow.rounds == 2 and len(slow.p99_by_round_ms) == 2  # a latency failure is measured again
    assert slow.p99_ms <= min(slow.p99_by_round_ms) and "2 rounds" in slow.summary()  # per-request best
    assert {"p99_ms", "error_rate", "passed"} <= set(slow.metrics()) and slow.metrics()["passed"] == 0.0
    assert candidate.registry.history("clf") == []  # the real registry's aliases never moved


def test_bad_arguments_are_named(candidate) -> None:
    with pytest.raises(ParameterError, match="at least one request"):
        load_test(candidate, "clf:1", [])
    with pytest.raises(NotFoundError):
        load_test(candidate, "clf:9", [{"a": 1.0, "b": 2.0}])


@pytest.mark.slow  # one service start
def test_a_candidate_that_reads_features_by_key_is_load_tested_on_the_logged_values(tmp_path: Path) -> None:
    """The throw-away copy has no feature store: it serves the feature values the log recorded."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    pd.DataFrame(
        {"driver_id": [1, 2], "ts": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True), "x": [0.1, 0.9]}
    ).to_parquet(tmp_path / "stats.parquet")
    (tmp_path / "features.py").write_text(
        "from mloop.features import Entity, FeatureService, FeatureView\n"
        "driver = Entity('driver', join_keys=['driver_id'])\n"
        "stats = FeatureView('stats', [driver], 'stats.parquet', timestamp='ts', ttl=None)\n"
        "svc = FeatureService('svc', ['stats:x'])\n",
        encoding="utf-8",
    )
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.features.apply(tmp_path / "features.py")
        x = pd.DataFrame({"stats:x": [0.1, 0.9, 0.2, 0.8]})
        signature = {
            "inputs": mloop.infer_schema(mloop.compute_statistics(x)).to_dict(),
            "feature_service": "svc",
        }
        ws.register_model("eta", LogisticRegression().fit(x, [0, 1, 0, 1]), signature=signature)
        report = load_test(ws, "eta:1", [{"stats:x": 0.3}] * 20, concurrency=2, p99_budget_ms=60_000)
        assert report.passed and report.error_rate == 0.0, report.reasons
