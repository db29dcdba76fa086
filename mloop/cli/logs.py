"""Logging for mloop's long-running commands: to stderr, as text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from mloop.errors import ParameterError

__all__ = ["configure_logging"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC), level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Send the ``mloop`` loggers to stderr at ``level`` (debug, info, warning, error), formatted as
    ``text`` or ``json``; replaces a handler an earlier call installed, so it may be called again."""
    if level.lower() not in LEVELS:
        raise ParameterError(
            f"--log-level must be one of {', '.join(LEVELS)}, got {level!r}", field="log_level"
        )
    if fmt not in FORMATS:
        raise ParameterError(f"--log-format must be text or json, got {fmt!r}", field="log_format")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.set_name("mloop-cli")
    logger = logging.getLogger("mloop")
    for old in [h for h in logger.handlers if h.get_name() == "mloop-cli"]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
