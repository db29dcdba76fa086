"""The prediction log: pinned column types, one bad request never costs its neighbours' records,
unreadable segments are quarantined, and logs written with mixed types stay readable."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mloop.entities import new_id
from mloop.errors import DataError, ParameterError
from mloop.monitoring.log import (
    PredictionLog,
    count_logged,
    labelled_predictions,
    quarantined_segments,
    read_log,
    recent_requests,
)
from mloop.monitoring.log_schema import conform, feedback_schema, prediction_schema, request_key

RULES = {"x": {"type": "float"}, "n": {"type": "int"}, "city": {"type": "string"}, "any": {"type": "any"}}
SCHEMA = prediction_schema(RULES, [0, 1])
FEEDBACK = feedback_schema([0, 1])


def record(
    pid: str, x: object = 1.0, *, key: object = None, city: object = "paris", any_: object = 3
) -> dict:
    return {
        "prediction_id": [pid],
        "ts": [datetime.now(UTC)],
        "model": ["m"],
        "version": [1],
        "role": ["production"],
        "latency_ms": [0.5],
        "request_key": [key],
        "prediction": [1],
        "probability": [0.9],
        "score": [0.9],
        "input.x": [x],
        "input.n": [2],
        "input.city": [city],
        "input.any": [any_],
    }


def test_every_flush_writes_the_pinned_types_not_the_ones_its_values_suggest(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "m")
    log.append(conform(record("a", 3), SCHEMA), SCHEMA)  # an int in a float column, no key at all
    log.flush()
    log.append(conform(record("b", 2.5, key="k", any_=[1, 2]), SCHEMA), SCHEMA)
    log.flush()
    for segment in sorted((tmp_path / "m" / "predictions").glob("*.parquet")):
        schema = pq.read_schema(segment)
        assert schema.field("input.x").type == pa.float64()
        assert schema.field("request_key").type == pa.string()  # all null in the first flush
        assert schema.field("prediction").type == pa.int64()
        assert schema.field("input.any").type == pa.string()
    table = read_log(tmp_path, "m").to_pydict()
    assert table["input.x"] == [3.0, 2.5] and table["request_key"] == [None, "k"]
    assert table["input.any"] == ["3", "[1, 2]"]


@pytest.mark.parametrize(
    ("field", "chunk"),
    [
        ("request_key", lambda: record("a", key="\ud800")),
        ("city", lambda: record("a", city="\ud800")),
        ("city", lambda: record("a", city=7)),
        ("x", lambda: record("a", x=True)),
        ("x", lambda: record("a", x="1.5")),
    ],
)
def test_values_a_column_cannot_hold_are_refused_naming_the_column(field: str, chunk: object) -> None:
    with pytest.raises(DataError) as refused:
        conform(chunk(), SCHEMA)  # type: ignore[operator]
    assert refused.value.field == field and refused.value.http_status == 422


def test_a_bool_label_is_refused_for_integer_classes_and_keys_must_be_strings() -> None:
    with pytest.raises(DataError, match="64-bit integer"):
        conform({"prediction_id": ["a"], "label": [True], "ts": [datetime.now(UTC)]}, FEEDBACK)
    assert conform({"prediction_id": ["a"], "label": [1.0], "ts": [None]}, FEEDBACK)["label"] == [1]
    for bad in (123, [1, 2], {"a": 1}, True, "\udfff"):
        with pytest.raises(DataError) as refused:
            request_key(bad)
        assert refused.value.field == "key"
    assert request_key("caller-1") == "caller-1" and request_key(None) is None


def test_one_unconformed_request_never_drops_its_neighbours(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "m")
    log.append(conform(record("a"), SCHEMA), SCHEMA)
    bad = conform(record("b"), SCHEMA)
    bad["request_key"] = ["\ud800"]  # what a caller that skipped conform() could hand over
    log.append(bad, SCHEMA)
    log.append(conform(record("c"), SCHEMA), SCHEMA)
    assert log.flush() == 2
    assert read_log(tmp_path, "m").to_pydict()["prediction_id"] == ["a", "c"]
    assert log.dropped == 1


def test_an_unreadable_segment_is_quarantined_counted_and_never_fatal(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "m")
    log.append(conform(record("a"), SCHEMA), SCHEMA)
    log.flush()
    (tmp_path / "m" / "predictions" / f"{new_id()}.parquet").write_bytes(b"PAR1 not really parquet")
    log.append(conform(record("b"), SCHEMA), SCHEMA)
    log.flush()
    assert read_log(tmp_path, "m").to_pydict()["prediction_id"] == ["a", "b"]
    assert quarantined_segments(tmp_path, "m") == log.quarantined == 1
    assert len(list((tmp_path / "m" / "quarantine").iterdir())) == 1
    frame = labelled_predictions(tmp_path, "m")
    assert len(frame) == 2 and frame.attrs["log_health"].quarantined_segments == 1


def _legacy(folder: Path, columns: dict[str, list[object]]) -> None:
    """A segment as the log wrote them before types were pinned: typed by its own values."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"{new_id()}.parquet")
    time.sleep(0.002)  # distinct, ordered ULIDs


def test_old_segments_with_mixed_types_are_read_by_casting(tmp_path: Path) -> None:
    ts = datetime.now(UTC)
    predictions = tmp_path / "m" / "predictions"
    base = {"ts": [ts], "version": [1], "role": ["production"], "prediction": [1], "input.x": [0.5]}
    _legacy(predictions, {"prediction_id": ["a"], **base, "request_key": [123]})
    _legacy(predictions, {"prediction_id": ["b"], **base, "request_key": [[1, 2]]})
    _legacy(predictions, {"prediction_id": ["c"], **base, "request_key": ["k"]})
    feedback = tmp_path / "m" / "feedback"
    _legacy(feedback, {"prediction_id": ["a"], "label": [1], "ts": [ts]})
    _legacy(feedback, {"prediction_id": ["b"], "label": [True], "ts": [ts]})
    frame = labelled_predictions(tmp_path, "m")
    assert frame["prediction_id"].tolist() == ["a", "b", "c"]
    keys = frame["request_key"]
    assert keys[0] == "123" and keys.isna()[1] and keys[2] == "k"  # a list cannot be a string: null
    assert frame["label"].tolist()[:2] == [1, 1]
    assert frame.attrs["log_health"].uncastable_values == 1


def test_recent_requests_are_the_newest_instances_bounded_without_shadow_repeats(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "m")
    for n in range(5):  # five segments of two requests each
        for x in (float(2 * n), float(2 * n + 1)):
            log.append(conform({**record(new_id(), x), "input.city": [None]}, SCHEMA), SCHEMA)
        shadow = {**record(new_id(), -1.0), "role": ["shadow"]}
        log.append(conform(shadow, SCHEMA), SCHEMA)
        log.flush()
        time.sleep(0.002)  # distinct, ordered segment ids
    assert recent_requests(tmp_path, "m", 3) == [
        {"x": 7.0, "n": 2, "city": None, "any": "3"},  # oldest first; a null is replayed as null
        {"x": 8.0, "n": 2, "city": None, "any": "3"},
        {"x": 9.0, "n": 2, "city": None, "any": "3"},
    ]
    assert [r["x"] for r in recent_requests(tmp_path, "m", 100)] == [float(i) for i in range(10)]
    assert recent_requests(tmp_path, "m", 0) == [] and recent_requests(tmp_path, "other", 5) == []


def test_labels_join_last_write_wins_conflicts_and_unmatched_are_counted(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "m")
    for pid in ("a", "b"):
        log.append(conform(record(pid), SCHEMA), SCHEMA)
    for pid, label in (("a", 0), ("a", 1), ("b", 1), ("b", 1), ("zz", 0)):
        log.feedback(
            conform({"prediction_id": [pid], "label": [label], "ts": [datetime.now(UTC)]}, FEEDBACK), FEEDBACK
        )
        log.flush()  # one segment each, as several workers would write them
    frame = labelled_predictions(tmp_path, "m")
    assert frame.set_index("prediction_id")["label"].to_dict() == {"a": 1, "b": 1}
    health = frame.attrs["log_health"]
    assert (health.conflicting_labels, health.unmatched_labels) == (1, 1)
    answers = labelled_predictions(tmp_path, "m", columns=["prediction_id", "prediction", "nonexistent"])
    assert list(answers.columns) == ["prediction_id", "prediction", "label"]  # no inputs converted
    assert answers.set_index("prediction_id")["label"].to_dict() == {"a": 1, "b": 1}
    assert answers.attrs["log_health"] == health


def test_the_background_writer_survives_a_failed_flush_and_counts_the_loss(tmp_path: Path) -> None:
    blocker = tmp_path / "m" / "predictions"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the segment folder should be")
    log = PredictionLog(tmp_path, "m", flush_interval_s=0.05)
    log.start()
    log.append(conform(record("a"), SCHEMA), SCHEMA)
    deadline = time.monotonic() + 10
    while log.dropped == 0:
        assert time.monotonic() < deadline, "the failed flush was not counted"
        time.sleep(0.02)
    assert log.dropped == 1
    blocker.unlink()  # the disk is writable again: later records land
    log.append(conform(record("b"), SCHEMA), SCHEMA)
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


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(key=JSON, x=JSON, city=JSON, any_=JSON, label=JSON)
def test_any_json_value_is_either_refused_or_written(tmp_path_factory, key, x, city, any_, label) -> None:
    """Whatever a client sends, conform() refuses it with a DataError or the flush can write it."""
    folder = tmp_path_factory.mktemp("log")
    log = PredictionLog(folder, "m")
    with contextlib.suppress(DataError):
        log.append(conform(record("a", x, key=key, city=city, any_=any_), SCHEMA), SCHEMA)
    with contextlib.suppress(DataError):
        labels = conform({"prediction_id": ["a"], "label": [label], "ts": [datetime.now(UTC)]}, FEEDBACK)
        log.feedback(labels, FEEDBACK)
    log.flush()
    assert log.dropped == 0
    read_log(folder, "m")
    read_log(folder, "m", "feedback")


@pytest.mark.parametrize("classes", [[False, True], ["no", "yes"], [0, 1]])
def test_partly_labelled_logs_score_and_train_whatever_the_class_type(tmp_path: Path, classes: list) -> None:
    """Bool classes (a model fitted on ``df.x > 0``) with one unlabelled row made every window's
    metrics fail ("a mix of unknown and binary targets") and stopped monitoring for good."""
    from sklearn.linear_model import LogisticRegression

    from mloop.monitoring.windows import labels_and_predictions
    from mloop.steps.retrain import _log_rows
    from mloop.validation.model import score_predictions

    schema, feedback = prediction_schema(RULES, classes), feedback_schema(classes)
    log = PredictionLog(tmp_path, "m")
    for i in range(6):
        row = record(f"p{i}", float(i)) | {"prediction": [classes[i % 2]], "probability": [0.8]}
        log.append(conform(row, schema), schema)
    for i in range(5):  # the last prediction is never labelled
        log.feedback(
            conform(
                {"prediction_id": [f"p{i}"], "label": [classes[i % 2]], "ts": [datetime.now(UTC)]}, feedback
            ),
            feedback,
        )
    log.flush()
    frame = labelled_predictions(tmp_path, "m")
    labelled = frame[frame["label"].notna()]
    y, predicted, proba = labels_and_predictions(labelled, "classification", classes)
    assert score_predictions("classification", y, predicted, proba, classes)["accuracy"] == 1.0
    rows = _log_rows(labelled, "target")
    model = LogisticRegression().fit(rows[["x"]], rows["target"])
    assert sorted(model.classes_.tolist(), key=str) == sorted(classes, key=str)


def test_after_flush_returns_every_record_appended_before_it_is_on_disk(tmp_path: Path) -> None:
    """The writer thread flushes on its own; a flush() called while it writes must wait for that
    write, not return at once because the buffers it finds are empty (read_log then missed records)."""
    log = PredictionLog(tmp_path, "m", flush_interval_s=0.001)
    log.start()
    try:
        for i in range(60):
            pids = [f"r{i}-{j}" for j in range(50)]
            for pid in pids:
                log.append(conform(record(pid), SCHEMA), SCHEMA)
            log.flush()
            written = set(read_log(tmp_path, "m").to_pydict()["prediction_id"])
            assert set(pids) <= written, f"round {i}: {len(set(pids) - written)} records not on disk yet"
    finally:
        log.close()


def _fresh_read(root: Path, model: str) -> pa.Table:
    """What a reader that never saw the log reads (another process)."""
    from mloop.monitoring import log as log_module

    kept = dict(log_module._READS), dict(log_module._SEGMENTS.tables), dict(log_module._ROW_COUNTS)
    log_module._READS.clear()
    log_module._SEGMENTS.tables.clear()
    log_module._ROW_COUNTS.clear()
    try:
        return read_log(root, model)
    finally:
        log_module._READS.update(kept[0])
        log_module._SEGMENTS.tables.update(kept[1])
        log_module._ROW_COUNTS.update(kept[2])


def test_a_reader_that_keeps_what_it_read_sees_what_a_new_reader_sees(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "m")
    predictions = tmp_path / "m" / "predictions"
    seen = []
    for step, pid in enumerate("abcdef"):
        if step == 3:  # a segment of an older writer: other types, one column fewer
            _legacy(predictions, {"prediction_id": ["old"], "ts": [datetime.now(UTC)], "version": [1],
                                  "role": ["production"], "prediction": [1], "input.x": [7]})  # fmt: skip
        elif step == 4:  # a segment that cannot be read: quarantined, the read rebuilt without it
            (predictions / f"{new_id()}.parquet").write_bytes(b"PAR1 broken")
        log.append(conform(record(pid, float(step)), SCHEMA), SCHEMA)
        log.flush()
        kept = read_log(tmp_path, "m")
        assert kept.equals(_fresh_read(tmp_path, "m")), step
        assert count_logged(tmp_path, "m") == kept.num_rows
        seen.append(kept.column("prediction_id").to_pylist())
    assert seen[-1] == ["a", "b", "c", "old", "d", "e", "f"]
    assert read_log(tmp_path, "m").schema.field("input.x").type == pa.float64()


@pytest.mark.parametrize("seed", range(4))
def test_a_read_since_a_segment_labels_its_rows_as_the_whole_read_does(tmp_path: Path, seed: int) -> None:
    """Labels come late, conflict, and some name no prediction; the canary judge reads since a
    segment. Each read gives every prediction its latest label (by arrival time), as a plain oracle
    over every label does, and a read since a segment labels its rows as the whole read does."""
    import random
    from datetime import timedelta

    rng = random.Random(seed)
    log = PredictionLog(tmp_path, "m")
    start, events, pids = datetime(2026, 1, 1, tzinfo=UTC), [], []
    for _round in range(12):
        for _ in range(rng.randint(1, 5)):
            pid = f"p{len(pids)}"
            pids.append(pid)
            role = rng.choice(["production", "canary", "shadow"])
            log.append(conform(record(pid) | {"role": [role]}, SCHEMA), SCHEMA)
        for _ in range(rng.randint(0, 6)):  # labels for any earlier prediction, or for none
            pid = rng.choice([*pids, "nobody"])
            at = start + timedelta(seconds=rng.randint(0, 10_000))  # arrival order ≠ write order
            events.append((at, pid, rng.choice([0, 1])))
            log.feedback(conform({"prediction_id": [pid], "label": [events[-1][2]], "ts": [at]}, FEEDBACK),
                         FEEDBACK)  # fmt: skip
        log.flush()
    latest: dict[str, int] = {}
    seen: dict[str, set[int]] = {}
    for _at, pid, label in sorted(events, key=lambda e: e[0]):
        latest[pid] = label
        seen.setdefault(pid, set()).add(label)
    whole = labelled_predictions(tmp_path, "m").set_index("prediction_id")
    assert "shadow" not in set(whole["role"])
    expected = {pid: latest.get(pid) for pid in whole.index}
    assert _labels(whole) == expected
    health = whole.attrs["log_health"]
    assert health.conflicting_labels == sum(len(v) > 1 for v in seen.values())
    assert health.unmatched_labels == int("nobody" in latest)
    segments = sorted(p.stem for p in (tmp_path / "m" / "predictions").glob("*.parquet"))
    for since in segments:
        part = labelled_predictions(tmp_path, "m", since_segment=since).set_index("prediction_id")
        assert _labels(part) == {pid: expected[pid] for pid in part.index}, since
        read = set(read_log(tmp_path, "m", since_segment=since).column("prediction_id").to_pylist())
        assert part.attrs["log_health"].conflicting_labels == sum(
            len(v) > 1 for pid, v in seen.items() if pid in read
        )


def _labels(frame: pd.DataFrame) -> dict[str, int | None]:
    return {pid: (None if pd.isna(v) else int(v)) for pid, v in frame["label"].items()}


def test_a_label_that_cannot_be_read_never_hides_a_valid_one(tmp_path: Path) -> None:
    """Segments written by other tools: a later label that cannot be cast to the classes' type, or
    a label without a time, must not erase (or outrank) the valid label an id already has."""
    from datetime import timedelta

    log = PredictionLog(tmp_path, "m")
    for pid in ("a", "b"):
        log.append(conform(record(pid), SCHEMA), SCHEMA)
    then = datetime.now(UTC)
    for pid in ("a", "b"):
        log.feedback(conform({"prediction_id": [pid], "label": [1], "ts": [then]}, FEEDBACK), FEEDBACK)
    log.flush()
    feedback = tmp_path / "m" / "feedback"
    later = then + timedelta(hours=1)
    _legacy(feedback, {"prediction_id": ["a"], "label": ["yes"], "ts": [later]})  # cannot be an int class
    _legacy(
        feedback, {"prediction_id": ["b"], "label": [0], "ts": pa.array([None], pa.timestamp("us", "UTC"))}
    )
    frame = labelled_predictions(tmp_path, "m")
    assert frame.set_index("prediction_id")["label"].to_dict() == {"a": 1, "b": 1}
    health = frame.attrs["log_health"]
    assert health.uncastable_values == 1 and health.conflicting_labels == 1  # b: 0 (untimed) vs 1
