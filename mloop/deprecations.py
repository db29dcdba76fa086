"""Old names kept for one release: each resolves to its new name with a ``DeprecationWarning``.

A module that renamed something sets ``__getattr__ = renamed(__name__, {"old": "new"}, globals())``;
the table there is the one list of that module's old names (the next release deletes it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["renamed", "warn_renamed"]


def warn_renamed(module: str, old: str, new: str) -> None:
    """Warn that ``module.old`` is now ``module.new``; called from a module ``__getattr__``, so the
    warning points at the line that used the old name."""
    warnings.warn(
        f"{module}.{old} is deprecated and goes in the next release: use {module}.{new}",
        DeprecationWarning,
        stacklevel=3,
    )


def renamed(module: str, names: Mapping[str, str], namespace: Mapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving each old name in ``names`` to the new one, with a warning."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_renamed(module, name, names[name])
        return namespace[names[name]]

    return __getattr__
