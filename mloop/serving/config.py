"""How ``mloop serve`` serves one model: :class:`ServeConfig`, and its defaults from ``mloop.toml``.

The ``[serve]`` table of ``mloop.toml`` beside the workspace sets defaults that the command line
overrides; only the keys in :data:`TOML_KEYS` may appear there, each checked when read::

    [serve]
    batch_rows = 64   # concurrent requests coalesced into one model call, up to this many rows
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mloop.errors import ConfigurationError
from mloop.settings import CONFIG_FILE, config_file_there, read_config_file

__all__ = ["BATCH_ROWS_MAX", "TOML_KEYS", "ServeConfig", "serve_defaults"]


@dataclass(frozen=True)
class ServeConfig:
    """How the service serves one model name."""

    model: str
    alias: str = "production"
    canary_alias: str = "canary"
    canary_fraction: float = 0.0
    shadow_alias: str | None = None
    max_batch_rows: int = 1000
    # concurrent requests coalesced into one model call, up to this many rows (1: one call each)
    batch_rows: int = 64
    out_of_domain: str = "count"
    poll_interval_s: float = 1.0
    log_predictions: bool = True
    flush_interval_s: float = 1.0
    # records waiting for the next write: beyond it a prediction's record is dropped (and counted),
    # a request's labels are refused with 503 and Retry-After (the caller sends them again)
    log_buffer_rows: int = 200_000
    compiled: bool = True  # serve a version's proven-equal compiled form (ONNX) when it has one
    max_body_bytes: int = 8 * 1024 * 1024  # larger bodies get 413, refused while they stream in
    max_json_depth: int = 32  # deeper JSON gets 400/422 before any model sees it
    read_timeout_s: float = 30.0  # a body not received within this gets 408
    offload_bytes: int = 64 * 1024  # bodies above this are parsed and predicted off the event loop
    # labels drive retraining and rollbacks: with auth, /feedback needs a feedback, editor or admin token
    feedback_auth: bool = False
    predict_auth: bool = False  # prediction routes take any valid token too (off: open)


BATCH_ROWS_MAX = 1_000_000  # a bound, so a typo of a few extra digits is refused rather than served
TOML_KEYS = {"batch_rows": f"an integer from 1 to {BATCH_ROWS_MAX:,}"}


def serve_defaults(config_dir: Path | None) -> dict[str, Any]:
    """The ``[serve]`` table of ``config_dir/mloop.toml`` (empty when there is none), checked."""
    path = (config_dir / CONFIG_FILE) if config_dir is not None else None
    if path is None or not config_file_there(path):
        return {}
    table = read_config_file(path).get("serve", {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [serve] must be a table", field="serve")
    for key, value in table.items():
        if key not in TOML_KEYS:
            known = ", ".join(sorted(TOML_KEYS))
            raise ConfigurationError(
                f"{path}: [serve] has no key {key!r} (known: {known})", field=f"serve.{key}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= BATCH_ROWS_MAX:
            raise ConfigurationError(
                f"{path}: [serve] {key} must be {TOML_KEYS[key]}, got {value!r}", field=f"serve.{key}"
            )
    return dict(table)
