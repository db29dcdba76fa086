"""The load test's two ``requests`` are documented as what they are: a list in Python, a count in config."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from mloop.cicd.loadtest import load_test
from mloop.orchestration.config import LoadTestPolicy

README = Path(__file__).resolve().parents[2] / "README.md"


def test_load_tests_requests_is_a_list_in_python_and_a_count_in_mloop_toml() -> None:
    assert "Sequence" in str(inspect.signature(load_test).parameters["requests"].annotation)
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Load test.**") :]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None, "the README shows a load_test call"
    call = next(
        n
        for n in ast.walk(ast.parse(example.group(1)))
        if isinstance(n, ast.Call) and ast.unparse(n.func) == "load_test"
    )
    instances = next(
        n.value
        for n in ast.walk(ast.parse(example.group(1)))
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == ast.unparse(call.args[2])
    )
    assert isinstance(instances, ast.List)  # the third argument is a list of requests, not a number
    assert "is a *count*" in section
    assert "a count" in (LoadTestPolicy.model_fields["requests"].description or "")
    assert "requests = 200                # how many of the most recent logged requests" in text
