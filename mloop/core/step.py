"""``@step``: a plain typed Python function whose I/O, hashing and lineage the runner handles.

Called outside a pipeline, a step is just its function (handy in unit tests). Called inside a
``@pipeline`` body, it records a node in the graph and returns handles to its future outputs.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cached_property, update_wrapper
from pathlib import Path
from typing import Any, overload

from mloop.core import fingerprint
from mloop.core.graph import current_builder
from mloop.errors import PipelineDefinitionError

__all__ = ["Step", "step"]


class Step:
    """A step: its function, its output names and the code hash that keys its cache."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        outputs: Sequence[str] | None = None,
        cache: bool = True,
        external: Callable[[Any, dict[str, Any]], str] | None = None,
        timeout: float | timedelta | None = None,
    ):
        self.fn = fn
        self.name = name or fn.__name__
        self.cache = cache
        self.external = external
        self.timeout_s = _timeout_seconds(self.name, timeout)
        self.signature = inspect.signature(fn)
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise PipelineDefinitionError(
                    f"step {self.name!r}: *args/**kwargs are not supported; name every input",
                    field=param.name,
                )
        if outputs is None:
            returns = self.signature.return_annotation
            outputs = () if returns in (None, "None") else ("output",)
        self.outputs: tuple[str, ...] = tuple(outputs)
        update_wrapper(self, fn)

    @cached_property
    def type_hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self.fn)
        except Exception:
            return {}

    @cached_property
    def code_hash(self) -> str:
        """Hash of this step's code and the same-module helpers it calls (docstrings excluded)."""
        return fingerprint.code_hash(self.fn)

    def is_path_input(self, name: str) -> bool:
        """Inputs annotated as ``pathlib.Path`` are files: their bytes, not their names, key the cache."""
        hint = self.type_hints.get(name)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        return hint is Path or (union and Path in typing.get_args(hint))

    def is_paths_input(self, name: str) -> bool:
        """Inputs annotated as a list of files (``list[Path]``, ``tuple[Path, ...]``,
        ``Sequence[Path]``, optionally ``| None``): each file's bytes key the cache, in order, as a
        single ``Path``'s do (a new_data trigger hands such a parameter every file that arrived)."""
        hint = self.type_hints.get(name)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if union else (hint,)
        for option in options:
            origin, args = typing.get_origin(option), typing.get_args(option)
            if origin in (list, tuple, collections.abc.Sequence) and args and args[0] is Path:
                return origin is not tuple or len(args) == 1 or args[1] is Ellipsis
        return False

    def named(self, name: str) -> Step:
        """The same step under another node name, to use it twice in one pipeline."""
        return Step(
            self.fn, name=name, outputs=self.outputs, cache=self.cache, external=self.external,
            timeout=self.timeout_s,
        )  # fmt: skip

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


@overload
def step(fn: Callable[..., Any], /) -> Step: ...
@overload
def step(
    *,
    name: str | None = None,
    outputs: Sequence[str] | None = None,
    cache: bool = True,
    external: Callable[[Any, dict[str, Any]], str] | None = None,
    timeout: float | timedelta | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    outputs: Sequence[str] | None = None,
    cache: bool = True,
    external: Callable[[Any, dict[str, Any]], str] | None = None,
    timeout: float | timedelta | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make ``fn`` a pipeline step.

    ``outputs`` names the elements of a returned tuple (``@step(outputs=["train", "test"])``); without
    it a step has one output named ``output``, or none when annotated ``-> None``. A step whose result
    depends on state outside its inputs declares it: ``external(workspace, params) -> str`` describes
    that state and becomes part of the cache key (e.g. which version is in production now), or
    ``cache=False`` never reuses a result.

    ``timeout`` (seconds, or a ``timedelta``) bounds one execution: a step still running after it
    fails its run (``StepTimeoutError``), so that a hung fit or a stalled download cannot hold a
    scheduler, or a backtest, forever. Without it the workspace's ``step_timeout_s`` applies (0: none).
    """
    if fn is not None:
        return Step(fn, name=name, outputs=outputs, cache=cache, external=external, timeout=timeout)
    return lambda f: Step(f, name=name, outputs=outputs, cache=cache, external=external, timeout=timeout)


def _timeout_seconds(step: str, timeout: float | timedelta | None) -> float | None:
    """``timeout`` as a positive number of seconds (None: no timeout of its own, the workspace's
    ``step_timeout_s`` applies; ``math.inf``, or anything beyond ~30 years such as ``timedelta.max``:
    no limit, whatever the workspace says)."""
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        seconds = math.nan
    try:
        value = float(seconds)
    except OverflowError:  # an integer beyond any float: no limit
        value = math.inf
    if not value > 0:
        raise PipelineDefinitionError(
            f"step {step!r}: timeout must be a positive number of seconds or a timedelta (math.inf: "
            f"no limit), got {timeout!r}",
            field="timeout",
        )
    return value if value < _NO_LIMIT_FROM_S else math.inf


_NO_LIMIT_FROM_S = 1e9  # ~30 years: a wait that long is no limit (and beyond what a thread can wait)
