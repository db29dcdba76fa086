"""Point-in-time correctness on hand-built edge cases, and against a brute-force reference."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feature_helpers import utc

import mloop
from mloop.errors import DataError
from mloop.features import Entity, FeatureView
from mloop.features.offline import historical

FEATURES = ["driver_stats:conv_rate", "driver_stats:trips"]


def join(ws: mloop.Workspace, rows: list[tuple[object, str]]) -> pd.DataFrame:
    entities = pd.DataFrame({"driver_id": [r[0] for r in rows], "event_timestamp": [utc(r[1]) for r in rows]})
    return ws.features.historical(entities, FEATURES)


def test_ties_on_event_time_are_broken_by_created_time(fws: mloop.Workspace) -> None:
    out = join(fws, [(1, "2024-01-02 12:00")])
    assert out["driver_stats:trips"].tolist() == [3]
    assert out["driver_stats:conv_rate"].tolist() == [0.3]


def test_a_row_exactly_at_the_timestamp_counts(fws: mloop.Workspace) -> None:
    out = join(fws, [(1, "2024-01-02 00:00"), (2, "2024-01-03 00:00")])
    assert out["driver_stats:trips"].tolist() == [3, 6]


def test_ttl_boundary_is_inclusive(fws: mloop.Workspace) -> None:
    # driver 2's row at 01-01 00:00 with a 1-day TTL: exactly one day later still counts, 1 µs more does not
    out = join(fws, [(2, "2024-01-02 00:00:00"), (2, "2024-01-02 00:00:00.000001")])
    assert out["driver_stats:trips"].iloc[0] == 5
    assert pd.isna(out["driver_stats:trips"].iloc[1])


def test_entities_with_no_history_come_back_with_nulls(fws: mloop.Workspace) -> None:
    out = join(fws, [(99, "2024-01-02"), (1, "2023-12-31"), (1, "2024-01-02")])
    assert len(out) == 3
    assert out["driver_id"].tolist() == [99, 1, 1]
    assert out["driver_stats:trips"].isna().tolist() == [True, True, False]


def test_every_entity_row_once_in_input_order_duplicates_included(fws: mloop.Workspace) -> None:
    rows = [
        (2, "2024-01-03 06:00"),
        (1, "2024-01-01 06:00"),
        (2, "2024-01-03 06:00"),
        (1, "2024-01-02 06:00"),
    ]
    rows += rows[::-1]
    out = join(fws, rows)
    assert out["driver_id"].tolist() == [r[0] for r in rows]
    assert out["event_timestamp"].tolist() == [utc(r[1]) for r in rows]
    assert out["driver_stats:trips"].tolist() == [6, 1, 6, 3, 3, 6, 1, 6]
    assert list(out.columns) == ["driver_id", "event_timestamp", *FEATURES]


def test_extra_entity_columns_pass_through_and_a_service_selects_features(fws: mloop.Workspace) -> None:
    entities = pd.DataFrame(
        {"driver_id": [1, 2], "event_timestamp": [utc("2024-01-01 23:00")] * 2, "label": [True, False]}
    )
    out = fws.features.historical(entities, service="driver_model")
    assert out["label"].tolist() == [True, False]
    assert out["driver_stats:conv_rate"].tolist() == [0.1, 0.5]


def test_parquet_and_csv_entity_files_and_parquet_output(fws: mloop.Workspace, tmp_path: Path) -> None:
    entities = pd.DataFrame(
        {"driver_id": [2, 1, 1], "event_timestamp": [utc("2024-01-03"), utc("2024-01-02"), utc("2024-01-01")]}
    )
    entities.to_parquet(tmp_path / "e.parquet")
    entities.to_csv(tmp_path / "e.csv", index=False)
    for name in ("e.parquet", "e.csv"):
        out_path = tmp_path / f"out-{name}.parquet"
        assert fws.features.historical(tmp_path / name, FEATURES, out=out_path) == 3
        out = pd.read_parquet(out_path)
        assert out["driver_id"].tolist() == [2, 1, 1]
        assert out["driver_stats:trips"].tolist() == [6, 3, 1]


def test_entity_order_kept_across_row_groups_and_files(fws: mloop.Workspace, tmp_path: Path) -> None:
    """A file's row number is its order (many row groups, read in parallel); a folder's is file by file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    ids = rng.integers(1, 4, 20_000)
    frame = pd.DataFrame({"driver_id": ids, "event_timestamp": [utc("2024-01-03")] * len(ids)})
    frame["n"] = np.arange(len(frame))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=997)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, start in enumerate(range(0, len(frame), 7_000)):
        frame.iloc[start : start + 7_000].to_parquet(folder / f"part-{i}.parquet", index=False)
    for source in (tmp_path / "one.parquet", folder):
        out = fws.features.historical(source, FEATURES)
        assert out["n"].tolist() == list(range(len(frame))), source
        assert out["driver_id"].tolist() == ids.tolist()


def test_compound_keys_and_two_views(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "city": ["a", "a", "b"],
            "driver_id": [1, 1, 1],
            "ts": [utc("2024-01-01"), utc("2024-01-02"), utc("2024-01-01")],
            "demand": [10, 20, 30],
        }
    ).to_parquet(tmp_path / "city.parquet")
    pd.DataFrame({"driver_id": [1], "ts": [utc("2024-01-01")], "rating": [4.5]}).to_parquet(
        tmp_path / "d.parquet"
    )
    city = FeatureView(
        "city_driver",
        [Entity("city", "city"), Entity("driver", "driver_id")],
        tmp_path / "city.parquet",
        "ts",
        None,
    )
    rating = FeatureView("rating", [Entity("driver", "driver_id")], tmp_path / "d.parquet", "ts", "7d")
    entities = pd.DataFrame(
        {"city": ["a", "b", "a"], "driver_id": [1, 1, 1], "event_timestamp": [utc("2024-01-03")] * 3}
    )
    out = historical(entities, [(city, ["demand"]), (rating, ["rating"])])
    assert isinstance(out, pd.DataFrame)
    assert out["city_driver:demand"].tolist() == [20, 30, 20]
    assert out["rating:rating"].tolist() == [4.5] * 3


def test_keys_that_read_like_missing_values_are_keys(tmp_path: Path) -> None:
    """Country codes NA (Namibia) and a key spelled null, in CSV files on both sides: the source is
    read by DuckDB (they are strings), the entity file was read by pandas (they became NaN, in the
    output too), so they never joined."""
    (tmp_path / "countries.csv").write_text(
        "country,event_timestamp,gdp\nNA,2024-01-01T00:00:00Z,1.0\nFR,2024-01-01T00:00:00Z,2.0\n"
        "null,2024-01-01T00:00:00Z,3.0\n"
    )
    (tmp_path / "labels.csv").write_text(
        "country,event_timestamp\nNA,2024-02-01T00:00:00Z\nFR,2024-02-01T00:00:00Z\nnull,2024-02-01T00:00:00Z\n"
    )
    view = FeatureView(
        "cv", [Entity("country", "country")], tmp_path / "countries.csv", "event_timestamp", None
    )
    out = historical(str(tmp_path / "labels.csv"), [(view, ["gdp"])])
    assert isinstance(out, pd.DataFrame)
    assert out["country"].tolist() == ["NA", "FR", "null"] and out["cv:gdp"].tolist() == [1.0, 2.0, 3.0]
    # a timestamp column named otherwise (ts): parsed because it is the one named, not by its name
    (tmp_path / "by-ts.csv").write_text("country,ts\nFR,2024-02-01T00:00:00Z\n")
    out = historical(str(tmp_path / "by-ts.csv"), [(view, ["gdp"])], timestamp_col="ts")
    assert isinstance(out, pd.DataFrame) and out["cv:gdp"].tolist() == [2.0]


def _reference(features: pd.DataFrame, entities: pd.DataFrame, ttl: pd.Timedelta) -> list[object]:
    """The definition, by brute force: latest (event time, created) ≤ t within the TTL, else None."""
    result = []
    for key, t in zip(entities["driver_id"], entities["event_timestamp"], strict=True):
        rows = features[(features.driver_id == key) & (features.event_timestamp <= t)]
        rows = rows[rows.event_timestamp >= t - ttl]
        if rows.empty:
            result.append(None)
        else:
            result.append(int(rows.sort_values(["event_timestamp", "created"]).iloc[-1]["trips"]))
    return result


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_a_brute_force_reference_on_random_data(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    base = utc("2024-01-01")
    n = 400
    features = pd.DataFrame(
        {
            "driver_id": [rng.randrange(8) for _ in range(n)],
            "event_timestamp": [base + pd.Timedelta(hours=rng.randrange(24 * 10)) for _ in range(n)],
            "created": [base + pd.Timedelta(seconds=rng.randrange(10**6)) for _ in range(n)],
            "trips": np.arange(n),
        }
    )
    features.to_parquet(tmp_path / "f.parquet")
    entities = pd.DataFrame(
        {
            "driver_id": [rng.randrange(10) for _ in range(300)],
            "event_timestamp": [base + pd.Timedelta(hours=rng.randrange(24 * 12)) for _ in range(300)],
        }
    )
    view = FeatureView(
        "v", Entity("driver", "driver_id"), tmp_path / "f.parquet", "event_timestamp", "36h", None, "created"
    )
    out = historical(entities, [(view, ["trips"])])
    assert isinstance(out, pd.DataFrame)
    got = [None if pd.isna(v) else int(v) for v in out["v:trips"]]
    assert got == _reference(features, entities, pd.Timedelta(hours=36))


@pytest.mark.parametrize(
    ("keys", "kind"),
    [
        (["01", "1"], "VARCHAR"),
        ([" 1", "1"], "VARCHAR"),
        (["1.0", "1"], "VARCHAR"),
        ([True, False], "BOOLEAN"),
    ],
)
def test_an_entity_key_of_another_kind_than_the_source_key_is_refused(
    fws: mloop.Workspace, keys: list[object], kind: str
) -> None:
    """Online keys compare as canonical text, so "01" never finds driver 1 there: offline it must not
    either (DuckDB would cast it to 1 and join): the kind is refused, with what to do."""
    entities = pd.DataFrame({"driver_id": keys, "event_timestamp": [utc("2024-01-02 12:00")] * 2})
    with pytest.raises(DataError) as err:
        fws.features.historical(entities, FEATURES)
    assert err.value.field == "driver_id"
    message = str(err.value)
    assert "entity column 'driver_id'" in message and kind in message and "'driver_stats'" in message
    assert "BIGINT" in message and "cast the entity column to number" in message


def test_integer_and_float_keys_are_one_kind_offline_and_online(fws: mloop.Workspace) -> None:
    entities = pd.DataFrame(
        {"driver_id": [1.0, 2.0, float("nan")], "event_timestamp": [utc("2024-01-03")] * 3}
    )
    out = fws.features.historical(entities, FEATURES)
    assert out["driver_stats:trips"].tolist()[:2] == [3, 6] and pd.isna(out["driver_stats:trips"].iloc[2])
    fws.features.materialize()
    found = fws.features.online([{"driver_id": 1.0}, {"driver_id": "01"}], FEATURES)
    assert [r["found"]["driver_stats"] for r in found] == [True, False]


def test_text_keys_of_a_csv_entity_file_stay_text_unless_they_are_numbers(
    fws: mloop.Workspace, tmp_path: Path
) -> None:
    """CSV has no types: a column is numbers when every value is a JSON number (as the CLI and the
    HTTP API read keys), so "01" stays text and is refused rather than read as driver 1."""
    (tmp_path / "n.csv").write_text(
        "driver_id,event_timestamp\n1,2024-01-03T00:00:00Z\n2.0,2024-01-03T00:00:00Z\n"
    )
    out = fws.features.historical(tmp_path / "n.csv", FEATURES)
    assert out["driver_stats:trips"].tolist() == [3, 6]
    (tmp_path / "t.csv").write_text("driver_id,event_timestamp\n01,2024-01-03T00:00:00Z\n")
    with pytest.raises(DataError, match="entity column 'driver_id' is VARCHAR"):
        fws.features.historical(tmp_path / "t.csv", FEATURES)


@pytest.mark.parametrize("unit", ["ns", "ms", "s"])
def test_entity_timestamps_of_any_precision_are_timestamps(
    fws: mloop.Workspace, tmp_path: Path, unit: str
) -> None:
    """pandas writes nanoseconds to Parquet by default (TIMESTAMPTZ_NS): read as microseconds."""
    entities = pd.DataFrame(
        {
            "driver_id": [2, 1],
            "event_timestamp": pd.Series([utc("2024-01-03"), utc("2024-01-02")]).dt.as_unit(unit),
        }
    )
    entities.to_parquet(tmp_path / "e.parquet")
    assert fws.features.historical(tmp_path / "e.parquet", FEATURES, out=tmp_path / "o.parquet") == 2
    assert pd.read_parquet(tmp_path / "o.parquet")["driver_stats:trips"].tolist() == [6, 3]
    assert fws.features.historical(entities, FEATURES)["driver_stats:trips"].tolist() == [6, 3]


def test_a_header_only_csv_gives_no_rows_like_an_empty_parquet_file(
    fws: mloop.Workspace, tmp_path: Path
) -> None:
    (tmp_path / "e.csv").write_text("driver_id,event_timestamp\n")
    GOOD = pd.DataFrame({"driver_id": [1], "event_timestamp": [utc("2024-01-02")]})
    GOOD.iloc[:0].to_parquet(tmp_path / "e.parquet")
    for name in ("e.csv", "e.parquet"):
        assert fws.features.historical(tmp_path / name, FEATURES, out=tmp_path / f"{name}.parquet") == 0
        out = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert list(out.columns) == ["driver_id", "event_timestamp", *FEATURES] and out.empty


def test_an_entity_column_named_like_a_requested_feature_is_refused(fws: mloop.Workspace) -> None:
    entities = pd.DataFrame(
        {"driver_id": [1], "event_timestamp": [utc("2024-01-02")], "driver_stats:trips": [42]}
    )
    with pytest.raises(DataError, match="column named 'driver_stats:trips'") as err:
        fws.features.historical(entities, FEATURES)
    assert err.value.field == "driver_stats:trips"
    # a column named like a feature that is not requested passes through
    out = fws.features.historical(entities, ["driver_stats:conv_rate"])
    assert out["driver_stats:trips"].tolist() == [42]


def test_a_nan_key_matches_nothing_offline_as_online(tmp_path: Path, feature_repo) -> None:  # type: ignore[no-untyped-def]
    """A source row whose float key is NaN is never materialized, so online a NaN key finds nothing;
    offline, DuckDB's NaN = NaN joined it to every entity row whose key was NaN (in a file: a
    DataFrame's NaN reads as null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from feature_helpers import stats_frame

    def nan_kept(frame: pd.DataFrame) -> pa.Table:  # pandas writes a float NaN as null
        table = pa.Table.from_pandas(frame, preserve_index=False)
        keys = pa.array(frame["driver_id"].to_numpy(), from_pandas=False)
        return table.set_column(table.schema.get_field_index("driver_id"), "driver_id", keys)

    frame = stats_frame().astype({"driver_id": float})
    frame.loc[len(frame)] = [float("nan"), utc("2024-01-03"), utc("2024-01-03"), 0.9, 9]
    feature_repo()
    pq.write_table(nan_kept(frame), tmp_path / "stats.parquet")
    entities = pd.DataFrame({"driver_id": [float("nan"), 2.0], "event_timestamp": [utc("2024-01-03")] * 2})
    pq.write_table(nan_kept(entities), tmp_path / "entities.parquet")
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.features.apply(tmp_path / "features.py")
        for given in (entities, tmp_path / "entities.parquet"):
            out = ws.features.historical(given, FEATURES)
            assert pd.isna(out["driver_stats:trips"].iloc[0]) and out["driver_stats:trips"].iloc[1] == 6
        ws.features.materialize()
        [found] = ws.features.online([{"driver_id": float("nan")}], FEATURES)
        assert found["found"]["driver_stats"] is False
