"""Backtest: the loop replayed on history against a static model and retraining every window."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from commands import mloop_command
from loop_helpers import stream

from mloop.backtesting.backtest import backtest, load_stream
from mloop.backtesting.report import backtest_html
from mloop.cli import main
from mloop.errors import DataError, ParameterError


def test_hostile_tables_and_options_are_one_line_before_any_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tables and options that used to crash ("a bug in mloop"), fail a run (exit 1), or replay
    nonsense with exit 0: each is one ``error:`` line naming the problem, exit 2, before a replay."""
    base = stream(300)
    files: dict[str, pd.DataFrame | str] = {
        "dup.csv": "x1,x1,y\n" + "\n".join(f"{i},{i},{i % 2}" for i in range(300)),
        "only.csv": base[["y"]],
        "empty_col.parquet": base.assign(x2=np.nan),
        "inf.csv": base.assign(x2=base["x2"].where(base.index % 10 != 0, np.inf)),
        "huge.csv": base.assign(y=np.where(base["x1"] > 0, 1e300, -1e300)),
        "times.parquet": base.assign(y=pd.date_range("2026-01-01", periods=300, freq="h")),
        "untimed.csv": base.assign(
            t=pd.date_range("2026-01-01", periods=300, freq="h").where(base.index % 5 != 0)
        ),
        "rare.csv": base.assign(y=[1 if i in (5, 7, 250) else 0 for i in range(300)]),
    }
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        elif name.endswith(".parquet"):
            content.to_parquet(path)
        else:
            content.to_csv(path, index=False)
    (tmp_path / "mae.toml").write_text(
        '[[triggers]]\nname = "d"\nmodel = "m"\nkind = "degradation"\n'
        'pipeline = "mloop.steps.retrain:retrain"\nmetric = "mae"\n'
    )
    (tmp_path / "five.toml").write_text("triggers = 5\n")
    (tmp_path / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    data = tmp_path / "d.csv"
    base.to_csv(data, index=False)
    (tmp_path / "header.csv").write_text("x1,x2,y\n")
    (tmp_path / "packed.csv").write_bytes(gzip.compress(data.read_bytes()))
    at = str(tmp_path)
    cases = [
        ([f"{at}/dup.csv"], "column 'x1' appears twice"),
        ([f"{at}/only.csv"], "no feature columns"),
        ([f"{at}/empty_col.parquet"], "column 'x2' holds no values"),
        ([f"{at}/inf.csv"], "column 'x2' holds 30 value(s) like inf"),
        ([f"{at}/huge.csv"], "column 'y' holds 300 value(s) like 1e+300"),
        ([f"{at}/times.parquet"], "target 'y' holds times"),
        ([f"{at}/untimed.csv", "--time-col", "t"], "time column 't' has 60 row(s) without a time"),
        ([f"{at}/rare.csv"], "could not be scored by 'roc_auc' on its validation rows"),
        ([f"{at}/header.csv"], "header.csv: no rows, only column names"),  # was "column 'x1' holds no values"
        (["/dev/null"], "data file /dev/null is not a regular file"),  # was "does not exist"
        (
            [f"{at}/packed.csv"],
            "not CSV text; the file is gzip-compressed",
        ),  # was its bytes, "separated by ';'"
        ([str(data), "--config", f"{at}/mae.toml"], "trigger 'd': metric 'mae' does not fit"),
        ([str(data), "--config", f"{at}/five.toml"], "triggers must be a list of tables"),
        ([str(data), "--config", f"{at}/deep.toml"], "its values nest too deeply"),
        ([str(data), "--encoding", "base64"], "'base64' is not a text encoding"),
        ([str(data), "--encoding", "utf-16"], "not valid utf-16 text"),
        ([str(data), "--html", str(data)], "is the data file"),
        ([str(data), "--html", "/dev/null"], "is not a regular file"),
        ([str(data), "--estimator", "math:pi"], "is a float, not a factory"),
    ]
    for args, message in cases:
        code = main(["backtest", *args, "--target", "y"])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.startswith("error:") and message in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert data.read_text().startswith("x1,x2")  # --html never wrote over the data


def test_a_workspace_that_holds_a_backtest_is_refused_and_blank_bool_labels_train(tmp_path: Path) -> None:
    """A second replay into the same workspace scored the first replay's model; a CSV bool target
    with blanks was read as objects and the every-window refit failed ("Unknown label type")."""
    labels = pd.Series(stream(300)["y"].astype(bool), dtype=object)
    labels[::9] = None
    data = tmp_path / "bools.csv"
    stream(300).assign(y=labels).to_csv(data, index=False)
    report = backtest(data, "y", workspace_dir=tmp_path / "ws")
    assert report.task == "classification" and report.rows == 300 - len(range(0, 300, 9))
    with pytest.raises(ParameterError, match="already holds a backtest"):
        backtest(data, "y", workspace_dir=tmp_path / "ws")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # long replays; a loaded machine slows them, never changes them
def test_a_stationary_stream_triggers_no_retraining() -> None:
    report = backtest(stream(4000, seed=11), "y")
    assert report.loop.retrains == 0 and report.events == []
    assert report.loop.metrics == report.static.metrics  # the same model, scored at the same precision
    assert report.every_window.retrains == 7 and report.task == "classification"


def test_without_a_retrain_the_loop_scores_exactly_as_static_on_a_rare_class() -> None:
    """The loop is scored on the probabilities the service answered (6 decimals); static and
    every_window were scored at full precision, so on a rare class with many scores near 0 the loop's
    ROC-AUC differed from static's with zero retrains (0.4894 against 0.4973)."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(size=3000), "b": rng.normal(size=3000)})
    frame["y"] = (frame["a"] + 0.5 * rng.normal(size=3000) > 2.3).astype(int)  # about 2 % positive
    report = backtest(frame, "y", metric="roc_auc")
    assert report.loop.retrains == 0, report.events
    assert report.loop.metrics == report.static.metrics


@pytest.mark.slow
@pytest.mark.timeout(1800)  # long replays; a loaded machine slows them, never changes them
def test_after_an_abrupt_drift_the_loop_recovers_most_of_the_gain_with_few_retrains() -> None:
    report = backtest(stream(4000, drift_at=2400, seed=11), "y")
    assert report.every_window.metrics["accuracy"] > report.static.metrics["accuracy"] + 0.1
    assert report.recovered is not None and report.recovered >= 0.9
    assert 1 <= report.loop.retrains <= report.every_window.retrains / 2
    kinds = [e.kind for e in report.events]
    assert kinds[:4] == ["trigger", "run", "canary", "promote"]
    trigger = report.events[0]
    assert trigger.trigger == "degradation"
    assert "degraded" in trigger.detail or "at a change point" in trigger.detail, trigger.detail
    assert trigger.row >= 2400 - 800  # not before the drift (the replay starts after 800 rows)
    page = backtest_html(report)
    assert "<svg" in page and "every_window" in page and "promote" in page


@pytest.mark.slow
@pytest.mark.timeout(1800)  # long replays; a loaded machine slows them, never changes them
def test_cli_json_over_http(tmp_path: Path) -> None:
    data = tmp_path / "history.csv"
    frame = stream(3000, drift_at=1800, seed=5)
    frame.insert(0, "ts", range(3000, 0, -1))  # rows stored newest first: --time-col restores time order
    frame.to_csv(data, index=False)
    done = subprocess.run(
        [*mloop_command(), "backtest", str(data), "--target", "y", "--time-col", "ts", "--windows", "4",
         "--http", "--json", "--html", str(tmp_path / "bt.html")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for policy in ("loop", "static", "every_window"):
        assert {"accuracy", "roc_auc"} <= set(report[policy]["metrics"])
        assert isinstance(report[policy]["retrains"], int) and len(report[policy]["windows"]) == 4
        assert report[policy]["failed_runs"] == 0
    assert report["every_window"]["retrains"] == 3 and report["window_rows"] == 600
    assert report["metric"] == "accuracy"  # balanced binary target: the triggers' default metric too
    assert report["triggers"][0].get("metric", "accuracy") == "accuracy"
    assert report["loop"]["metrics"]["accuracy"] > report["static"]["metrics"]["accuracy"]
    # an event is tagged with the window it serves from; one after the last batch, the last window
    assert report["events"] and all(0 <= e["window"] < 4 for e in report["events"]), report["events"]
    assert "HistGradientBoostingClassifier" in report["model"]
    assert (tmp_path / "bt.html").read_text().startswith("<!doctype html>")


def test_bad_input_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.csv"
    stream(300).to_csv(data, index=False)
    whole = tmp_path / "whole.parquet"
    stream(300).to_parquet(whole)
    truncated = tmp_path / "cut.parquet"
    truncated.write_bytes(whole.read_bytes()[:1000])
    cases = [
        (["backtest", str(data), "--target", "label"], "no target column 'label'"),
        (["backtest", str(tmp_path / "missing.csv"), "--target", "y"], "does not exist"),
        (["backtest", str(data), "--target", "y", "--time-col", "when"], "no time column 'when'"),
        (["backtest", str(data), "--target", "y", "--initial", "1.5"], "initial"),
        (["backtest", str(data), "--target", "y", "--config", str(tmp_path / "none.toml")], "does not exist"),
        (["backtest", str(data), "--target", "y", "--config", str(tmp_path / "no-suffix")], "does not exist"),
        (["backtest", str(data), "--target", "y", "--config", str(tmp_path)], "folder without an mloop.toml"),
        (["backtest", str(data), "--target", "y", "--time-col", "y"], "is the target"),
        (
            ["backtest", str(data), "--target", "y", "--html", str(tmp_path / "no" / "x.html")],
            "does not exist",
        ),
        (["backtest", str(data), "--target", "y", "--html", str(tmp_path)], "is a directory"),
        (["backtest", str(tmp_path), "--target", "y"], "is a folder, not a file"),
        (["backtest", str(truncated), "--target", "y"], "not a readable Parquet file"),
    ]
    for args, message in cases:  # in-process: the same CLI entry point, without 5 interpreter starts
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(DataError, match="at least 100"):
        backtest(stream(300).iloc[:50], "y")
    with pytest.raises(ParameterError, match="estimator"):
        backtest(stream(300), "y", estimator="no.such:thing")


def test_bad_data_and_metrics_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A metric that does not fit the target, a one-class target (or initial rows of one class), a
    time column that does not sort as time, too few rows for two windows: one ``error:`` line naming
    the problem, exit 2."""
    data = tmp_path / "d.csv"
    stream(300).to_csv(data, index=False)
    one = tmp_path / "one.csv"
    stream(300).assign(y=1).to_csv(one, index=False)
    late = tmp_path / "late.csv"  # the second class only after the initial rows: checks could never run
    stream(300).assign(y=[0] * 100 + [0, 1] * 100).to_csv(late, index=False)
    nested = tmp_path / "nested.parquet"
    stream(300).assign(tags=[[1, 2]] * 300).to_parquet(nested)
    latin = tmp_path / "latin.csv"
    stream(300).assign(city=["Genève", "Zürich", "Lyon"] * 100).to_csv(latin, index=False, encoding="latin-1")
    uneven = tmp_path / "uneven.csv"  # 264 replayed rows: 12 windows of 21 and a last one of 12
    stream(330).to_csv(uneven, index=False)
    semicolons = tmp_path / "semicolons.csv"
    stream(300).to_csv(semicolons, index=False, sep=";")
    decimal_commas = tmp_path / "decimal_commas.csv"  # a parse error before any column is named
    stream(300).to_csv(decimal_commas, index=False, sep=";", decimal=",")
    utf16 = tmp_path / "utf16.csv"
    stream(300).to_csv(utf16, index=False, encoding="utf-16")
    latin_header = tmp_path / "latin_header.csv"
    stream(300).rename(columns={"x1": "größe"}).to_csv(latin_header, index=False, encoding="latin-1")
    bad_date = tmp_path / "bad_date.csv"
    stream(300).assign(when=[f"2024-01-{d % 28 + 1:02d}" for d in range(299)] + ["2024-13-45"]).to_csv(
        bad_date, index=False
    )
    days = tmp_path / "days.csv"
    stream(300).assign(when=["monday", "tuesday", "friday"] * 100).to_csv(days, index=False)
    clock = tmp_path / "clock.csv"  # pyarrow reads "09:00:00" as a time of day: the schema step crashed
    stream(300).assign(at=["09:00:00", "17:30:00"] * 150).to_csv(clock, index=False)
    waits = tmp_path / "waits.parquet"
    stream(300).assign(wait=pd.to_timedelta(np.arange(300), unit="s")).to_parquet(waits)
    blobs = tmp_path / "blobs.parquet"  # every value was "unseen" by the schema gate, after a run
    stream(300).assign(blob=[b"\x00\x01", b"\x02"] * 150).to_parquet(blobs)
    cases = [
        (["backtest", str(blobs), "--target", "y"], "column 'blob' holds bytes such as b'\\x00\\x01'"),
        (["backtest", str(clock), "--target", "y"], "column 'at' holds times of day or durations such as"),
        (["backtest", str(waits), "--target", "y"], "column 'wait' holds durations"),
        (["backtest", str(data), "--target", "y", "--metric", "rmse"], "metric 'rmse' does not fit"),
        (["backtest", str(data), "--target", "x1", "--metric", "roc_auc"], "does not fit a regression"),
        (["backtest", str(one), "--target", "y"], "target 'y' has a single value"),
        (["backtest", str(late), "--target", "y"], "single value (0) in the initial rows (the first 60"),
        (["backtest", str(days), "--target", "y", "--time-col", "when"], "not sortable as time"),
        (["backtest", str(nested), "--target", "y"], "column 'tags' holds nested values such as [1, 2]"),
        (["backtest", str(latin), "--target", "y"], "pass the file's encoding, e.g. --encoding latin-1"),
        (["backtest", str(latin), "--target", "y", "--encoding", "klingon"], "unknown text encoding"),
        (["backtest", str(data), "--target", "y", "--windows", "1"], "greater than or equal to 2"),
        (
            ["backtest", str(data), "--target", "y", "--windows", "20"],
            "too few for 20% initial rows and 20 windows of at least 20 rows; at most 12 windows fit",
        ),
        (["backtest", str(semicolons), "--target", "y"], "seems separated by ';': save it comma-separated"),
        (["backtest", str(decimal_commas), "--target", "y"], "seems separated by ';'"),
        (["backtest", str(utf16), "--target", "y"], "byte-order mark: pass --encoding utf-16"),
        (
            ["backtest", str(latin_header), "--target", "y"],
            "pass the file's encoding, e.g. --encoding latin-1",
        ),
        (["backtest", str(bad_date), "--target", "y", "--time-col", "when"], "values like '2024-13-45' are"),
        (
            ["backtest", str(data), "--target", "y", "--initial", "0.1"],
            "30 initial rows: the first model needs",
        ),
        (
            ["backtest", str(uneven), "--target", "y", "--windows", "13"],
            "a last one of at least 20 (it would have 12); the nearest counts that fit: 12",
        ),
    ]
    # the first through a real process (its exit status and stderr), the rest in-process: the same
    # entry point without five more interpreter starts
    done = subprocess.run([*mloop_command(), *cases[0][0]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error:") and cases[0][1] in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    for args, message in cases[1:]:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.startswith("error:") and message in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert set(load_stream(latin, "y", encoding="latin-1")["city"]) == {"Genève", "Zürich", "Lyon"}
    numbers = stream(300)  # Python ints in an object column (read from JSON, say) sort as numbers
    numbers.insert(0, "ts", pd.Series(list(range(300, 0, -1)), dtype=object))
    assert load_stream(numbers, "y", "ts")["x1"].tolist() == numbers["x1"].tolist()[::-1]
    mixed = stream(300).assign(when=[1, "b", 2.5] * 100)
    with pytest.raises(DataError, match="not sortable"):
        backtest(mixed, "y", time_col="when")
    infinite = stream(300).assign(when=[1.0, np.inf, -np.inf] * 100)
    with pytest.raises(DataError, match="has 200 infinite value"):
        load_stream(infinite, "y", "when")
    with pytest.raises(DataError, match="holds true/false values, not times"):
        load_stream(stream(300).assign(when=[True, False, True] * 100), "y", "when")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # long replays; a loaded machine slows them, never changes them
def test_a_drifting_regression_stream_is_judged_by_mae_and_the_loop_recovers() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = 3 * x1 + x2 + rng.normal(scale=0.3, size=n)
    y[1700:] = -3 * x1[1700:] + x2[1700:] + rng.normal(scale=0.3, size=n - 1700)  # the relation flips
    frame = pd.DataFrame({"x1": x1, "x2": x2, "y": y})
    report = backtest(frame, "y", windows=6)
    assert report.task == "regression" and report.metric == "mae"
    assert report.loop.metrics["mae"] < report.static.metrics["mae"] * 0.7
    assert report.recovered is not None and report.recovered >= 0.75
    assert 1 <= report.loop.retrains <= report.every_window.retrains
    chosen = backtest(frame, "y", windows=6, metric="rmse")
    assert chosen.metric == "rmse" and chosen.triggers[0]["metric"] == "rmse"


def test_a_gains_standard_error_is_the_row_sampling_noise_of_the_paired_difference() -> None:
    """gain_se: identical answers have no noise; answers that differ on random rows have the
    standard error of a mean of per-row differences, whichever windows the rows fall in."""
    from mloop.backtesting.backtest import PolicyResult, gain_se

    rng = np.random.default_rng(3)
    n = 4000
    y = rng.integers(0, 2, n)
    static = np.where(rng.random(n) < 0.8, y, 1 - y)  # right on 80 % of rows
    other = np.where(rng.random(n) < 0.1, 1 - static, static)  # flips 10 % of static's answers

    def result(predicted: np.ndarray) -> PolicyResult:
        return PolicyResult({}, [], 0, (y, predicted, None))

    bounds = list(range(0, n + 1, 500))
    assert gain_se("classification", result(static), result(static), bounds, [0, 1], "accuracy") == 0
    se = gain_se("classification", result(other), result(static), bounds, [0, 1], "accuracy")
    d = (other == y).astype(float) - (static == y)
    assert se == pytest.approx(d.std() / np.sqrt(n), rel=0.15)
    assert se == gain_se("classification", result(other), result(static), bounds, [0, 1], "accuracy")
    assert (
        gain_se("classification", PolicyResult({}, [], 0), result(static), bounds, [0, 1], "accuracy") is None
    )


def rotating(n: int, *, turns: float, seed: int) -> pd.DataFrame:
    """A concept that never stops moving: the label is the side of a line through the origin that
    turns ``turns`` full circles over the stream (5 % label noise), plus a feature it ignores."""
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    angle = 2 * np.pi * turns * np.arange(n) / n
    y = ((np.cos(angle) * x1 + np.sin(angle) * x2 > 0) ^ (rng.random(n) < 0.05)).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "y": y})


@pytest.mark.slow
@pytest.mark.timeout(1800)  # long replays; a loaded machine slows them, never changes them
def test_drift_that_never_stops_is_retrained_on_schedule_before_each_version_degrades() -> None:
    report = backtest(rotating(4000, turns=0.4, seed=3), "y")
    scheduled = [e for e in report.events if e.kind == "trigger" and "on schedule" in e.detail]
    assert scheduled, [e.detail for e in report.events]
    # the first version had to degrade before a cadence existed: its life is the one quoted
    first = next(e for e in report.events if e.kind == "trigger")
    assert "on schedule" not in first.detail
    assert report.every_window.metrics["accuracy"] > report.static.metrics["accuracy"] + 0.1
    assert report.recovered is not None and report.recovered >= 0.75, report.recovered
    assert report.loop.retrains < report.every_window.retrains


def test_the_share_kept_is_shown_with_the_gain_and_its_noise() -> None:
    """A loop a hair below static keeps "0%", never "-0%"; a gain within two standard errors is
    called noise; a lower-is-better metric counts a drop as the gain."""
    from mloop.backtesting.backtest import BacktestReport, PolicyResult
    from mloop.cli.loop import _kept_line

    def report(metric: str, loop: float, static: float, every: float, se: float) -> BacktestReport:
        return BacktestReport(
            1000, "classification", "y", 200, 100, "m", [], None,
            PolicyResult({metric: loop}, [], 1), PolicyResult({metric: static}, [], 0),
            PolicyResult({metric: every}, [], 7), metric=metric, gain_se={"every_window": se},
        )  # fmt: skip

    assert _kept_line(report("accuracy", 0.799, 0.8, 0.9, 0.01)) == (
        "the loop kept -1% of every_window's gain over static "
        "(every_window raised accuracy by 0.1000 ± 0.0100)"
    )
    assert "kept 0% " in _kept_line(report("accuracy", 0.7999, 0.8, 0.9, 0.01))
    assert _kept_line(report("accuracy", 0.81, 0.8, 0.82, 0.015)).endswith(
        "(every_window raised accuracy by 0.0200 ± 0.0150: within noise, the share says little)"
    )
    assert (
        "kept 50% of every_window's gain over static (every_window lowered mae by 2.0000 ± 0.1000)"
        in _kept_line(report("mae", 9.0, 10.0, 8.0, 0.1))
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # long replays; a loaded machine slows them, never changes them
def test_a_class_that_appears_after_training_is_labelled_seen_and_learned() -> None:
    """Labels of a class the production version never saw are taken (they count as misses), so the
    loop degrades, retrains on rows that hold the class, and serves a version that predicts it."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 3))
    y = np.where(x[:, 0] + x[:, 1] > 0, "a", "b").astype(object)
    y[(np.arange(3000) >= 1500) & (x[:, 2] > 0.3)] = "c"  # ~38 % of the later rows
    frame = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y})
    report = backtest(frame, "y")
    assert report.loop.retrains >= 1 and any(e.kind == "promote" for e in report.events)
    late = [w["accuracy"] for w in report.loop.windows[-3:]]
    static = [w["accuracy"] for w in report.static.windows[-3:]]
    assert min(late) > 0.9 and max(static) < 0.7, (late, static)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_regime_of_one_class_is_not_trained_on() -> None:
    """Labels that turn to one class for a stretch: the retraining run refuses to fit that class alone
    (its hold-out of the same class would bless a model that answers "no" to everything)."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(600, 3))
    y = np.where(1 / (1 + np.exp(-2 * x @ [1.5, -1, 0.5])) > rng.random(600), "yes", "no").astype(object)
    y[120:421] = "no"
    report = backtest(pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y}), "y", windows=4)
    assert not any(e.kind in ("canary", "promote") for e in report.events), report.events
    errors = [e.detail for e in report.events if e.kind == "error"]
    assert errors and all("hold a single class ('no'): nothing to learn" in d for d in errors), errors


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_window_of_one_class_does_not_stop_a_roc_auc_trigger() -> None:
    """A rare positive class, judged by ROC-AUC: a window whose labels were all negative has no
    ROC-AUC, and the trigger waited for it forever: after the concept flipped the loop never retrained
    (0.56-0.63 while retraining every window scored 0.99)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 3))
    score = x[:, 0] + x[:, 1]
    score[900:] = x[900:, 0] - x[900:, 1]
    y = (score > 1.8).astype(int)  # ~10 % positive
    y[600:900] = 0  # the first replayed window: negatives only
    report = backtest(pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y}), "y")
    assert report.metric == "roc_auc" and "roc_auc" not in report.loop.windows[0]
    assert report.loop.retrains >= 1 and any(e.kind == "promote" for e in report.events), report.events
    assert min(w["roc_auc"] for w in report.loop.windows[-3:]) > 0.9, report.loop.windows


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_csv_date_column_survives_the_round_trip_through_the_log(tmp_path: Path) -> None:
    """A CSV with an ISO date column beside the features: v1 was trained on dates, the log kept the
    requests' text (quoted, from the in-process channel), and every retrain stopped at the schema gate
    ("expected datetime, found string") while the backtest exited 0."""
    frame = stream(3000, drift_at=1500, seed=3)
    frame["day"] = pd.date_range("2024-01-01", periods=3000, freq="h").strftime("%Y-%m-%d")
    data = tmp_path / "dated.csv"
    frame.to_csv(data, index=False)
    report = backtest(data, "y", workspace_dir=tmp_path / "ws")
    assert not [e for e in report.events if e.kind == "error"], report.events
    assert report.loop.retrains >= 1 and any(e.kind == "promote" for e in report.events), report.events
    assert report.loop.metrics["accuracy"] > report.static.metrics["accuracy"] + 0.1


def test_runs_that_failed_are_counted_apart_from_the_retrains() -> None:
    from mloop.backtesting.replay import LoopEvent, Replay

    events = [LoopEvent(0, 0, "run", "succeeded"), LoopEvent(9, 1, "run", "failed"),
              LoopEvent(9, 1, "run", "stopped"), LoopEvent(9, 1, "promote", "failed")]  # fmt: skip
    replay = Replay([], [], [], events=events)
    assert (replay.retrains, replay.failed_runs) == (3, 1)  # a gate's refusal ("stopped") is no failure


def test_an_estimator_that_fails_refitting_the_baseline_is_named_not_called_a_bug() -> None:
    """It was "unexpected RuntimeError … (a bug in mloop)", and the loop's results were lost."""
    from mloop.backtesting.backtest import score_policies
    from mloop.backtesting.replay import Replay
    from mloop.errors import ParameterError
    from mloop.steps.retrain import default_model

    frame = stream(600, seed=1)
    first = frame.iloc[:120]
    static = default_model(first.drop(columns=["y"]), "classification").fit(
        first.drop(columns=["y"]), first["y"]
    )
    replay = Replay(predictions=[0] * 480, scores=[None] * 480, versions=[1] * 480)

    def factory(features: object, task: str) -> object:
        raise RuntimeError("no licence on this machine")

    with pytest.raises(
        ParameterError, match="the estimator failed refitting the every-window baseline"
    ) as info:
        score_policies(frame, "y", "classification", 120, 120, static, replay, factory)
    assert info.value.field == "estimator" and "RuntimeError: no licence" in info.value.message


def test_an_initial_model_that_cannot_be_trained_is_bad_input_not_a_failed_run(tmp_path: Path) -> None:
    """Ordered by a feature the label follows, the initial rows' training part held one class: the
    backtest ended with exit 1 and "run … failed: step 'fit_model' failed: DataError …"."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"rank": np.arange(600.0), "x": rng.normal(size=600)})
    frame["y"] = (frame["rank"] >= 100).astype(int)  # the first 96 training rows: all 0
    with pytest.raises(DataError, match=r"initial model could not be trained on the first 120 rows") as info:
        backtest(frame.sample(frac=1.0, random_state=0), "y", time_col="rank")
    assert info.value.field == "initial" and "single class" in info.value.message
    assert "production version keeps serving" not in info.value.message
    with pytest.raises(ParameterError, match=r"--estimator loop_helpers:unlicensed_estimator: .*no licence"):
        backtest(stream(300), "y", estimator="loop_helpers:unlicensed_estimator")


def test_nullable_integer_and_boolean_columns_train(tmp_path: Path) -> None:
    """Parquet written from pandas' nullable ``Int64``/``boolean`` columns reads back with ``pd.NA``,
    which scikit-learn refused: the first run failed with "uses pandas.NA to represent null values"."""
    frame = stream(400, seed=2)
    frame["count"] = pd.array([None if k % 7 == 0 else k % 5 for k in range(400)], dtype="Int64")
    frame["flag"] = pd.array([None if k % 9 == 0 else bool(k % 2) for k in range(400)], dtype="boolean")
    frame["y"] = frame["y"].astype("Int64")
    path = tmp_path / "nullable.parquet"
    frame.to_parquet(path)
    report = backtest(load_stream(path, "y"), "y")
    assert report.loop.metrics["accuracy"] > 0.7 and report.refused_rows == 0


def test_a_workspace_folder_holding_the_data_keeps_it(tmp_path: Path) -> None:
    """``--workspace DIR`` where DIR holds the data as ``initial.parquet``: the backtest wrote its
    initial rows to that very name, replacing the user's file (2,000 rows became 400)."""
    folder = tmp_path / "project"
    folder.mkdir()
    data = folder / "initial.parquet"
    stream(600, seed=7).to_parquet(data)
    before = data.read_bytes()
    code = main(["backtest", str(data), "--target", "y", "--workspace", str(folder), "--json"])
    assert code == 0 and data.read_bytes() == before


def test_text_of_digits_stays_text_in_the_signature(tmp_path: Path) -> None:
    """ZIP codes as Parquet text: the model trains on the text, so its signature says string (it said
    float, as for a file's quoted numbers, and the first version failed to load: exit 2)."""
    from mloop.validation.schema import infer_schema
    from mloop.validation.stats import compute_statistics

    frame = stream(400, seed=3)
    frame["zip"] = np.where(frame["x1"] > 0, "02139", "10001")
    path = tmp_path / "zip.parquet"
    frame.to_parquet(path)
    report = backtest(load_stream(path, "y"), "y")
    assert report.refused_rows == 0 and report.loop.metrics["accuracy"] > 0.7
    stats = compute_statistics(frame[["zip"]])
    assert infer_schema(stats).columns["zip"].type == "float"  # a file's rule: validate as numbers
    assert infer_schema(stats, numeric_text=False).columns["zip"].type == "string"


def test_rows_the_service_refuses_are_reported_with_their_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A feature that goes empty late in the stream: the service refuses those rows (the model never
    saw a null there). They count as wrong answers, and the report says so and why (it was silent: only
    ``refused_rows`` in the JSON told)."""
    frame = stream(1000, seed=4)
    frame.loc[800:, "x2"] = np.nan
    path = tmp_path / "gap.parquet"
    frame.to_parquet(path)
    report = backtest(load_stream(path, "y"), "y")
    refused = [e for e in report.events if e.kind == "refused"]
    assert report.refused_rows == 200 and len(refused) == 1 and "column 'x2' is null" in refused[0].detail
    code = main(["backtest", str(path), "--target", "y", "--workspace", str(tmp_path / "ws")])
    printed = capsys.readouterr().out
    assert code == 0 and "200 of 800 replayed rows were refused by the serving version" in printed, printed


def test_a_column_empty_in_a_refit_slice_is_named_not_blamed_on_the_estimator() -> None:
    """A sensor that dies: a numeric feature empty from row 400 on. The every-window baseline cannot
    refit on rows that hold none of its values; the error names the column, not the estimator."""
    frame = stream(1000, seed=6)
    frame.loc[400:, "x2"] = np.nan
    with pytest.raises(DataError, match=r"column 'x2' holds no values in rows 400-600") as info:
        backtest(frame, "y")
    assert info.value.field == "x2"


def test_an_estimator_module_that_fails_on_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its import error was "unexpected RuntimeError … (a bug in mloop)", exit 1."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_factory.py").write_text('raise RuntimeError("import-time failure")\n')
    (tmp_path / "exiting_factory.py").write_text("import sys\nsys.exit(3)\n")
    for estimator, problem in (
        ("broken_factory:make", "importing 'broken_factory' failed: RuntimeError: import-time failure"),
        ("exiting_factory:make", "importing 'exiting_factory' failed: SystemExit: 3"),
        (".relative:make", "importing '.relative' failed: TypeError"),
    ):
        with pytest.raises(ParameterError, match="estimator") as info:
            backtest(stream(300), "y", estimator=estimator)
        assert problem in info.value.message and info.value.field == "estimator"


def test_html_never_overwrites_what_is_not_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--html`` replaced a configuration file, the data file through a hard link, the workspace's
    database; ``monitor --html`` to a missing folder failed with "unexpected FileNotFoundError"
    after recording its run."""
    data = tmp_path / "d.csv"
    stream(300).to_csv(data, index=False)
    config = tmp_path / "mloop.toml"
    config.write_text("[scheduler]\n")
    linked = tmp_path / "linked.html"
    linked.hardlink_to(data)
    for target in (config, linked):
        code = main(["backtest", str(data), "--target", "y", "--html", str(target)])
        err = capsys.readouterr().err
        assert code == 2 and "exists and is not a report this command wrote" in err and err.count("\n") == 1
    assert config.read_text() == "[scheduler]\n" and data.read_bytes() == linked.read_bytes()
    assert main(["backtest", str(data), "--target", "y", "--html", str(tmp_path / "bt.html")]) == 0
    assert main(["backtest", str(data), "--target", "y", "--html", str(tmp_path / "bt.html")]) == 0  # ours
    capsys.readouterr()
    code = main(
        ["monitor", "backtest", "--html", str(tmp_path / "no" / "m.html"), "-w", str(tmp_path / "ws")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--html" in err and "does not exist" in err and "unexpected" not in err
