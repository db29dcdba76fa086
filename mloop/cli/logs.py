"""Logging of mloop's daemons (``mloop scheduler run``, ``mloop serve``) to stderr, as text or JSON.

One setup for every daemon, so ``--log-level`` and ``--log-format`` mean the same everywhere. JSON
lines carry the record's context (``trigger``, ``event``, ``run_id``, ``status``… passed as
``extra=``) as fields, ready for a log collector.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from mloop.errors import ParameterError

__all__ = ["LEVELS", "configure_logging"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_HANDLER_NAME = "mloop-stderr"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as ``logging.lastResort`` does),
    so a daemon run in process (a test, an embedding program) never writes to a stream since closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def check_format(fmt: str) -> None:
    """Refuse a ``--log-format`` other than ``text`` or ``json`` (ParameterError naming the option)."""
    if fmt.lower() not in FORMATS:
        raise ParameterError(
            f"--log-format {fmt!r}: expected one of {', '.join(FORMATS)}", field="log_format"
        )


def configure_logging(level: str, fmt: str) -> None:
    """Send mloop's log records at ``level`` and above to stderr in ``fmt`` (``text`` or ``json``).

    Calling it again replaces the previous setup. Raises ParameterError naming the option on a level
    or format it does not know.
    """
    if level.lower() not in LEVELS:
        raise ParameterError(f"--log-level {level!r}: expected one of {', '.join(LEVELS)}", field="log_level")
    check_format(fmt)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    if fmt.lower() == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("mloop").setLevel(level.upper())
    # uvicorn's own records ("Invalid HTTP request received.") go out the same way: in its format a
    # JSON log had plain-text lines (the level of uvicorn's loggers is its Config's log_level)
    for logger in (logging.getLogger("mloop"), logging.getLogger("uvicorn")):
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
