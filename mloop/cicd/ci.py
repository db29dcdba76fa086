"""``mloop ci run``: a project's pipeline CI in one call.

1. the project's own pytest suite (a subprocess, with the mloop plugin);
2. a smoke run of every pipeline (found in the sources, or listed under ``[[ci.pipelines]]`` in the
   project's ``mloop.toml``) on a sample, in a throw-away workspace;
3. on each smoke run: every step wrote its declared outputs (``artifacts``), the lineage is whole
   (``lineage``), no NaN/inf anywhere (``finite``), every fitted model converged (``converges``), and
   the model loads and answers within budget in a fresh process (``infra``).

Every check becomes a :class:`Check` naming the check, the pipeline, the step and the value; the
:class:`CiReport` renders as JSON or JUnit XML and is keyed by the code hash of each pipeline's sources.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import math
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.core.loader import load_pipeline
from mloop.core.runner import RunResult
from mloop.core.serialize import serialize
from mloop.core.sources import collect_sources, is_pipeline_decorator, sources_hash
from mloop.entities import CiRecord, utcnow
from mloop.errors import ConfigurationError, MloopError, NotFoundError, StepFailedError
from mloop.settings import CONFIG_FILE, config_file_there, read_config_file
from mloop.stores.base import PipelineStore
from mloop.testing import (
    CheckFailed,
    assert_converges,
    assert_finite,
    assert_lineage,
    run_pipeline,
    sample_from_file,
    sample_from_schema,
    temp_workspace,
)
from mloop.validation.infra import check_serving

__all__ = ["Check", "CiReport", "SmokeSpec", "ci_run", "find_pipelines", "record_ci", "smoke_specs"]

_SKIP_DIRS = {"tests", "test", "build", "dist", "node_modules", "__pycache__"}


@dataclass
class Check:
    """One CI check's verdict: ``status`` is passed, failed or skipped."""

    check: str
    pipeline: str
    status: str
    step: str | None = None
    value: str | None = None
    detail: str = ""
    seconds: float = 0.0

    @property
    def message(self) -> str:
        where = f" at step {self.step!r}" if self.step else ""
        value = f" (value: {self.value})" if self.value is not None else ""
        return f"{self.pipeline}: check {self.check} {self.status}{where}: {self.detail}{value}"


@dataclass
class SmokeSpec:
    """How to smoke-run one pipeline: the sample (a data file or a schema), its size, extra params."""

    ref: str
    sample: str | None = None
    schema: str | None = None
    rows: int = 1000
    data_param: str = "data"
    params: dict[str, Any] = field(default_factory=dict)
    budget_p99_ms: float = 50.0  # the infra check's single-row latency budget
    budget_load_s: float = 10.0  # and its cold-load budget


@dataclass
class CiReport:
    """The result of ``mloop ci run``: every check, and the code hash of each pipeline's sources."""

    project: str
    checks: list[Check]
    code_hashes: dict[str, str]
    seconds: float
    smoke_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # the params each smoke run had

    @property
    def passed(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "code_hashes": self.code_hashes,
            "smoke_params": self.smoke_params,
            "checks": [asdict(c) for c in self.checks],
        }

    def junit_xml(self) -> str:
        """JUnit XML: one test case per check (CI servers show it as a test report)."""
        suite = ET.Element(
            "testsuite",
            name="mloop ci",
            tests=str(len(self.checks)),
            failures=str(len(self.failures)),
            skipped=str(sum(c.status == "skipped" for c in self.checks)),
            time=f"{self.seconds:.3f}",
        )
        for c in self.checks:
            case = ET.SubElement(
                suite, "testcase", classname=c.pipeline, name=c.check, time=f"{c.seconds:.3f}"
            )
            if c.status == "failed":
                ET.SubElement(case, "failure", message=c.message).text = c.detail
            elif c.status == "skipped":
                ET.SubElement(case, "skipped", message=c.detail)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def find_pipelines(project: Path) -> list[str]:
    """``file.py:name`` of every ``@pipeline`` function in the project's sources (tests excluded),
    found by reading the code, not by importing it."""
    refs: list[str] = []
    for path in sorted(project.rglob("*.py")):
        rel = path.relative_to(project)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except SyntaxError:
            continue  # the test suite reports it
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(map(is_pipeline_decorator, node.decorator_list)):
                refs.append(f"{rel.as_posix()}:{node.name}")
    return refs


def smoke_specs(project: Path, *, names: Sequence[str] = (), rows: int | None = None) -> list[SmokeSpec]:
    """What to smoke-run: ``[[ci.pipelines]]`` of the project's ``mloop.toml``, else every pipeline
    found; ``names`` (a pipeline's function name or ``file.py:name``) keeps only those."""
    config: dict[str, Any] = {}
    toml = project / CONFIG_FILE
    if config_file_there(toml):
        config = read_config_file(toml).get("ci", {})
    if not isinstance(config, dict):
        raise ConfigurationError(f"{toml}: ci must be a table ([ci])", field="ci")
    for key in config:
        if key not in ("rows", "pipelines"):
            raise ConfigurationError(
                f"{toml}: [ci] has no key {key[:80]!r} (known: pipelines, rows)", field=f"ci.{key}"
            )
    default_rows = config.get("rows", 1000)
    if isinstance(default_rows, bool) or not isinstance(default_rows, int) or default_rows < 1:
        raise ConfigurationError(
            f"{toml}: [ci] rows must be an integer >= 1, got {default_rows!r}", field="ci.rows"
        )
    listed = config.get("pipelines")
    if listed is not None and not isinstance(listed, list):
        raise ConfigurationError(
            f"{toml}: ci.pipelines must be a list of tables ([[ci.pipelines]])", field="ci.pipelines"
        )
    specs: list[SmokeSpec] = []
    if listed:
        for i, entry in enumerate(listed):
            if not isinstance(entry, dict):
                raise ConfigurationError(
                    f"{toml}: ci.pipelines[{i}] must be a table ([[ci.pipelines]])", field="ci.pipelines"
                )
            unknown = set(entry) - set(SmokeSpec.__dataclass_fields__)
            if unknown or "ref" not in entry:
                what = sorted(unknown)[0] if unknown else "ref"
                raise ConfigurationError(
                    f"{toml}: ci.pipelines[{i}] has a bad or missing key {what!r}", field=what
                )
            _check_entry(toml, i, entry)
            specs.append(SmokeSpec(**{"rows": default_rows, **entry}))
    else:
        specs = [SmokeSpec(ref, rows=default_rows) for ref in find_pipelines(project)]
    if rows is not None:
        for spec in specs:
            spec.rows = rows
    if names:
        wanted = set(names)
        specs = [s for s in specs if s.ref in wanted or s.ref.rpartition(":")[2] in wanted]
        missing = wanted - {s.ref for s in specs} - {s.ref.rpartition(":")[2] for s in specs}
        if missing:
            raise NotFoundError(f"no pipeline {sorted(missing)[0]!r} in {project}", field="pipeline")
    return specs


_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "ref": (str,),
    "sample": (str,),
    "schema": (str,),
    "rows": (int,),
    "data_param": (str,),
    "params": (dict,),
    "budget_p99_ms": (int, float),
    "budget_load_s": (int, float),
}


def _check_entry(toml: Path, i: int, entry: dict[str, Any]) -> None:
    """Each key of a ``[[ci.pipelines]]`` entry of its type (a number of rows, a table of params, …)."""
    for key, value in entry.items():
        kinds = _ENTRY_TYPES[key]
        too_few = key == "rows" and isinstance(value, int) and value < 1
        budget = key.startswith("budget_") and isinstance(value, int | float) and not 0 <= value < math.inf
        if isinstance(value, bool) or not isinstance(value, kinds) or too_few or budget:
            wanted = " or ".join("a table" if k is dict else k.__name__ for k in kinds)
            wanted = "a number >= 0" if key.startswith("budget_") else wanted
            raise ConfigurationError(
                f"{toml}: ci.pipelines[{i}].{key} must be {wanted}, got {value!r}",
                field=f"ci.pipelines.{key}",
            )


def _pytest(project: Path) -> Check:
    """The project's own test suite, in a subprocess (its imports and state stay out of this one)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mloop-ci-") as tmp:
        junit = Path(tmp) / "junit.xml"
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        plugins = importlib.metadata.entry_points(group="pytest11")
        if not any(ep.value == "mloop.testing.fixtures" for ep in plugins):
            args += ["-p", "mloop.testing.fixtures"]  # an mloop not installed from its wheel/sdist
        inherited = os.environ.get("PYTHONPATH", "")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(  # absolute: the suite runs in the project's folder
                [str(project), *(str(Path(p).resolve()) for p in inherited.split(os.pathsep) if p)]
            ),
        }
        done = subprocess.run(args, cwd=project, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if done.returncode == 5:
            return Check("tests", "project", "skipped", detail="no tests collected", seconds=seconds)
        if done.returncode == 0:
            return Check(
                "tests", "project", "passed", detail=done.stdout.strip().splitlines()[-1], seconds=seconds
            )
        failed = None
        if junit.is_file():
            for case in ET.parse(junit).iter("testcase"):
                problem = case.find("failure")
                problem = problem if problem is not None else case.find("error")
                if problem is not None:
                    failed = (f"{case.get('classname')}::{case.get('name')}", problem.get("message", ""))
                    break
    tail = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
    return Check(
        "tests",
        "project",
        "failed",
        step=failed[0] if failed else None,
        value=(failed[1] if failed else tail[0])[:300],
        detail="the project's tests failed",
        seconds=seconds,
    )


def _sample(project: Path, spec: SmokeSpec) -> pd.DataFrame | None:
    if spec.sample:
        return sample_from_file(project / spec.sample, spec.rows)
    if spec.schema:
        return sample_from_schema(project / spec.schema, spec.rows)
    return None


def _judge(name: str, pipeline: str, check: Callable[[], object], step: str | None = None) -> Check:
    start = time.perf_counter()
    try:
        check()
    except CheckFailed as exc:
        return Check(
            name,
            pipeline,
            "failed",
            exc.step or step,
            str(exc.value)[:300],
            exc.detail,
            time.perf_counter() - start,
        )
    return Check(name, pipeline, "passed", step, seconds=time.perf_counter() - start)


def _model_checks(spec: SmokeSpec, run: RunResult, sample: pd.DataFrame | None) -> list[Check]:
    """converges and infra for every fitted model the run produced."""
    pipeline = spec.ref
    checks: list[Check] = []
    for node, outputs in run.outputs.items():
        for out in outputs:
            value = run.load(node, out)
            if not hasattr(value, "predict") or not hasattr(value, "fit"):
                continue
            if hasattr(value, "loss_curve_") or hasattr(value, "n_iter_"):
                checks.append(
                    _judge("converges", pipeline, partial(assert_converges, value, step=node), node)
                )
            rows = _model_input(run, value, sample)
            if rows is None:
                checks.append(
                    Check("infra", pipeline, "skipped", node, detail="no rows of the model's inputs")
                )
                continue
            _, data = serialize(value, what="model")
            report = check_serving(
                data,
                hashlib.sha256(data).hexdigest(),
                rows,
                repeats=50,
                budget_p99_ms=spec.budget_p99_ms,
                budget_load_s=spec.budget_load_s,
            )
            status = "passed" if report.passed else "failed"
            value_text = (
                f"p99 {report.p99_ms:.2f} ms, load {report.cold_load_s:.2f} s" if report.p99_ms else None
            )
            checks.append(
                Check(
                    "infra",
                    pipeline,
                    status,
                    node,
                    report.error or value_text,
                    "" if report.passed else "the model failed the infrastructure check",
                    report.overhead_s,
                )
            )
    if not any(c.check == "converges" for c in checks):
        checks.append(
            Check("converges", pipeline, "skipped", detail="no fitted model reports iterations or a loss")
        )
    return checks


def _model_input(run: RunResult, model: Any, sample: pd.DataFrame | None) -> pd.DataFrame | None:
    """Rows as the model takes them: the first table of the run (or the sample) holding its features."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return sample
    wanted = list(names)
    tables = [sample] if sample is not None else []
    tables += [
        v
        for v in (run.load(n, o) for n, outs in run.outputs.items() for o in outs)
        if isinstance(v, pd.DataFrame)
    ]
    for table in tables:
        if table is not None and set(wanted) <= set(table.columns):
            return table[wanted].dropna()
    return None


def _smoke(project: Path, spec: SmokeSpec) -> tuple[list[Check], str | None]:
    name = spec.ref
    file_part = spec.ref.rpartition(":")[0]
    code = sources_hash(collect_sources(project / file_part)[1]) if (project / file_part).is_file() else None
    start = time.perf_counter()
    try:
        pipe = load_pipeline(str(project / file_part) + ":" + spec.ref.rpartition(":")[2])
        sample = _sample(project, spec)
    except MloopError as exc:
        return [
            Check("smoke", name, "failed", value=exc.message, detail="the pipeline cannot be loaded")
        ], code
    with tempfile.TemporaryDirectory(prefix="mloop-ci-smoke-") as tmp:
        ws = temp_workspace(tmp)
        try:
            try:
                run = run_pipeline(ws, pipe, sample=sample, data_param=spec.data_param, **spec.params)
            except StepFailedError as exc:
                return [
                    Check(
                        "smoke",
                        name,
                        "failed",
                        exc.step,
                        f"{exc.error_type}: {exc.error_message}"[:300],
                        "the step raised",
                        time.perf_counter() - start,
                    )
                ], code
            except MloopError as exc:
                return [
                    Check("smoke", name, "failed", value=exc.message, detail="the run could not start")
                ], code
            checks = [
                Check(
                    "smoke",
                    name,
                    "passed",
                    detail=f"run {run.run.id} on "
                    + (f"{len(sample)} sample rows" if sample is not None else "the pipeline's own data"),
                    seconds=time.perf_counter() - start,
                )
            ]
            checks.append(_judge("artifacts", name, lambda: _declared_outputs(run, pipe)))
            checks.append(_judge("lineage", name, lambda: assert_lineage(ws.metadata, run, pipe)))
            checks.append(_judge("finite", name, lambda: assert_finite(run)))
            checks.extend(_model_checks(spec, run, sample))
        finally:
            ws.close()
    return checks, code


def _declared_outputs(run: RunResult, pipe: Any) -> None:
    """Each step wrote every output it declares, and no table or array came out empty."""
    for node_name, node in pipe.graph.nodes.items():
        for out in node.step.outputs:
            if out not in run.outputs.get(node_name, {}):
                raise CheckFailed(
                    "artifacts",
                    node_name,
                    sorted(run.outputs.get(node_name, {})),
                    f"output {out!r} is missing",
                )
            value = run.load(node_name, out)
            if hasattr(value, "shape") and getattr(value, "size", 1) == 0:
                raise CheckFailed(
                    "artifacts", node_name, getattr(value, "shape", None), f"output {out!r} is empty"
                )


def ci_run(
    project: str | os.PathLike[str],
    *,
    pipelines: Sequence[str] = (),
    rows: int | None = None,
    tests: bool = True,
    on_check: Callable[[Check], None] | None = None,
) -> CiReport:
    """Run the project's pipeline CI; the report lists every check (nothing raises for a failed check)."""
    root = Path(project).resolve()
    if not root.is_dir():
        raise NotFoundError(f"project folder {project} does not exist", field="path")
    start = time.perf_counter()
    specs = smoke_specs(root, names=pipelines, rows=rows)
    checks: list[Check] = []
    hashes: dict[str, str] = {}

    def add(found: list[Check]) -> None:
        for c in found:
            checks.append(c)
            if on_check is not None:
                on_check(c)

    if tests:
        add([_pytest(root)])
    if not specs:
        add([Check("smoke", "project", "failed", detail="no @pipeline found in the project's sources")])
    for spec in specs:
        found, code = _smoke(root, spec)
        if code:
            hashes[spec.ref] = code
        add(found)
    smoke_params = {s.ref: dict(s.params) for s in specs}
    return CiReport(str(root), checks, hashes, time.perf_counter() - start, smoke_params)


def record_ci(store: PipelineStore, report: CiReport) -> list[CiRecord]:
    """Record the verdict for each pipeline's code hash (what ``mloop pipelines deploy`` consults):
    passed when the project's tests and every check of that pipeline passed."""
    tests_ok = all(c.status != "failed" for c in report.checks if c.pipeline == "project")
    records = []
    for ref, code in report.code_hashes.items():
        mine = [c for c in report.checks if c.pipeline == ref]
        passed = tests_ok and all(c.status != "failed" for c in mine)
        record = CiRecord(code, ref, passed, {**report.to_dict(), "pipeline": ref}, utcnow())
        store.record_ci(record)
        records.append(record)
    return records
