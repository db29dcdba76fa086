"""Schema inference, the schema file format, and every kind of anomaly."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mloop.errors import DataError
from mloop.validation.schema import Schema, infer_schema, validate_schema
from mloop.validation.stats import compute_statistics


@pytest.fixture
def train() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 500
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50_000, 10_000, n),
            "city": rng.choice(["paris", "rome", "oslo"], n),
            "member": rng.random(n) > 0.5,
            "note": pd.array([None if i % 10 == 0 else "x" for i in range(n)], dtype="object"),
        }
    )


@pytest.fixture
def schema(train: pd.DataFrame) -> Schema:
    return infer_schema(compute_statistics(train))


def kinds(anomalies) -> set[tuple[str, str]]:
    return {(a.column, a.kind) for a in anomalies.items}


def test_inferred_schema_accepts_its_own_data(train: pd.DataFrame, schema: Schema) -> None:
    assert schema.columns["age"].type == "int" and schema.columns["income"].type == "float"
    assert schema.columns["city"].vocabulary == ["oslo", "paris", "rome"]
    assert schema.columns["member"].type == "bool"
    assert schema.columns["note"].nullable and 0.1 < schema.columns["note"].max_null_fraction < 0.3
    assert not schema.columns["age"].nullable
    assert validate_schema(train, schema).ok


def test_schema_file_roundtrip_is_human_editable(tmp_path: Path, schema: Schema) -> None:
    path = tmp_path / "schema.json"
    path.write_text(schema.to_json())
    doc = json.loads(path.read_text())
    assert doc["mloop_schema_version"] == 1 and doc["columns"]["age"]["min"] == schema.columns["age"].min
    doc["columns"]["age"]["max"] = 40  # a person tightens a rule
    path.write_text(json.dumps(doc))
    assert Schema.load(path).columns["age"].max == 40


def test_every_anomaly_kind(train: pd.DataFrame, schema: Schema) -> None:
    bad = train.drop(columns=["member"]).copy()
    bad["extra"] = 1
    bad["income"] = bad["income"].astype(object)
    bad.loc[:9, "income"] = "n/a"  # text in a number column
    bad["age"] = bad["age"] * 3  # most ages out of range
    bad.loc[:99, "city"] = "atlantis"  # 20 % unseen
    bad["city"] = bad["city"].astype(object)
    bad.loc[200:260, "city"] = None  # nulls in a non-nullable column
    result = validate_schema(bad, schema)
    assert kinds(result) == {
        ("member", "missing_column"),
        ("extra", "unexpected_column"),
        ("income", "type_mismatch"),
        ("age", "out_of_range"),
        ("city", "unseen_categories"),
        ("city", "null_values"),
    }
    by_kind = {a.kind: a for a in result.items}
    assert by_kind["type_mismatch"].examples == ["n/a"] and by_kind["type_mismatch"].count == 10
    assert by_kind["unseen_categories"].examples == ["atlantis"] and by_kind["unseen_categories"].count == 100
    assert by_kind["null_values"].count == 61
    assert all(isinstance(x, float) for x in by_kind["out_of_range"].examples)


def test_tolerances_are_respected(train: pd.DataFrame, schema: Schema) -> None:
    few = train.copy()
    few.loc[:2, "city"] = "atlantis"  # 0.6 % < 1 % tolerance
    assert validate_schema(few, schema).ok
    schema.columns["city"].unseen_tolerance = 0.0
    assert kinds(validate_schema(few, schema)) == {("city", "unseen_categories")}


def test_float_where_int_expected(schema: Schema, train: pd.DataFrame) -> None:
    bad = train.assign(age=train["age"].astype(float))
    bad.loc[:4, "age"] = 30.5  # five fractional ages, all inside the range
    [anomaly] = validate_schema(bad, schema).items
    assert (anomaly.column, anomaly.kind, anomaly.count, anomaly.examples) == (
        "age",
        "type_mismatch",
        5,
        [30.5],
    )


def test_zero_rows_is_an_anomaly(tmp_path: Path, schema: Schema) -> None:
    (tmp_path / "h.csv").write_text("age,income,city,member,note\n")
    assert ("*", "empty_data") in kinds(validate_schema(tmp_path / "h.csv", schema))


def test_infer_from_zero_rows_is_refused(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("a\n")
    with pytest.raises(DataError, match="zero rows"):
        infer_schema(compute_statistics(tmp_path / "h.csv"))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({"columns": {"a": {"type": "int"}}}, "schema version None is not supported"),
        ({"mloop_schema_version": 7, "columns": {"a": {"type": "int"}}}, "schema version 7"),
        ({"mloop_schema_version": 1, "columns": {}}, "'columns' must be a non-empty object"),
        (
            {"mloop_schema_version": 1, "columns": {"a": {"type": "integer"}}},
            r"columns\.a\.type must be one of",
        ),
        (
            {"mloop_schema_version": 1, "columns": {"a": {"type": "int", "min": "0"}}},
            r"columns\.a\.min must be a number",
        ),
        (
            {"mloop_schema_version": 1, "columns": {"a": {"type": "int", "min": 5, "max": 1}}},
            "greater than max",
        ),
        (
            {"mloop_schema_version": 1, "columns": {"a": {"type": "int", "unseen_tolerance": 2}}},
            r"fraction in \[0, 1\]",
        ),
        ({"mloop_schema_version": 1, "columns": {"a": {"type": "int", "colour": 1}}}, "unknown key 'colour'"),
        (
            {"mloop_schema_version": 1, "columns": {"a": {"type": "string", "vocabulary": [1]}}},
            "list of strings",
        ),
        ({"mloop_schema_version": 1, "extra": 1, "columns": {"a": {"type": "int"}}}, "unknown key 'extra'"),
    ],
)
def test_invalid_schema_documents(doc: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Schema.from_dict(doc)


def test_schema_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        Schema.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        Schema.load(tmp_path / "bad.json")


def test_a_dataframe_report_names_the_data_it_came_from() -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    schema = infer_schema(compute_statistics(train))
    batch = train.drop(columns=["y"])
    assert validate_schema(batch, schema).source == "<DataFrame>"
    batch.attrs["source"] = "incoming/batch-7.csv"
    anomalies = validate_schema(batch, schema)
    assert anomalies.source == "incoming/batch-7.csv" and anomalies.items[0].column == "y"


@pytest.mark.parametrize("seed", range(3))
def test_an_inferred_schema_accepts_other_rows_of_the_same_data(seed: int) -> None:
    """Inferred from 400 rows, the schema passes the other 169 rows of the same dataset (margins), and
    still stops a batch whose scale changed."""
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame.sample(frac=1, random_state=seed)
    schema = infer_schema(compute_statistics(df.iloc[:400]))
    assert validate_schema(df.iloc[400:], schema).ok
    exact = infer_schema(compute_statistics(df.iloc[:400]), range_margin=0)
    assert not validate_schema(df.iloc[400:], exact).ok  # the observed range alone is too strict
    rescaled = df.iloc[400:].assign(**{"mean radius": df.iloc[400:]["mean radius"] * 2.54})  # inches → cm
    found = validate_schema(rescaled, schema)
    assert [(a.column, a.kind) for a in found.items] == [("mean radius", "out_of_range")]


def test_a_written_out_index_gets_no_inferred_range(tmp_path: Path) -> None:
    """A CSV saved with pandas' default index has a row-number column: inferred from the first 400 rows,
    the schema must not refuse the next rows for carrying the next numbers (the rainfall file did:
    40 % out_of_range on its unnamed first column, exit 1); real ranges still hold."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"temp": rng.normal(15, 5, 600), "n": rng.integers(0, 10, 600)})
    path = tmp_path / "weather.csv"
    frame.to_csv(path)  # index=True: the unnamed first column is 0..599
    schema = infer_schema(compute_statistics(pd.read_csv(path).iloc[:400]))
    [index_column] = [name for name in schema.columns if name not in ("temp", "n")]
    rule = schema.columns[index_column]
    assert rule.type == "int" and rule.min is None and rule.max is None
    later = pd.read_csv(path).iloc[400:]
    assert validate_schema(later, schema).ok
    assert schema.columns["n"].max is not None  # a small integer domain keeps its range
    exact = infer_schema(compute_statistics(pd.read_csv(path).iloc[:400]), range_margin=0)
    assert exact.columns[index_column].max == 399  # range_margin=0 keeps what was observed


def test_a_nested_column_is_a_type_mismatch_not_a_crash(schema: Schema, train: pd.DataFrame) -> None:
    bad = train.assign(city=[["paris", "rome"]] * len(train))
    [anomaly] = validate_schema(bad, schema).items
    assert (anomaly.column, anomaly.kind, anomaly.count) == ("city", "type_mismatch", len(train))
    assert anomaly.found.startswith("list<") and anomaly.examples == [["paris", "rome"]]


def test_times_of_day_and_durations_are_a_type_mismatch_not_a_crash(
    schema: Schema, train: pd.DataFrame
) -> None:
    """Arrow's time64 and duration columns have no schema type (was ArrowNotImplementedError from a
    text kernel, which stopped `mloop run` in its schema step)."""
    bad = train.assign(
        city=[datetime.time(12, 30)] * len(train), age=pd.to_timedelta(1, unit="s"), note=b"\x00"
    )
    found = {a.column: a for a in validate_schema(bad, schema).items}
    assert {c: (a.kind, a.count) for c, a in found.items()} == {
        "city": ("type_mismatch", len(train)),
        "age": ("type_mismatch", len(train)),
        "note": ("type_mismatch", len(train)),
    }
    assert found["city"].examples == ["12:30:00"] and found["city"].found.startswith("time64")
    json.dumps(validate_schema(bad, schema).to_dict())  # the report stays JSON
