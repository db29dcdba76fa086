"""Pipeline definition and parameter validation: everything is refused before a run starts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sample_pipelines as sp

import mloop
from mloop.core.graph import Graph, Node, OutputRef
from mloop.errors import ParameterError, PipelineDefinitionError


def test_graph_order_and_named_reuse() -> None:
    graph = sp.arithmetic.graph
    assert set(graph.nodes) == {"seed", "square", "seed_b", "add"}
    order = graph.order
    assert order.index("seed") < order.index("square") < order.index("add")
    assert order.index("seed_b") < order.index("add")


def test_cycle_is_refused() -> None:
    a = Node("a", sp.add, {"a": OutputRef("b", "output"), "b": OutputRef("b", "output")})
    b = Node("b", sp.add, {"a": OutputRef("a", "output"), "b": OutputRef("a", "output")})
    with pytest.raises(PipelineDefinitionError, match="cycle"):
        Graph([a, b], [])


def test_input_nobody_provides_is_refused() -> None:
    @mloop.pipeline
    def broken(n: int = 1):
        sp.add(sp.seed(n))  # b is missing

    with pytest.raises(
        PipelineDefinitionError, match="step 'add' input 'b' is not provided by any step or parameter"
    ):
        _ = broken.graph


def test_non_json_constant_is_refused() -> None:
    @mloop.pipeline
    def broken():
        sp.scale(pd.DataFrame({"x": [1]}))

    with pytest.raises(PipelineDefinitionError, match="not JSON-serialisable"):
        _ = broken.graph


def test_non_json_default_is_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match="default of parameter 'when'"):

        @mloop.pipeline
        def broken(when: object = object()):
            sp.seed(1)


def test_multiple_outputs_must_be_declared() -> None:
    @mloop.pipeline
    def broken(n: int = 1):
        _a, _b = sp.seed(n)

    with pytest.raises(PipelineDefinitionError, match="single artifact"):
        _ = broken.graph


def test_unknown_output_is_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match="has no output 'nope'"):
        Graph([Node("a", sp.seed, {"n": OutputRef("b", "nope")}), Node("b", sp.seed, {})], [])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n": 1, "bogus": 2}, "unknown parameter 'bogus'"),
        ({"n": "three"}, "parameter 'n': expected int, got 'three'"),
        ({"n": 1.5}, "parameter 'n': expected int"),
        ({"n": True}, "parameter 'n': expected int"),
        ({"tag": 5}, "parameter 'tag': expected str"),
    ],
)
def test_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        sp.arithmetic.bind(params)


def test_parameters_from_text_are_coerced() -> None:
    assert sp.arithmetic.bind({"n": "4", "tag": "42"}) == {"n": 4, "tag": "42"}
    assert sp.numbers.bind({"path": "x.txt", "factor": "2"}) == {"path": "x.txt", "factor": 2.0}


def test_missing_required_parameter() -> None:
    with pytest.raises(ParameterError, match="missing parameter 'path'"):
        sp.numbers.bind({})


def test_steps_are_plain_functions_outside_pipelines(tmp_path: Path) -> None:
    assert sp.square(4) == 16
    (tmp_path / "n.txt").write_text("1 2")
    assert sp.read_numbers(tmp_path / "n.txt")["x"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "-x", "x" * 129])
def test_pipeline_names_follow_the_one_grammar(name: str) -> None:
    with pytest.raises(ParameterError, match="pipeline name"):
        mloop.pipeline(name=name)(lambda: None)
