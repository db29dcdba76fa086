"""The infrastructure check loads the model in a fresh serving process."""

from __future__ import annotations

import hashlib
import importlib
import io
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mloop.validation.infra import infra_check


def fitted() -> tuple[bytes, pd.DataFrame]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LogisticRegression().fit(x, (x["a"] > 0).astype(int))
    sink = io.BytesIO()
    joblib.dump(model, sink)
    return sink.getvalue(), x


def test_a_sound_model_passes_with_its_numbers() -> None:
    data, rows = fitted()
    report = infra_check(data, hashlib.sha256(data).hexdigest(), rows, repeats=50)
    assert report.passed and report.error is None
    assert 0 < report.cold_load_s < 10 and 0 < report.p50_ms <= report.p99_ms < 50


def test_latency_budget_is_enforced() -> None:
    data, rows = fitted()
    report = infra_check(data, hashlib.sha256(data).hexdigest(), rows, budget_p99_ms=1e-6, repeats=20)
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
    report = infra_check(data, hashlib.sha256(data).hexdigest(), x)
    assert not report.passed and report.cold_load_s is None
    assert "No module named 'training_only'" in (report.error or "")


def test_tampered_bytes_are_refused() -> None:
    data, rows = fitted()
    report = infra_check(data, "0" * 64, rows)
    assert not report.passed and "digest mismatch" in (report.error or "")
