"""``mloop features …``: apply definitions, inspect them, join offline, materialize, read online, skew."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mloop.cli import remote
from mloop.cli.common import JsonOpt, Table, WorkspaceOpt, open_workspace, out, plural, print_json
from mloop.cli.remote import LocalServerOpt, LocalTokenOpt, ServerOpt, TokenOpt
from mloop.entities import FeatureDefinition, Materialization
from mloop.errors import DataError, ParameterError

features_app = typer.Typer(
    help="Feature store: definitions, point-in-time joins, online lookups, skew.", no_args_is_help=True
)

FeaturesOpt = Annotated[
    str | None, typer.Option("--features", help="Comma-separated VIEW:FEATURE references (VIEW:* = all).")
]
ServiceOpt = Annotated[str | None, typer.Option("--service", help="A feature service's name.")]


def _refs(features: str | None) -> list[str] | None:
    if features is None:
        return None
    refs = [f.strip() for f in features.split(",") if f.strip()]
    if not refs:
        raise ParameterError("--features is empty; give VIEW:FEATURE[,…]", field="features")
    return refs


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ParameterError(f"--{name} {value!r} is not an ISO-8601 time", field=name) from exc
    if when.tzinfo is None:
        raise ParameterError(f"--{name} {value!r} has no timezone; add Z or +00:00", field=name)
    return when


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@features_app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="A Python file defining entities, views and services.")],
    force: Annotated[
        bool, typer.Option("--force", help="Record a breaking change to a view in use.")
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record the definitions in PATH as new versions where they changed; shows the diff."""
    with open_workspace(workspace, create=True) as ws:
        changes = ws.features.apply(path, force=force)
    if as_json:
        print_json(changes)
        return
    for c in changes:
        mark = {"created": "[green]+[/]", "updated": "[yellow]~[/]", "unchanged": "[dim]=[/]"}[c.action]
        out.print(f"{mark} {c.kind} {c.name} v{c.version} ({c.action})")
        for key, (old, new) in c.diff.items():
            if c.action == "updated":
                out.print(f"    {key}: {old!r} → {new!r}", markup=False)
        for why in c.breaking:
            out.print(f"    [red]breaking[/]: {escape(why)}")


@features_app.command("list")
def list_definitions(
    workspace: WorkspaceOpt = None, as_json: JsonOpt = False, server: ServerOpt = None, token: TokenOpt = None
) -> None:
    """Every entity, feature view and feature service (latest versions)."""
    defs = remote.read(
        server,
        token,
        workspace,
        lambda api: [remote.entity(FeatureDefinition, d) for d in api.feature_definitions()],
        lambda ws: ws.features.definitions(),
    )
    if as_json:
        print_json(defs)
        return
    table = Table(title=plural(len(defs), "definition"), title_justify="left")
    for col in ("kind", "name", "version", "details"):
        table.add_column(col)
    from mloop.features.sources import source_from_spec

    for d in defs:
        if d.kind == "view":
            ttl = d.spec.get("ttl_seconds")
            detail = (
                f"{len(d.spec['features'])} features, ttl {_fmt(ttl)} s, {source_from_spec(d.spec['source'])}"
            )
        elif d.kind == "service":
            detail = ", ".join(d.spec["features"])
        else:
            detail = "keys: " + ", ".join(d.spec["join_keys"])
        table.add_row(d.kind, d.name, str(d.version), detail)
    out.print(table)


@features_app.command("show")
def show(
    name: str,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """One definition: its latest spec, its versions and (for a view) its last materialization."""
    info = remote.read(
        server,
        token,
        workspace,
        lambda api: _definition(api.feature_definition(name)),
        lambda ws: ws.features.show(name),
    )
    if as_json:
        print_json(info)
        return
    out.print(f"[bold]{info['kind']} {name}[/] v{info['version']}")
    for key, value in info["spec"].items():
        out.print(f"  {key}: {value}", markup=False)
    for v in info["versions"]:
        out.print(f"  v{v['version']} {v['created_at']:%Y-%m-%d %H:%M:%S} by {v['who']}", markup=False)
    if info.get("last_materialization"):
        m = info["last_materialization"]
        out.print(f"  materialized {m.rows} rows up to {m.end.isoformat()} at {m.at.isoformat()}")


@features_app.command("historical")
def historical(
    entities: Annotated[Path, typer.Argument(help="Entity rows: Parquet or CSV with keys and a timestamp.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    features: FeaturesOpt = None,
    service: ServiceOpt = None,
    timestamp_col: Annotated[
        str, typer.Option("--timestamp-col", help="The entity rows' timestamp column.")
    ] = "event_timestamp",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Point-in-time correct features for each entity row, written to OUTPUT (one row per input row)."""
    remote.local_only(server, "features historical", "reads ENTITIES and writes OUTPUT on this machine")
    if output.suffix.lower() != ".parquet":
        raise ParameterError(f"--output {output}: the output is Parquet; name it *.parquet", field="output")
    with open_workspace(workspace) as ws:
        rows = ws.features.historical(
            entities, _refs(features), service=service, timestamp_col=timestamp_col, out=output
        )
    if as_json:
        print_json({"rows": rows, "output": str(output)})
    else:
        out.print(f"{rows:,} rows written to {output}", markup=False)


@features_app.command("materialize")
def materialize(
    view: Annotated[list[str] | None, typer.Option("--view", help="Only this view (repeatable).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="Event time from (ISO-8601, UTC).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Event time up to (default: now).")] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Start where the last materialization ended.")
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy the latest values per entity into the online store."""
    if incremental and start is not None:
        raise ParameterError("give --start or --incremental, not both", field="start")
    with open_workspace(workspace) as ws:
        done = ws.features.materialize(
            view, start=_time(start, "start"), end=_time(end, "end"), incremental=incremental
        )
    if as_json:
        print_json(done)
        return
    for m in done:
        since = m.start.isoformat() if m.start else "the beginning"
        out.print(f"{m.view} v{m.version}: {m.rows:,} entities, events from {since} to {m.end.isoformat()}")


def _definition(body: dict[str, Any]) -> dict[str, Any]:
    """``FeatureStore.show``'s answer from the team server, with its times and materialization as the
    local answer holds them."""
    versions = [{**v, "created_at": datetime.fromisoformat(v["created_at"])} for v in body["versions"]]
    last = body.get("last_materialization")
    if last is not None:
        body = {**body, "last_materialization": remote.entity(Materialization, last)}
    return {**body, "versions": versions}


def _quoted(value: str) -> str:
    """``--entity id="1.0"``: a JSON string, the way to give a text key that reads like a number."""
    import json

    try:
        text = json.loads(value)
    except ValueError:
        text = None
    if not isinstance(text, str):
        raise ParameterError(f"--entity value {value} is not a valid JSON string", field="entity")
    return text


def _entity_rows(entity: list[str] | None, entities: Path | None) -> list[dict[str, Any]]:
    """Entity keys from the command line or a file; a value given as text (``--entity``, CSV) is read
    as the team server's JSON would give it: a JSON number is that number, anything else is text
    (``--entity id='"1.0"'``, in JSON quotes, is the text 1.0)."""
    from mloop.features.offline import typed_value

    if (entity is None) == (entities is None):
        raise ParameterError("give --entity KEY=VALUE (repeatable) or --entities FILE", field="entity")
    if entity is not None:
        row: dict[str, Any] = {}
        for item in entity:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ParameterError(f"--entity {item!r}: expected KEY=VALUE", field="entity")
            if key in row:
                raise ParameterError(
                    f"--entity {key} is given twice ({row[key]!r} and {value!r}); one value per key",
                    field="entity",
                )
            row[key] = (
                _quoted(value) if value[:1] == value[-1:] == '"' and len(value) > 1 else typed_value(value)
            )
        return [row]
    import pandas as pd

    assert entities is not None
    if not entities.is_file():
        raise DataError(f"entities file {entities} does not exist", field="entities")
    try:
        if entities.suffix == ".parquet":
            frame = pd.read_parquet(entities)
        else:
            frame = pd.read_csv(entities, dtype=str, keep_default_na=False)
            frame = frame.apply(lambda column: column.map(typed_value))
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {entities}: {exc}", field="entities") from exc
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


@features_app.command("online")
def online(
    entity: Annotated[
        list[str] | None,
        typer.Option(
            "--entity",
            help='KEY=VALUE; repeat for a compound key. A number is a number; "…" in JSON quotes is text.',
        ),
    ] = None,
    entities: Annotated[Path | None, typer.Option("--entities", help="CSV/Parquet of entity keys.")] = None,
    features: FeaturesOpt = None,
    service: ServiceOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """The latest feature values by entity key (stale ones null, with their age)."""
    rows = _entity_rows(entity, entities)
    refs = _refs(features)
    result = remote.read(
        server,
        token,
        workspace,
        lambda api: api.online_features(rows, refs, service=service),
        lambda ws: ws.features.online(rows, refs, service=service),
    )
    if as_json:
        print_json(result)
        return
    refs = list(result[0]["features"]) if result else []
    table = Table(title=plural(len(result), "entity row"), title_justify="left")
    keys = [k for k in result[0] if k not in ("features", "age_seconds", "found")] if result else []
    for col in [*keys, *refs, "age (s)"]:
        table.add_column(col)
    for r in result:
        ages = ", ".join(f"{v}:{_fmt(a)}" for v, a in r["age_seconds"].items())
        table.add_row(*[str(r[k]) for k in keys], *[_fmt(r["features"][f]) for f in refs], ages)
    out.print(table)


@features_app.command("skew")
def skew(
    features: FeaturesOpt = None,
    service: ServiceOpt = None,
    sample: Annotated[int, typer.Option("--sample", help="How many entities to compare per view.")] = 100,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: LocalServerOpt = None,
    token: LocalTokenOpt = None,
) -> None:
    """Online values vs the offline join for a sample of entities; exit 1 when any differ."""
    remote.local_only(server, "features skew", "joins the offline sources on this machine")
    with open_workspace(workspace) as ws:
        report = ws.features.skew(_refs(features), service=service, sample=sample)
    if as_json:
        print_json(report)
    else:
        mismatches = plural(report["mismatches"], "mismatch", "mismatches")
        title = f"skew: {mismatches}, {report['missing_online']} missing online"
        never = sum(report["not_materialized"].values())
        if never:  # no row materialization writes (after its end, no key or time): not skew
            title += f" ({plural(never, 'entity', 'entities')} with nothing to materialize not compared)"
        table = Table(title=title, title_justify="left")
        for col in ("feature", "compared", "missing online", "mismatches"):
            table.add_column(col)
        for ref, r in report["features"].items():
            table.add_row(ref, str(r["compared"]), str(r["missing_online"]), str(r["mismatches"]))
        out.print(table)
    if report["mismatches"] or report["missing_online"]:  # a partial materialization is skew too
        raise typer.Exit(1)


@features_app.command("freshness")
def freshness(
    features: FeaturesOpt = None,
    service: ServiceOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """How old each view's online values are: the newest event time the online store holds."""
    refs = _refs(features)
    report = remote.read(
        server,
        token,
        workspace,
        lambda api: api.feature_freshness(refs, service=service),
        lambda ws: ws.features.freshness(refs, service=service),
    )
    if as_json:
        print_json(report)
        return
    for view, r in report.items():
        out.print(
            f"{view}: newest value {r['newest_event'] or 'none'} (age {_fmt(r['age_seconds'])} s), "
            f"materialized up to {r['end'] or 'never'}"
        )
