"""The model service behind every protocol: follows the aliases, swaps versions, predicts, logs.

A watcher follows the aliases: when ``production`` (or the canary or shadow alias) moves, the new
version is loaded, digest-verified and smoke-tested in the background, then swapped in with one
reference assignment — requests in flight finish on the version they started with, none fails. A
version that fails to load is not swapped in; the old one keeps serving and the failure is reported.

A request goes through three stages: :meth:`ModelService.prepare` (key, limits, routing, online
features, validation: the request's own input errors), a model call that it may share with concurrent
requests of the same served version (:meth:`~ModelService.predict_many`, driven by
:mod:`mloop.serving.batching`), and :meth:`~ModelService.answer` (finiteness, prediction ids, log
records, metrics, shadow copy). :meth:`~ModelService.predict` is the three for one request.
Kept apart from FastAPI so it can be driven directly (replay, benchmarks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mloop.core.compiled import OnnxModel
from mloop.entities import ModelVersion, new_id
from mloop.errors import MloopError, NotFoundError
from mloop.monitoring.log import PredictionLog
from mloop.monitoring.log_schema import request_key
from mloop.serving.config import ServeConfig
from mloop.serving.features import FeatureHook
from mloop.serving.limits import check_finite
from mloop.serving.metrics import ServiceMetrics
from mloop.serving.predictor import InputError, LoadedModel, Predictor, Validation
from mloop.serving.recording import PREDICTION_ID, Recorder
from mloop.serving.traffic import Slots, choose
from mloop.workspace import Workspace

__all__ = ["PREDICTION_ID", "ModelService", "Prepared", "ServeConfig"]

log = logging.getLogger("mloop.serving")


@dataclass
class Prepared:
    """One request, checked and routed, waiting for its model call."""

    rows: list[dict[str, Any]]
    key: str | None
    role: str  # production, canary or shadow
    predictor: Predictor
    checked: Validation
    started: float  # perf_counter when its work began (the logged latency counts from here)
    entities: list[str | None] | None = None  # each row's entity keys (JSON), when served by key


# a version that fails to load is tried again after 5 s, then 10, 20, … up to 5 minutes
_RETRY_FIRST_S = 5.0
_RETRY_MAX_S = 300.0


class ModelService:
    """Everything behind the endpoints; kept apart from FastAPI so it can be driven directly."""

    def __init__(self, workspace: Workspace, config: ServeConfig, log_root: Path | None = None) -> None:
        self.ws = workspace
        self.config = config
        self.slots = Slots()
        self.metrics = ServiceMetrics()
        root = log_root or workspace.prediction_log_dir
        self.log = (
            PredictionLog(
                root,
                config.model,
                flush_interval_s=config.flush_interval_s,
                max_buffered=config.log_buffer_rows,
            )
            if config.log_predictions
            else None
        )
        self.recorder = Recorder(config.model, self.log, self.metrics)
        self._stop = threading.Event()
        self._failure: Exception | None = None  # why the last load failed, for the first refresh
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mloop-shadow")
        self._watcher: threading.Thread | None = None
        self.features = FeatureHook(workspace)  # serving by entity key (models with a feature service)
        self._registry_error: str | None = None
        # versions that failed to load: when to try again, and the pause after that (doubling)
        self._retry_at: dict[str, tuple[float, float]] = {}

    # loading ------------------------------------------------------------------------------------

    def _load(self, alias: str) -> Predictor | None:
        try:
            version = self.ws.model_version(f"{self.config.model}@{alias}")
        except NotFoundError:
            return None
        self._failure = None
        current = getattr(self.slots, self._slot_of(alias))
        if current is not None and current.loaded.version.id == version.id:
            return current
        retry = self._retry_at.get(version.id)
        if retry is not None and time.monotonic() < retry[0]:
            return current  # it failed a moment ago: not reloaded (and re-hashed, and logged) every poll
        try:
            model = self._model_of(version, alias)
            loaded = LoadedModel.from_version(version, model)
            predictor = Predictor(loaded, out_of_domain=self.config.out_of_domain)
            predictor.predict_rows([loaded.sample_row()])  # smoke test before it takes traffic
        except Exception as exc:
            self._failure = exc
            self.metrics.loads.labels(self.config.model, str(version.version), "failed").inc()
            self.slots.last_error = (
                f"v{version.version} ({alias}) failed to load: {type(exc).__name__}: {exc}"
            )
            kept = "still serving the previous version" if current is not None else "nothing served yet"
            pause = min(2 * retry[1], _RETRY_MAX_S) if retry is not None else _RETRY_FIRST_S
            self._retry_at[version.id] = (time.monotonic() + pause, pause)
            log.error("%s; %s; next try in %.0f s", self.slots.last_error, kept, pause)
            return current
        self._retry_at.pop(version.id, None)
        self.metrics.loads.labels(self.config.model, str(version.version), "loaded").inc()
        log.info("%s v%s loaded for alias %r", self.config.model, version.version, alias)
        self.metrics.alias.labels(self.config.model, alias).set(version.version)
        return predictor

    def _model_of(self, version: ModelVersion, alias: str) -> Any:
        """The compiled form when the version has one (starts without scikit-learn, model call ~20x
        faster, proven equal at registration), else the model itself; both digest-verified."""
        form = version.signature.get("serving_form") or {}
        if self.config.compiled and form.get("format") == "onnx":
            try:
                return self.ws.load_artifact(form["artifact_id"])
            except MloopError as exc:  # e.g. onnxruntime not installed here: the model itself still serves
                log.warning("v%s: its ONNX form did not load (%s); serving the model", version.version, exc)
        return self.ws.load_version(version, ref=f"{self.config.model}@{alias}")

    def _slot_of(self, alias: str) -> str:
        if alias == self.config.alias:
            return "production"
        return "canary" if alias == self.config.canary_alias else "shadow"

    def refresh(self) -> None:
        """Follow the aliases now: load what moved, swap it in (or keep the old one if it fails)."""
        production = self._load(self.config.alias)
        if production is None and self.slots.production is None:
            if isinstance(self._failure, MloopError):  # e.g. its artifact is corrupted: say that
                raise self._failure
            if self._failure is not None:  # it is there but does not load or answer: not "no alias"
                raise MloopError(
                    f"model {self.config.model!r}: {self.slots.last_error}", field="model"
                ) from self._failure
            raise NotFoundError(f"model {self.config.model!r} has no alias {self.config.alias!r} to serve")
        if production is not None:
            self.slots.production = production
        if self.config.canary_fraction > 0:
            self.slots.canary = self._load(self.config.canary_alias)
        if self.config.shadow_alias:
            self.slots.shadow = self._load(self.config.shadow_alias)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.poll_interval_s):
            try:
                self.refresh()
            except Exception as exc:  # the registry may be briefly unreachable: keep serving
                if self._registry_error is None:
                    log.warning("registry unreachable for %s: %s; still serving", self.config.model, exc)
                self._registry_error = f"registry unreachable: {type(exc).__name__}: {exc}"
                self.slots.last_error = self._registry_error
            else:
                if self._registry_error is not None:
                    log.info("registry reachable again for %s", self.config.model)
                    if self.slots.last_error == self._registry_error:
                        self.slots.last_error = None
                    self._registry_error = None
            self.recorder.count_quarantined()

    def start(self) -> None:
        self.refresh()
        if self.log is not None:
            self.log.start()
        self._watcher = threading.Thread(target=self._watch, name="mloop-alias-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._shadow_pool.shutdown(wait=True)
        if self.log is not None:
            self.log.close()

    # predicting ---------------------------------------------------------------------------------

    def _route(self, key: str | None) -> tuple[str, Predictor]:
        return choose(self.slots, self.config.canary_fraction, key)

    def serving(self, version: int) -> tuple[str, Predictor] | None:
        """``(role, predictor)`` of the served version numbered ``version`` (production, canary or
        shadow), or None when this service does not serve it."""
        for role in ("production", "canary", "shadow"):
            predictor = getattr(self.slots, role)
            if predictor is not None and predictor.loaded.version.version == version:
                return role, predictor
        return None

    def prepare(
        self, rows: list[dict[str, Any]], key: str | None = None, version: int | None = None
    ) -> Prepared:
        """One request checked and routed, ready for its model call: the key, the row limit, the
        version traffic routing picks for ``key`` (or the served ``version`` asked for), online
        features filled in, rows validated against that version's signature. Raises the request's
        own error (InputError, DataError, NotFoundError)."""
        key = request_key(key)  # a string or none, refused before it routes or is logged
        if not rows:
            raise InputError("no rows to predict", field="instances")
        if len(rows) > self.config.max_batch_rows:
            raise InputError(
                f"{len(rows)} rows exceed the limit of {self.config.max_batch_rows} per request",
                field="instances",
            )
        if version is None:
            role, predictor = self._route(key)
        else:
            pinned = self.serving(version)
            if pinned is None:
                raise NotFoundError(f"version {version} of {self.config.model!r} is not served here")
            role, predictor = pinned
        started = time.perf_counter()
        loaded = predictor.loaded
        entities = self.features.entities(loaded.version, loaded.columns, rows)
        rows = self.features.fill(loaded.version, loaded.columns, rows)
        try:
            checked = predictor.validate(rows)
        except InputError:
            self.metrics.invalid.labels(self.config.model).inc()
            raise
        for column, n in checked.out_of_domain.items():
            self.metrics.out_of_domain.labels(self.config.model, column).inc(n)
        return Prepared(rows, key, role, predictor, checked, started, entities)

    def predict_many(self, batch: Sequence[Prepared]) -> list[dict[str, Any] | Exception]:
        """Answer prepared requests with one model call per served version among them.

        Each request gets its own answer (its own prediction ids, log records and shadow copy) or
        its own error: when a version's call fails for the whole group, its requests are predicted
        one by one, so a row the model cannot take fails only the request that sent it.
        """
        groups: dict[int, list[int]] = {}
        for i, prepared in enumerate(batch):
            groups.setdefault(id(prepared.predictor), []).append(i)
        out: list[dict[str, Any] | Exception] = [RuntimeError("not predicted")] * len(batch)
        for members in groups.values():
            part = [batch[i] for i in members]
            try:
                results: list[Any] = self._model_call(part)
            except Exception as exc:
                results = [exc] if len(part) == 1 else [self._alone(p) for p in part]
            for i, result in zip(members, results, strict=True):
                out[i] = self._settle(batch[i], result)
        return out

    def predict(
        self, rows: list[dict[str, Any]], key: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """Predict ``rows`` with the version traffic routing picks for ``key`` (or the served
        ``version`` asked for), log them, and return predictions with their ids."""
        prepared = self.prepare(rows, key, version)
        result = self._settle(prepared, self._model_call([prepared])[0])
        if isinstance(result, Exception):
            raise result
        return result

    def _model_call(self, part: list[Prepared]) -> list[tuple[list[Any], list[list[float]] | None]]:
        """One model call for requests that share a served version; the answers split by request."""
        predictor = part[0].predictor
        self.metrics.of(self.metrics.model_calls, self.config.model).observe(len(part))
        return predictor.predict_batch([(p.rows, p.checked) for p in part])

    def _alone(self, prepared: Prepared) -> Any:
        try:
            return self._model_call([prepared])[0]
        except Exception as exc:  # this request's own failure
            return exc

    def _settle(self, prepared: Prepared, result: Any) -> dict[str, Any] | Exception:
        if isinstance(result, Exception):
            return result
        try:
            return self.answer(prepared, *result)
        except Exception as exc:
            return exc

    def answer(
        self,
        prepared: Prepared,
        predictions: list[Any],
        probabilities: list[list[float]] | None,
    ) -> dict[str, Any]:
        """A prepared request's answer from its predictions: checked finite, given prediction ids,
        logged (conformed to the log's types first: a value the log cannot hold is this request's
        422), counted, copied to the shadow."""
        check_finite(predictions, probabilities)  # NaN/inf is an error answer, never logged as served
        predictor, rows, role, key = prepared.predictor, prepared.rows, prepared.role, prepared.key
        latency = time.perf_counter() - prepared.started
        served = predictor.loaded.version
        request_id = new_id()  # one ULID per request; rows are numbered within it (sortable, unique)
        ids = [f"{request_id}-{i}" for i in range(len(rows))]
        # conformed to the version's pinned log types before the answer: a value the log cannot
        # hold is this request's 422, never a failed flush that takes other requests' records
        self.recorder.record(
            predictor,
            prepared.checked.columns,
            ids,
            predictions,
            probabilities,
            role,
            latency,
            key,
            prepared.entities,
        )
        self.metrics.of(self.metrics.rows, self.config.model, str(served.version), role).inc(len(rows))
        shadow = self.slots.shadow
        if shadow is not None and role != "shadow":
            self._shadow_pool.submit(self._shadow_predict, shadow, rows, ids, key)
        answer: dict[str, Any] = {
            "model": self.config.model,
            "version": served.version,
            "predictions": predictions,
            "prediction_ids": ids,
        }
        if probabilities is not None:
            answer["probabilities"] = probabilities
            answer["classes"] = predictor.loaded.classes
        return answer

    def _shadow_predict(
        self, shadow: Predictor, rows: list[dict[str, Any]], ids: list[str], key: str | None
    ) -> None:
        try:
            checked = shadow.validate(rows)
            started = time.perf_counter()
            predictions, probabilities = shadow.predict_rows(rows, checked)
            version = str(shadow.loaded.version.version)
            self.metrics.of(self.metrics.rows, self.config.model, version, "shadow").inc(len(rows))
            self.recorder.record(
                shadow,
                checked.columns,
                ids,
                predictions,
                probabilities,
                "shadow",
                time.perf_counter() - started,
                key,
            )
        except Exception as exc:  # a shadow must never hurt the live path
            log.warning("shadow prediction failed: %s", exc)

    def feedback(self, items: list[dict[str, Any]]) -> int:
        """Store delayed labels for prediction ids, checked against the production version's
        classes; all or none of ``items`` are accepted (:meth:`Recorder.feedback`)."""
        return self.recorder.feedback(items, self.slots.production)

    def describe(self) -> dict[str, Any]:
        """What is served (production, canary, shadow) and the last load or registry error."""

        def slot(p: Predictor | None) -> dict[str, Any] | None:
            if p is None:
                return None
            v = p.loaded.version
            return {
                "version": v.version,
                "id": v.id,
                "inputs": p.loaded.columns,
                "classes": p.loaded.classes,
                "runtime": "onnx" if isinstance(p.loaded.model, OnnxModel) else "python",
            }

        return {
            "production": slot(self.slots.production),
            "canary": slot(self.slots.canary),
            "canary_fraction": self.config.canary_fraction,
            "shadow": slot(self.slots.shadow),
            "last_error": self.slots.last_error,
        }
