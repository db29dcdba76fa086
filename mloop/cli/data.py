"""``mloop data …``: statistics, schemas, validation and drift from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mloop.cli import remote
from mloop.cli.common import (
    EncodingOpt,
    HtmlOpt,
    JsonOpt,
    Table,
    WorkspaceOpt,
    byte_progress,
    check_output_file,
    err,
    open_workspace,
    out,
    print_json,
    styled,
    write_output,
)
from mloop.cli.remote import LocalServerOpt, LocalTokenOpt
from mloop.errors import DataError, NotFoundError, ParameterError
from mloop.workspace import Workspace

data_app = typer.Typer(help="Data validation: statistics, schemas, anomalies, drift.", no_args_is_help=True)
schema_app = typer.Typer(help="Schemas: infer one from data.", no_args_is_help=True)
data_app.add_typer(schema_app, name="schema")


def _write_html(path: Path, content: str) -> None:
    write_output(path, content, "--html")
    err.print(f"report written to {path}", markup=False)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


@data_app.command("stats")
def stats_command(
    file: Annotated[Path, typer.Argument(help="CSV (optionally .gz) or Parquet file.")],
    html: HtmlOpt = None,
    save: Annotated[
        bool, typer.Option("--save", help="Store the statistics as an artifact in the workspace.")
    ] = False,
    encoding: EncodingOpt = "utf-8",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Per-column statistics in one pass (exact counts; quantiles and large distinct counts approximate)."""
    remote.local_only(server, "data stats", "reads FILE on this machine")
    if html is not None:  # before reading: never over the data itself, nor after the work
        check_output_file(html, "--html")
    from mloop.validation.report import statistics_html
    from mloop.validation.stats import Statistics, compute_statistics

    artifact_id = None
    if save:
        from mloop.steps.data import data_statistics

        with open_workspace(workspace, create=True) as ws:
            result = ws.run(data_statistics, path=str(file))
            ref = result.outputs["file_statistics"]["output"]
            stats: Statistics = result.load("file_statistics")
            artifact_id = ref.id
    else:
        with byte_progress(f"reading {file.name}") as progress:
            stats = compute_statistics(file, encoding=encoding, progress=progress).with_source(str(file))
    if html is not None:
        _write_html(html, statistics_html(stats))
    if as_json:
        print_json({"artifact_id": artifact_id, **stats.to_dict()} if save else stats.to_dict())
        return
    table = Table(title=f"{stats.source}: {stats.rows:,} rows", title_justify="left")
    for col in ("column", "type", "missing", "distinct", "min", "mean", "std", "max", "top values"):
        table.add_column(
            col, justify="right" if col in ("missing", "distinct", "min", "mean", "std", "max") else "left"
        )
    for c in stats.columns.values():
        d = c.to_dict()
        distinct = _fmt(c.distinct) + ("" if c.distinct_exact else "~")
        top = ", ".join(f"{k} ({v:,})" for k, v in c.top(3)) if c.kind == "categorical" else ""
        table.add_row(
            c.name,
            c.dtype,
            _fmt(c.missing),
            distinct,
            _fmt(d.get("min")),
            _fmt(d.get("mean")),
            _fmt(d.get("std")),
            _fmt(d.get("max")),
            top,
        )
    out.print(table)
    if artifact_id:
        out.print(
            f"saved as artifact {artifact_id} (use it as REFERENCE in `mloop data drift`)", markup=False
        )


@schema_app.command("infer")
def schema_infer(
    file: Annotated[Path, typer.Argument(help="CSV (optionally .gz) or Parquet file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the schema JSON.")],
    range_margin: Annotated[
        float,
        typer.Option(
            "--range-margin", min=0.0, help="Widen each observed numeric range by this share of its width."
        ),
    ] = 0.25,
    save: Annotated[
        bool,
        typer.Option(
            "--save", help="Also store the schema as an artifact (then `data validate --schema ID`)."
        ),
    ] = False,
    encoding: EncodingOpt = "utf-8",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Infer a schema (types, nullability, domains, vocabularies, tolerances) to review and edit."""
    from mloop.validation.schema import infer_schema
    from mloop.validation.stats import compute_statistics

    check_output_file(output, "--output")  # a schema file may be replaced; the data, never
    with byte_progress(f"reading {file.name}") as progress:
        stats = compute_statistics(file, encoding=encoding, progress=progress)
    schema = infer_schema(stats, range_margin=range_margin)
    write_output(output, schema.to_json(), "--output")
    artifact_id = None
    if save:
        with open_workspace(workspace, create=True) as ws:
            artifact_id = ws.store_artifact(schema, what="schema").id
    if as_json:
        print_json({"output": str(output), "artifact_id": artifact_id, "schema": schema.to_dict()})
        return
    out.print(f"schema for {len(schema.columns)} columns written to {output}", markup=False)
    if artifact_id:
        out.print(
            f"saved as artifact {artifact_id} (use it as --schema in `mloop data validate`)", markup=False
        )


@data_app.command("validate")
def validate_command(
    file: Annotated[Path, typer.Argument(help="CSV (optionally .gz) or Parquet file.")],
    schema: Annotated[
        str,
        typer.Option(
            "--schema", "-s", help="Schema JSON (from `mloop data schema infer`), or a schema artifact id."
        ),
    ],
    encoding: EncodingOpt = "utf-8",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Check a file against a schema. Exit 1 and list every anomaly when it does not conform."""
    remote.local_only(server, "data validate", "reads FILE on this machine")
    from mloop.validation.schema import validate_schema

    rules = _schema_of(schema, workspace)
    with byte_progress(f"validating {file.name}") as progress:
        anomalies = validate_schema(file, rules, encoding=encoding, progress=progress)
    if as_json:
        print_json(anomalies.to_dict())
    elif anomalies.ok:
        out.print(
            f"[green]ok[/]: {escape(str(file))} ({anomalies.rows:,} rows) conforms to {escape(str(schema))}"
        )
    else:
        out.print(anomalies_table(anomalies))
    if not anomalies.ok:
        raise typer.Exit(1)


def _schema_of(ref: str, workspace: Path | None) -> Any:
    """A schema JSON file, or a schema artifact of the workspace (e.g. a pipeline's inferred schema)."""
    from mloop.validation.schema import Schema

    path = Path(ref)
    if path.is_file() or path.suffix or "/" in ref:
        return Schema.load(path)
    schema, art = _workspace_artifact(ref, "schema", workspace)
    if not isinstance(schema, Schema):
        raise DataError(f"schema artifact {ref} is a {art.python_type}, not a schema", field="schema")
    return schema


def anomalies_table(anomalies: Any) -> Table:
    """The anomalies of a validation, one row each (also used by ``runs show`` and the demo)."""
    n = len(anomalies.items)
    table = Table(title=f"{n} anomal{'y' if n == 1 else 'ies'} in {anomalies.source}", title_justify="left")
    for col in ("column", "anomaly", "expected", "found", "examples"):
        table.add_column(col)
    for a in anomalies.items:
        examples = ", ".join(map(repr, a.examples))
        table.add_row(a.column or "(unnamed)", styled(a.kind, "red"), a.expected, a.found, examples)
    return table


def _parse_overrides(items: list[str], what: str, cast: type) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        column, sep, value = item.rpartition("=")
        if not sep or not column:
            raise ParameterError(f"--{what} {item!r}: expected COLUMN={what.upper()}", field=what)
        try:
            parsed[column] = cast(value)
        except ValueError as exc:
            raise ParameterError(
                f"--{what} {item!r}: {value!r} is not a {cast.__name__}", field=what
            ) from exc
    return parsed


def _load_side(ref: str, what: str, workspace: Path | None) -> Any:
    """A data file, a statistics JSON file (``mloop data stats --json``), or a statistics artifact id."""
    from mloop.validation.stats import Statistics

    path = Path(ref)
    if path.is_file():
        if path.suffix.lower() == ".json":
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataError(f"{what} {path} is not a statistics JSON file: {exc}", field=what) from exc
            return Statistics.from_dict(doc).with_source(str(path))
        return path
    if path.suffix or "/" in ref:
        raise DataError(f"{what} {ref}: no such file", field=what)
    stats, art = _workspace_artifact(ref, what, workspace)
    if not isinstance(stats, Statistics):
        raise DataError(f"{what} artifact {ref} is a {art.python_type}, not statistics", field=what)
    return stats


def _workspace_artifact(ref: str, what: str, workspace: Path | None) -> tuple[Any, Any]:
    """An artifact (loaded, and its record) named on the command line instead of a file."""
    try:
        ws = Workspace.open(workspace, create=False)
    except NotFoundError as exc:  # no workspace, so no artifact either
        raise DataError(
            f"{what} {ref!r} is neither a file nor an artifact id ({exc.message})", field=what
        ) from exc
    with ws:
        try:
            art = ws.resolve_artifact(ref)
        except NotFoundError as exc:
            raise DataError(
                f"{what} {ref!r} is neither a file nor an artifact id in workspace {ws.location}", field=what
            ) from exc
        return ws.load_artifact(art.id), art


@data_app.command("drift")
def drift_command(
    reference: Annotated[str, typer.Argument(help="Data file, statistics JSON, or statistics artifact id.")],
    current: Annotated[str, typer.Argument(help="Data file, statistics JSON, or statistics artifact id.")],
    method: Annotated[
        list[str] | None, typer.Option("--method", help="COLUMN=ks|wasserstein|chi2|jensenshannon|psi")
    ] = None,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", help="COLUMN=VALUE")] = None,
    share: Annotated[
        float,
        typer.Option("--share-threshold", help="Share of drifted features that makes the dataset drift."),
    ] = 0.5,
    html: HtmlOpt = None,
    encoding: EncodingOpt = "utf-8",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Per-feature drift tests and a dataset verdict. Exit 1 when the dataset drifted."""
    remote.local_only(server, "data drift", "reads its data files on this machine and tests drift here")
    if html is not None:
        check_output_file(html, "--html")
    from mloop.validation.drift import detect_drift
    from mloop.validation.report import drift_html

    ref = _load_side(reference, "reference", workspace)
    cur = _load_side(current, "current", workspace)
    with byte_progress("reading data") as progress:
        report = detect_drift(
            ref,
            cur,
            methods=_parse_overrides(method or [], "method", str),
            thresholds=_parse_overrides(threshold or [], "threshold", float),
            share_threshold=share,
            encoding=encoding,
            progress=progress,
        )
    if html is not None:
        _write_html(html, drift_html(report))
    if as_json:
        print_json(_report_json(report))
    else:
        _print_drift(report)
    if report.dataset_drift:
        raise typer.Exit(1)


def _report_json(report: Any) -> dict[str, Any]:
    d = report.to_dict()
    for f in d["features"]:  # distributions are for the HTML report
        f.pop("reference", None)
        f.pop("current", None)
    return d


def _print_drift(report: Any) -> None:
    table = Table(
        title=f"{report.kind}: {report.current_source} ({report.current_rows:,} rows) vs "
        f"{report.reference_source} ({report.reference_rows:,} rows)",
        title_justify="left",
    )
    for col in ("feature", "type", "method", "statistic", "p-value", "threshold", "PSI", "drift"):
        table.add_column(col, justify="left" if col in ("feature", "type", "method", "drift") else "right")
    for f in report.features:
        table.add_row(
            f.column,
            f.kind,
            f.method + ("" if f.exact else "*"),
            f"{f.statistic:.4g}",
            "-" if f.p_value is None else f"{f.p_value:.3g}",
            f"{f.threshold:g}",
            f"{f.psi:.3f}",
            styled("drifted", "red") if f.drifted else styled("ok", "green"),
        )
    out.print(table)
    if report.only_in_reference or report.only_in_current:
        out.print(
            "[yellow]columns on one side only[/]: missing from current "
            f"{escape(str(report.only_in_reference or '-'))}, "
            f"new in current {escape(str(report.only_in_current or '-'))}"
        )
    what = "training–serving skew" if report.kind == "skew" else "dataset drift"
    verdict = f"[red]{what}[/]" if report.dataset_drift else f"[green]no {what}[/]"
    out.print(
        f"{verdict}: {len(report.drifted_features)} of {len(report.features)} features drifted "
        f"({report.drift_share:.0%}; threshold {report.share_threshold:.0%}). * = from quantile sketches"
    )
