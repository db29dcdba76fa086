"""Materialization and online lookups: by key, stale values, windows, and agreement with offline."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import mloop
from mloop.stores.online_redis import RedisOnlineStore

NOW = pd.Timestamp.now(tz="UTC").floor("s")


def recent_frame(n_drivers: int = 20) -> pd.DataFrame:
    """Rows over the last two days (TTL 1d: some drivers fresh, some stale now)."""
    rows = []
    for d in range(n_drivers):
        for h in (47, 30, d):  # hours ago; driver d's newest row is d hours old
            rows.append(
                (d, NOW - pd.Timedelta(hours=h), NOW - pd.Timedelta(hours=h), d + h / 100, d * 100 + h)
            )
    return pd.DataFrame(rows, columns=["driver_id", "event_timestamp", "created", "conv_rate", "trips"])


def assert_age(age: float, hours: float) -> None:
    """A value written ``hours`` before NOW (module import): its age is that plus the time since, which
    on a busy machine can be minutes, so the bound is measured rather than guessed."""
    since = (pd.Timestamp.now(tz="UTC") - NOW).total_seconds()
    assert hours * 3600 <= age <= hours * 3600 + since + 5, (age, hours, since)


def test_materialize_then_lookup_by_key(fws: mloop.Workspace) -> None:
    done = fws.features.materialize()
    assert [(m.view, m.rows) for m in done] == [("driver_stats", 2)]
    result = fws.features.online(
        [{"driver_id": 1}, {"driver_id": "2"}, {"driver_id": 77}], service="driver_model"
    )
    # the hand-built history is from 2024: older than the 1-day TTL now, so null with its age
    assert result[0]["features"] == {"driver_stats:conv_rate": None, "driver_stats:trips": None}
    assert result[0]["age_seconds"]["driver_stats"] > 86400
    assert result[2]["found"] == {"driver_stats": False}
    assert result[2]["age_seconds"] == {"driver_stats": None}


def test_online_agrees_with_the_offline_join_at_the_same_time(tmp_path: Path, feature_repo: object) -> None:
    frame = recent_frame()
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(feature_repo(frame))  # type: ignore[operator]
        ws.features.materialize()
        drivers = [*range(20), 99]
        online = ws.features.online([{"driver_id": d} for d in drivers], service="driver_model")
        entities = pd.DataFrame({"driver_id": drivers, "event_timestamp": [pd.Timestamp.now(tz="UTC")] * 21})
        offline = ws.features.historical(entities, service="driver_model")
        for i, d in enumerate(drivers):
            for ref in ("driver_stats:conv_rate", "driver_stats:trips"):
                want = offline[ref].iloc[i]
                got = online[i]["features"][ref]
                assert (got is None and pd.isna(want)) or got == pytest.approx(want), (d, ref)
        fresh = [r["driver_id"] for r in online if r["features"]["driver_stats:trips"] is not None]
        assert fresh == list(range(20))  # every driver has a row within the last 20 h
        assert_age(online[5]["age_seconds"]["driver_stats"], 5)
    finally:
        ws.close()


def test_windows_and_incremental_materialization(tmp_path: Path, feature_repo: object) -> None:
    frame = recent_frame(3)
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(feature_repo(frame))  # type: ignore[operator]
        early = ws.features.materialize(end=(NOW - pd.Timedelta(hours=29)).to_pydatetime())
        assert early[0].rows == 3
        got = ws.features.online([{"driver_id": 0}], ["driver_stats:trips"])
        assert_age(got[0]["age_seconds"]["driver_stats"], 30)
        later = ws.features.materialize(incremental=True)
        assert later[0].start == early[0].end
        got = ws.features.online([{"driver_id": 0}], ["driver_stats:trips"])
        assert got[0]["features"]["driver_stats:trips"] == 0
        # re-materializing an old window never brings back older values
        ws.features.materialize(end=(NOW - pd.Timedelta(hours=29)).to_pydatetime())
        assert (
            ws.features.online([{"driver_id": 0}], ["driver_stats:trips"])[0]["features"][
                "driver_stats:trips"
            ]
            == 0
        )
    finally:
        ws.close()


@pytest.fixture
def redis_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[mloop.Workspace]:
    """A workspace whose online store is Redis (``MLOOP_ONLINE_URL``), under a key prefix of its own."""
    url = os.environ.get("MLOOP_TEST_REDIS_URL")
    if not url:
        pytest.skip("MLOOP_TEST_REDIS_URL is not set: Redis tests skipped")
    monkeypatch.setenv("MLOOP_ONLINE_URL", url)
    ws = mloop.Workspace.open(tmp_path / "ws")
    store = ws.features.online_store()
    assert isinstance(store, RedisOnlineStore)
    store.prefix = f"mloop-test:{uuid.uuid4().hex[:12]}:"
    try:
        yield ws
    finally:
        store.drop_prefix()
        ws.close()


def test_redis_online_store_from_configuration(redis_ws: mloop.Workspace, feature_repo: object) -> None:
    ws = redis_ws
    ws.features.apply(feature_repo(recent_frame(4)))  # type: ignore[operator]
    ws.features.materialize()
    got = ws.features.online([{"driver_id": 3}], ["driver_stats:trips"])
    assert got[0]["features"]["driver_stats:trips"] == 303
    assert ws.features.skew(service="driver_model")["mismatches"] == 0


def test_skew_reports_a_source_rewritten_after_materialization(tmp_path: Path, feature_repo: object) -> None:
    frame = recent_frame(5)
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(feature_repo(frame))  # type: ignore[operator]
        ws.features.materialize()
        assert ws.features.skew(service="driver_model")["mismatches"] == 0
        frame.loc[frame.driver_id == 2, "trips"] += 1  # a backfill the online store never saw
        frame.to_parquet(tmp_path / "stats.parquet")
        report = ws.features.skew(service="driver_model")
        assert report["features"]["driver_stats:trips"]["mismatches"] == 1
        assert report["features"]["driver_stats:conv_rate"]["mismatches"] == 0
        example = report["features"]["driver_stats:trips"]["examples"][0]
        assert example["entity"] == {"driver_id": 2}
        assert (example["online"], example["offline"]) == (202, 203)
        fresh = ws.features.freshness(service="driver_model")["driver_stats"]
        assert fresh["age_seconds"] < 600 and fresh["ttl_seconds"] == 86400
    finally:
        ws.close()


def _tie_repo(tmp_path: Path, layout: str, values: tuple[float, float], created: bool) -> Path:
    """Driver 2 has two rows with the same event time (and the same created time): ``values`` in
    source order, in one Parquet file, one CSV file, or a folder of two Parquet files (one row each)."""
    when = NOW - pd.Timedelta(minutes=10)
    frame = pd.DataFrame(
        {
            "driver_id": [1, 2, 2],
            "event_timestamp": [when] * 3,
            "created": [when] * 3,
            "conv_rate": [0.1, *values],
        }
    )
    if layout == "parquet":
        source = "src.parquet"
        frame.to_parquet(tmp_path / source, index=False)
    elif layout == "csv":
        source = "src.csv"
        frame.to_csv(tmp_path / source, index=False)
    else:
        source = "src"
        (tmp_path / source).mkdir()
        frame.iloc[:2].to_parquet(tmp_path / source / "part-0.parquet", index=False)
        frame.iloc[2:].to_parquet(tmp_path / source / "part-1.parquet", index=False)
    path = tmp_path / "features.py"
    path.write_text(
        "from mloop.features import Entity, FeatureView\n"
        'driver = Entity("driver", join_keys=["driver_id"])\n'
        f'stats = FeatureView("stats", entities=[driver], source={str(tmp_path / source)!r}, '
        f'timestamp="event_timestamp", ttl="1d"{", created=" + repr("created") if created else ""})\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("layout", ["parquet", "csv", "folder"])
@pytest.mark.parametrize("created", [True, False])
@pytest.mark.parametrize("values", [(0.4, 0.45), (0.45, 0.4)])
def test_an_exact_tie_is_broken_alike_offline_and_online_the_last_row_wins(
    tmp_path: Path, layout: str, created: bool, values: tuple[float, float]
) -> None:
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(_tie_repo(tmp_path, layout, values, created))
        ws.features.materialize()
        online = ws.features.online([{"driver_id": 2}], ["stats:conv_rate"])
        entities = pd.DataFrame({"driver_id": [2], "event_timestamp": [pd.Timestamp.now(tz="UTC")]})
        offline = ws.features.historical(entities, ["stats:conv_rate"])
        assert online[0]["features"]["stats:conv_rate"] == values[1]
        assert offline["stats:conv_rate"].tolist() == [values[1]]
        report = ws.features.skew(["stats:conv_rate"])
        assert (report["mismatches"], report["missing_online"]) == (0, 0)
    finally:
        ws.close()


def test_skew_leaves_out_entities_materialization_never_writes(tmp_path: Path) -> None:
    """Rows after the materialization's end, with no key or no event time can never be online: they
    are counted apart, not as missing."""
    when = NOW - pd.Timedelta(minutes=10)
    pd.DataFrame(
        {
            "driver_id": [1.0, 2.0, None, 4.0, float("nan"), 1.0],
            "event_timestamp": [
                when,
                NOW + pd.Timedelta(days=3),
                when,
                pd.NaT,
                when,
                NOW + pd.Timedelta(days=3),
            ],
            "conv_rate": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        }
    ).to_parquet(tmp_path / "src.parquet", index=False)
    (tmp_path / "features.py").write_text(
        "from mloop.features import Entity, FeatureView\n"
        'driver = Entity("driver", join_keys=["driver_id"])\n'
        f'stats = FeatureView("stats", entities=[driver], source={str(tmp_path / "src.parquet")!r}, '
        'timestamp="event_timestamp", ttl="1d")\n',
        encoding="utf-8",
    )
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(tmp_path / "features.py")
        assert ws.features.materialize()[0].rows == 1
        report = ws.features.skew(["stats:conv_rate"])
        assert (report["mismatches"], report["missing_online"]) == (0, 0)
        assert report["features"]["stats:conv_rate"]["compared"] == 1
        assert report["not_materialized"] == {"stats": 3}  # driver 2, driver 4, the null key
        # a null key finds nothing online, not the row whose key was missing
        assert ws.features.online([{"driver_id": None}], ["stats:conv_rate"])[0]["found"] == {"stats": False}
    finally:
        ws.close()


def test_redis_breaks_a_tie_as_the_offline_join_does(redis_ws: mloop.Workspace, tmp_path: Path) -> None:
    ws = redis_ws
    ws.features.apply(_tie_repo(tmp_path, "parquet", (0.4, 0.45), created=True))
    ws.features.materialize()
    assert ws.features.online([{"driver_id": 2}], ["stats:conv_rate"])[0]["features"] == {
        "stats:conv_rate": 0.45
    }
    assert ws.features.skew(["stats:conv_rate"])["mismatches"] == 0
