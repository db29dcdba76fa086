"""``mloop features …`` end to end, and every bad input: one ``error:`` line, exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from feature_helpers import stats_frame, utc

from mloop.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def repo(tmp_path: Path, feature_repo: Callable[..., Path]) -> Path:
    return feature_repo()


def ws_args(tmp_path: Path) -> list[str]:
    return ["--workspace", str(tmp_path / "ws")]


def test_apply_records_versions_and_shows_the_diff(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = ws_args(tmp_path)
    code, out, _ = run(capsys, "features", "apply", str(repo), *w, "--json")
    assert code == 0
    assert {(c["kind"], c["name"], c["action"], c["version"]) for c in json.loads(out)} == {
        ("entity", "driver", "created", 1),
        ("view", "driver_stats", "created", 1),
        ("service", "driver_model", "created", 1),
    }
    code, out, _ = run(capsys, "features", "apply", str(repo), *w, "--json")
    assert {c["action"] for c in json.loads(out)} == {"unchanged"}
    repo.write_text(repo.read_text().replace('ttl="1d"', 'ttl="2d"'))
    code, out, _ = run(capsys, "features", "apply", str(repo), *w)
    assert code == 0 and "view driver_stats v2 (updated)" in out and "86400.0 → 172800.0" in out
    code, out, _ = run(capsys, "features", "list", *w, "--json")
    assert {(d["name"], d["version"]) for d in json.loads(out)} == {
        ("driver", 1),
        ("driver_stats", 2),
        ("driver_model", 1),
    }
    code, out, _ = run(capsys, "features", "show", "driver_stats", *w, "--json")
    shown = json.loads(out)
    assert shown["spec"]["features"] == ["conv_rate", "trips"] and len(shown["versions"]) == 2


def test_a_breaking_change_to_a_view_in_use_needs_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = ws_args(tmp_path)
    assert run(capsys, "features", "apply", str(repo), *w)[0] == 0
    repo.write_text(
        repo.read_text()
        .replace('created="created",', 'created="created", features=["conv_rate"],')
        .replace(', "driver_stats:trips"', "")
    )
    code, _, err = run(capsys, "features", "apply", str(repo), *w)
    assert code == 2
    assert err.startswith("error: breaking change to view 'driver_stats' which is in use")
    assert "feature(s) removed: trips" in err and "--force" in err
    code, out, _ = run(capsys, "features", "apply", str(repo), *w, "--force", "--json")
    assert code == 0
    view = next(c for c in json.loads(out) if c["kind"] == "view")
    assert view["breaking"] == ["feature(s) removed: trips"] and view["version"] == 2


def test_historical_materialize_online_and_skew_from_the_shell(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = ws_args(tmp_path)
    run(capsys, "features", "apply", str(repo), *w)
    entities = pd.DataFrame({"driver_id": [1, 2, 1], "event_timestamp": [utc("2024-01-02 12:00")] * 3})
    entities.to_parquet(tmp_path / "entities.parquet")
    out_path = tmp_path / "train.parquet"
    code, out, _ = run(
        capsys, "features", "historical", str(tmp_path / "entities.parquet"),
        "--features", "driver_stats:trips,driver_stats:conv_rate", "-o", str(out_path), *w, "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["rows"] == 3
    frame = pd.read_parquet(out_path)
    assert list(frame.columns) == [
        "driver_id",
        "event_timestamp",
        "driver_stats:trips",
        "driver_stats:conv_rate",
    ]
    assert frame["driver_stats:trips"].tolist()[0] == 3
    code, out, _ = run(capsys, "features", "materialize", "--start", "2024-01-01T00:00:00Z", *w, "--json")
    assert code == 0 and json.loads(out)[0]["rows"] == 2
    code, out, _ = run(
        capsys, "features", "online", "--entity", "driver_id=2", "--service", "driver_model", *w, "--json"
    )
    [row] = json.loads(out)
    assert row["driver_id"] == 2 and row["found"] == {"driver_stats": True}  # as JSON gives it
    assert row["features"] == {
        "driver_stats:conv_rate": None,
        "driver_stats:trips": None,
    }  # older than the TTL
    pd.DataFrame({"driver_id": [1, 2, 3]}).to_csv(tmp_path / "keys.csv", index=False)
    code, out, _ = run(
        capsys,
        "features",
        "online",
        "--entities",
        str(tmp_path / "keys.csv"),
        "--features",
        "driver_stats:*",
        *w,
        "--json",
    )
    assert [r["found"]["driver_stats"] for r in json.loads(out)] == [True, True, False]
    code, out, _ = run(capsys, "features", "skew", "--service", "driver_model", *w, "--json")
    assert code == 0 and json.loads(out)["mismatches"] == 0
    code, out, _ = run(capsys, "features", "freshness", "--service", "driver_model", *w, "--json")
    assert code == 0 and json.loads(out)["driver_stats"]["end"] is not None


def _applied(capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path) -> list[str]:
    w = ws_args(tmp_path)
    assert run(capsys, "features", "apply", str(repo), *w)[0] == 0
    return w


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _entities(tmp_path: Path, frame: pd.DataFrame, name: str = "e.parquet") -> str:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return str(path)


GOOD = pd.DataFrame({"driver_id": [1], "event_timestamp": [utc("2024-01-02")]})


def test_unknown_view_and_unknown_feature(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = _applied(capsys, tmp_path, repo)
    e = _entities(tmp_path, GOOD)
    err = _error(
        capsys, "features", "historical", e, "--features", "nope:trips", "-o", str(tmp_path / "o.parquet"), *w
    )
    assert "unknown feature view 'nope'" in err
    err = _error(
        capsys,
        "features",
        "historical",
        e,
        "--features",
        "driver_stats:speed",
        "-o",
        str(tmp_path / "o.parquet"),
        *w,
    )
    assert "feature view 'driver_stats' has no feature 'speed'" in err
    err = _error(capsys, "features", "online", "--entity", "driver_id=1", "--features", "trips", *w)
    assert "expected VIEW:FEATURE" in err
    err = _error(capsys, "features", "online", "--entity", "driver_id=1", "--service", "nope", *w)
    assert "unknown service 'nope'" in err


def test_entities_without_timestamp_or_join_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = _applied(capsys, tmp_path, repo)
    o = str(tmp_path / "o.parquet")
    e = _entities(tmp_path, GOOD.rename(columns={"event_timestamp": "when"}))
    err = _error(capsys, "features", "historical", e, "--service", "driver_model", "-o", o, *w)
    assert "no timestamp column 'event_timestamp'" in err
    e = _entities(tmp_path, GOOD.rename(columns={"driver_id": "driver"}))
    err = _error(capsys, "features", "historical", e, "--service", "driver_model", "-o", o, *w)
    assert "lack join key(s) driver_id of feature view 'driver_stats'" in err
    err = _error(capsys, "features", "online", "--entity", "driver=1", "--service", "driver_model", *w)
    assert "lack join key 'driver_id'" in err


def test_mixed_naive_and_aware_timestamps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = _applied(capsys, tmp_path, repo)
    o = str(tmp_path / "o.parquet")
    mixed = pd.DataFrame(
        {"driver_id": [1, 1], "event_timestamp": ["2024-01-02T00:00:00Z", "2024-01-02T00:00:00"]}
    )
    err = _error(
        capsys,
        "features",
        "historical",
        _entities(tmp_path, mixed, "m.csv"),
        "--service",
        "driver_model",
        "-o",
        o,
        *w,
    )
    assert "mixes timezone-naive and timezone-aware" in err
    naive = pd.DataFrame({"driver_id": [1], "event_timestamp": [pd.Timestamp("2024-01-02")]})
    err = _error(
        capsys, "features", "historical", _entities(tmp_path, naive), "--service", "driver_model", "-o", o, *w
    )
    assert (
        "is timezone-naive but feature view 'driver_stats' column 'event_timestamp' is timezone-aware" in err
    )


def test_negative_ttl_missing_source_and_source_without_timestamp(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, feature_repo: Callable[..., Path]
) -> None:
    w = ws_args(tmp_path)
    repo = feature_repo(ttl="-1d")
    err = _error(capsys, "features", "apply", str(repo), *w)
    assert "ttl '-1d' is negative" in err
    repo = feature_repo()
    (tmp_path / "stats.parquet").unlink()
    err = _error(capsys, "features", "apply", str(repo), *w)
    assert "feature source" in err and "stats.parquet does not exist" in err
    stats_frame().rename(columns={"event_timestamp": "ts"}).to_parquet(tmp_path / "stats.parquet")
    err = _error(capsys, "features", "apply", str(repo), *w)
    assert "has no timestamp column 'event_timestamp'" in err
    (tmp_path / "stats.parquet").write_text("not parquet")
    err = _error(capsys, "features", "apply", str(repo), *w)
    assert "cannot read feature view 'driver_stats' source" in err


def test_redis_url_that_cannot_connect(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _applied(capsys, tmp_path, repo)
    monkeypatch.setenv("MLOOP_ONLINE_URL", "redis://127.0.0.1:1/0")
    err = _error(capsys, "features", "materialize", *w)
    assert "cannot connect to the online store redis://127.0.0.1:1/0" in err
    monkeypatch.setenv("MLOOP_ONLINE_URL", "memcached://x")
    err = _error(capsys, "features", "online", "--entity", "driver_id=1", "--service", "driver_model", *w)
    assert "online_url 'memcached://x' is not one of" in err


def test_bad_times_and_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path) -> None:
    w = _applied(capsys, tmp_path, repo)
    assert "has no timezone" in _error(capsys, "features", "materialize", "--start", "2024-01-01", *w)
    assert "not an ISO-8601 time" in _error(capsys, "features", "materialize", "--end", "soon", *w)
    assert "--entity KEY=VALUE" in _error(capsys, "features", "online", "--service", "driver_model", *w)
    assert "expected KEY=VALUE" in _error(
        capsys, "features", "online", "--entity", "x", "--service", "driver_model", *w
    )
    assert "either features" in _error(capsys, "features", "skew", *w)
    assert "no feature view, service or entity named 'zzz'" in _error(capsys, "features", "show", "zzz", *w)


@pytest.mark.parametrize(("value", "found"), [("1", True), ("1.0", True), ("01", False), (" 1", False)])
def test_an_entity_value_is_read_as_the_http_api_reads_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path, value: str, found: bool
) -> None:
    """``--entity driver_id=1.0`` is the number 1.0, as ``{"driver_id": 1.0}`` is to the team server, so
    it finds the key stored as 1; text that is not a JSON number stays text and finds nothing."""
    w = _applied(capsys, tmp_path, repo)
    assert run(capsys, "features", "materialize", *w)[0] == 0
    code, out, err = run(
        capsys,
        "features",
        "online",
        "--entity",
        f"driver_id={value}",
        "--service",
        "driver_model",
        *w,
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)[0]["found"] == {"driver_stats": found}
    (tmp_path / "keys.csv").write_text(f"driver_id\n{value}\n", encoding="utf-8")
    code, out, err = run(
        capsys, "features", "online", "--entities", str(tmp_path / "keys.csv"), "--service", "driver_model",
        *w, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)[0]["found"] == {"driver_stats": found}


def test_historical_entity_errors_name_the_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = _applied(capsys, tmp_path, repo)
    o = str(tmp_path / "o.parquet")
    text_keys = pd.DataFrame({"driver_id": ["01"], "event_timestamp": [utc("2024-01-02")]})
    err = _error(
        capsys,
        "features",
        "historical",
        _entities(tmp_path, text_keys),
        "--service",
        "driver_model",
        "-o",
        o,
        *w,
    )
    assert "entity column 'driver_id' is VARCHAR (text)" in err and "cast the entity column" in err
    clash = GOOD.assign(**{"driver_stats:trips": [7]})
    err = _error(
        capsys, "features", "historical", _entities(tmp_path, clash), "--service", "driver_model", "-o", o, *w
    )
    assert "column named 'driver_stats:trips'" in err


def test_historical_reads_nanosecond_parquet_and_header_only_csv(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    w = _applied(capsys, tmp_path, repo)
    o = str(tmp_path / "o.parquet")
    ns = GOOD.assign(event_timestamp=GOOD["event_timestamp"].dt.as_unit("ns"))
    code, out, err = run(
        capsys, "features", "historical", _entities(tmp_path, ns), "--service", "driver_model", "-o", o, *w,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["rows"] == 1 and pd.read_parquet(o)["driver_stats:trips"].tolist() == [3]
    (tmp_path / "h.csv").write_text("driver_id,event_timestamp\n", encoding="utf-8")
    code, out, err = run(
        capsys, "features", "historical", str(tmp_path / "h.csv"), "--service", "driver_model", "-o", o, *w,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["rows"] == 0


def test_skew_is_clean_when_the_only_unmatched_entities_were_never_materialized(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    """Driver 2's rows are all after the materialization's end: it can never be online, so it is not
    skew (exit 0), and the report says it was left out."""
    w = _applied(capsys, tmp_path, repo)
    frame = stats_frame()
    frame = frame[(frame.driver_id == 1) | (frame.event_timestamp > utc("2024-01-02"))]
    frame.to_parquet(tmp_path / "stats.parquet")
    assert run(capsys, "features", "materialize", "--end", "2024-01-01T12:00:00Z", *w)[0] == 0
    code, out, err = run(capsys, "features", "skew", "--service", "driver_model", *w, "--json")
    assert code == 0, (out, err)
    report = json.loads(out)
    assert (report["mismatches"], report["missing_online"]) == (0, 0)
    assert report["not_materialized"] == {"driver_stats": 1}
    code, out, _ = run(capsys, "features", "skew", "--service", "driver_model", *w)
    assert code == 0 and "1 entity with nothing to materialize not compared" in out


def test_a_text_key_that_reads_like_a_number_is_given_in_json_quotes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, feature_repo: Callable[..., Path]
) -> None:
    """``--entity driver_id=1.0`` is the number 1.0 (which finds key 1): a text key ``"1.0"`` could
    not be asked for at all."""
    frame = stats_frame().astype({"driver_id": str})
    frame.loc[frame["driver_id"] == "2", "driver_id"] = "1.0"
    w = _applied(capsys, tmp_path, feature_repo(frame, ttl="36500d"))
    assert run(capsys, "features", "materialize", *w)[0] == 0
    for value, trips in (("1.0", 3), ('"1.0"', 6), ('"1"', 3)):  # the number 1.0 is the key 1
        code, out, err = run(
            capsys, "features", "online", "--entity", f"driver_id={value}", "--service", "driver_model",
            *w, "--json",
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)[0]["features"]["driver_stats:trips"] == trips, (value, out)
    bad = _error(
        capsys, "features", "online", "--entity", 'driver_id="a\\x"', "--service", "driver_model", *w
    )
    assert "not a valid JSON string" in bad and bad.strip().count("\n") == 0
