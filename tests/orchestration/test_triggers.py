"""The degradation trigger's rules that are pure functions of the log and the version's tags."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mloop.monitoring.windows import WindowResult
from mloop.orchestration.config import TriggerSpec
from mloop.orchestration.triggers import CADENCE_LIVES, Cadence, _grown, _retry, persisted

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


def _window(index: int) -> WindowResult:
    return WindowResult(index=index, start="", end="", rows=200, labelled=200, complete=True, versions={})


def test_a_cadence_needs_versions_that_degraded_and_fires_at_its_share_of_their_lives() -> None:
    spec = SPEC.model_copy(update={"cadence": 0.75})
    lives = [600, 400, 800][-CADENCE_LIVES:]
    median = float(np.median(lives))
    due_at = max(int(np.ceil(0.75 * median)), spec.min_rows)
    fresh = Cadence(lives, scheduled=False, lived=False)
    assert fresh.due(spec, _log(due_at - 1)) is None  # not yet its share of their lives
    due = fresh.due(spec, _log(due_at))
    assert due is not None and due["cadence"] and due["served"] == due_at and due["lives"] == lives
    # off, or too few lives to call the drift steady, or already scheduled once for this version
    assert fresh.due(SPEC, _log(5000)) is None
    assert Cadence(lives[: CADENCE_LIVES - 1], False, False).due(spec, _log(5000)) is None
    assert Cadence(lives, scheduled=True, lived=False).due(spec, _log(5000)) is None
    # a version that degraded itself and still serves (its candidate was refused): scheduled only
    # while its shortfall persists, not after a false alarm
    degraded = Cadence([600], scheduled=False, lived=True)
    fresh_then_worse = np.r_[np.zeros(300), np.ones(300) * (np.arange(300) % 2), np.ones(400) * 0.5]
    back_to_normal = np.r_[np.full(600, 0.2), np.full(400, 0.2)]
    still_bad = np.r_[np.full(300, 0.1), np.full(700, 0.6)]
    assert degraded.due(spec, _log(1000), lambda part: still_bad[: len(part)]) is not None
    assert degraded.due(spec, _log(1000), lambda part: back_to_normal[: len(part)]) is None
    assert degraded.due(spec, _log(1000), lambda part: fresh_then_worse[: len(part)]) is not None
    assert degraded.due(spec, _log(700), lambda part: still_bad[: len(part)]) is None  # 100 rows since
    assert degraded.due(spec, _log(1000)) is None  # no losses to tell


def test_only_a_degrading_version_adds_a_life_once_and_a_scheduled_run_is_not_repeated() -> None:
    frame, w = _log(1000), _window(2)  # 600 labelled rows up to the end of window 2
    fresh = Cadence([400], scheduled=False, lived=False)
    degraded = fresh.fired(None, frame, w, 200)  # a degraded window (no change point)
    assert degraded == {"lives": [400, 600], "scheduled": False, "lived": True}
    assert fresh.fired({"row": 300, "before": 0.1, "after": 0.3}, frame, w, 200)["lives"] == [400, 600]
    # a refit of a version fitted on few rows, or a retry of a refused run, is not a life
    assert fresh.fired({"refresh": True}, frame, w, 200)["lives"] == [400]
    assert fresh.fired({"retry": True}, frame, w, 200)["lives"] == [400]
    # the version already left its life (it fired before and its candidate was refused)
    assert Cadence([400, 500], False, True).fired(None, frame, w, 200)["lives"] == [400, 500]
    scheduled = fresh.fired({"cadence": True}, frame, w, 200)
    assert scheduled["scheduled"] and scheduled["lives"] == [400]
    assert len(Cadence([1, 2, 3, 4], False, False).fired(None, frame, w, 200)["lives"]) == 4  # kept


def _served_log(ws: object, rows: pd.DataFrame) -> pd.DataFrame:
    """A labelled prediction log of ``rows`` as production (v1) answered them."""
    import mloop

    assert isinstance(ws, mloop.Workspace)
    version = ws.model_version("m@production")
    model = ws.load_artifact(version.artifact_id)
    x = rows.drop(columns=["y"])
    ts = pd.date_range("2026-01-01", periods=len(rows), freq="min", tz="UTC")
    frame = pd.DataFrame({"ts": ts.astype(str), "version": version.version})
    frame["prediction"] = model.predict(x)
    frame["label"] = rows["y"].to_numpy()
    for name in x.columns:
        frame[f"input.{name}"] = x[name].to_numpy()
    return frame


def test_a_challenger_fitted_on_logged_rows_fires_only_when_it_beats_production(tmp_path, caplog) -> None:
    """Production trained on x1 + x2. When the concept has moved (x1 - x2), its own recipe fitted on
    the newest logged rows beats it on the newest window: the trigger fires and trains on the newest
    rows. On rows of its own concept a challenger never wins."""
    import mloop
    from mloop.monitoring.monitor import served_versions
    from mloop.orchestration.triggers import _challenger
    from tests.loop_helpers import stream, train_first

    spec = SPEC.model_copy(update={"challenger_z": 3.0, "margin": 0.02, "min_labelled": 100})
    with mloop.Workspace.open(tmp_path / ".mloop") as ws:
        train_first(ws, stream(800, seed=0), tmp_path)
        info = served_versions(ws, "m", [1])[1]
        same = _served_log(ws, stream(1000, seed=1))
        for index in range(5):
            assert _challenger(spec, ws, info, same, 200, index, -1) is None
        moved = _served_log(ws, stream(1000, drift_at=0, seed=2))
        assert _challenger(spec, ws, info, moved, 200, 0, -1) is None  # nothing served before it yet
        fired = _challenger(spec, ws, info, moved, 200, 2, -1)
        assert fired is not None and fired["challenger"]
        assert fired["fitted"] == 400 and fired["rows"] == 200 and fired["row"] == 600
        assert fired["challenger_score"] > fired["production_score"] + 0.2 and fired["z"] > 3
        assert fired["start"] == moved["ts"].iloc[0].replace(" ", "T")
        # after it acted at row 600, the next one waits for min_rows rows served since
        assert _challenger(spec, ws, info, moved, 200, 3, 600) is None
        again = _challenger(spec, ws, info, moved, 200, 4, 600)
        assert again is not None and again["fitted"] == 800  # the newest max_rows rows
        assert _challenger(SPEC, ws, info, moved, 200, 2, -1) is None  # off unless challenger_z is set
        # a version that took production after row 400: the rows other versions answered count too
        late = moved.iloc[400:].reset_index(drop=True)
        own = _challenger(spec, ws, info, late, 200, 1, -1)
        logged = _challenger(spec, ws, info, late, 200, 1, -1, history=lambda: moved)
        assert own is not None and own["fitted"] == 200
        assert logged is not None and logged["fitted"] == 600
        assert logged["start"] == moved["ts"].iloc[0].replace(" ", "T")
        # labels still to come leave gaps, and pandas reads integer labels with gaps as floats:
        # 1.0 is still the class 1, so nothing fires on rows of production's own concept
        gaps = same.copy()
        gaps["label"] = gaps["label"].astype(float)  # as the log's reader gives them
        gaps.loc[gaps.index % 25 == 0, "label"] = np.nan
        for index in range(5):
            assert _challenger(spec, ws, info, gaps, 200, index, -1) is None
        # a recipe that cannot be fitted on the logged inputs (a column was not logged): no verdict,
        # a warning, and the trigger goes on with its other tests
        with caplog.at_level("WARNING", logger="mloop.orchestration.triggers"):
            assert _challenger(spec, ws, info, moved.drop(columns=["input.x1"]), 200, 2, -1) is None
        assert "challenger of m v1 not fitted: KeyError" in caplog.text


def test_a_challenger_must_be_better_on_the_metric_the_trigger_judges(tmp_path) -> None:
    """Positives become rare (label shift): a challenger fitted on the newest rows answers "no" more
    often. Its accuracy is far better and its recall far worse: judged by recall, it does not fire;
    and newest rows of one class have nothing to learn."""
    import mloop
    from mloop.monitoring.monitor import served_versions
    from mloop.orchestration.triggers import _challenger
    from tests.loop_helpers import train_first

    def rows(n: int, positive: float, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        y = (rng.random(n) < positive).astype(int)
        return pd.DataFrame({"x1": rng.normal(size=n) + 1.5 * y, "x2": rng.normal(size=n), "y": y})

    with mloop.Workspace.open(tmp_path / ".mloop") as ws:
        train_first(ws, rows(800, 0.5, 0), tmp_path)
        info = served_versions(ws, "m", [1])[1]
        rare = _served_log(ws, rows(1000, 0.1, 1))
        by = {m: SPEC.model_copy(update={"challenger_z": 3.0, "metric": m}) for m in ("accuracy", "recall")}
        fired = _challenger(by["accuracy"], ws, info, rare, 200, 2, -1)
        assert fired is not None and fired["challenger_score"] > fired["production_score"]
        assert _challenger(by["recall"], ws, info, rare, 200, 2, -1) is None
        none = _served_log(ws, rows(1000, 0.0, 2))  # no positive at all in the newest rows
        assert _challenger(by["accuracy"], ws, info, none, 200, 2, -1) is None


def test_labels_read_back_as_floats_are_the_classes_they_were() -> None:
    from mloop.monitoring.log import label_values, wrong_answers

    labels = pd.Series([1, None, 0, 1], dtype=object).astype(float).dropna()
    predictions = pd.Series([1, 0, 0], dtype="int64")
    values = label_values(labels, predictions)
    assert values.dtype == np.int64 and values.tolist() == [1, 0, 1]
    assert label_values(pd.Series([0.5, 1.0]), predictions).dtype.kind == "f"  # not integers: kept
    assert label_values(pd.Series(["a", "b"]), predictions).tolist() == ["a", "b"]
    assert wrong_answers(np.array([1.0, 0.0, 1.0]), np.array([1, 1, 1])).tolist() == [0.0, 1.0, 0.0]
    assert wrong_answers(np.array(["1", "b"]), np.array([1, "b"], dtype=object)).tolist() == [0.0, 0.0]
    # what the change-point detector and the paired canary judge count as errors: none here
    from mloop.orchestration import changepoint
    from mloop.orchestration.rollout import _row_losses

    frame = pd.DataFrame({"label": [1.0, 0.0, 1.0], "prediction": [1, 0, 1]})
    assert changepoint.row_losses(frame, "classification", [0, 1], None).tolist() == [0, 0, 0]
    y = np.array([1.0, 0.0, 1.0])
    assert _row_losses("accuracy", "classification", [0, 1], y, np.array([1, 0, 1]), None).sum() == 0
