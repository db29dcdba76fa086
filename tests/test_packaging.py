"""The package a user installs: the wheel and the sdist carry every template, dataset and migration, and
`mloop demo` runs from a wheel installed (not editable) into a fresh virtualenv."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mloop"
DATA_SUFFIXES = (".j2", ".gz", ".json", ".txt", ".md", ".mako", ".typed", ".css", ".js", ".html", ".svg")

pytest.importorskip("build", reason="packaging tests need the 'build' package (mloop[dev])")


def _package_files() -> set[str]:
    """Every file under mloop/ that the installed package needs: code and data, no caches."""
    return {
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or p.name.endswith(DATA_SUFFIXES))
    }


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.mark.slow
def test_wheel_and_sdist_carry_every_package_file(dists: Path) -> None:
    wanted = _package_files()
    assert any(f.startswith("mloop/monitoring/templates/") for f in wanted)
    [wheel] = dists.glob("*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert not wanted - in_wheel, sorted(wanted - in_wheel)
    [sdist] = dists.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert not wanted - in_sdist, sorted(wanted - in_sdist)


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel(dists: Path, tmp_path: Path) -> None:
    [wheel] = dists.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"{wheel}[serve]"], check=True, timeout=900, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLOOP_WORKSPACE", "PYTHONPATH")}
    mloop = str(venv / "bin" / "mloop")
    version = subprocess.run([mloop, "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("mloop "), version.stderr
    demo = subprocess.run(
        [mloop, "demo", "--workspace", "demo-ws", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (tmp_path / "demo-ws" / "loop-report.html").exists() or "loop-report" in demo.stdout
    listed = subprocess.run(
        [mloop, "runs", "list", "--workspace", "demo-ws", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert listed.returncode == 0 and listed.stdout.count('"id"') >= 2
