"""Monitoring a served model's log: windows, live metrics, drift, storage, report, CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from commands import mloop_command
from loop_helpers import MODEL, serve_rows, service, stream, train_first

import mloop
from mloop.errors import DataError
from mloop.monitoring.monitor import monitor
from mloop.monitoring.report import monitor_html


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[mloop.Workspace, list[dict], object]]:
    """One model served over 1,000 labelled rows (the concept flips at row 600); tests only read it."""
    tmp_path = tmp_path_factory.mktemp("served")
    ws = mloop.Workspace.open(tmp_path / ".mloop")
    data = stream(1800, drift_at=1400)
    train_first(ws, data.iloc[:800], tmp_path)
    svc = service(ws, tmp_path / ".mloop" / "prediction-log")
    answers = serve_rows(svc, data.iloc[800:])
    svc.stop()
    yield ws, answers, data
    ws.close()


def test_windows_measure_what_was_served(served: tuple) -> None:
    ws, answers, data = served
    report = monitor(ws, MODEL, window=200)
    assert [w.rows for w in report.windows] == [200] * 5
    assert all(w.complete and w.labelled == 200 for w in report.windows)
    predicted = np.concatenate([a["predictions"] for a in answers])
    truth = data["y"].iloc[800:].to_numpy()
    for w in report.windows:  # the live accuracy is exactly what was answered vs what happened
        lo = w.index * 200
        expected = float(np.mean(predicted[lo : lo + 200] == truth[lo : lo + 200]))
        assert w.metrics["accuracy"] == pytest.approx(expected)
        assert "roc_auc" in w.metrics and w.by_role["production"]["rows"] == 200
    before, after = report.windows[0], report.windows[-1]  # the concept flips and x3 shifts at row 600
    assert not before.dataset_drift and "x3" not in before.drifted
    assert "x3" in after.drifted and after.metrics["accuracy"] < before.metrics["accuracy"] - 0.2
    run = ws.metadata.get_run(report.run_id)
    assert run.pipeline == f"monitor/{MODEL}" and run.trigger == "monitor"
    accuracy = ws.metadata.get_metrics(run.id, "accuracy")
    assert [m.step for m in accuracy] == [0, 1, 2, 3, 4]
    model_artifact = ws.model_version(f"{MODEL}:1").artifact_id
    downstream = ws.lineage(model_artifact, "downstream")
    assert any(s.name == "monitor" for s in downstream.steps.values())
    page = monitor_html(report)
    assert "<svg" in page and "x3" in page and "Monitoring: m" in page


def test_time_windows_and_slices(served: tuple) -> None:
    ws, _, _ = served
    report = monitor(ws, MODEL, window="1h", slices=["city"], store=False)
    assert len(report.windows) == 1 and report.windows[0].rows == 1000 and report.run_id is None
    assert set(report.windows[0].slices) == {"city=paris", "city=rome", "city=oslo"}


def test_the_text_report_shows_the_slices(served: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    """``--slice`` without ``--json`` printed nothing of the slices it measured."""
    from mloop.cli import main

    ws, _, _ = served
    code = main(
        ["monitor", MODEL, "--window", "500", "--slice", "city", "--no-store", "--workspace", str(ws.root)]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "slices (labelled rows)" in printed
    assert all(f"city={c}" in printed for c in ("paris", "rome", "oslo")), printed


def test_monitoring_an_unserved_model_is_a_clear_error(workspace: mloop.Workspace) -> None:
    with pytest.raises(DataError, match="no logged predictions"):
        monitor(workspace, "nothing")


def test_cli(served: tuple, tmp_path: Path) -> None:
    ws, _, _ = served
    exe = mloop_command()
    done = subprocess.run(
        [*exe, "monitor", MODEL, "--window", "250", "--json", "--html", str(tmp_path / "m.html"),
         "--workspace", str(ws.root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["windows"]) == 4 and report["run_id"]
    assert (tmp_path / "m.html").read_text().startswith("<!doctype html>")
    for args, message in (
        (["monitor", MODEL, "--window", "soon"], "window"),
        (["monitor", "nope"], "no logged predictions"),
    ):
        bad = subprocess.run(
            [*exe, *args, "--workspace", str(ws.root)], capture_output=True, text=True, timeout=60
        )
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.count("\n") == 1 and message in bad.stderr and "Traceback" not in bad.stderr


def test_rows_no_registered_version_can_claim_are_set_aside_or_skipped(served: tuple, tmp_path: Path) -> None:
    """Segments mloop cannot have written (rows without a version, a text version, no version column)
    are quarantined and counted, as unreadable ones are (they crashed monitor); rows answered by a
    version this registry does not hold no longer refuse the report when they are the newest."""
    import shutil
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mloop.entities import new_id

    ws, _, _ = served
    root = tmp_path / "log"
    shutil.copytree(ws.prediction_log_dir, root)
    folder = root / MODEL / "predictions"
    good = pq.read_table(sorted(folder.glob("*.parquet"))[-1])
    n, at = good.num_rows, good.schema.get_field_index("version")
    for table in (
        good.set_column(at, "version", pa.nulls(n, pa.int64())),
        good.set_column(at, "version", pa.array(["1"] * n)),
        good.drop_columns(["version"]),
        good.set_column(at, "version", pa.array([7] * n, pa.int64())).set_column(
            0, "prediction_id", pa.array([f"new-{i}" for i in range(n)])
        ),  # newest: a version not registered
    ):
        time.sleep(0.002)  # distinct, ordered segment ids
        pq.write_table(table, folder / f"{new_id()}.parquet")
    report = monitor(ws, MODEL, window=200, log_dir=root, store=False)
    assert report.log_health["quarantined_segments"] == 3
    assert len(list((root / MODEL / "quarantine").iterdir())) == 3
    assert sum(w.rows for w in report.windows) == 1000 + n
    assert sum(w.versions.get("7", 0) for w in report.windows) == n


def test_a_copied_segment_counts_once_and_labels_outside_the_classes_are_counted(
    served: tuple, tmp_path: Path
) -> None:
    """A predictions segment copied under a new name counted its rows twice (an extra window); labels
    none of the model's classes were scored without a word."""
    import shutil
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mloop.entities import new_id

    ws, _, _ = served
    assert monitor(ws, MODEL, window=200, store=False).log_health["labels_outside_classes"] == 0
    root = tmp_path / "log"
    shutil.copytree(ws.prediction_log_dir, root)
    folder = root / MODEL / "predictions"
    newest = sorted(folder.glob("*.parquet"))[-1]
    shutil.copy(newest, folder / f"{new_id()}.parquet")
    ids = pq.read_table(newest).column("prediction_id").to_pylist()[:20]
    time.sleep(0.002)
    pq.write_table(
        pa.table(
            {
                "prediction_id": ids,
                "label": pa.array([2] * 20, pa.int64()),
                "ts": pa.array([pd.Timestamp.now(tz="UTC")] * 20, pa.timestamp("us", tz="UTC")),
            }
        ),
        root / MODEL / "feedback" / f"{new_id()}.parquet",
    )
    report = monitor(ws, MODEL, window=200, log_dir=root, store=False)
    assert sum(w.rows for w in report.windows) == 1000 and len(report.windows) == 5
    assert report.log_health["duplicate_predictions"] == pq.read_table(newest).num_rows
    assert report.log_health["labels_outside_classes"] == 20
