"""The service's Prometheus metrics, in a registry of its own (one per app, so tests stay apart)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServiceMetrics"]


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
            "mloop_alias_version", "Version currently served per alias", ["model", "alias"], registry=r
        )
        self.dropped = Gauge(
            "mloop_prediction_log_dropped", "Log records dropped (buffer full)", ["model"], registry=r
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def of(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the lookup is ~3 µs, a tenth of a single-row answer."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
