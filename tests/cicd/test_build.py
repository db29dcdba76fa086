"""Build contexts: the Dockerfile passes hadolint, requirements are pinned from the recorded environment,
and (slow) the entrypoint run in a fresh virtualenv from those pins and the wheel serves / runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import mloop
from mloop.cicd.build import pinned_requirements
from mloop.errors import NotFoundError
from mloop.testing import sample_from_schema, write_sample
from tests.cicd.projects import SCHEMA, make_project
from tests.cli.cli_helpers import run
from tests.serving.serving_helpers import fit, register, training_data

BIN = Path(sys.executable).parent


def _deployed(tmp_path: Path, capsys) -> str:
    project = make_project(tmp_path / "proj")
    ws = str(tmp_path / "ws")
    ref = f"{project / 'toy' / 'pipeline.py'}:training"
    code, _, err = run(
        capsys, "pipelines", "deploy", ref, "--name", "toy", "--force", "--reason", "t", "--workspace", ws
    )
    assert code == 0, err
    return ws


def _hadolint(dockerfile: Path) -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wheel = tmp_path / "mloop-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not a real wheel: the fast tests only check the context's layout")
    monkeypatch.setenv("MLOOP_WHEEL", str(wheel))
    return wheel


def test_pipeline_context_is_pinned_and_lints_clean(tmp_path: Path, capsys, fake_wheel: Path) -> None:
    ws = _deployed(tmp_path, capsys)
    ctx = tmp_path / "ctx"
    code, _, err = run(capsys, "build", "pipeline", "toy@staging", "-o", str(ctx), "--workspace", ws)
    assert code == 0, err
    _hadolint(ctx / "Dockerfile")
    dockerfile = (ctx / "Dockerfile").read_text()
    assert (
        dockerfile.count("FROM python:") == 2
        and "-slim-bookworm" in dockerfile
        and "USER 10001" in dockerfile
    )
    final = dockerfile.split("\nFROM ")[-1]
    assert "pip install" not in final and "apt-get" not in final  # no build tools in the final stage
    with mloop.Workspace.open(ws) as w:
        version = w.pipelines.get_version("toy")
    assert f"FROM python:{version.python_version}-slim-bookworm" in dockerfile
    pins = (ctx / "requirements.txt").read_text().split()
    assert all("==" in p for p in pins)
    recorded = {k.lower(): v for k, v in version.packages.items()}
    assert f"scikit-learn=={recorded['scikit-learn']}" in pins and any(
        p.startswith("SQLAlchemy==") for p in pins
    )
    assert not any(p.lower().startswith("mloop==") for p in pins)  # mloop ships as the wheel
    assert (ctx / "wheels" / fake_wheel.name).is_file()
    assert (ctx / "app" / "pipeline" / "toy" / "pipeline.py").is_file()
    assert (ctx / "app" / "pipeline" / "toy" / "features.py").is_file()
    assert "toy/pipeline.py:training" in (ctx / "app" / "entrypoint.py").read_text()


def test_serve_context_has_a_health_check_and_the_model(tmp_path: Path, capsys, fake_wheel: Path) -> None:
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        df = training_data()
        v = register(ws, fit(df, ["a", "b"]), df, ["a", "b"])
        ws.promote("clf", v.version, alias="production")
    ctx = tmp_path / "ctx"
    code, _, err = run(
        capsys, "build", "serve", "clf@production", "-o", str(ctx), "--workspace", str(tmp_path / "ws")
    )
    assert code == 0, err
    _hadolint(ctx / "Dockerfile")
    assert (
        "HEALTHCHECK" in (ctx / "Dockerfile").read_text()
        and "/v2/health/ready" in (ctx / "Dockerfile").read_text()
    )
    with mloop.Workspace.open(ctx / "app" / "workspace" / ".mloop", create=False) as bundled:
        assert bundled.model_version("clf@production").signature == v.signature


def test_build_errors_are_one_line_exit_2(tmp_path: Path, capsys, fake_wheel: Path, monkeypatch) -> None:
    ws = _deployed(tmp_path, capsys)
    code, _, err = run(capsys, "build", "pipeline", "ghost", "-o", str(tmp_path / "c"), "--workspace", ws)
    assert code == 2 and "no deployed pipeline 'ghost'" in err
    for target in ("/etc/passwd", "/etc/passwd/ctx"):  # a file, or under one: refused before writing
        for kind, ref in (("pipeline", "toy@staging"), ("serve", "clf@production")):
            code, _, err = run(capsys, "build", kind, ref, "-o", target, "--workspace", ws)
            assert code == 2 and err.startswith("error: --output ") and "is not a folder" in err, err
            assert err.count("\n") == 1, err
    code, _, err = run(
        capsys, "build", "serve", "clf@production", "-o", str(tmp_path / "c"), "--workspace", ws
    )
    assert code == 2 and err.count("\n") == 1
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no docker on the path
    code, _, err = run(
        capsys, "build", "pipeline", "toy@staging", "-o", str(tmp_path / "c2"), "--build", "--workspace", ws
    )
    assert code == 2 and err.startswith("error: --build: no container daemon here") and err.count("\n") == 1
    assert (tmp_path / "c2" / "Dockerfile").is_file()
    monkeypatch.undo()
    code, _, err = run(
        capsys, "build", "pipeline", "toy@staging", "-o", str(tmp_path / "c2"), "--workspace", ws
    )
    assert code == 0, err  # over a context it wrote before: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Dockerfile").write_text("precious\n")
    code, _, err = run(capsys, "build", "pipeline", "toy@staging", "-o", str(mine), "--workspace", ws)
    assert code == 2 and "holds files and is not a build context mloop wrote" in err, err
    assert (mine / "Dockerfile").read_text() == "precious\n"  # was replaced without a word
    code, _, err = run(capsys, "build", "pipeline", "toy@staging", "-o", "/proc/mloop-ctx", "--workspace", ws)
    assert code == 2 and err.startswith("error: --output /proc/mloop-ctx: cannot be written"), err
    with pytest.raises(
        NotFoundError, match="'surely-not-a-package' is needed but neither recorded nor installed"
    ):
        pinned_requirements(["surely-not-a-package"], {})


def test_a_pinned_package_that_cannot_be_resolved_is_one_error_exit_2(
    tmp_path: Path, capsys, fake_wheel: Path
) -> None:
    project = make_project(tmp_path / "proj")  # its pipeline imports a package nobody installed:
    features = project / "toy" / "features.py"  # deploying reads the source and imports nothing
    features.write_text("import surely_not_installed_pkg  # noqa: F401\n" + features.read_text())
    ws = str(tmp_path / "ws")
    ref = f"{project / 'toy' / 'pipeline.py'}:training"
    deployed = run(
        capsys, "pipelines", "deploy", ref, "--name", "toy", "--force", "--reason", "t", "--workspace", ws
    )
    assert deployed[0] == 0, deployed[2]
    code, _, err = run(
        capsys, "build", "pipeline", "toy@staging", "-o", str(tmp_path / "ctx"), "--workspace", ws
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(
        "error: package 'surely_not_installed_pkg' is needed but neither recorded nor installed"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a fresh venv installs every pinned package
def test_the_contexts_run_in_a_fresh_virtualenv_from_the_pins_and_the_wheel(tmp_path: Path, capsys) -> None:
    os.environ.pop("MLOOP_WHEEL", None)
    ws = _deployed(tmp_path, capsys)
    with mloop.Workspace.open(ws) as w:
        df = training_data()
        v = register(w, fit(df, ["a", "b"]), df, ["a", "b"])
        w.promote("clf", v.version, alias="production")
    pipeline_ctx, serve_ctx = tmp_path / "pctx", tmp_path / "sctx"
    assert run(capsys, "build", "pipeline", "toy@staging", "-o", str(pipeline_ctx), "--workspace", ws)[0] == 0
    os.environ["MLOOP_WHEEL"] = str(next((pipeline_ctx / "wheels").glob("*.whl")))  # build the wheel once
    try:
        assert (
            run(capsys, "build", "serve", "clf@production", "-o", str(serve_ctx), "--workspace", ws)[0] == 0
        )
    finally:
        os.environ.pop("MLOOP_WHEEL")
    # the image's build stage, here; without PYTHONPATH, or pip would find this checkout's mloop installed
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLOOP_WORKSPACE")}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "-r", str(pipeline_ctx / "requirements.txt")],
        check=True,
        env=clean,
    )
    wheel = next((pipeline_ctx / "wheels").glob("*.whl"))
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=clean)
    data = write_sample(sample_from_schema(SCHEMA, rows=200), tmp_path / "d.csv")
    done = subprocess.run(
        [
            py,
            str(pipeline_ctx / "app" / "entrypoint.py"),
            "--param",
            f"data={data}",
            "--workspace",
            str(tmp_path / "run-ws"),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run"]["status"] == "succeeded"
    port = _free_port()
    server = subprocess.Popen(
        [py, str(serve_ctx / "app" / "entrypoint.py")],
        env={**clean, "PORT": str(port), "HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
        body = json.dumps({"instances": [{"a": 0.1, "b": 0.2}]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", body, {"Content-Type": "application/json"}
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert answer["predictions"][0] in (0, 1)
    finally:
        server.terminate()
        server.wait(timeout=30)
