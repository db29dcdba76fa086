"""The pipeline graph: nodes, the references between them, and its validation.

A ``@pipeline`` body is traced once: pipeline parameters become :class:`ParamRef` placeholders, each
step call becomes a :class:`Node`, and what a step returns inside the body is an :class:`OutputRef`.
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from mloop.errors import PipelineDefinitionError

if TYPE_CHECKING:
    from mloop.core.step import Step

__all__ = ["Constant", "Graph", "GraphBuilder", "Node", "OutputRef", "ParamRef", "current_builder"]


@dataclass(frozen=True, slots=True)
class ParamRef:
    """A pipeline parameter, resolved to a JSON value when the run starts."""

    name: str


@dataclass(frozen=True, slots=True)
class Constant:
    """A literal value written in the pipeline body (must be JSON-serialisable)."""

    value: Any


@dataclass(frozen=True, slots=True)
class OutputRef:
    """One output of a node: an artifact edge in the graph."""

    node: str
    output: str

    def __iter__(self) -> Iterator[Any]:
        raise PipelineDefinitionError(
            f"output {self.output!r} of step {self.node!r} is a single artifact; declare "
            f"@step(outputs=[...]) to return several",
            field=self.node,
        )


Source = ParamRef | Constant | OutputRef


@dataclass(frozen=True, slots=True)
class Node:
    """A step placed in the graph with where each of its inputs comes from."""

    name: str
    step: Step
    inputs: Mapping[str, Source] = field(default_factory=dict)

    @property
    def upstream(self) -> set[str]:
        return {src.node for src in self.inputs.values() if isinstance(src, OutputRef)}


class Graph:
    """A validated DAG of nodes in a deterministic topological order."""

    def __init__(self, nodes: Sequence[Node], params: Sequence[str]) -> None:
        self.nodes = {n.name: n for n in nodes}
        if len(self.nodes) != len(nodes):
            raise PipelineDefinitionError("two nodes share a name; use step.named('...') to tell them apart")
        self.params = tuple(params)
        self.order = self._validate()

    def _validate(self) -> list[str]:
        for node in self.nodes.values():
            for arg, src in node.inputs.items():
                if isinstance(src, OutputRef):
                    producer = self.nodes.get(src.node)
                    if producer is None:
                        raise PipelineDefinitionError(
                            f"step {node.name!r} input {arg!r} comes from unknown step {src.node!r}",
                            field=arg,
                        )
                    if src.output not in producer.step.outputs:
                        raise PipelineDefinitionError(
                            f"step {node.name!r} input {arg!r}: step {src.node!r} has no output "
                            f"{src.output!r} (outputs: {list(producer.step.outputs)})",
                            field=arg,
                        )
                elif isinstance(src, ParamRef) and src.name not in self.params:
                    raise PipelineDefinitionError(
                        f"step {node.name!r} input {arg!r} reads unknown pipeline parameter {src.name!r}",
                        field=arg,
                    )
            missing = [
                p.name
                for p in node.step.signature.parameters.values()
                if p.default is p.empty and p.name not in node.inputs
            ]
            if missing:
                raise PipelineDefinitionError(
                    f"step {node.name!r} input {missing[0]!r} is not provided by any step or parameter",
                    field=missing[0],
                )
        sorter = graphlib.TopologicalSorter({n.name: n.upstream for n in self.nodes.values()})
        try:
            return list(sorter.static_order())
        except graphlib.CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            raise PipelineDefinitionError(f"the pipeline graph has a cycle: {cycle}", field="graph") from exc

    def downstream(self) -> dict[str, set[str]]:
        """For each node, the nodes that consume one of its outputs."""
        children: dict[str, set[str]] = {name: set() for name in self.nodes}
        for node in self.nodes.values():
            for parent in node.upstream:
                children[parent].add(node.name)
        return children


_BUILDER: ContextVar[GraphBuilder | None] = ContextVar("mloop_graph_builder", default=None)


def current_builder() -> GraphBuilder | None:
    """The builder tracing a pipeline body in this context, if any."""
    return _BUILDER.get()


class GraphBuilder:
    """Records step calls made while a pipeline body is traced."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._names: set[str] = set()

    @contextmanager
    def active(self) -> Iterator[GraphBuilder]:
        token = _BUILDER.set(self)
        try:
            yield self
        finally:
            _BUILDER.reset(token)

    def add(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = step.name
        n = 2
        while name in self._names:
            name, n = f"{step.name}_{n}", n + 1
        self._names.add(name)
        try:
            bound = step.signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise PipelineDefinitionError(f"step {step.name!r}: {exc}", field=step.name) from exc
        inputs: dict[str, Source] = {}
        for arg, value in bound.arguments.items():
            if isinstance(value, ParamRef | OutputRef):
                inputs[arg] = value
            elif isinstance(value, PurePath):
                inputs[arg] = Constant(str(value))
            else:
                require_json(value, f"step {name!r} input {arg!r}", arg)
                inputs[arg] = Constant(value)
        self.nodes.append(Node(name, step, inputs))
        outs = tuple(OutputRef(name, o) for o in step.outputs)
        if not outs:
            return None
        return outs[0] if len(outs) == 1 and step.outputs == ("output",) else outs


def require_json(value: Any, where: str, field: str | None = None) -> None:
    """Refuse a pipeline parameter or constant that is not a JSON value."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PipelineDefinitionError(
            f"{where}: value of type {type(value).__name__} is not JSON-serialisable; pass data between "
            f"steps as step outputs, and only JSON values as parameters",
            field=field or where,
        ) from exc
