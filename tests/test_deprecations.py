"""Renamed functions: the old names still resolve for one release, each with a DeprecationWarning that
names the new one and points at the caller's line; they are not part of the public list."""

from __future__ import annotations

import importlib

import pandas as pd
import pytest

import mloop

RENAMED = [  # (module, old, new)
    ("mloop", "evaluate", "evaluate_model"),
    ("mloop", "judge", "validate_evaluation"),
    ("mloop", "validate", "validate_schema"),
    ("mloop.validation.model", "evaluate", "evaluate_model"),
    ("mloop.validation.model", "judge", "validate_evaluation"),
    ("mloop.validation.schema", "validate", "validate_schema"),
    ("mloop.validation.infra", "infra_check", "check_serving"),
]


@pytest.mark.parametrize(("module", "old", "new"), RENAMED)
def test_an_old_name_warns_and_is_the_new_function(module: str, old: str, new: str) -> None:
    namespace = importlib.import_module(module)
    with pytest.warns(
        DeprecationWarning, match=rf"{module}\.{old} is deprecated.*use {module}\.{new}"
    ) as seen:
        value = getattr(namespace, old)
    assert value is getattr(namespace, new)
    assert seen[0].filename == __file__  # the warning points at the line using the old name


@pytest.mark.parametrize(("module", "old", "new"), RENAMED)
def test_from_import_of_an_old_name_warns(module: str, old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=new):
        exec(f"from {module} import {old}", {})


def test_old_names_are_not_public_and_unknown_names_still_fail() -> None:
    assert {"evaluate", "judge", "validate"}.isdisjoint(mloop.__all__)
    with pytest.raises(AttributeError, match="evaluation"):
        mloop.evaluation  # noqa: B018
    from mloop.validation import model

    with pytest.raises(AttributeError, match="judged"):
        model.judged  # noqa: B018


def test_an_old_name_still_does_the_work() -> None:
    data = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    schema = mloop.infer_schema(mloop.compute_statistics(data))
    with pytest.warns(DeprecationWarning):
        anomalies = mloop.validate(data, schema)
    assert anomalies.ok and anomalies.rows == 3
    assert mloop.validate_schema(pd.DataFrame({"y": [1.0]}), schema).ok is False


def test_pipeline_run_warns_and_still_runs(workspace: mloop.Workspace) -> None:
    @mloop.step
    def double(x: int) -> int:
        return 2 * x

    @mloop.pipeline
    def twice(x: int) -> None:
        double(x)

    with pytest.warns(DeprecationWarning, match=r"workspace\.run\(pipeline"):
        result = twice.run(workspace, x=4)
    assert result.load("double") == 8


@pytest.mark.parametrize(
    ("method", "prop"),
    [
        ("model_registry", "registry"),
        ("trigger_store", "triggers"),
        ("token_store", "tokens"),
        ("pipeline_store", "pipelines"),
    ],
)
def test_the_store_methods_warn_and_are_the_properties(
    workspace: mloop.Workspace, method: str, prop: str
) -> None:
    """One public way to a workspace's stores: the read-only properties; the method forms warn."""
    with pytest.warns(
        DeprecationWarning, match=rf"Workspace\.{method}\(\) is deprecated.*Workspace\.{prop}"
    ) as seen:
        store = getattr(workspace, method)()
    assert store is getattr(workspace, prop)
    assert seen[0].filename == __file__
