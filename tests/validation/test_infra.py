"""The infrastructure check loads the model in a fresh serving process."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from mloop.validation.infra import check_serving


def fitted() -> tuple[bytes, pd.DataFrame]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LogisticRegression().fit(x, (x["a"] > 0).astype(int))
    sink = io.BytesIO()
    joblib.dump(model, sink)
    return sink.getvalue(), x


def test_a_sound_model_passes_with_its_numbers() -> None:
    data, rows = fitted()
    report = check_serving(data, hashlib.sha256(data).hexdigest(), rows, repeats=50)
    assert report.passed and report.error is None
    assert 0 < report.cold_load_cpu_s < 10 and 0 < report.p50_ms <= report.p99_ms
    assert report.cold_load_s > 0 and 0 < report.cpu_p99_ms < 50


def test_latency_budget_is_enforced() -> None:
    data, rows = fitted()
    report = check_serving(data, hashlib.sha256(data).hexdigest(), rows, budget_p99_ms=1e-6, repeats=20)
    assert not report.passed and "exceeds the 1e-06 ms budget" in (report.error or "")


def test_a_model_that_needs_training_only_code_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a custom estimator from a module only the training process can import
    (tmp_path / "training_only.py").write_text(
        "from sklearn.linear_model import LogisticRegression\nclass OnlyHere(LogisticRegression):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    training_only = importlib.import_module("training_only")
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"a": rng.normal(size=50)})
    sink = io.BytesIO()
    joblib.dump(training_only.OnlyHere().fit(x, (x["a"] > 0).astype(int)), sink)
    data = sink.getvalue()
    report = check_serving(data, hashlib.sha256(data).hexdigest(), x)
    assert not report.passed and report.cold_load_s is None
    assert "No module named 'training_only'" in (report.error or "")


def test_tampered_bytes_are_refused() -> None:
    data, rows = fitted()
    report = check_serving(data, "0" * 64, rows)
    assert not report.passed and "digest mismatch" in (report.error or "")


@contextlib.contextmanager
def cpu_hog() -> Iterator[None]:
    """A busy loop on every core (each in its own process group, killed whatever the test does)."""
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], start_new_session=True, stdout=subprocess.DEVNULL
        )
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for hog in hogs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hog.pid, signal.SIGKILL)
            hog.wait(timeout=10)


def test_a_failing_latency_round_is_measured_again() -> None:
    data, rows = fitted()
    digest = hashlib.sha256(data).hexdigest()
    over = check_serving(data, digest, rows, budget_p99_ms=1e-6, repeats=20, rounds=3)
    assert not over.passed and over.rounds == 3 and "best of 3 rounds" in (over.error or "")
    assert "own CPU time p99" in (over.error or "")
    within = check_serving(data, digest, rows, budget_p99_ms=1e6, repeats=20, rounds=3)
    assert within.passed and within.rounds == 1


def test_cold_load_is_judged_on_cpu_time() -> None:
    data, rows = fitted()
    report = check_serving(data, hashlib.sha256(data).hexdigest(), rows, budget_load_s=1e-6, repeats=5)
    assert not report.passed and report.cold_load_cpu_s is not None and report.cold_load_cpu_s > 0
    assert "s of CPU" in (report.error or "")


def test_histgradientboosting_meets_the_default_budget_on_a_busy_machine() -> None:
    """HGB's OpenMP threads spin on a busy machine (p99 in the hundreds of ms); measured as served, on
    one thread, its one-row p99 stays well inside the default 50 ms budget with every core busy."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(1000, 8)), columns=[f"f{i}" for i in range(8)])
    model = HistGradientBoostingClassifier(max_iter=30).fit(x, (x["f0"] + x["f1"] > 0).astype(int))
    sink = io.BytesIO()
    joblib.dump(model, sink)
    data = sink.getvalue()
    with cpu_hog():
        report = check_serving(data, hashlib.sha256(data).hexdigest(), x, repeats=200)
    assert report.passed, report.error


def test_in_process_measures_the_same_way_and_refuses_what_cannot_load_or_predict() -> None:
    """A replay's check (``in_process=True``): no interpreter per candidate, the same verdict rules."""
    data, rows = fitted()
    digest = hashlib.sha256(data).hexdigest()
    report = check_serving(data, digest, rows, repeats=20, in_process=True)
    assert report.passed and report.error is None and report.rounds == 1
    assert 0 < report.p50_ms <= report.p99_ms and report.cold_load_cpu_s is not None
    assert not check_serving(data, digest, rows, budget_p99_ms=1e-6, repeats=5, in_process=True).passed
    assert "digest mismatch" in (check_serving(data, "0" * 64, rows, in_process=True).error or "")
    junk = b"not a pickle"
    broken = check_serving(junk, hashlib.sha256(junk).hexdigest(), rows, in_process=True)
    assert not broken.passed and broken.p99_ms is None and broken.error
    wrong = check_serving(data, digest, rows.rename(columns={"a": "z"}), in_process=True)
    assert not wrong.passed and wrong.p99_ms is None and "feature names" in (wrong.error or "")


def test_the_fresh_process_gets_the_rows_with_their_types() -> None:
    """The rows went to the child as JSON and came back retyped (text of digits as ints, bools with
    blanks as floats, times as epoch integers, year 1 an overflow): every default model trained on such
    columns failed its check ("ufunc 'isnan' not supported") and was rejected."""
    import datetime

    from mloop.steps.retrain import default_model

    n = 200
    rng = np.random.default_rng(1)
    x = pd.DataFrame({
        "digits": [str(i % 7) for i in range(n)],
        "flag": [None if i % 5 == 0 else bool(i % 2) for i in range(n)],
        "day": [datetime.date(1, 1, 1) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 900, n)],
        "x": rng.normal(size=n),
    })  # fmt: skip
    model = default_model(x, "classification").fit(x, (x["x"] > 0).astype(int))
    sink = io.BytesIO()
    joblib.dump(model, sink)
    data = sink.getvalue()
    report = check_serving(data, hashlib.sha256(data).hexdigest(), x, repeats=20, budget_p99_ms=1e9)
    assert report.error is None and report.passed
