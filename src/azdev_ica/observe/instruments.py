"""Per-process instruments (requests, gate decisions) and the `/metrics` exposition.

Without `PROMETHEUS_MULTIPROC_DIR` (tests, embedded use) each app keeps its own registry.
Under `ica serve` the directory is set (`observe/multiproc.py`): every worker writes its
counters and histograms to its own files there, and the worker that answers a scrape adds
up all workers' files with prometheus-client's `MultiProcessCollector`. The database gauges
(`observe/collector.py`) are computed by that one worker, never summed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import azdev_ica
from azdev_ica.observe import multiproc

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from azdev_ica.services.context import ServiceContext

__all__ = ["CONTENT_TYPE", "Instruments", "RequestMetricsMiddleware"]

# Prometheus 2 reads 0.0.4; the names ICA exports need nothing of 1.0.0 (UTF-8 names).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Seconds; an answer of the gate is meant to come in well under one.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"
# Any other method counts as OTHER: a client must not be able to mint new series at will.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Registered(Collector):
    """The app's own registry, as one collector of a scrape's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


class _BuildInfo(Collector):
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ica_build_info", "The running ICA version", labels=["version"])
        info.add_metric([azdev_ica.__version__], 1)
        yield info


class Instruments:
    """The counters and histograms one app updates, and the text `/metrics` answers."""

    def __init__(self) -> None:
        self.directory = multiproc.directory()
        # In multiprocess mode values live in the directory's files, not in a registry.
        self.registry = None if self.directory is not None else CollectorRegistry()
        self.requests = Counter(
            "ica_http_requests",
            "HTTP requests answered, per route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ica_http_request_duration_seconds",
            "Time to answer an HTTP request, per route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gate_decisions = Counter(
            "ica_gate_decisions",
            "Answers of the gate, per target and status (allow, deny, pending)",
            ["tenant", "stage", "status"],
            registry=self.registry,
        )
        self.gate_reasons = Counter(
            "ica_gate_decision_reasons",
            "Reasons given by the gate's answers, per status and reason code",
            ["status", "reason"],
            registry=self.registry,
        )
        self.workers = Gauge(
            "ica_workers",
            "Server worker processes running (dead workers are dropped)",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.workers.set(1)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def observe_gate(self, *, tenant: str, stage: str, status: str, reasons: list[str]) -> None:
        self.gate_decisions.labels(tenant, stage, status).inc()
        for reason in reasons:
            self.gate_reasons.labels(status, reason).inc()

    def exposition(self, ctx: ServiceContext) -> bytes:
        """The Prometheus text of this scrape: every worker's instruments, and the database
        gauges read once, now."""
        from azdev_ica.observe.collector import DatabaseCollector

        registry = CollectorRegistry(auto_describe=False)
        if self.directory is not None:
            from prometheus_client import multiprocess

            multiproc.mark_dead_workers(self.directory)
            multiprocess.MultiProcessCollector(registry, str(self.directory))  # type: ignore[no-untyped-call]
        else:
            assert self.registry is not None
            registry.register(_Registered(self.registry))
        registry.register(_BuildInfo())
        registry.register(DatabaseCollector(ctx))
        return generate_latest(registry)

    def close(self) -> None:
        """The worker is stopping: its live gauges stop counting."""
        if self.directory is not None:
            multiproc.mark_self_dead()


def _full_templates(app: Any) -> dict[int, list[tuple[str, str]]]:
    """Every route's full path templates with their prefixes, longest prefix first."""
    from fastapi.routing import iter_route_contexts

    found: dict[int, list[tuple[str, str]]] = {}
    for context in iter_route_contexts(getattr(app, "routes", [])):
        original = context.original_route
        full, own = str(context.path), str(getattr(original, "path", ""))
        prefix = full.removesuffix(own) if own and full.endswith(own) else ""
        found.setdefault(id(original), []).append((prefix, full))
    for templates in found.values():
        templates.sort(key=lambda item: len(item[0]), reverse=True)
    return found


class RequestMetricsMiddleware:
    """Counts every HTTP request and its latency by route template (`/run/{run_key}`, never
    the raw path: the number of series stays bounded); a path no route matches counts as
    `<unmatched>`."""

    def __init__(self, app: ASGIApp, *, instruments: Instruments) -> None:
        self.app = app
        self.instruments = instruments
        # id(route) -> [(prefix, full template)]: a router included under two prefixes (the
        # API and the seed's alias) shares its route objects, whose own path lacks the prefix.
        self._templates: dict[int, list[tuple[str, str]]] | None = None

    def _template(self, scope: Scope) -> str:
        route: Any = scope.get("route")
        own = getattr(route, "path", None)
        if route is None or not own:
            return UNMATCHED
        if self._templates is None:
            self._templates = _full_templates(scope.get("app"))
        path = scope.get("path", "")
        for prefix, template in self._templates.get(id(route), ()):
            if path.startswith(prefix):
                return template
        return str(own)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = self._template(scope)
            method = scope.get("method", "GET")
            self.instruments.observe_request(
                template,
                method if method in METHODS else "OTHER",
                status,
                time.perf_counter() - started,
            )
