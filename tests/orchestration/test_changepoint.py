"""Change points and trends in a model's live loss: pure functions of the rows."""

from __future__ import annotations

import numpy as np
import pytest

from mloop.orchestration import changepoint


def losses(p: np.ndarray, seed: int) -> np.ndarray:
    """0/1 losses with error probability ``p`` per row."""
    return (np.random.default_rng(seed).random(len(p)) < p).astype(float)


def test_a_steady_rise_is_a_significant_trend_and_a_flat_loss_is_not() -> None:
    rising = losses(np.linspace(0.1, 0.3, 1000), seed=1)
    slope, z = changepoint.trend(rising)
    assert z > 4 and slope * 999 == pytest.approx(0.2, abs=0.08)
    for seed in range(5):
        assert abs(changepoint.trend(losses(np.full(1000, 0.15), seed=seed))[1]) < 3
    falling = losses(np.linspace(0.3, 0.1, 1000), seed=2)
    assert changepoint.trend(falling)[1] < -4  # getting better: a negative z, never a reason to retrain


def test_too_few_or_constant_rows_have_no_trend() -> None:
    assert changepoint.trend(np.array([0.0, 1.0])) == (0.0, 0.0)
    assert changepoint.trend(np.full(50, 0.2)) == (0.0, 0.0)


@pytest.mark.skipif(not changepoint.available(), reason="river is not installed (pip install 'mloop[drift]')")
def test_an_abrupt_rise_is_found_near_where_it_happened() -> None:
    p = np.r_[np.full(600, 0.1), np.full(400, 0.4)]
    found = changepoint.detect(losses(p, seed=3), delta=0.002, min_effect=0.05)
    assert found is not None and abs(found.row - 600) < 60 and found.after - found.before > 0.2
    assert changepoint.detect(losses(p[::-1], seed=3), delta=0.002, min_effect=0.05) is None  # a fall
