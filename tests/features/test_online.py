"""Materialization and online lookups: by key, stale values, windows, and agreement with offline."""

from __future__ import annotations

import os
import uuid
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


def test_redis_online_store_from_configuration(
    tmp_path: Path, feature_repo: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = os.environ.get("MLOOP_TEST_REDIS_URL")
    if not url:
        pytest.skip("MLOOP_TEST_REDIS_URL is not set: Redis tests skipped")
    monkeypatch.setenv("MLOOP_ONLINE_URL", url)
    ws = mloop.Workspace.open(tmp_path / "ws")
    store = ws.features.online_store()
    assert isinstance(store, RedisOnlineStore)
    store.prefix = f"mloop-test:{uuid.uuid4().hex[:12]}:"
    try:
        ws.features.apply(feature_repo(recent_frame(4)))  # type: ignore[operator]
        ws.features.materialize()
        got = ws.features.online([{"driver_id": 3}], ["driver_stats:trips"])
        assert got[0]["features"]["driver_stats:trips"] == 303
        assert ws.features.skew(service="driver_model")["mismatches"] == 0
    finally:
        store.drop_prefix()
        ws.close()


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
