"""The prediction log keeps every record it is given, whatever values validation let through."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mloop.errors import ParameterError
from mloop.monitoring.log import PredictionLog, read_log


def chunk(pid: str, value: object) -> dict[str, list[object]]:
    return {"prediction_id": [pid], "version": [1], "input.x": [value]}


def test_values_arrow_cannot_type_as_given_are_still_written(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "m")
    log.append(chunk("a", 3))
    log.append(chunk("b", 2**70))  # a finite number the model accepts, too large for int64
    log.append(chunk("c", 1.5))
    assert log.flush() == 3
    table = read_log(tmp_path, "m").to_pydict()
    assert table["prediction_id"] == ["a", "b", "c"]
    assert table["input.x"] == [3.0, float(2**70), 1.5]
    assert log.dropped == 0


def test_the_background_writer_survives_a_failed_flush_and_counts_the_loss(tmp_path: Path) -> None:
    blocker = tmp_path / "m" / "predictions"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the segment folder should be")
    log = PredictionLog(tmp_path, "m", flush_interval_s=0.05)
    log.start()
    log.append(chunk("a", 1.0))
    deadline = time.monotonic() + 10
    while log.dropped == 0:
        assert time.monotonic() < deadline, "the failed flush was not counted"
        time.sleep(0.02)
    assert log.dropped == 1
    blocker.unlink()  # the disk is writable again: later records land
    log.append(chunk("b", 2.0))
    log.close()
    assert read_log(tmp_path, "m").to_pydict()["prediction_id"] == ["b"]
    assert log._thread is not None and not log._thread.is_alive()


@pytest.mark.parametrize("name", ["..", ".", "../outside", "a/b", ""])
def test_a_model_name_never_becomes_a_path_outside_the_log(tmp_path: Path, name: str) -> None:
    with pytest.raises(ParameterError, match="letters, digits"):
        PredictionLog(tmp_path / "prediction-log", name)
    with pytest.raises(ParameterError, match="letters, digits"):
        read_log(tmp_path / "prediction-log", name)
    assert list(tmp_path.iterdir()) == []
