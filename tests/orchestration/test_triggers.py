"""The degradation trigger's rules that are pure functions of the log and the version's tags."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mloop.orchestration.config import TriggerSpec
from mloop.orchestration.triggers import _grown, _retry, persisted

SPEC = TriggerSpec(
    name="degradation",
    kind="degradation",
    pipeline="mloop.steps.retrain:retrain",
    model="m",
    window=200,
    detector="adwin",
    min_rows=200,
    params={"max_rows": 800},
)


def _log(rows: int) -> pd.DataFrame:
    ts = pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC")
    return pd.DataFrame({"ts": ts.astype(str), "label": [1] * rows, "prediction": [1] * rows})


def test_a_version_fitted_on_few_rows_is_refitted_once_its_regime_has_three_times_as_many() -> None:
    frame = _log(800)
    # fitted on 192 rows (40-row hold-out → the pipeline's sizing), 800 rows of its regime logged
    grown = _grown(SPEC, 40, frame, 200, 3)
    assert grown is not None and grown["refresh"] and grown["trained_rows"] == 160
    assert _grown(SPEC, 40, frame, 200, 1) is None  # 400 rows: not yet three times as many


def test_a_version_fitted_on_the_longer_window_is_not_refitted() -> None:
    # the hold-out was the newest 40 rows of a short regime, but the pipeline kept the longer window
    # (728 rows): refitting it on the next 800 rows trains nothing new, it spends a run and a canary
    assert _grown(SPEC, 40, _log(800), 200, 3, trained_rows=728) is None
    assert _grown(SPEC, 40, _log(800), 200, 3, trained_rows=256) is not None


def test_a_refused_run_is_retried_only_while_the_shortfall_persists() -> None:
    rng = np.random.default_rng(0)
    before = (rng.random(800) < 0.15).astype(float)  # 15 % error before the regime it fired on
    back = (rng.random(500) < 0.15).astype(float)  # a false alarm: the loss went back to 15 %
    still = (rng.random(500) < 0.35).astype(float)  # a real change the candidate did not fix
    assert not persisted(before, back, 2.5)
    assert persisted(before, still, 2.5)
    assert persisted(before[:1], still, 2.5)  # nothing to compare with: retried as before


def test_retry_waits_for_its_rows_then_asks_whether_the_shortfall_persisted() -> None:
    frame = _log(1200)
    loss = np.r_[np.zeros(400), np.ones(800)]  # worse since row 400, still worse after the fire
    retry = {"row": 400, "start": "", "trained": 200, "need": 600, "fired": 700}
    assert _retry(frame, None, 200, 3, retry, lambda part: loss[: len(part)], 2.5) is None  # 400 rows
    assert _retry(frame, None, 200, 5, retry, lambda part: loss[: len(part)], 2.5) is not None
    calm = np.r_[np.zeros(400), np.ones(300), np.zeros(500)]  # back to normal after the fire
    assert _retry(frame, None, 200, 5, retry, lambda part: calm[: len(part)], 2.5) is None
