"""``@pipeline``: compose steps by calling them; the graph is traced and validated before anything runs."""

from __future__ import annotations

import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mloop.core import fingerprint
from mloop.core.graph import Graph, GraphBuilder, ParamRef, require_json
from mloop.errors import ParameterError, PipelineDefinitionError
from mloop.names import check_name

if TYPE_CHECKING:
    from mloop.core.runner import RunResult, Stores

__all__ = ["Pipeline", "coerce_param", "pipeline"]


class Pipeline:
    """A named DAG of steps with typed, JSON-valued parameters."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        self.fn = fn
        self.name = check_name(name or fn.__name__, what="pipeline name")
        self.signature = inspect.signature(fn)
        for p in self.signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise PipelineDefinitionError(
                    f"pipeline {self.name!r}: parameter {p.name!r} must be a plain named parameter",
                    field=p.name,
                )
            if p.default is not p.empty:
                require_json(p.default, f"pipeline {self.name!r}: default of parameter {p.name!r}", p.name)
        self.__doc__ = fn.__doc__
        # ``NAME:VERSION`` when loaded from a deployed (frozen) version: recorded on each run
        self.version_ref: str | None = None
        self.version_params: dict[str, Any] = {}  # the deployed version's parameters (a run's override)
        self.version_commit: str | None = None  # the deployed version's git commit (``+dirty`` if so)

    @cached_property
    def graph(self) -> Graph:
        """The traced and validated graph (cycles, missing inputs, bad constants raise here)."""
        builder = GraphBuilder()
        with builder.active():
            self.fn(**{name: ParamRef(name) for name in self.signature.parameters})
        if not builder.nodes:
            raise PipelineDefinitionError(f"pipeline {self.name!r} calls no step", field=self.name)
        return Graph(builder.nodes, list(self.signature.parameters))

    @cached_property
    def _hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self.fn)
        except Exception:
            return {}

    def takes_list(self, name: str) -> bool | None:
        """Whether parameter ``name`` is annotated as a list (``list[str]``, ``list[Path] | None``);
        None when it is not annotated (or ``Any``): it takes whatever it is given."""
        hint = self._hints.get(name)
        if hint is None or hint is Any:
            return None
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if union else (hint,)
        return any(o is list or typing.get_origin(o) is list for o in options)

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` as parameter ``name``'s declared type (ParameterError when it cannot be): a
        trigger's parameters are checked when its scheduler starts, not at its first firing."""
        return coerce_param(name, value, self._hints.get(name))

    def path_params(self) -> set[str]:
        """The parameters annotated ``Path`` (or ``Path | None``): files a run reads."""
        return {
            name
            for name, hint in self._hints.items()
            if name in self.signature.parameters
            and (
                hint is Path
                or (
                    typing.get_origin(hint) in (typing.Union, types.UnionType)
                    and Path in typing.get_args(hint)
                )
            )
        }

    def code_hash(self) -> str:
        """Content hash of the pipeline body and every step's code."""
        h = hashlib.sha256(fingerprint.code_hash(self.fn).encode())
        for name in self.graph.order:
            h.update(f"{name}:{self.graph.nodes[name].step.code_hash}".encode())
        return h.hexdigest()

    def source_path(self) -> Path | None:
        try:
            return Path(inspect.getfile(self.fn)).resolve()
        except (TypeError, OSError):
            return None

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Complete ``params`` with defaults and coerce them to the declared types.

        Raises ParameterError for an unknown, missing, mistyped or non-JSON-serialisable parameter.
        """
        known = self.signature.parameters
        for key in params:
            if key not in known:
                raise ParameterError(
                    f"unknown parameter {key!r} for pipeline {self.name!r} (parameters: {sorted(known)})",
                    field=key,
                )
        bound: dict[str, Any] = {}
        for name, p in known.items():
            if name in params:
                bound[name] = coerce_param(name, params[name], self._hints.get(name))
            elif p.default is not p.empty:
                bound[name] = coerce_param(name, p.default, None)
            else:
                raise ParameterError(f"missing parameter {name!r} for pipeline {self.name!r}", field=name)
        return bound

    def run(
        self,
        stores: Stores,
        *,
        cache: bool = True,
        trigger: str = "manual",
        resume: str | None = None,
        **params: Any,
    ) -> RunResult:
        """Deprecated: ``workspace.run(pipeline, **params)`` is the one way to run (this goes in the next
        release, and with it the import of the runner from here)."""
        import warnings

        from mloop.core.runner import Runner

        warnings.warn(
            "Pipeline.run is deprecated and goes in the next release: use workspace.run(pipeline, **params)",
            DeprecationWarning,
            stacklevel=2,
        )

        return Runner(stores).run(self, params, cache=cache, trigger=trigger, resume=resume)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"


def pipeline(fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Make ``fn`` a pipeline. Its parameters are the run parameters; its body only wires steps."""
    if fn is not None:
        return Pipeline(fn, name=name)
    return lambda f: Pipeline(f, name=name)


def coerce_param(name: str, value: Any, hint: Any) -> Any:
    """``value`` of parameter ``name`` as its annotated type ``hint`` (strings, as the CLI gives them,
    are parsed); ParameterError for a mistyped or non-JSON value (NaN and infinity included).

    The one rule for a parameter's value: ``mloop run`` and ``mloop pipelines deploy`` both apply it.
    """
    value = _coerce(name, value, hint)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problem = (
            f"{value!r} is not a finite number (JSON has no NaN or infinity)"
            if isinstance(exc, ValueError)
            else f"value of type {type(value).__name__} is not JSON-serialisable"
        )
        raise ParameterError(f"parameter {name!r}: {problem}", field=name) from exc
    return value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotated type; strings (from the CLI) are parsed, others checked."""
    if hint is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(name, value, arg)
            except ParameterError as exc:
                errors.append(exc)
        raise errors[0] if errors else ParameterError(f"parameter {name!r}: bad value", field=name)
    target = origin or hint
    if isinstance(value, str) and target is not str:
        value = _parse_text(name, value, target)
    if target is Path:
        if isinstance(value, str | Path):
            return str(value)
    elif target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif target is bool:
        if isinstance(value, bool):
            return value
    elif target in (str, list, dict):
        if isinstance(value, target):
            return value
    else:
        return value
    raise ParameterError(
        f"parameter {name!r}: expected {getattr(target, '__name__', target)}, got {value!r}", field=name
    )


def _parse_text(name: str, text: str, target: Any) -> Any:
    if target is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ParameterError(f"parameter {name!r}: expected bool, got {text!r}", field=name)
    if target is Path:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(
            f"parameter {name!r}: expected {getattr(target, '__name__', target)}, got {text!r}", field=name
        ) from exc
