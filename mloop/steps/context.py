"""Typed access to the workspace running the current step, for built-in steps that use the registry.

The runner puts the workspace in the step's context (core cannot name the Workspace class: it sits
below it); this accessor, one layer above the workspace, is where that handle gets its type back.
"""

from __future__ import annotations

from mloop.core.context import current_workspace
from mloop.errors import ConfigurationError
from mloop.workspace import Workspace

__all__ = ["workspace"]


def workspace() -> Workspace:
    """The workspace running the current step (its model registry, artifacts and metadata)."""
    ws = current_workspace()
    if not isinstance(ws, Workspace):
        raise ConfigurationError(
            f"the step's workspace handle is a {type(ws).__name__}, not a mloop Workspace", field="workspace"
        )
    return ws
