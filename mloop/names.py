"""The one naming rule for models and pipelines: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$``.

A model or pipeline name becomes a path (a prediction log folder, an artifact folder) and a URL
segment, so ``.`` and ``..`` (and anything starting with ``.``, ``-`` or ``_``) are refused. Every
place that accepts a name (registration, the registry, the prediction log) calls :func:`check_name`;
a second copy of the rule would drift.
"""

from __future__ import annotations

import re

from mloop.errors import ParameterError

__all__ = ["NAME_PATTERN", "check_name", "decimal"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def decimal(text: str, max_digits: int = 9) -> int | None:
    """The number ``text`` spells in 1 to ``max_digits`` ASCII digits (no sign, space or
    underscore), else None. Every version, length or process id read from outside goes through this
    one check: ``'²'.isdigit()`` is true yet ``int('²')`` fails, ``int('٣')`` is 3, and Python
    refuses to convert more than 4,300 digits (and a database column overflows long before)."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def check_name(value: object, *, what: str = "model name", field: str = "name") -> str:
    """``value`` if it is a valid name; raises ParameterError naming ``field`` otherwise."""
    if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "…"
        raise ParameterError(
            f"{what} {shown} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return value
