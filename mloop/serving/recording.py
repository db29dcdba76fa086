"""What the service writes to the prediction log: each answered request's records, and delayed labels.

Records are conformed to the serving version's pinned log schema before the request is answered (a
value the log cannot hold is that request's 422, never a failed flush that takes other requests'
records), then handed to the log's buffer (:class:`~mloop.monitoring.log.PredictionLog`), which
writes them off the request path.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from mloop.entities import utcnow
from mloop.errors import ConflictError
from mloop.monitoring.log import PredictionLog
from mloop.monitoring.log_schema import conform, feedback_schema, prediction_schema
from mloop.serving.metrics import ServiceMetrics
from mloop.serving.predictor import InputError, Predictor, quoted

__all__ = ["PREDICTION_ID", "Recorder"]

log = logging.getLogger("mloop.serving")

# what the service hands out: a request's ULID and the row's number within it
# a ULID is Crockford base32, which reads either case: ids are kept in the canonical upper case; a
# row number is written without leading zeros ("-01" would be accepted and join no prediction)
# a ULID is 128 bits in 26 Crockford base-32 digits: the first is 0-7 (8-Z would not fit)
PREDICTION_ID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}-(0|[1-9][0-9]{0,8})")


class Recorder:
    """Writes one model's prediction records and labels to its log (nothing when ``log`` is None)."""

    def __init__(self, model: str, log: PredictionLog | None, metrics: ServiceMetrics) -> None:
        self.model = model
        self.log = log
        self.metrics = metrics
        # version id (or ("feedback", id)) → the log schema its records are pinned to
        self._schemas: dict[Any, Any] = {}
        self._dropped_seen = 0
        self._quarantined_seen = 0
        if log is not None:
            metrics.watch_dropped(model, self.dropped)

    def record(
        self,
        predictor: Predictor,
        columns: dict[str, list[Any]],
        ids: list[str],
        predictions: list[Any],
        probabilities: list[list[float]] | None,
        role: str,
        latency: float,
        key: str | None,
        entities: list[str | None] | None = None,
    ) -> None:
        """One request's records: its inputs (by column), answers and ids, as ``role`` served them,
        and the entity keys each row was looked up by (when it was served by key)."""
        if self.log is None:
            return
        n = len(ids)
        chunk: dict[str, list[Any]] = {
            "prediction_id": ids,
            "ts": [utcnow()] * n,
            "model": [self.model] * n,
            "version": [predictor.loaded.version.version] * n,
            "role": [role] * n,
            "latency_ms": [latency * 1000 / n] * n,
            "request_key": [key] * n,
            "entity": entities if entities is not None else [None] * n,
            "prediction": predictions,
            "probability": [max(p) for p in probabilities] if probabilities else [None] * n,
            # binary models: P(second class), what ROC-AUC needs when the labels arrive
            "score": [p[1] for p in probabilities]
            if probabilities and len(probabilities[0]) == 2
            else [None] * n,
        }
        chunk.update({f"input.{name}": values for name, values in columns.items()})
        schema = self._prediction_schema(predictor)
        self.log.append(conform(chunk, schema), schema)
        self.dropped()

    def _prediction_schema(self, predictor: Predictor) -> Any:
        loaded = predictor.loaded
        schema = self._schemas.get(loaded.version.id)
        if schema is None:
            schema = self._schemas[loaded.version.id] = prediction_schema(loaded.rules, loaded.classes)
        return schema

    def dropped(self) -> int:
        """Log records dropped so far (a counter in ``/metrics``); each new drop is logged."""
        dropped = self.log.dropped if self.log is not None else 0
        if dropped > self._dropped_seen:
            log.warning("%s: %d prediction log records dropped", self.model, dropped - self._dropped_seen)
            self._dropped_seen = dropped
        return dropped

    def count_quarantined(self) -> None:
        """Segments of this model's log that readers (monitor, scheduler) set aside as unreadable."""
        if self.log is None:
            return
        try:
            now = self.log.quarantined
        except OSError:
            return
        if now > self._quarantined_seen:
            self.metrics.of(self.metrics.quarantined, self.model).inc(now - self._quarantined_seen)
            self._quarantined_seen = now

    def feedback(self, items: list[dict[str, Any]], production: Predictor | None) -> int:
        """Store delayed labels for prediction ids; all or none of ``items`` are accepted.

        Any process serving this model accepts a label for any well-formed prediction id (a ULID and
        a row number): labels are joined to predictions when the log is read, so they survive
        restarts and reach the prediction whichever worker or replica answered it. An id the log
        never holds is counted as an unmatched label by ``mloop monitor``; a repeated id's latest
        label wins (within one request, the later item: the API's schema allows repeats). The label
        must be of the type of the production version's classes (``true`` is not ``1``; a class it
        never saw is taken: a new class is what the loop must see), or a finite number for
        regression.
        """
        classes = production.loaded.classes if production else None
        schema = self._schemas.get(("feedback", production.loaded.version.id) if production else None)
        if schema is None:
            schema = feedback_schema(classes)
            if production is not None:
                self._schemas[("feedback", production.loaded.version.id)] = schema
        ids, labels = [], []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "prediction_id" not in item or "label" not in item:
                raise InputError(
                    f"feedback[{i}]: expected {{'prediction_id': …, 'label': …}}", field=f"feedback[{i}]"
                )
            pid, label = item["prediction_id"], item["label"]
            if not isinstance(pid, str) or not PREDICTION_ID.fullmatch(pid):
                raise InputError(
                    f"feedback[{i}]: {quoted(pid)} is not a prediction id (a ULID, '-', a row number)",
                    field="prediction_id",
                )
            if classes is not None and isinstance(label, float) and not _finite(label):
                raise InputError(f"feedback[{i}]: label {quoted(label)} is not a class", field="label")
            if (
                type(label) is int
                and not -(2**63) <= label < 2**63
                and classes  # regression labels are floats: a big integer is a finite number there
                and all(type(c) is int for c in classes)
            ):
                raise InputError(
                    f"feedback[{i}]: label {quoted(label)} is beyond a 64-bit integer (the classes' type)",
                    field="label",
                )
            if classes is not None and not any(_same_kind(label, c) for c in classes):
                # a class of the classes' type the model never saw is taken: one that appeared after
                # it was trained is what the loop must see (it counts as a miss) to retrain
                raise InputError(
                    f"feedback[{i}]: label {quoted(label)} is not of the type of the model's classes "
                    f"{quoted(classes)}",
                    field="label",
                )
            if classes is None and (
                isinstance(label, bool) or not isinstance(label, int | float) or not _finite(label)
            ):
                raise InputError(
                    f"feedback[{i}]: label {quoted(label)} is not a finite number", field="label"
                )
            ids.append(pid.upper())
            labels.append(label)
        if self.log is None:  # accepted and thrown away, a caller would believe its labels counted
            raise ConflictError(
                "labels are not recorded: this server keeps no prediction log (started with --no-log)",
                field="feedback",
            )
        chunk = conform({"prediction_id": ids, "label": labels, "ts": [utcnow()] * len(ids)}, schema)
        if ids:
            self.log.feedback(chunk, schema)
        return len(ids)


def _same_kind(label: Any, cls: Any) -> bool:
    """``label`` could name a class like ``cls``: of its type (``true`` is not ``1``, ``"1"`` is not
    ``1``); an integer names a float class (JSON writes ``1.0`` as ``1``)."""
    kind = type(label)
    return kind is type(cls) or (kind is int and type(cls) is float and not isinstance(label, bool))


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False
