"""How tests start the mloop command as a real process (works with or without an activated venv)."""

from __future__ import annotations

import sys
from pathlib import Path


def mloop_command() -> list[str]:
    """The ``mloop`` script installed beside this interpreter, else ``python -m mloop``."""
    script = Path(sys.executable).parent / "mloop"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mloop"]
