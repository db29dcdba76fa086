"""Windows, window scores and the degradation rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mloop.errors import ParameterError
from mloop.monitoring.windows import degradation, parse_window, split_windows, window_frame


def test_windows_parse_as_rows_or_durations() -> None:
    assert parse_window("1000") == 1000
    assert parse_window(50) == 50
    assert parse_window("30m") == timedelta(minutes=30)
    assert parse_window("7d") == timedelta(days=7)
    for bad in ("abc", "0", "-5m", "1x", 0):
        with pytest.raises(ParameterError) as info:
            parse_window(bad)
        assert info.value.field == "window"


def test_split_by_count_and_by_time() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pd.DataFrame({"ts": [t0 + timedelta(minutes=i * 10) for i in range(25)]})
    assert split_windows(frame, 10) == [(0, 10, True), (10, 20, True), (20, 25, False)]
    hourly = split_windows(frame, timedelta(hours=1))
    assert [hi - lo for lo, hi, _ in hourly] == [6, 6, 6, 6, 1]
    assert [complete for *_, complete in hourly] == [True, True, True, True, False]


def test_noise_is_not_degradation_but_a_real_drop_is() -> None:
    # 0.80 promised on 500 hold-out rows; 0.78 on 300 live rows is within noise (2 s.e. ≈ 0.06)
    assert not degradation("accuracy", 0.78, 300, 0.80, 500).degraded
    drop = degradation("accuracy", 0.70, 5000, 0.80, 5000)
    assert drop.degraded and drop.limit == pytest.approx(0.78)
    assert "degraded" in drop.detail
    # errors: higher is worse, compared relatively
    assert degradation("rmse", 1.5, 10_000, 1.0, 10_000).degraded
    assert not degradation("rmse", 1.01, 10_000, 1.0, 10_000).degraded
    # a fixed bound replaces the baseline rule
    assert degradation("accuracy", 0.74, 10, 0.9, 10, threshold=0.75).degraded


def test_window_frame_keeps_the_rows_from_since_on() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pd.DataFrame({"ts": [start + timedelta(hours=h) for h in range(5)], "x": range(5)})
    assert list(window_frame(frame, (start + timedelta(hours=2)).isoformat())["x"]) == [2, 3, 4]
    assert window_frame(frame, None) is frame


def test_a_window_a_log_cannot_be_divided_by_is_refused() -> None:
    """``--window 500000000d`` fits a Python timedelta but not pandas' (exit 1, "unexpected
    OutOfBoundsTimedelta"); ``1e-9s`` was a zero window."""
    for spec, problem in (
        ("500000000d", "longer than a log's time can span (at most 106751d)"),
        ("999999999d", "longer than a log's time can span"),
        ("1e-9s", "shorter than a microsecond"),
    ):
        with pytest.raises(ParameterError, match=re.escape(problem)):
            parse_window(spec)
    assert parse_window("100000d").days == 100000 and parse_window("1e-6s").microseconds == 1


def test_slices_by_a_feature_named_like_a_log_column_and_bins_need_numbers() -> None:
    """A feature named ``version`` beside the log's own ``version``: ``--slice version`` is the
    feature (the two under one name failed in pandas: "Grouper … not 1-dimensional"); bin edges on a
    text column are one error naming the slice (was: "unexpected TypeError")."""
    from mloop.errors import DataError
    from mloop.monitoring.windows import score_window

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pd.DataFrame(
        {
            "ts": [t0 + timedelta(seconds=i) for i in range(6)],
            "version": [1] * 6,
            "role": ["production"] * 6,
            "prediction": [0, 1, 0, 1, 0, 1],
            "label": [0, 1, 1, 1, 0, 0],
            "input.version": ["a", "a", "a", "b", "b", "b"],
            "input.prediction": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    scored = score_window(
        frame,
        reference=None,
        task="classification",
        label="y",
        classes=[0, 1],
        slices=["version", "prediction:0,3.5,10", "role"],
    )
    assert scored.slices["version=a"]["rows"] == 3 and scored.slices["version=b"][
        "accuracy"
    ] == pytest.approx(2 / 3)
    assert (
        scored.slices["prediction in [0, 3.5)"]["rows"] == 3 and scored.slices["role=production"]["rows"] == 6
    )
    with pytest.raises(DataError, match=r"slice column 'version' is not numeric .* slice it by value"):
        score_window(
            frame, reference=None, task="classification", label="y", classes=[0, 1], slices=["version:0,1"]
        )
    for spec in ("x:0,0", "x:nan,1", "x:2,1"):
        with pytest.raises(ParameterError, match="increasing bin edges"):
            score_window(
                frame, reference=None, task="classification", label="y", classes=[0, 1], slices=[spec]
            )


def test_slices_of_true_false_missing_and_continuous_values() -> None:
    """``flag=true`` selects a bool column's True rows (only ``flag=True`` did); rows without a value
    are a slice of their own (they fell out of every slice); a continuous column without bin edges
    is one error (it gave 20 slices of one row each); an empty spec names no column."""
    from mloop.errors import DataError
    from mloop.validation.model import SliceSpec

    frame = pd.DataFrame(
        {
            "flag": [True, False, True, True],
            "city": ["a", None, "b", "a"],
            "x": [0.1, 0.2, 0.3, 0.4] * 1,
        }
    )
    assert SliceSpec.parse("flag=true").masks(frame)["flag=true"].tolist() == [True, False, True, True]
    assert SliceSpec.parse("flag").masks(frame)["flag=True"].sum() == 3
    masks = SliceSpec.parse("city").masks(frame)
    assert masks["city=(missing)"].tolist() == [False, True, False, False] and masks["city=a"].sum() == 2
    wide = pd.DataFrame({"x": [i / 7 for i in range(100)]})
    with pytest.raises(DataError, match=r"holds 100 distinct numbers: give bin edges \(x:0,10,20\)"):
        SliceSpec.parse("x").masks(wide)
    for spec in ("", "  ", "=a", ":0,1"):
        with pytest.raises(ParameterError, match="names no column"):
            SliceSpec.parse(spec)
