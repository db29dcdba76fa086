"""``mloop.Client``: the team server's REST API from Python (and from ``mloop … --server URL``).

Every method is one HTTP call returning the decoded JSON. An error response becomes the mloop error
of the same code (a 404 is :class:`~mloop.errors.NotFoundError`, a 401 :class:`UnauthorizedError`…),
so code written against a local workspace catches the same exceptions against a server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from mloop import errors
from mloop.errors import MloopError, StoreUnavailableError

__all__ = ["Client"]

_BY_CODE = {
    cls.code: cls
    for cls in (getattr(errors, name) for name in errors.__all__)
    if isinstance(cls, type) and issubclass(cls, MloopError) and cls.__init__ is MloopError.__init__
}
_BY_CODE["bad_request"] = errors.ParameterError  # the server's malformed-parameter 400 (deps.BadRequestError)


class Client:
    """A team server at ``url``; ``token`` defaults to ``$MLOOP_TOKEN``. Use as a context manager."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        token = token if token is not None else os.environ.get("MLOOP_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(f"cannot reach the team server at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()["error"]
                cls = _BY_CODE.get(body.get("code"), MloopError)
                raise cls(str(body.get("message")), field=body.get("field"))
            except (ValueError, KeyError, TypeError):
                raise MloopError(
                    f"team server answered {response.status_code}: {response.text[:200]}"
                ) from None
        return response

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._request("POST", path, json=dict(body)).json()

    # runs ---------------------------------------------------------------------------------------

    def runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        trigger: str | None = None,
        where: Sequence[str] = (),
        since: str | None = None,
        until: str | None = None,
        sort: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page: ``{"runs": [...], "next_cursor": str | None}``. ``where`` holds conditions such as
        ``"metric.accuracy>=0.9"`` or ``"param.lr=0.1"``; ``sort`` is ``created_at`` or ``metric.K``,
        prefixed with ``-`` for descending."""
        params: dict[str, Any] = {
            "pipeline": pipeline,
            "status": status,
            "trigger": trigger,
            "since": since,
            "until": until,
            "sort": sort,
            "limit": limit,
            "cursor": cursor,
        }
        query = [(k, str(v)) for k, v in params.items() if v is not None] + [("where", w) for w in where]
        return self._request("GET", "/runs", params=query).json()

    def iter_runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every matching run, page after page."""
        cursor = None
        while True:
            page = self.runs(cursor=cursor, **filters)
            yield from page["runs"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def run(self, run_id: str) -> dict[str, Any]:
        """A run with its steps, params, metrics and outputs."""
        return self._get(f"/runs/{_segment(run_id)}")

    def run_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Every logged point of every metric of a run, in the order they were logged."""
        return self._get(f"/runs/{_segment(run_id)}/metrics")["metrics"]

    def metric_series(self, run_id: str, key: str) -> list[dict[str, Any]]:
        return self._get(f"/runs/{_segment(run_id)}/metrics/{_segment(key)}")["points"]

    def artifact(self, artifact_id: str) -> dict[str, Any]:
        return self._get(f"/artifacts/{_segment(artifact_id)}")

    def artifact_content(self, artifact_id: str) -> bytes:
        """The artifact's bytes, verified against its digest by the server."""
        return self._request("GET", f"/artifacts/{_segment(artifact_id)}/content").content

    def lineage(self, ref: str, direction: str = "upstream") -> dict[str, Any]:
        return self._get(f"/lineage/{_segment(ref)}", direction=direction)

    # models -------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return self._get("/models")["models"]

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self._get(f"/models/{_segment(name)}/versions")["versions"]

    def history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        return self._get(f"/models/{_segment(name)}/history", alias=alias)["events"]

    def promote(self, name: str, version: int, alias: str = "production", *, reason: str) -> dict[str, Any]:
        """Move ``alias`` to ``version`` (editor role; recorded in the audit trail with ``reason``)."""
        body = {"version": version, "reason": reason}
        return self._post(f"/models/{_segment(name)}/aliases/{_segment(alias)}", body)

    def rollback(self, name: str, alias: str = "production", *, reason: str) -> dict[str, Any]:
        body = {"reason": reason}
        return self._post(f"/models/{_segment(name)}/aliases/{_segment(alias)}/rollback", body)

    def model_version(self, ref: str) -> dict[str, Any]:
        """``{"version", "run", "pipeline_version"}`` of ``NAME`` (newest), ``NAME:VERSION`` or
        ``NAME@ALIAS``: the version, the run that made it, the deployed pipeline version that run ran."""
        return self._get(f"/model-versions/{_segment(ref)}")

    def evaluations(self, name: str, version: int) -> dict[str, Any]:
        """Evaluations, validation verdicts and infra checks recorded by the run that made a version."""
        return self._get(f"/models/{_segment(name)}/versions/{int(version)}/evaluations")

    def monitoring(self, name: str, *, run_id: str | None = None) -> dict[str, Any]:
        """The latest recorded monitoring report of a model (``run``, ``report`` with its windows), or
        that of the monitor run ``run_id``."""
        return self._get(f"/models/{_segment(name)}/monitoring", run_id=run_id)

    def rollout(self, name: str) -> dict[str, Any]:
        """A model's rollout: policy, production, canary, the version a manual rollout waits with."""
        return self._get(f"/models/{_segment(name)}/rollout")

    def approve_rollout(self, name: str, version: int, *, reason: str) -> dict[str, Any]:
        """Promote the version a manual rollout waits with to production (editor role; audited)."""
        return self._post(f"/models/{_segment(name)}/rollout/approve", {"version": version, "reason": reason})

    def reject_rollout(self, name: str, version: int, *, reason: str) -> dict[str, Any]:
        """Decline the version a manual rollout waits with (editor role; audited)."""
        return self._post(f"/models/{_segment(name)}/rollout/reject", {"version": version, "reason": reason})

    # deployed pipelines -------------------------------------------------------------------------

    def pipeline_versions(self, name: str | None = None) -> dict[str, Any]:
        """``{"versions": [...], "aliases": {name: {alias: version}}}``: every deployed version, or
        those of ``name``."""
        return self._get("/pipeline-versions", name=name)

    def pipeline_version(self, ref: str) -> dict[str, Any]:
        """The version ``NAME`` (production), ``NAME:VERSION`` or ``NAME@ALIAS`` names."""
        return self._get(f"/pipeline-versions/{_segment(ref)}")

    def pipeline_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every alias move of a deployed pipeline (of ``alias`` only), oldest first."""
        return self._get(f"/pipelines/{_segment(name)}/history", alias=alias)["events"]

    # feature store ------------------------------------------------------------------------------

    def feature_definitions(self) -> list[dict[str, Any]]:
        """Every entity, feature view and feature service (latest versions)."""
        return self._get("/features/definitions")["definitions"]

    def feature_definition(self, name: str) -> dict[str, Any]:
        """One definition: kind, latest spec, versions and (for a view) its last materialization."""
        return self._get(f"/features/definitions/{_segment(name)}")

    def feature_freshness(
        self, features: Sequence[str] | None = None, *, service: str | None = None
    ) -> dict[str, Any]:
        """Per view: the newest event time the online store holds, its age, the last materialization."""
        query = [("feature", f) for f in features or ()] + ([("service", service)] if service else [])
        return self._request("GET", "/features/freshness", params=query).json()["views"]

    def online_features(
        self,
        entities: Sequence[Mapping[str, Any]],
        features: Sequence[str] | None = None,
        *,
        service: str | None = None,
    ) -> list[dict[str, Any]]:
        """The latest values by entity key (``VIEW:FEATURE`` references or a feature service's)."""
        body = {
            "entities": [dict(e) for e in entities],
            "features": list(features) if features is not None else None,
            "service": service,
        }
        return self._post("/features/online", body)["rows"]

    # triggers and audit -------------------------------------------------------------------------

    def trigger_events(
        self, trigger: str | None = None, limit: int = 100, status: str | None = None
    ) -> list[dict[str, Any]]:
        return self._get("/triggers/events", trigger=trigger, limit=limit, status=status)["events"]

    def fire_trigger(self, trigger: str, *, reason: str) -> dict[str, Any]:
        """Record a pending manual event for ``trigger``: the scheduler starts its run (editor role).
        The pipeline is the trigger's own, from the workspace's configuration."""
        return self._post(f"/triggers/{_segment(trigger)}/fire", {"reason": reason})

    def triggers(self) -> list[dict[str, Any]]:
        """Configured triggers with their scheduler state."""
        return self._get("/triggers")["triggers"]

    def scheduler_status(self) -> list[dict[str, Any]]:
        """Each configured trigger: last evaluation and result, last firing, next due time, latest event."""
        return self._get("/scheduler/status")["triggers"]

    def tokens(self) -> list[dict[str, Any]]:
        """Every token, never a secret or a hash (admin role)."""
        return self._get("/tokens")["tokens"]

    def audit(self, *, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self._get("/audit", target=target, limit=limit)["entries"]


def _segment(value: str) -> str:
    """``value`` as one path segment: slashes escaped, and ``.``/``..`` spelled with ``%2E`` so that
    the URL is not normalised to another route (``/runs/.`` would be the runs list)."""
    quoted = quote(str(value), safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
