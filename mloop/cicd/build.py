"""Build contexts: a folder ``docker build`` turns into an image serving a model or running a pipeline.

Each context holds a Dockerfile (pinned slim Python base, a build stage that installs into a venv and
a final stage with no build tools, a non-root user, a health check for serving), mloop's own wheel,
a ``requirements.txt`` pinning the runtime dependencies to the versions of the recorded environment,
the model (as a one-model workspace) or the pipeline's frozen source snapshot, and ``entrypoint.py``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from mloop.core.sources import unpack_sources
from mloop.entities import ModelStatus
from mloop.errors import ConfigurationError, NotFoundError
from mloop.workspace import Workspace, parse_model_ref

__all__ = ["build_pipeline_context", "build_serve_context", "pinned_requirements"]

PORT = 8080
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(dist: str, extras: Iterable[str] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """``(name, extras)`` of ``dist``'s requirements that apply here (the given extras included)."""
    names: list[tuple[str, tuple[str, ...]]] = []
    for spec in importlib.metadata.requires(dist) or []:
        text, _, marker = spec.partition(";")
        if "extra" in marker and not any(f'"{e}"' in marker or f"'{e}'" in marker for e in extras):
            continue
        if "platform_system" in marker or "sys_platform" in marker or "python_version" in marker:
            try:
                from packaging.markers import Marker

                if not Marker(marker).evaluate({"extra": next(iter(extras), "")}):
                    continue
            except Exception:
                pass
        found = _NAME.match(text.strip())
        if found:
            wanted = tuple(e.strip() for e in (found.group(2) or "").split(",") if e.strip())
            names.append((found.group(1), wanted))
    return names


def pinned_requirements(roots: Iterable[str], recorded: Mapping[str, str]) -> list[str]:
    """``name==version`` for ``roots`` and everything they need, pinned to ``recorded`` (the version's
    environment), else to what is installed; NotFoundError names a package that cannot be resolved."""
    versions = {_canonical(k): (k, v) for k, v in recorded.items()}
    pins: dict[str, str] = {}
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(r, ()) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = _canonical(name)
        if key in pins or key in seen:
            continue
        seen.add(key)
        if key == "mloop":  # shipped as the wheel; its own runtime dependencies are pinned here
            todo.extend(_requirement_names("mloop", ("serve", "postgres")))
            continue
        if key in versions:
            pins[key] = f"{versions[key][0]}=={versions[key][1]}"
        else:
            try:
                pins[key] = f"{name}=={importlib.metadata.version(name)}"
            except importlib.metadata.PackageNotFoundError as exc:
                raise NotFoundError(
                    f"package {name!r} is needed but neither recorded nor installed: cannot pin it",
                    field="package",
                ) from exc
        try:
            todo.extend(r for r in _requirement_names(name, extras) if _canonical(r[0]) not in pins)
        except importlib.metadata.PackageNotFoundError:
            continue  # pinned from the record; its own requirements are pinned when they are recorded too
    return sorted(pins.values(), key=str.lower)


def _wheel(out: Path) -> Path:
    """mloop's wheel: copied when one is given in ``MLOOP_WHEEL``, else built from the source tree."""
    given = os.environ.get("MLOOP_WHEEL")
    if given:
        if not Path(given).is_file():
            raise ConfigurationError(f"MLOOP_WHEEL {given} does not exist", field="wheel")
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(given, out / Path(given).name))
    source = Path(__file__).resolve().parents[2]  # the tree holding the mloop package
    if not (source / "pyproject.toml").is_file():
        raise ConfigurationError(
            "mloop is not installed from a source tree: cannot build its wheel", field="wheel"
        )
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    wheels = sorted(out.glob("mloop-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise ConfigurationError(f"building mloop's wheel failed: {tail}", field="wheel")
    return wheels[-1]


def _dockerfile(python: str, *, serve: bool) -> str:
    health = (
        f"HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \\\n"
        f'  CMD ["python", "-c", "import urllib.request; '
        f"urllib.request.urlopen('http://127.0.0.1:{PORT}/v2/health/ready', timeout=2)\"]\n"
        f"EXPOSE {PORT}\n"
        if serve
        else ""
    )
    return f"""\
# Written by `mloop build`. Build: docker build -t NAME .
FROM python:{python}-slim-bookworm AS build
WORKDIR /build
COPY requirements.txt ./
COPY wheels/ ./wheels/
RUN python -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt \\
 && /opt/venv/bin/pip install --no-cache-dir --no-deps ./wheels/*.whl

FROM python:{python}-slim-bookworm
RUN useradd --create-home --uid 10001 mloop
COPY --from=build /opt/venv /opt/venv
COPY --chown=mloop:mloop app/ /app/
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 MLOOP_CACHE_DIR=/tmp/mloop-cache
USER 10001
WORKDIR /app
{health}ENTRYPOINT ["python", "/app/entrypoint.py"]
"""


_SERVE_ENTRY = """\
\"\"\"Serve {name}@{alias} from the workspace bundled in this image (written by `mloop build serve`).\"\"\"
import os
import sys

from mloop.cli import main

port = os.environ.get("PORT", "{port}")
host = os.environ.get("HOST", "0.0.0.0")
here = os.path.dirname(os.path.abspath(__file__))
sys.exit(main(["serve", "{name}", "--alias", "{alias}", "--host", host, "--port", port,
               "--workspace", os.path.join(here, "workspace", ".mloop"), *sys.argv[1:]]))
"""

_PIPELINE_ENTRY = """\
\"\"\"Run the frozen pipeline {ref} (written by `mloop build pipeline`). Extra arguments (--param k=v,
--workspace DIR, --json) go to `mloop run`; the workspace defaults to $MLOOP_WORKSPACE.\"\"\"
import os
import sys

from mloop.cli import main

here = os.path.dirname(os.path.abspath(__file__))
params = {params}
args = ["run", os.path.join(here, "pipeline", "{entry}")]
for key, value in params.items():
    args += ["--param", f"{{key}}={{value}}"]
sys.exit(main([*args, *sys.argv[1:]]))
"""


def _write_common(out: Path, requirements: list[str], python: str, *, serve: bool) -> None:
    (out / "app").mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (out / "Dockerfile").write_text(_dockerfile(python, serve=serve), encoding="utf-8")
    (out / ".dockerignore").write_text("**/__pycache__\n", encoding="utf-8")
    _wheel(out / "wheels")


def build_serve_context(workspace: Workspace, ref: str, out: Path) -> Path:
    """A context serving model ``NAME@ALIAS`` (or ``NAME:VERSION``) with mloop's prediction service."""
    name, _, alias = parse_model_ref(ref)
    version = workspace.model_version(ref)
    alias = alias or "production"
    art = workspace.metadata.get_artifact(version.artifact_id)
    data = workspace.artifacts.get(art.digest)
    out.mkdir(parents=True, exist_ok=True)
    python = platform.python_version()
    packages = {
        d.metadata["Name"]: d.version for d in importlib.metadata.distributions() if d.metadata["Name"]
    }
    _write_common(out, pinned_requirements(["mloop"], packages), python, serve=True)
    bundled = Workspace.open(out / "app" / "workspace" / ".mloop", metadata_url="", artifact_url="")
    try:
        copy = bundled.store_bytes(data, type=art.type, python_type=art.python_type)
        registry = bundled.registry
        new = registry.register(
            name,
            artifact_id=copy.id,
            run_id=None,
            signature=version.signature,
            metrics=version.metrics,
            tags={**version.tags, "source": f"{name}:{version.version}"},
            status=ModelStatus.REGISTERED,
            who="mloop build",
        )
        registry.set_alias(name, alias, new.version, who="mloop build", reason=f"built from {ref}")
    finally:
        bundled.close()
    entry = _SERVE_ENTRY.format(name=name, alias=alias, port=PORT)
    (out / "app" / "entrypoint.py").write_text(entry, encoding="utf-8")
    return out


def _third_party(files: Mapping[str, bytes]) -> set[str]:
    """Distributions the snapshot imports (the project's own modules excluded)."""
    own = {rel.split("/")[0].removesuffix(".py") for rel in files}
    mapping = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for data in files.values():
        for node in ast.walk(ast.parse(data)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else (
                    [node.module]
                    if isinstance(node, ast.ImportFrom) and node.module and not node.level
                    else []
                )
            )
            for top in {n.split(".")[0] for n in names} - own - set(sys.stdlib_module_names):
                found.update(mapping.get(top, [top]))
    return found


def build_pipeline_context(workspace: Workspace, ref: str, out: Path) -> Path:
    """A context running deployed pipeline ``NAME`` / ``NAME@ALIAS`` / ``NAME:VERSION``, pinned to the
    environment the version recorded when it was deployed."""
    from mloop.core.loader import parse_pipeline_ref

    parsed = parse_pipeline_ref(ref)
    if parsed is None:
        raise NotFoundError(
            f"{ref!r} is not a deployed pipeline reference (NAME, NAME@ALIAS, NAME:VERSION)", field="pipeline"
        )
    version = workspace.pipelines.get_version(parsed[0], parsed[1], alias=parsed[2])
    files = unpack_sources(workspace.artifacts.get(version.snapshot_digest))
    out.mkdir(parents=True, exist_ok=True)
    roots = ["mloop", *sorted(_third_party(files))]
    _write_common(out, pinned_requirements(roots, version.packages), version.python_version, serve=False)
    for rel, data in files.items():
        (out / "app" / "pipeline" / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / "app" / "pipeline" / rel).write_bytes(data)
    rel, _, function = version.entry.rpartition(":")
    entry = _PIPELINE_ENTRY.format(
        ref=version.ref, entry=f"{rel}:{function}", params=json.dumps(version.params)
    )
    (out / "app" / "entrypoint.py").write_text(entry, encoding="utf-8")
    (out / "app" / "pipeline_version.json").write_text(
        json.dumps({"ref": version.ref, "code_hash": version.code_hash, "git_commit": version.git_commit})
        + "\n"
    )
    return out
