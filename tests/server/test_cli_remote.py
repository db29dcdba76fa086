"""``--server URL`` on every read command: the same table and the same JSON as from the workspace.

One workspace (runs, a stopped run with anomalies, a model, deployed pipeline versions, a trigger, feature
definitions materialized online, tokens) and the team server over it on 127.0.0.1; each read command
runs against both and the outputs must be equal. The commands that only work on this machine's files
refuse --server in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import _starter, _stop, seed_workspace
from server_helpers import run

import mloop
from mloop.entities import PipelineVersion, utcnow
from mloop.steps.data import validate_schema
from mloop.validation.schema import infer_schema
from mloop.validation.stats import compute_statistics

DEFINITIONS = """
from mloop.features import Entity, FeatureService, FeatureView

driver = Entity("driver", join_keys=["driver_id"])
stats = FeatureView("driver_stats", entities=[driver], source="stats.parquet", timestamp="event_timestamp",
    ttl="3650d",
)
model_features = FeatureService("driver_model", ["driver_stats:conv_rate", "driver_stats:trips"])
"""


@mloop.step
def frame(drop: bool) -> pd.DataFrame:
    data = pd.DataFrame({"x": [1.0, 2.0, 3.0], "city": ["a", "b", "a"]})
    return data.drop(columns=["city"]) if drop else data


@mloop.pipeline
def gated(schema: Path, drop: bool = True):  # type: ignore[no-untyped-def]
    validate_schema(frame(drop), schema)


def _deploy(ws: mloop.Workspace, code: str) -> PipelineVersion:
    draft = PipelineVersion(
        id="",
        name="training",
        version=0,
        entry="project/pipeline.py:training",
        snapshot_artifact_id="01ART",
        snapshot_digest="d" * 64,
        code_hash=code,
        params={"C": 0.5},
        git_commit="c" * 40,
        git_dirty=False,
        python_version="3.11.9",
        packages={"mloop": "0.1.0"},
        ci={"passed": True},
        forced_reason=None,
        created_at=utcnow(),
        created_by="alice",
    )
    return ws.pipelines.create_version(draft)


@dataclass
class Shared:
    url: str
    root: Path
    tokens: dict[str, str]
    ids: dict[str, str]


def _seed(ws: mloop.Workspace, project: Path) -> tuple[dict[str, str], dict[str, str]]:
    seeded = seed_workspace(ws)
    ids = {"model_run": seeded.model_run, "sweep_run": ws.runs(mloop.RunQuery(pipeline="sweep"))[0].id}
    # a run stopped by the schema gate: a failed step, its anomalies, its metrics
    schema = infer_schema(compute_statistics(pd.DataFrame({"x": [1.0, 2.0], "city": ["a", "b"]})))
    (project / "schema.json").write_text(schema.to_json(), encoding="utf-8")
    with pytest.raises(mloop.StepFailedError) as stopped:
        ws.run(gated, schema=str(project / "schema.json"))
    ids["gated_run"] = stopped.value.run_id
    step = next(s for s in ws.metadata.list_steps(seeded.model_run) if s.name == "add")
    ids["artifact"] = ws.metadata.events(step_run_ids=[step.id], kind="output")[0].artifact_id
    # deployed pipeline versions; churn v2 made by a run of one of them
    v1, v2 = _deploy(ws, "a" * 64), _deploy(ws, "b" * 64)
    ws.pipelines.move_alias("training", "production", v1.version, who="alice", reason="first")
    ws.pipelines.move_alias("training", "production", v2.version, who="bob", reason="ci passed")
    ws.pipelines.move_alias("training", "staging", v1.version, who="bob", reason="try")
    # a trigger with state and an event
    (project / "mloop.toml").write_text(
        '[[triggers]]\nname = "nightly"\nkind = "schedule"\ncron = "0 3 * * *"\n'
        'pipeline = "mloop.steps.retrain:retrain"\nparams = { model_name = "churn", target = "y" }\n',
        encoding="utf-8",
    )
    ws.triggers.save_state("nightly", evaluated_at=utcnow(), next_due_at=utcnow(), last_result="not due")
    ws.triggers.claim("nightly", "manual/1", kind="manual", pipeline="p", evidence={"reason": "test"})
    # feature definitions, materialized
    pd.DataFrame(
        {
            "driver_id": [1, 1, 2],
            "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-01"], utc=True),
            "conv_rate": [0.1, 0.2, 0.5],
            "trips": [1, 2, 5],
        }
    ).to_parquet(project / "stats.parquet")
    (project / "features.py").write_text(DEFINITIONS, encoding="utf-8")
    ws.features.apply(project / "features.py")
    ws.features.materialize()
    return seeded.tokens, ids


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    project = tmp_path_factory.mktemp("project")
    start, servers = _starter()
    ws = mloop.Workspace.open(project / ".mloop")
    try:
        tokens, ids = _seed(ws, project)
        yield Shared(start(ws), project / ".mloop", tokens, ids)
    finally:
        _stop(servers)
        ws.close()


# every read command that takes --server, with arguments on the shared workspace ({name} = an id)
READS: list[list[str]] = [
    ["runs", "list"],
    ["runs", "list", "--pipeline", "sweep", "--limit", "3"],
    ["runs", "show", "{model_run}"],
    ["runs", "show", "{gated_run}"],
    ["runs", "show", "{sweep_run}"],
    ["artifacts", "show", "{artifact}"],
    ["lineage", "churn:1"],
    ["lineage", "{model_run}", "--downstream"],
    ["models", "list"],
    ["models", "versions", "churn"],
    ["models", "show", "churn"],
    ["models", "show", "churn@production"],
    ["models", "show", "churn:2"],
    ["models", "history", "churn"],
    ["models", "evaluations", "churn:1"],
    ["models", "rollout", "churn"],
    ["pipelines", "list"],
    ["pipelines", "list", "training"],
    ["pipelines", "show", "training"],
    ["pipelines", "show", "training:1"],
    ["pipelines", "show", "training@staging"],
    ["pipelines", "history", "training"],
    ["pipelines", "history", "training", "--alias", "staging"],
    ["scheduler", "status"],
    ["features", "list"],
    ["features", "show", "driver_stats"],
    ["features", "show", "driver"],
    ["features", "show", "driver_model"],
    ["features", "freshness", "--features", "driver_stats:*"],
    ["features", "freshness", "--service", "driver_model"],
    ["features", "online", "--service", "driver_model", "--entity", "driver_id=1"],
    ["features", "online", "--features", "driver_stats:trips", "--entity", "driver_id=3"],
]

# the same commands given what does not exist, or is malformed: the same error, locally and remotely
UNKNOWN: list[list[str]] = [
    ["runs", "show", "01NOPE"],
    ["artifacts", "show", "01NOPE"],
    ["artifacts", "show", "../etc"],
    ["lineage", "nope:1"],
    ["models", "versions", "nope"],
    ["models", "show", "nope"],
    ["models", "show", "churn:9"],
    ["models", "show", "churn@nope"],
    ["models", "show", "bad name"],
    ["models", "monitoring", "churn"],
    ["pipelines", "list", "nope"],
    ["pipelines", "show", "nope"],
    ["pipelines", "show", "training:9"],
    ["pipelines", "show", "training@nope"],
    ["pipelines", "show", "a/b.py"],
    ["pipelines", "history", "nope"],
    ["features", "show", "nope"],
    ["features", "freshness", "--service", "nope"],
    ["features", "online", "--features", "nope:x", "--entity", "driver_id=1"],
    ["features", "online", "--service", "driver_model", "--entity", "rider_id=1"],
    ["features", "online", "--features", "driver_stats", "--entity", "driver_id=1"],
]


def _argv(args: list[str], ids: dict[str, str]) -> list[str]:
    return [a.format(**ids) for a in args]


def _same(text: str) -> object:
    """``text``, or the JSON it holds with every age (measured at the moment of asking) left out."""
    try:
        value = json.loads(text)
    except ValueError:
        return text  # tables print ages to 4 digits: equal within the test

    def ageless(v: object) -> object:
        if isinstance(v, dict):
            return {k: ageless(x) for k, x in v.items() if k != "age_seconds"}
        return [ageless(x) for x in v] if isinstance(v, list) else v

    return ageless(value)


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_read_from_the_server_prints_what_the_workspace_does(
    shared: Shared, capsys: pytest.CaptureFixture[str], args: list[str], as_json: bool
) -> None:
    argv = _argv(args, shared.ids) + (["--json"] if as_json else [])
    code, local, stderr = run(capsys, *argv, "--workspace", str(shared.root))
    assert code == 0, stderr
    code, remote, stderr = run(capsys, *argv, "--server", shared.url, "--token", shared.tokens["viewer"])
    assert code == 0, stderr
    assert _same(remote) == _same(local)


@pytest.mark.parametrize("args", UNKNOWN, ids=" ".join)
def test_what_does_not_exist_is_the_same_one_line_error(
    shared: Shared, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    local_code, _, local = run(capsys, *args, "--workspace", str(shared.root))
    code, stdout, remote = run(capsys, *args, "--server", shared.url, "--token", shared.tokens["viewer"])
    assert (code, stdout) == (local_code, "") and code == 2, remote
    assert remote.startswith("error: ") and remote.count("\n") == 1, remote
    if "/" not in args[-1] and " " not in args[-1]:  # a malformed one is refused by the server's own rule
        assert remote == local


def test_server_token_list_needs_an_admin(shared: Shared, capsys: pytest.CaptureFixture[str]) -> None:
    for as_json in ([], ["--json"]):
        code, local, _ = run(capsys, "server", "token", "list", *as_json, "--workspace", str(shared.root))
        assert code == 0
        argv = ["server", "token", "list", *as_json, "--server", shared.url]
        code, remote, stderr = run(capsys, *argv, "--token", shared.tokens["admin"])
        assert (code, remote) == (0, local), stderr
    code, stdout, stderr = run(capsys, *argv, "--token", shared.tokens["viewer"])
    assert code == 2 and stdout == "" and stderr.startswith("error: ") and stderr.count("\n") == 1
    assert "admin" in stderr


@pytest.mark.parametrize(
    "args",
    [*[a for a in READS if "{" not in " ".join(a)][::4], ["runs", "show", "{model_run}"]],
    ids=" ".join,
)
@pytest.mark.parametrize("token", [None, "mloop_wrong"], ids=["no token", "bad token"])
def test_without_a_valid_token_a_read_is_one_error_line(
    shared: Shared,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    token: str | None,
) -> None:
    monkeypatch.delenv("MLOOP_TOKEN", raising=False)
    argv = [*_argv(args, shared.ids), "--server", shared.url, *(["--token", token] if token else [])]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 2 and stdout == "", stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "mloop_wrong" not in stderr


def test_the_token_comes_from_mloop_token(
    shared: Shared, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOOP_TOKEN", shared.tokens["viewer"])
    code, stdout, stderr = run(capsys, "pipelines", "list", "--server", shared.url, "--json")
    assert code == 0 and [v["version"] for v in json.loads(stdout)["versions"]] == [1, 2], stderr


# read commands that only work on this machine's files: --server is one error line, exit 2
LOCAL_ONLY: list[list[str]] = [
    ["data", "stats", "x.csv"],
    ["data", "validate", "x.csv", "--schema", "s.json"],
    ["data", "drift", "a.csv", "b.csv"],
    ["models", "evaluate", "churn:1", "x.csv"],
    ["models", "compare", "churn", "1", "2", "--data", "x.csv"],
    ["models", "skew", "churn:1"],
    ["features", "skew"],
    ["features", "historical", "rows.csv", "--output", "out.parquet"],
]


@pytest.mark.parametrize("args", LOCAL_ONLY, ids=" ".join)
def test_a_local_only_command_refuses_server_in_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, stdout, stderr = run(capsys, *args, "--server", "http://127.0.0.1:9", "--token", "mloop_x")
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: --server: `mloop ") and stderr.count("\n") == 1, stderr
    assert "mloop_x" not in stderr


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("GET", "/model-versions/churn:0", None, 400, "ref"),
        ("GET", "/model-versions/churn%40", None, 400, "alias"),
        ("GET", "/model-versions/nope", None, 404, "name"),
        ("GET", "/pipeline-versions/training.py", None, 400, "ref"),
        ("GET", "/pipeline-versions/training:9", None, 404, "version"),
        ("GET", "/pipeline-versions?name=..", None, 400, "name"),
        ("GET", "/pipelines/nope/history", None, 404, "name"),
        ("GET", "/pipelines/training/history?alias=a%20b", None, 400, "alias"),
        ("GET", "/runs/01NOPE/metrics", None, 404, None),
        ("GET", "/features/definitions/nope", None, 404, "name"),
        ("GET", "/features/freshness?feature=driver_stats", None, 400, "features"),
        ("GET", "/features/freshness?service=..", None, 400, "service"),
        ("POST", "/features/online", {"entities": []}, 400, "entities"),
        ("POST", "/features/online", {"entities": [{"driver_id": 1}], "extra": 1}, 400, "extra"),
        (
            "POST",
            "/features/online",
            {"entities": [{"driver_id": [1]}], "service": "driver_model"},
            400,
            None,
        ),
    ],
)
def test_the_read_routes_answer_malformed_and_unknown_input_in_json(
    shared: Shared, method: str, path: str, body: object, status: int, field: str | None
) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {shared.tokens['viewer']}"}
    response = httpx.request(method, shared.url + "/api/v1" + path, json=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"} and error["message"]
    if field is not None:
        assert error["field"] == field or error["field"].startswith(field), error


def test_a_viewer_may_look_up_online_features_and_nobody_else(shared: Shared) -> None:
    import httpx

    body = {"entities": [{"driver_id": "1"}], "features": ["driver_stats:trips"]}
    url = shared.url + "/api/v1/features/online"
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {shared.tokens['viewer']}"})
    assert ok.status_code == 200 and ok.json()["rows"][0]["features"] == {"driver_stats:trips": 2}
    assert httpx.post(url, json=body).status_code == 401
