"""Load a pipeline from a ``path/to/file.py:name`` or ``package.module:name`` reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from mloop.core.pipeline import Pipeline
from mloop.errors import PipelineLoadError

__all__ = ["load_pipeline"]


def load_pipeline(ref: str) -> Pipeline:
    """The :class:`Pipeline` named by ``file.py:name``; PipelineLoadError says what is wrong otherwise."""
    file_part, sep, name = ref.rpartition(":")
    if not sep or not file_part or not name:
        raise PipelineLoadError(f"{ref!r} is not of the form path/to/file.py:pipeline_name", field="pipeline")
    path = Path(file_part).expanduser().resolve()
    if not path.is_file() and not file_part.endswith(".py") and "/" not in file_part:
        return _from_module(ref, file_part, name)
    if not path.is_file():
        raise PipelineLoadError(f"pipeline file {file_part} does not exist", field="pipeline")
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so the file can import its sibling modules
    module_name = path.stem if path.stem not in sys.modules else f"mloop_user_{path.stem}_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"{file_part} cannot be imported as a Python module", field="pipeline")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise PipelineLoadError(
            f"importing {file_part} failed: {type(exc).__name__}: {exc}", field="pipeline"
        ) from exc
    obj = getattr(module, name, None)
    if obj is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Pipeline))
        raise PipelineLoadError(
            f"{file_part} has no pipeline {name!r} (pipelines found: {found or 'none'})", field="pipeline"
        )
    if not isinstance(obj, Pipeline):
        raise PipelineLoadError(
            f"{file_part}:{name} is a {type(obj).__name__}, not a @pipeline", field="pipeline"
        )
    return obj


def _from_module(ref: str, module_name: str, name: str) -> Pipeline:
    """``package.module:name``: a pipeline shipped in an installed package (e.g. mloop's own)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineLoadError(
            f"{ref!r}: neither a file nor an importable module ({exc})", field="pipeline"
        ) from exc
    obj = getattr(module, name, None)
    if not isinstance(obj, Pipeline):
        raise PipelineLoadError(f"{module_name} has no @pipeline named {name!r}", field="pipeline")
    return obj
