"""Workspace settings: store URLs and the executor, read once at the edge and passed down.

Sources, strongest first: explicit keyword arguments, ``MLOOP_*`` environment variables, the
``[mloop]`` table of ``mloop.toml`` in the workspace's parent directory. Empty URLs mean "the embedded
default inside the workspace directory" (SQLite file, local artifact folder).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mloop.errors import ConfigurationError

__all__ = [
    "CONFIG_FILE",
    "CONFIG_TABLES",
    "Settings",
    "config_file_there",
    "load_settings",
    "read_config_file",
]

CONFIG_FILE = "mloop.toml"  # in the folder holding the workspace (Workspace.config_dir)
# its tables, and who reads them: settings, the loop (scheduler, backtest), the service, pipeline CI
CONFIG_TABLES = ("mloop", "triggers", "rollout", "scheduler", "serve", "ci")


class Settings(BaseSettings):
    """What a workspace is made of. Every field can be set by ``MLOOP_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MLOOP_", extra="forbid", allow_inf_nan=False)

    metadata_url: str = Field("", description="SQLAlchemy URL; default sqlite:///<workspace>/mloop.db")
    artifact_url: str = Field("", description="fsspec URL; default <workspace>/artifacts")
    executor: str = Field("threads", description="'threads' (in-process) or 'dask://host:port'")
    max_workers: int = Field(4, ge=1, le=256, description="parallel steps for the in-process executor")
    stale_after_s: float = Field(
        120.0, gt=0, le=86_400, description="a running run whose heartbeat is older than this fails"
    )
    heartbeat_s: float = Field(
        10.0, gt=0, le=86_400, description="how often a live run refreshes its heartbeat"
    )
    step_timeout_s: float = Field(
        0.0,
        ge=0,
        le=30 * 86_400,
        description="a step running longer fails its run, unless it sets its own timeout (0: no limit)",
    )

    @field_validator("max_workers", "stale_after_s", "heartbeat_s", "step_timeout_s", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        # TOML's `true` is no number of seconds or workers (pydantic reads it as 1)
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value

    online_url: str = Field(
        "", description="online feature store: '' (SQLite in the workspace), sqlite:///path or redis://…"
    )


def load_settings(toml_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from overrides, the environment and ``toml_dir/mloop.toml`` (in that order of strength)."""
    file_values: dict[str, Any] = {}
    if toml_dir is not None and config_file_there(toml_dir / CONFIG_FILE):
        table = read_config_file(toml_dir / CONFIG_FILE).get("mloop", {})
        if not isinstance(table, dict):
            raise ConfigurationError(
                f"{toml_dir / CONFIG_FILE}: mloop must be a table ([mloop]), got {type(table).__name__}",
                field="mloop",
            )
        file_values = dict(table)
    try:
        env_only = Settings()
        merged = {
            **file_values,
            **_explicit_env(env_only),
            **{k: v for k, v in overrides.items() if v is not None},
        }
        return Settings.model_validate(merged) if merged else env_only
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        raise ConfigurationError(f"setting {name}: {err['msg']}", field=name) from exc


def config_file_there(path: Path) -> bool:
    """Whether there is a configuration file at ``path`` to read (False: none; ConfigurationError when
    something is there that is not a readable file: a folder, a broken link, a pipe, which would
    otherwise silently leave every setting at its default)."""
    if path.is_file():
        return True
    if not path.exists() and not path.is_symlink():
        return False
    what = "a broken link" if path.is_symlink() and not path.exists() else "not a regular file"
    if path.is_dir():
        what = "a folder"
    raise ConfigurationError(f"{path} is {what}, not a TOML file", field=str(path))


def read_config_file(path: Path, *, tables: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The tables of a TOML configuration file; ConfigurationError naming the file when it is not TOML,
    or when it has a table mloop does not read (``tables``; for ``mloop.toml`` always checked): a
    misspelt ``[[trigger]]`` would otherwise leave the loop without its trigger, silently."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark, as editors write
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc})", field=str(path)) from exc
    except RecursionError:
        raise ConfigurationError(f"{path}: its values nest too deeply", field=str(path)) from None
    except IsADirectoryError:
        raise ConfigurationError(f"{path} is a folder, not a TOML file", field=str(path)) from None
    known = tables if tables is not None else CONFIG_TABLES if path.name == CONFIG_FILE else None
    if known is not None:
        for key in data:
            if key not in known:
                import difflib

                near = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ConfigurationError(
                    f"{path}: unknown table {key[:80]!r} ({hint}mloop reads {', '.join(known)})",
                    field=key,
                )
    return data


def _explicit_env(settings: Settings) -> dict[str, Any]:
    """The fields the environment set, so the TOML file only fills what the environment left alone."""
    return {name: getattr(settings, name) for name in settings.model_fields_set}
