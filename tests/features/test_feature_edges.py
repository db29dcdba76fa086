"""What an unfriendly user found (each failed before its fix): rekeyed views, services in use, skew and
freshness that tell the truth, keys that cannot collide, and bad input that is one clear error."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feature_helpers import stats_frame, utc
from sklearn.linear_model import LogisticRegression

import mloop
from mloop.cli import main
from mloop.errors import ConfigurationError, ConflictError, DataError, NotFoundError, ParameterError
from mloop.features import Entity, FeatureView, SqlSource
from mloop.features.definitions import parse_ttl
from mloop.features.online import entity_key

ONE_VIEW = """
from mloop.features import Entity, FeatureService, FeatureView

thing = Entity("thing", join_keys={keys!r})
v = FeatureView("v", entities=[thing], source="v.parquet", timestamp="ts", ttl=None)
s = FeatureService("s", ["v:*"])
"""


def write_view(tmp_path: Path, frame: pd.DataFrame, keys: list[str], *, index: bool = False) -> Path:
    frame.to_parquet(tmp_path / "v.parquet", index=index)
    path = tmp_path / "v_features.py"
    path.write_text(ONE_VIEW.format(keys=keys), encoding="utf-8")
    return path


def test_a_rekeyed_view_forgets_its_online_rows_and_incremental_starts_over(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"id": [1, 2, 3], "id2": [101, 102, 103], "ts": [utc("2024-01-01")] * 3, "x": [1.0, 2.0, 3.0]}
    )
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.features.apply(write_view(tmp_path, frame.drop(columns="id2"), ["id"]))
        ws.features.materialize(end=datetime(2024, 2, 1, tzinfo=UTC))
        assert ws.features.online([{"id": 3}], ["v:x"])[0]["features"] == {"v:x": 3.0}
        with pytest.raises(ConflictError, match="entities changed"):
            ws.features.apply(write_view(tmp_path, frame.drop(columns="id"), ["id2"]))
        ws.features.apply(write_view(tmp_path, frame.drop(columns="id"), ["id2"]), force=True)
        # the old rows were stored under the old key: gone, not served under the new one
        assert ws.features.online([{"id2": 3}], ["v:x"])[0]["found"] == {"v": False}
        assert ws.features.online([{"id2": 103}], ["v:x"])[0]["found"] == {"v": False}
        done = ws.features.materialize(incremental=True, end=datetime(2024, 2, 1, tzinfo=UTC))
        assert done[0].start is None and done[0].rows == 3  # from the start, not the old watermark
        assert ws.features.online([{"id2": 103}], ["v:x"])[0]["features"] == {"v:x": 3.0}


def test_removing_a_feature_from_a_service_a_served_model_reads_needs_force(
    fws: mloop.Workspace, tmp_path: Path
) -> None:
    train = fws.features.historical(
        pd.DataFrame({"driver_id": [1, 2, 1, 2], "event_timestamp": [utc("2024-01-03")] * 4}),
        service="driver_model",
    )
    x = train[["driver_stats:conv_rate", "driver_stats:trips"]]
    model = LogisticRegression().fit(x, [0, 1, 0, 1])
    inputs = mloop.infer_schema(mloop.compute_statistics(x)).to_dict()
    version = fws.register_model(
        "eta", model, signature={"inputs": inputs, "feature_service": "driver_model"}
    )
    path = tmp_path / "features.py"
    path.write_text(path.read_text().replace(', "driver_stats:trips"]', "]"), encoding="utf-8")
    fws.features.apply(path)  # no model is served by it yet: not in use
    path.write_text(
        path.read_text().replace(
            '["driver_stats:conv_rate"]', '["driver_stats:conv_rate", "driver_stats:trips"]'
        )
    )
    fws.features.apply(path)
    fws.promote("eta", version.version)
    path.write_text(path.read_text().replace(', "driver_stats:trips"]', "]"), encoding="utf-8")
    with pytest.raises(ConflictError, match=r"driver_stats:trips; read by eta@production"):
        fws.features.apply(path)
    assert fws.features.apply(path, force=True)[-1].action == "updated"


def test_registering_with_a_feature_service_checks_it(fws: mloop.Workspace) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    inputs = mloop.infer_schema(mloop.compute_statistics(pd.DataFrame({"a": [0.0, 1.0]}))).to_dict()
    with pytest.raises(NotFoundError, match="nope"):
        fws.register_model("m", model, signature={"inputs": inputs, "feature_service": "nope"})
    with pytest.raises(ParameterError, match="feature_service"):
        fws.register_model("m", model, signature={"inputs": inputs, "feature_service": 123})
    with pytest.raises(ParameterError, match=r"lack 'driver_stats:conv_rate'"):
        fws.register_model("m", model, signature={"inputs": inputs, "feature_service": "driver_model"})


def test_skew_counts_what_is_missing_online_and_survives_nulls(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    frame = pd.DataFrame(
        {"id": [1, 2, 3], "ts": [utc("2024-01-01")] * 3, "n": pd.array([5, 6, 8], dtype="Int64")}
    )
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.features.apply(write_view(tmp_path, frame, ["id"]))
        ws.features.materialize(end=datetime(2024, 2, 1, tzinfo=UTC))
        frame.assign(n=pd.array([5, None, 8], dtype="Int64")).to_parquet(tmp_path / "v.parquet", index=False)
        report = ws.features.skew(service="s")
        assert report["features"]["v:n"]["mismatches"] == 1 and report["missing_online"] == 0
        pd.concat([frame, frame.assign(id=[4, 5, 6])]).to_parquet(tmp_path / "v.parquet", index=False)
        report = ws.features.skew(service="s")
        assert report["missing_online"] == 3 and report["mismatches"] == 0
    code = main(["features", "skew", "--service", "s", "--workspace", str(tmp_path / "ws")])
    assert code == 1 and "3 missing online" in capsys.readouterr().out


def test_freshness_is_the_age_of_the_newest_value_not_of_the_window(fws: mloop.Workspace) -> None:
    fws.features.materialize()  # up to now; the newest row is from 2024-01-03
    report = fws.features.freshness(service="driver_model")["driver_stats"]
    assert report["newest_event"] == "2024-01-03T00:00:00+00:00"
    assert report["age_seconds"] > 365 * 86400


def test_compound_keys_never_collide_and_a_null_key_finds_nothing() -> None:
    assert entity_key(["x\x1fy", "z"]) != entity_key(["x", "y\x1fz"])
    assert entity_key(["a\x1e", "b"]) != entity_key(["a", "\x1eb"])
    assert entity_key([None]) != entity_key(["None"]) and entity_key([7.0]) == entity_key(["7"]) == "7"


def test_compound_keys_online_match_offline(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"a": ["x\x1fy", "x"], "b": ["z", "y\x1fz"], "ts": [utc("2024-01-01")] * 2, "v1": [1.0, 2.0]}
    )
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.features.apply(write_view(tmp_path, frame, ["a", "b"]))
        ws.features.materialize(end=datetime(2024, 2, 1, tzinfo=UTC))
        got = ws.features.online([{"a": "x\x1fy", "b": "z"}, {"a": "x", "b": "y\x1fz"}], ["v:v1"])
        assert [g["features"]["v:v1"] for g in got] == [1.0, 2.0]


def test_infinite_values_online_equal_offline(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": [1, 2], "ts": [utc("2024-01-01")] * 2, "x": [math.inf, -math.inf]})
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.features.apply(write_view(tmp_path, frame, ["id"]))
        ws.features.materialize(end=datetime(2024, 2, 1, tzinfo=UTC))
        assert [r["features"]["v:x"] for r in ws.features.online([{"id": 1}, {"id": 2}], ["v:x"])] == [
            math.inf,
            -math.inf,
        ]
        assert ws.features.skew(service="s")["mismatches"] == 0


def test_pandas_index_is_not_a_feature_and_nanosecond_times_read(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"id": [1, 2, 3], "ts": pd.to_datetime(["2024-01-01T00:00:00.000001001Z"] * 3), "x": [1.0, 2.0, 3.0]}
    ).iloc[[2, 0]]  # a filtered frame: pandas writes its index
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        ws.features.apply(write_view(tmp_path, frame, ["id"], index=True))
        assert ws.features.show("v")["spec"]["features"] == ["x"]
        out = ws.features.historical(
            pd.DataFrame({"id": [1, 3], "event_timestamp": [utc("2024-01-02")] * 2}), ["v:x"]
        )
        assert out["v:x"].tolist() == [1.0, 3.0]


def test_bad_definitions_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="name"):
        FeatureView("v\n", entities=[Entity("e", ["id"])], source="x.parquet", timestamp="ts", ttl=None)
    with pytest.raises(ParameterError, match="too long"):
        parse_ttl("99999999999d")
    for endless in (float("nan"), float("inf")):  # was: "ValueError: cannot convert float NaN to integer"
        with pytest.raises(ParameterError, match="is not a finite number of seconds"):
            parse_ttl(endless)
    (tmp_path / "v.parquet").write_bytes(b"")
    two = tmp_path / "two.py"
    two.write_text(
        "from mloop.features import Entity, FeatureView\n"
        "e = Entity('e', join_keys=['id'])\n"
        "a = FeatureView('a', entities=[e], source='v.parquet', timestamp='ts', ttl=None)\n"
        "b = FeatureView('A', entities=[e], source='v.parquet', timestamp='ts', ttl=None)\n",
        encoding="utf-8",
    )
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        with pytest.raises(DataError, match="two feature views named 'a' and 'A'"):
            ws.features.apply(two)
        pd.DataFrame({"id": [1], "ts": [utc("2024-01-01")], "x": [1.0]}).to_parquet(tmp_path / "k.parquet")
        keyed = tmp_path / "keyed.py"
        keyed.write_text(
            "from mloop.features import Entity, FeatureView\n"
            "e = Entity('e', join_keys=['id'])\n"
            "a = FeatureView('a', entities=[e], source='k.parquet', timestamp='ts', ttl=None,"
            " features=['id', 'x'])\n",
            encoding="utf-8",
        )
        with pytest.raises(DataError, match="'id' is a join key"):
            ws.features.apply(keyed)
        keyed.write_text(
            "from mloop.features import Entity, FeatureService, FeatureView\n"
            "e = Entity('e', join_keys=['id'])\n"
            "a = FeatureView('a', entities=[e], source='k.parquet', timestamp='ts', ttl=None)\n"
            "s = FeatureService('s', ['a:nope'])\n",
            encoding="utf-8",
        )
        with pytest.raises(NotFoundError, match="feature view 'a' has no feature 'nope'"):
            ws.features.apply(keyed)
    with pytest.raises(ConfigurationError, match="cannot use nosuchdb://"):
        from mloop.features import offline

        con = offline.connect()
        source = SqlSource("nosuchdb://x/y", table="t")
        view = FeatureView("q", entities=[Entity("e", ["id"])], source=source, timestamp="ts", ttl=None)
        offline.relation(con, view)


def test_bad_cli_inputs_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, feature_repo: Callable[..., Path]
) -> None:
    w = ["--workspace", str(tmp_path / "ws")]
    assert main(["features", "apply", str(feature_repo()), *w]) == 0
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    capsys.readouterr()
    for argv, needle in (
        (["historical", str(tmp_path / "empty.csv"), "-o", str(tmp_path / "o.parquet")], "is empty"),
        (["historical", str(tmp_path / "empty.csv"), "-o", str(tmp_path / "o.csv")], "*.parquet"),
    ):
        code = main(["features", *argv, "--service", "driver_model", *w])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error:") and needle in err and "\n" not in err, (argv, err)
    code = main(
        [
            "features",
            "online",
            "--entity",
            "driver_id=0",
            "--entity",
            "driver_id=1",
            "--service",
            "driver_model",
            *w,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--entity driver_id is given twice" in err
    # rich must not turn ':a:' in a user's string into an emoji
    assert main(["features", "show", "g:a:b", *w]) == 2
    assert "g:a:b" in capsys.readouterr().err


def test_a_request_with_keys_and_every_feature_is_answered(fws: mloop.Workspace) -> None:
    from mloop.serving.app import ServeConfig, create_app
    from mloop.serving.server import JsonClient, serve_in_thread

    x = stats_frame()[["conv_rate", "trips"]].set_axis(
        ["driver_stats:conv_rate", "driver_stats:trips"], axis=1
    )
    model = LogisticRegression().fit(x, [0, 1, 1, 0, 1])
    inputs = mloop.infer_schema(mloop.compute_statistics(x)).to_dict()
    version = fws.register_model(
        "eta", model, signature={"inputs": inputs, "feature_service": "driver_model"}
    )
    fws.promote("eta", version.version)
    server = serve_in_thread(create_app(fws, ServeConfig(model="eta", log_predictions=False)))
    client = JsonClient(server.port)
    try:
        row = {"driver_id": 1, "driver_stats:conv_rate": 0.3, "driver_stats:trips": 3}
        status, body = client.post("/predict", {"instances": [row]})
        assert status == 200, body
    finally:
        client.close()
        server.stop()
