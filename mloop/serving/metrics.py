"""The service's Prometheus metrics, in a registry of its own (one per app, so tests stay apart)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["ServiceMetrics"]

# set by `mloop serve --workers N` (N > 1) before the workers start: see mloop.cli.serve
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
DROPPED = "mloop_prediction_log_dropped"
DROPPED_HELP = "Prediction log records dropped (buffer full or failed flush)"


class ServiceMetrics:
    """Every metric ``GET /metrics`` exposes; names and labels are documented in the README."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mloop_requests", "Requests answered", ["model", "version", "status"], registry=r
        )
        self.latency = Histogram(
            "mloop_request_latency_seconds",
            "Request latency",
            ["model", "version"],
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.rows = Counter(
            "mloop_predicted_rows", "Rows predicted", ["model", "version", "role"], registry=r
        )
        self.model_calls = Histogram(
            "mloop_model_call_requests",
            "Requests answered by one model call (concurrent requests are coalesced, up to batch_rows rows)",
            ["model"],
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.invalid = Counter(
            "mloop_validation_failures", "Requests refused by input validation", ["model"], registry=r
        )
        self.out_of_domain = Counter(
            "mloop_out_of_domain_values", "Accepted out-of-domain values", ["model", "column"], registry=r
        )
        self.loads = Counter(
            "mloop_model_loads", "Model load attempts", ["model", "version", "outcome"], registry=r
        )
        self.alias = Gauge(
            "mloop_alias_version",
            "Version currently served per alias",
            ["model", "alias"],
            registry=r,
            multiprocess_mode="mostrecent",  # one value across workers: the latest any of them set
        )
        self.http = Counter(
            "mloop_http_requests",
            "HTTP requests by route template (unmatched: no route) and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.quarantined = Counter(
            "mloop_prediction_log_quarantined_segments",
            "Prediction log segments set aside as unreadable (moved to <log>/<model>/quarantine/)",
            ["model"],
            registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._dropped: tuple[Counter, str, Callable[[], int]] | None = None
        self._dropped_seen = 0  # of the log's dropped records, how many the shared counter holds

    def of(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the lookup is ~3 µs, a tenth of a single-row answer."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def watch_dropped(self, model: str, read: Callable[[], int]) -> None:
        """Expose ``mloop_prediction_log_dropped_total{model}``, read from the log when scraped."""
        if MULTIPROCESS:  # a counter kept in the shared files, brought up to the log's count per scrape
            self._dropped = (Counter(DROPPED, DROPPED_HELP, ["model"], registry=self.registry), model, read)
        else:
            self.registry.register(_DroppedCollector(model, read))

    def exposition(self) -> bytes:
        """The text format for ``/metrics``: under ``mloop serve --workers N``, every worker's metrics
        summed from prometheus_client's multiprocess files, so any worker answers for all."""
        if not MULTIPROCESS:
            return generate_latest(self.registry)
        if self._dropped is not None:
            counter, model, read = self._dropped
            behind = read() - self._dropped_seen
            if behind > 0:
                self.of(counter, model).inc(behind)
                self._dropped_seen += behind
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone)
        return generate_latest(everyone)


class _DroppedCollector(Collector):
    """The prediction log counts its dropped records itself; a counter read at scrape time."""

    def __init__(self, model: str, read: Callable[[], int]) -> None:
        self.model, self.read = model, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(DROPPED, DROPPED_HELP, labels=["model"])
        family.add_metric([self.model], self.read())
        yield family


class RequestCounter:
    """ASGI middleware: every request counted under its route template and real status.

    Unknown paths count as route ``unmatched`` (so a scan of random URLs cannot grow the label
    set). Prediction routes also count in ``mloop_requests_total`` under the version that answered
    (``-`` when none did), read from ``request.state.version``.
    """

    def __init__(self, app: Any, metrics: ServiceMetrics, model: str, predicting: frozenset[str]) -> None:
        self.app, self.metrics, self.model, self.predicting = app, metrics, model, predicting

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            self.count(scope, getattr(route, "path", None) or "unmatched", status[0])

    def count(self, scope: Mapping[str, Any], path: str, status: int) -> None:
        """Count one answered request under its route template ``path`` and its real ``status``."""
        code = str(status)
        m = self.metrics
        m.of(m.http, path, scope.get("method", "-"), code).inc()
        if path in self.predicting:
            version = str((scope.get("state") or {}).get("version", "-"))
            m.of(m.requests, self.model, version, code).inc()
