"""``mloop models …``: the registry, evaluation and comparison from the shell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mloop.cli import remote
from mloop.cli.common import (
    JsonOpt,
    Table,
    WorkspaceOpt,
    alias_history_table,
    open_workspace,
    out,
    plural,
    print_json,
    styled,
)
from mloop.cli.remote import LocalServerOpt, LocalTokenOpt, ServerOpt, TokenOpt
from mloop.entities import AliasEvent, Model, ModelVersion, PipelineVersion, Run
from mloop.errors import DataError, NotFoundError, ParameterError

if TYPE_CHECKING:
    from mloop.validation.model import Evaluation
    from mloop.workspace import Workspace

models_app = typer.Typer(
    help="Model registry: versions, aliases, promotion, rollback, evaluation.", no_args_is_help=True
)

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")]
SliceOpt = Annotated[
    list[str] | None,
    typer.Option("--slice", help="COLUMN, COLUMN=v1,v2 or COLUMN:edge1,edge2,… (repeatable)"),
]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@models_app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Model name (letters, digits, '.', '_', '-').")],
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="A model artifact id (e.g. a pipeline's train output).")
    ],
    data: Annotated[
        Path, typer.Option("--data", help="The training data (CSV/Parquet): the signature's input schema.")
    ],
    label: Annotated[str, typer.Option("--label", help="The target column in --data.")],
    alias: Annotated[
        str | None, typer.Option("--alias", help="Point this alias at the new version (e.g. staging).")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="KEY=VALUE recorded with the version (repeatable).")
    ] = None,
    compile_: Annotated[
        bool,
        typer.Option("--compile/--no-compile", help="Also store a proven-equal compiled form (ONNX)."),
    ] = True,
    reason: ReasonOpt = "registered from the command line",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a stored model as the next version of NAME, with a signature from its training data.

    Registering the same bytes again returns the existing version."""
    from mloop.steps.model import model_signature
    from mloop.validation.stats import compute_statistics

    metrics = _key_values(metric or [], "metric")
    with open_workspace(workspace) as ws:
        try:
            art = ws.resolve_artifact(model)
        except NotFoundError as exc:
            raise DataError(
                f"model {model!r} is no artifact id in workspace {ws.location}", field="model"
            ) from exc
        value = ws.load_artifact(art.id)
        if not callable(getattr(value, "predict", None)):
            raise DataError(
                f"artifact {model} is a {art.python_type}, not a model (no predict)", field="model"
            )
        training = compute_statistics(data)
        if label not in training.columns:
            raise DataError(f"--label {label!r} is not a column of {data}", field="label")
        producer = ws.metadata.events(artifact_ids=[art.id], kind="output")
        run_id = ws.metadata.get_step(producer[0].step_run_id).run_id if producer else None
        try:
            known = {v.version for v in ws.registry.versions(name)}
        except NotFoundError:
            known = set()
        version = ws.register_model(
            name,
            art,
            signature=model_signature(ws, value, training, label),
            metrics=metrics,
            run_id=run_id,
            compile=compile_,
        )
        if alias:
            ws.promote(name, version.version, alias, reason=reason)
    again = version.version in known  # the same bytes: the version they already are, unchanged
    if as_json:
        print_json({"version": version, "alias": alias, "registered": not again})
        return
    if again:
        kept = "; its metrics and signature are unchanged (--metric not stored)" if metrics else ""
        out.print(
            f"{name} v{version.version} already holds these model bytes: nothing registered{kept}"
            + (f"; {name}@{alias} is v{version.version}" if alias else ""),
            markup=False,
        )
        return
    out.print(
        f"registered {name} v{version.version}" + (f" as {name}@{alias}" if alias else ""), markup=False
    )


def _key_values(items: list[str], what: str) -> dict[str, float]:
    parsed: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise DataError(f"--{what} {item!r}: expected KEY=NUMBER", field=what)
        if not math.isfinite(number):
            raise DataError(f"--{what} {item!r}: {value.strip()} is not a finite number", field=what)
        if key.strip() in parsed:
            raise DataError(f"--{what} {key.strip()!r} is given twice: give each once", field=what)
        parsed[key.strip()] = number
    return parsed


@models_app.command("list")
def list_models(
    workspace: WorkspaceOpt = None, as_json: JsonOpt = False, server: ServerOpt = None, token: TokenOpt = None
) -> None:
    """Registered models with their newest version and aliases."""
    models = remote.read(
        server,
        token,
        workspace,
        lambda api: [remote.entity(Model, m) for m in api.models()],
        lambda ws: ws.registry.models(),
    )
    if as_json:
        print_json(models)
        return
    table = Table(title=plural(len(models), "model"), title_justify="left")
    for col in ("model", "versions", "aliases"):
        table.add_column(col)
    for m in models:
        table.add_row(
            m.name, str(m.last_version), ", ".join(f"{a}→v{v}" for a, v in sorted(m.aliases.items()))
        )
    out.print(table)


@models_app.command("versions")
def versions(
    name: str,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every version of a model: status, aliases, headline metrics, the run that made it."""
    found = remote.read(
        server,
        token,
        workspace,
        lambda api: [remote.entity(ModelVersion, v) for v in api.versions(name)],
        lambda ws: ws.registry.versions(name),
    )
    if as_json:
        print_json(found)
        return
    table = Table(title=f"{name}: {plural(len(found), 'version')}", title_justify="left")
    for col in ("version", "status", "aliases", "metrics", "run", "created", "by"):
        table.add_column(col)
    for v in found:
        metrics = ", ".join(f"{k}={_fmt(x)}" for k, x in list(v.metrics.items())[:3])
        status = styled(v.status.value, "red") if v.status.value == "rejected" else v.status.value
        table.add_row(
            str(v.version),
            status,
            ", ".join(v.aliases),
            metrics,
            v.run_id or "-",
            f"{v.created_at:%Y-%m-%d %H:%M}",
            v.created_by,
        )
    out.print(table)


@models_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(metavar="NAME[@ALIAS|:VERSION]")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """One version: signature, metrics, tags, lineage."""
    from mloop.server.model_state import version_card

    card = remote.read(
        server, token, workspace, lambda api: _card(api.model_version(ref)), lambda ws: version_card(ws, ref)
    )
    if as_json:
        print_json(card)
        return
    v, run, pipeline = card["version"], card["run"], card["pipeline_version"]
    out.print(f"[bold]{v.name} v{v.version}[/] ({v.status.value}) aliases: {', '.join(v.aliases) or '-'}")
    out.print(
        f"artifact {v.artifact_id} · registered {v.created_at:%Y-%m-%d %H:%M:%S} UTC by {v.created_by}",
        markup=False,
    )
    if run is not None:
        out.print(
            f"made by run {run.id} of {run.pipeline} · code {run.code_commit or run.code_hash[:12]}",
            markup=False,
        )
    if pipeline is not None:
        commit = (
            f"commit {pipeline.git_commit or '(not in git)'}{' (dirty tree)' if pipeline.git_dirty else ''}"
        )
        out.print(f"deployed pipeline version {pipeline.ref} · {commit}", markup=False)
    out.print("metrics: " + ", ".join(f"{k}={_fmt(x)}" for k, x in v.metrics.items()), markup=False)
    inputs = v.signature.get("inputs", {}).get("columns", {})
    if inputs:
        out.print("inputs: " + ", ".join(f"{n}:{c.get('type')}" for n, c in inputs.items()), markup=False)
    if v.signature.get("output"):
        out.print(f"output: {v.signature['output']}", markup=False)
    form = v.signature.get("serving_form")
    if form:
        served = (
            f"ONNX (artifact {form['artifact_id']})"
            if form.get("format")
            else f"the model ({form['reason']})"
        )
        out.print(f"serving form: {served}", markup=False)
    if v.tags:
        out.print(f"tags: {v.tags}", markup=False)


@models_app.command("promote")
def promote(
    name: str,
    version: Annotated[int, typer.Argument(min=1, max=999_999_999, help="Version number.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to move.")] = "production",
    reason: ReasonOpt = "",
    force: Annotated[
        bool, typer.Option("--force", help="Allow a rejected version (needs --reason).")
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version; the move is recorded."""
    with open_workspace(workspace) as ws:
        event = ws.promote(name, version, alias, reason=reason, force=force)
    if as_json:
        print_json(event)
        return
    if event.from_version == event.to_version:
        out.print(f"{name}@{alias}: already v{event.to_version} (nothing recorded)")
        return
    before = f"v{event.from_version}" if event.from_version is not None else "nobody"
    out.print(f"{name}@{alias}: {before} → v{event.to_version}")


@models_app.command("rollback")
def rollback(
    name: str,
    alias: Annotated[str, typer.Option("--alias", help="Alias to roll back.")] = "production",
    reason: ReasonOpt = "",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give an alias back to its previous holder, in one call."""
    with open_workspace(workspace) as ws:
        event = ws.rollback(name, alias, reason=reason)
    if as_json:
        print_json(event)
        return
    if event.from_version is None:  # the last move removed the alias: rolling back undoes the removal
        out.print(f"{name}@{alias}: no version → v{event.to_version} (rolled back: its removal undone)")
    elif event.to_version is None:
        out.print(f"{name}@{alias}: v{event.from_version} → no version (rolled back: it held none before)")
    else:
        out.print(f"{name}@{alias}: v{event.from_version} → v{event.to_version} (rolled back)")


@models_app.command("history")
def history(
    name: str,
    alias: Annotated[str | None, typer.Option("--alias", help="Only this alias.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every alias move: when, who, from, to, why."""
    events = remote.read(
        server,
        token,
        workspace,
        lambda api: [remote.entity(AliasEvent, e) for e in api.history(name, alias)],
        lambda ws: ws.registry.history(name, alias),
    )
    if as_json:
        print_json(events)
        return
    table = alias_history_table(f"{name}: {plural(len(events), 'alias move')}", events)
    out.print(table)


@models_app.command("evaluations")
def evaluations_command(
    ref: Annotated[str, typer.Argument(metavar="NAME:VERSION")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """What the run that made a version measured: evaluations, validation verdict, infra check."""
    name, version = _name_version(ref)
    from mloop.server.model_state import evaluations

    body = remote.read(
        server,
        token,
        workspace,
        lambda api: api.evaluations(name, version),
        lambda ws: evaluations(ws, name, version),
    )
    if as_json:
        print_json(body)
        return
    table = Table(
        title=f"{name} v{version}: {plural(len(body['evaluations']), 'report')} of run "
        f"{body['run_id'] or '-'}",
        title_justify="left",
    )
    for col in ("kind", "step", "summary"):
        table.add_column(col)
    for e in body["evaluations"]:
        table.add_row(e["kind"], e["step"], _summary(e["kind"], e["content"]))
    out.print(table)


def _summary(kind: str, content: dict[str, Any]) -> str:
    if kind == "evaluation":
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in list(content.get("metrics", {}).items())[:4])
        return f"{content.get('rows', 0):,} rows · {metrics}"
    if kind == "verdict":
        failed = [c["name"] for c in content.get("checks", []) if not c.get("passed")]
        return "blessed" if content.get("blessed") else f"not blessed: {', '.join(failed) or '-'}"
    return ("passed" if content.get("passed") else "failed") + f" · p99 {_fmt(content.get('p99_ms'))} ms"


def _name_version(ref: str) -> tuple[str, int]:
    from mloop.workspace import parse_model_ref

    name, version, _ = parse_model_ref(ref)
    if version is None:
        raise ParameterError(f"model reference {ref!r}: expected NAME:VERSION", field="model")
    return name, version


@models_app.command("monitoring")
def monitoring_command(
    name: str,
    run_id: Annotated[str | None, typer.Option("--run", help="A monitor run (default: the latest).")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """The latest recorded monitoring of a model (``mloop monitor`` records it): window by window."""
    from mloop.server.model_state import monitoring

    body = remote.read(
        server,
        token,
        workspace,
        lambda api: api.monitoring(name, run_id=run_id),
        lambda ws: monitoring(ws, name, run_id),
    )
    if as_json:
        print_json(body)
        return
    report = body["report"]
    table = Table(
        title=f"{name}: {plural(len(report['windows']), 'window')} of {report['window']}"
        f" (run {body['run']['id']})",
        title_justify="left",
    )
    for col in ("#", "from", "rows", "labelled", "versions", "drift share", "drifted", "metrics"):
        table.add_column(col)
    for w in report["windows"]:
        metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in w["metrics"].items() if k in _HEADLINE)
        table.add_row(
            f"{w['index'] + 1}{'' if w['complete'] else '*'}",
            w["start"][:19],
            str(w["rows"]),
            str(w["labelled"]),
            " ".join(f"v{v}:{n}" for v, n in w["versions"].items()),
            f"{w['drift_share']:.2f}",
            ", ".join(w["drifted"][:4]) + ("…" if len(w["drifted"]) > 4 else ""),
            metrics or "-",
        )
    out.print(table)


_HEADLINE = ("accuracy", "roc_auc", "rmse", "mae")


@models_app.command("rollout")
def rollout_command(
    name: str,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """A model's rollout: its policy, production, canary, the version a manual rollout waits with."""
    from mloop.server.model_state import rollout_state

    body = remote.read(
        server, token, workspace, lambda api: api.rollout(name), lambda ws: rollout_state(ws, name)
    )
    if as_json:
        print_json(body)
        return
    policy = body["policy"]
    out.print(
        f"[bold]{name}[/] rollout: {policy['mode'] if policy else 'no policy'} · production "
        f"{_v(body['production'])} · canary {_v(body['canary'])}"
    )
    pending = body["pending"]
    out.print(f"waiting for a decision: v{pending['version']}" if pending else "nothing waits for a decision")
    for e in body["decisions"]:
        out.print(f"  {e['at'][:19]} {e['action']} {e['target']} by {e['who']}: {e['reason']}", markup=False)


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "-"


def _card(body: dict[str, Any]) -> dict[str, Any]:
    """A version card (``model_state.version_card``) from the team server's answer."""
    return {
        "version": remote.entity(ModelVersion, body["version"]),
        "run": remote.entity(Run, body["run"]) if body["run"] else None,
        "pipeline_version": remote.entity(PipelineVersion, body["pipeline_version"])
        if body["pipeline_version"]
        else None,
    }


def _read(path: Path) -> Any:
    from mloop.validation.io import read_table

    return read_table(path).to_pandas()


def _label_of(version: Any, label: str | None) -> str:
    label = label or version.signature.get("output", {}).get("label")
    if not label:
        raise DataError(
            f"{version.name} v{version.version} records no label column; pass --label", field="label"
        )
    return str(label)


@models_app.command("evaluate")
def evaluate_command(
    ref: Annotated[str, typer.Argument(metavar="NAME[@ALIAS|:VERSION]")],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet with the label column.")],
    label: Annotated[
        str | None, typer.Option("--label", help="Label column (default: from the signature).")
    ] = None,
    slices: SliceOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Metrics of a registered model on a dataset, overall and per slice."""
    remote.local_only(server, "models evaluate", "reads DATA on this machine and runs the model here")

    frame = _read(data)
    with open_workspace(workspace) as ws:
        version, evaluation = _evaluate_version(ws, ref, frame, label, slices)
    if as_json:
        print_json({"model": version.name, "version": version.version, **evaluation.to_dict()})
        return
    _print_evaluations(
        {f"v{version.version}": evaluation}, f"{version.name} on {data} ({evaluation.rows:,} rows)"
    )


@models_app.command("compare")
def compare(
    name: str,
    v1: int,
    v2: int,
    data: Annotated[Path, typer.Option("--data", help="CSV or Parquet with the label column.")],
    label: Annotated[
        str | None, typer.Option("--label", help="Label column (default: from the signature).")
    ] = None,
    slices: SliceOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Two versions side by side on the same data."""
    remote.local_only(server, "models compare", "reads --data on this machine and runs both models here")

    frame = _read(data)
    with open_workspace(workspace) as ws:
        results = {f"v{n}": _evaluate_version(ws, f"{name}:{n}", frame, label, slices)[1] for n in (v1, v2)}
    if as_json:
        print_json({key: e.to_dict() for key, e in results.items()})
        return
    _print_evaluations(results, f"{name}: v{v1} vs v{v2} on {data}")


def _evaluate_version(
    ws: Workspace, ref: str, frame: Any, label: str | None, slices: list[str] | None
) -> tuple[ModelVersion, Evaluation]:
    """A registered version scored on ``frame`` with its own signature's inputs and label."""
    from mloop.validation.model import evaluate_model

    version = ws.model_version(ref)
    inputs = list(version.signature.get("inputs", {}).get("columns", {})) or None
    model = ws.load_version(version, ref=ref)
    return version, evaluate_model(
        model, frame, _label_of(version, label), slices=slices or [], inputs=inputs
    )


def _print_evaluations(results: dict[str, Any], title: str) -> None:
    first = next(iter(results.values()))
    table = Table(title=title, title_justify="left")
    table.add_column("segment")
    table.add_column("metric")
    for key in results:
        table.add_column(key, justify="right")
    for metric in first.metrics:
        table.add_row("all", metric, *(_fmt(r.metrics.get(metric)) for r in results.values()))
    for segment in first.slices:
        for metric in ("rows", first.primary):
            table.add_row(
                segment, metric, *(_fmt(r.slices.get(segment, {}).get(metric)) for r in results.values())
            )
    out.print(table)


@models_app.command("skew")
def skew(
    ref: Annotated[str, typer.Argument(metavar="NAME[@ALIAS|:VERSION]")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Training–serving skew: the version's training statistics vs the inputs it was served."""
    remote.local_only(server, "models skew", "reads the prediction log folder of a workspace on this machine")
    from mloop.cli.data import _print_drift, _report_json
    from mloop.monitoring.skew import serving_skew

    with open_workspace(workspace) as ws:
        report = serving_skew(ws, ref)
    if as_json:
        print_json(_report_json(report))
    else:
        _print_drift(report)
