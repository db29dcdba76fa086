"""Settings come from keyword overrides, MLOOP_* variables and mloop.toml, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

import mloop
from mloop.cli import main
from mloop.errors import ConfigurationError
from mloop.settings import load_settings


def test_sources_in_order_of_strength(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mloop.toml").write_text('[mloop]\nmax_workers = 3\nexecutor = "threads"\nheartbeat_s = 5\n')
    assert load_settings(tmp_path).max_workers == 3
    monkeypatch.setenv("MLOOP_MAX_WORKERS", "7")
    settings = load_settings(tmp_path)
    assert (settings.max_workers, settings.heartbeat_s) == (7, 5)
    assert load_settings(tmp_path, max_workers=2).max_workers == 2


def test_workspace_reads_its_toml(tmp_path: Path) -> None:
    other_db = tmp_path / "elsewhere.db"
    (tmp_path / "mloop.toml").write_text(f'[mloop]\nmetadata_url = "sqlite:///{other_db}"\n')
    with mloop.Workspace.open(tmp_path / ".mloop") as ws:
        ws.start_run("x").end()
    assert other_db.exists() and not (tmp_path / ".mloop" / "mloop.db").exists()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[mloop]\nmax_workers = 0\n", "setting max_workers: Input should be greater than or equal to 1"),
        ("[mloop]\nbogus = 1\n", "setting bogus: Extra inputs are not permitted"),
        ("[mloop\n", "not valid TOML"),
        ("mloop = 5\n", r"mloop must be a table \(\[mloop\]\), got int"),
        ("[[mloop]]\nexecutor = 'threads'\n", r"mloop must be a table \(\[mloop\]\), got list"),
        ("[mloop]\nstale_after_s = inf\n", "setting stale_after_s: Input should be a finite number"),
        # TOML's true was read as 1: a one-second timeout on every step
        ("[mloop]\nstep_timeout_s = true\n", "setting step_timeout_s: .*expected a number, got true"),
        ("[mloop]\nmax_workers = false\n", "setting max_workers: .*expected a number, got false"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "mloop.toml").write_text(toml)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(tmp_path)


def test_bad_environment_value_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLOOP_MAX_WORKERS", "many")
    assert main(["runs", "list", "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: setting max_workers:") and err.count("\n") == 1


def test_unknown_executor(tmp_path: Path) -> None:
    with (
        mloop.Workspace.open(tmp_path / "ws", executor="celery") as ws,
        pytest.raises(ConfigurationError, match="executor 'celery'"),
    ):
        ws.executor()
    pytest.importorskip("distributed")
    for spec in ("dask://", "dask://host", "dask://host:port"):
        with (
            mloop.Workspace.open(tmp_path / "ws", executor=spec) as ws,
            pytest.raises(ConfigurationError, match="needs a scheduler's host and port"),
            ws.executor(),
        ):
            pass


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_metadata_database_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigurationError, match="in-memory SQLite database, which keeps nothing"):
        mloop.Workspace.open(tmp_path / "ws", metadata_url=url)


def test_settings_and_the_loop_read_one_file_beside_the_workspace(tmp_path: Path) -> None:
    from mloop.orchestration.config import load_loop_config

    project = tmp_path / "project"
    project.mkdir()
    (project / "mloop.toml").write_text(
        '[mloop]\nmax_workers = 3\n\n[[triggers]]\nname = "nightly"\nkind = "schedule"\n'
        'cron = "0 3 * * *"\npipeline = "mloop.steps.retrain:retrain"\n'
    )
    with mloop.Workspace.open(project / ".mloop") as ws:
        assert ws.config_dir == project
        assert ws.settings.max_workers == 3
        assert [t.name for t in load_loop_config(ws.config_dir).triggers] == ["nightly"]
    (project / "mloop.toml").write_text("[mloop\n")
    for read in (lambda: mloop.Workspace.open(project / ".mloop"), lambda: load_loop_config(project)):
        with pytest.raises(ConfigurationError, match=r"mloop\.toml: not valid TOML"):
            read()
