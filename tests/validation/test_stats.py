"""Statistics: correct, mergeable (merge = statistics of the concatenation), and robust to bad input."""

from __future__ import annotations

import datetime
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mloop.errors import DataError
from mloop.validation.stats import Statistics, compute_statistics


def frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "i": rng.integers(0, 4, size=n),
            "k": pd.array(rng.choice(["a", "b", "c", None], size=n), dtype="object"),
            "flag": rng.random(n) > 0.3,
        }
    )


def exact_fields(s: Statistics) -> dict:
    out = {"rows": s.rows}
    for name, c in s.columns.items():
        out[name] = (
            c.dtype,
            c.count,
            c.missing,
            c.min,
            c.max,
            c.distinct,
            c.top(50),
            c.counts if c.kind == "numeric" else None,
        )
    return out


def test_numeric_statistics_match_pandas() -> None:
    df = frame(0, 3000)
    s = compute_statistics(df)
    x = df["x"].dropna()
    c = s["x"]
    assert (c.count, c.missing) == (len(x), df["x"].isna().sum())
    assert c.min == x.min() and c.max == x.max()
    assert c.mean == pytest.approx(x.mean(), rel=1e-12)
    assert c.std == pytest.approx(x.std(ddof=0), rel=1e-12)
    assert c.distinct == x.nunique() and c.distinct_exact
    assert c.quantiles([0.5])[0] == pytest.approx(x.median(), abs=0.05)
    k = s["k"]
    assert k.kind == "categorical" and dict(k.top()) == df["k"].value_counts().to_dict()
    assert k.missing == df["k"].isna().sum()
    assert s["i"].counts == {float(v): n for v, n in df["i"].value_counts().items()}
    assert dict(s["flag"].top()) == {"true": int(df["flag"].sum()), "false": int((~df["flag"]).sum())}


def test_merge_equals_statistics_of_the_concatenation() -> None:
    a, b = frame(1, 700), frame(2, 1300)
    merged = compute_statistics(a).merge(compute_statistics(b))
    whole = compute_statistics(pd.concat([a, b], ignore_index=True))
    assert exact_fields(merged) == exact_fields(whole)
    assert merged["x"].mean == pytest.approx(whole["x"].mean, rel=1e-12)
    assert merged["x"].std == pytest.approx(whole["x"].std, rel=1e-12)
    np.testing.assert_array_equal(np.sort(merged["x"].sample), np.sort(whole["x"].sample))


def test_merge_with_columns_on_one_side_only() -> None:
    a = pd.DataFrame({"x": [1.0, 2.0]})
    b = pd.DataFrame({"x": [3.0], "y": ["u"]})
    merged = compute_statistics(a).merge(compute_statistics(b))
    assert merged.rows == 3 and merged["y"].missing == 2 and merged["y"].count == 1


def test_merging_numbers_with_text_is_a_clear_error() -> None:
    a = compute_statistics(pd.DataFrame({"x": [1.0, 2.0]}))
    b = compute_statistics(pd.DataFrame({"x": ["a", "b"]}))
    with pytest.raises(
        DataError, match="column 'x' holds numbers in one part of the data and text in another"
    ):
        a.merge(b)


values = st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(values, values, values)
def test_merge_is_associative(a: list, b: list, c: list) -> None:
    sa, sb, sc = (compute_statistics(pd.DataFrame({"v": pd.array(v, dtype="Float64")})) for v in (a, b, c))
    left, right = sa.merge(sb).merge(sc), sa.merge(sb.merge(sc))
    assert exact_fields(left) == exact_fields(right)
    assert left["v"].mean == pytest.approx(right["v"].mean, rel=1e-9, abs=1e-9)
    assert left["v"].m2 == pytest.approx(right["v"].m2, rel=1e-9, abs=1e-6)


def test_roundtrip_through_bytes() -> None:
    s = compute_statistics(frame(3, 500))
    back = Statistics.from_bytes(s.to_bytes())
    assert exact_fields(back) == exact_fields(s)
    assert back["x"].quantiles([0.1, 0.9]) == s["x"].quantiles([0.1, 0.9])
    with pytest.raises(DataError, match="statistics format version 99"):
        Statistics.from_dict({**s.to_dict(), "mloop_statistics_version": 99})


def test_large_distinct_counts_are_approximate_and_close() -> None:
    x = np.arange(200_000, dtype=float)
    c = compute_statistics(pd.DataFrame({"x": x}))["x"]
    assert not c.distinct_exact
    assert c.distinct == pytest.approx(200_000, rel=0.05)


def test_csv_gzip_and_parquet_give_the_same_statistics(tmp_path: Path) -> None:
    df = frame(4, 2000).drop(columns=["flag"])
    df.to_csv(tmp_path / "d.csv", index=False)
    with gzip.open(tmp_path / "d.csv.gz", "wt") as fh:
        df.to_csv(fh, index=False)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "d.parquet")
    seen = []
    results = [
        compute_statistics(tmp_path / n, progress=lambda d, t: seen.append((d, t)))
        for n in ("d.csv", "d.csv.gz", "d.parquet")
    ]
    assert exact_fields(results[0]) == exact_fields(results[1]) == exact_fields(results[2])
    assert seen and seen[-1][0] == seen[-1][1]  # progress reached the end


def test_csv_larger_than_one_block_with_a_late_type_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mloop.validation.io as io

    monkeypatch.setattr(io, "_CSV_BLOCK", 4096)  # many blocks; inference sees only the first
    path = tmp_path / "big.csv"
    lines = ["a,b"] + [f"{i},{i % 3}" for i in range(5000)] + ["x,1"]
    path.write_text("\n".join(lines) + "\n")
    s = compute_statistics(path)
    assert s.rows == 5001
    assert s["a"].dtype == "string" and s["a"].numeric_text == 5000  # a mixed-type column, reported as such
    assert s["b"].dtype == "int" and s["b"].count == 5001


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        compute_statistics(tmp_path / "e.csv")


def test_header_only_file(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("a,b\n")
    s = compute_statistics(tmp_path / "h.csv")
    assert s.rows == 0 and list(s.columns) == ["a", "b"]


def test_all_null_column(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("a,b\n1,\n2,\n")
    s = compute_statistics(tmp_path / "n.csv")
    assert s["b"].kind == "null" and s["b"].missing == 2 and s["b"].count == 0


def test_non_utf8_csv(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_bytes("city\nZ\xfcrich\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid utf-8 text; .*--encoding latin-1"):
        compute_statistics(tmp_path / "l.csv")
    s = compute_statistics(tmp_path / "l.csv", encoding="latin-1")
    assert s["city"].top() == [("Zürich", 1)]


def test_mixed_type_dataframe_column() -> None:
    s = compute_statistics(pd.DataFrame({"m": [1, "two", 3.0, None]}))
    assert s["m"].dtype == "string" and s["m"].numeric_text == 2 and s["m"].missing == 1


def test_missing_file_and_unsupported_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        compute_statistics(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="cannot read data from a list"):
        compute_statistics([1, 2, 3])


def test_wide_parquet_is_read_a_group_of_columns_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mloop.validation.io as io
    from mloop.validation.schema import infer_schema, validate_schema

    df = frame(5, 3000)
    pq.write_table(
        pa.Table.from_pandas(df, preserve_index=False), tmp_path / "w.parquet", row_group_size=1000
    )
    whole = compute_statistics(tmp_path / "w.parquet")
    monkeypatch.setattr(io, "_PARQUET_PASS_BYTES", 1)  # one column per pass
    passes = []
    monkeypatch.setattr(io, "_PARQUET_BATCH", 500)
    by_column = compute_statistics(tmp_path / "w.parquet", progress=lambda d, t: passes.append((d, t)))
    assert exact_fields(by_column) == exact_fields(whole) and by_column.rows == 3000
    assert passes[-1] == (4 * 3000, 4 * 3000)
    schema = infer_schema(whole)
    assert validate_schema(tmp_path / "w.parquet", schema).ok
    broken = df.drop(columns=["k"])
    pq.write_table(pa.Table.from_pandas(broken, preserve_index=False), tmp_path / "b.parquet")
    assert [(a.column, a.kind) for a in validate_schema(tmp_path / "b.parquet", schema).items] == [
        ("k", "missing_column")
    ]


def test_nested_columns_are_a_clear_error_naming_the_column(tmp_path: Path) -> None:
    """Lists and structs have no domain, range or histogram: one error naming the column (was
    ArrowNotImplementedError from value_counts, shown as a bug)."""
    path = tmp_path / "nested.parquet"
    pd.DataFrame({"x": [1.0, 2.0], "tags": [[1, 2], [3]], "meta": [{"a": 1}, {"a": 2}]}).to_parquet(path)
    with pytest.raises(DataError, match=r"column 'tags' holds nested values \(list<") as caught:
        compute_statistics(path)
    assert caught.value.field == "tags"


@pytest.mark.parametrize(
    ("values", "what"),
    [
        ([datetime.time(9, 0), datetime.time(17, 30)], "times of day"),
        (pd.to_timedelta([1, 2], unit="s"), "durations"),
        ([b"\x00\x01", b"\x02"], "bytes"),  # every value was "unseen" by the schema's text vocabulary
    ],
)
def test_times_of_day_durations_and_bytes_are_a_clear_error_naming_the_column(
    tmp_path: Path, values: object, what: str
) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1.0, 2.0], "t": values}).to_parquet(path)
    with pytest.raises(DataError, match=rf"column 't' holds {what}[ :]") as caught:
        compute_statistics(path)
    assert caught.value.field == "t"


def test_nanosecond_timestamps_are_read_to_the_microsecond(tmp_path: Path) -> None:
    """A timestamp[ns] column with nanoseconds failed the schema step with ArrowInvalid ("would lose
    data"), naming no column."""
    path = tmp_path / "ns.parquet"
    times = pd.Series(pd.to_datetime(["2024-01-01"] * 3)) + pd.to_timedelta([1, 2, 1_000_001], unit="ns")
    pd.DataFrame({"t": times, "x": [1.0, 2.0, 3.0]}).to_parquet(path)
    stats = compute_statistics(path)
    assert stats.columns["t"].dtype == "datetime"
    assert stats.columns["t"].max == pytest.approx(pd.Timestamp("2024-01-01").timestamp() + 0.001001)
