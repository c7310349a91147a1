"""Prometheus metrics, one registry per app (no process-global state).

Every label is bounded: routes are the app's route templates, models the configured
deployment names (a wildcard deployment counts under its pattern), stages and outcomes fixed
sets. docs/grafana-dashboard.json is built from these names (a test checks each exists).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from memory_core.learning_report import LearningReport

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Learning lag (enqueue → applied): seconds when idle, minutes to hours behind a backlog.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600)
RECALLED_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 20, 50)
QUEUE_GAUGES = ("pending", "leased", "dead", "oldest_age_s", "applied", "retried")
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _QueueCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        backend = str(stats.get("backend", "sqlite"))
        for key in QUEUE_GAUGES:
            family = GaugeMetricFamily(
                f"memproxy_queue_{key}", f"learning queue: {key}", labels=["backend"]
            )
            family.add_metric([backend], float(stats.get(key, 0)))
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "memproxy_requests",
            "chat requests",
            ["status", "memory_status", "upstream", "model"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memproxy_request_seconds",
            "chat request time until the response starts",
            ["model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "memproxy_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "memproxy_http_request_seconds",
            "HTTP request time until the response starts, by route template",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "memproxy_memory_overhead_seconds",
            "time spent on memory before forwarding, by stage (total, embed, search, inject)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.recalled = Counter(
            "memproxy_memories_recalled", "memories injected", registry=self.registry
        )
        self.recalled_per_request = Histogram(
            "memproxy_memories_recalled_per_request",
            "memories injected into one chat request",
            buckets=RECALLED_BUCKETS,
            registry=self.registry,
        )
        self.recalls = Counter(
            "memproxy_recalls",
            "memory recalls by API and source (search; reused: a later agent-loop step)",
            ["api", "source"],
            registry=self.registry,
        )
        self.enqueued = Counter(
            "memproxy_learning_enqueued", "exchanges queued for learning", registry=self.registry
        )
        # Webhook deliveries and profile rebuilds a write could not queue (docs/webhooks.md).
        self.change_events_lost = Counter(
            "memproxy_change_events_lost",
            "change jobs (webhook, profile) not queued: the queue was unreachable",
            ["kind"],
            registry=self.registry,
        )
        self.extraction = Counter(
            "memproxy_extraction_jobs",
            "learning jobs by outcome",
            ["outcome"],
            registry=self.registry,
        )
        # What learning jobs did (memory_core.learning_report): nothing is lost silently.
        self.learning_outcomes = Counter(
            "memproxy_learning_outcomes",
            "applied learning jobs by status (applied / nothing_learned)",
            ["status"],
            registry=self.registry,
        )
        self.learning_facts = Counter(
            "memproxy_learning_facts",
            "facts of learning jobs: extracted, known (stored already), unanswered (no "
            "decision from the update step), near_duplicate (folded by the duplicate guard)",
            ["kind"],
            registry=self.registry,
        )
        self.learning_decisions = Counter(
            "memproxy_learning_decisions",
            "decisions applied by learning jobs",
            ["event"],
            registry=self.registry,
        )
        self.learning_rejected = Counter(
            "memproxy_learning_rejected",
            "items of LLM answers rejected, by reason (memory_core.contracts.REASONS)",
            ["reason"],
            registry=self.registry,
        )
        self.learning_llm_calls = Counter(
            "memproxy_learning_llm_calls",
            "extraction/update LLM calls, retries included",
            registry=self.registry,
        )
        self.lag = Histogram(
            "memproxy_learning_lag_seconds",
            "enqueue to applied",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.maintenance_runs = Gauge(
            "memproxy_store_maintenance_runs",
            "store maintenance (optimize) turns of this process by outcome: ran, skipped "
            "(another replica held the lock), failed",
            ["outcome"],
            registry=self.registry,
        )
        self.table_version = Gauge(
            "memproxy_store_table_version",
            "current LanceDB version of each table",
            ["table"],
            registry=self.registry,
        )

    def observe_chat(
        self,
        *,
        model: str,
        status: int,
        memory_status: str,
        upstream: str,
        seconds: float,
    ) -> None:
        self.latency.labels(model, str(status)).observe(seconds)
        self.requests.labels(str(status), memory_status, upstream, model).inc()

    def observe_recall(
        self, overhead_s: float, stages: Mapping[str, float], recalled: int | None
    ) -> None:
        """One chat's memory overhead (whole and per stage) and, when it recalled, how many."""
        self.overhead.labels("total").observe(overhead_s)
        for stage, seconds in stages.items():
            self.overhead.labels(stage).observe(max(0.0, seconds))
        if recalled is not None:
            self.recalled.inc(recalled)
            self.recalled_per_request.observe(recalled)

    def observe_store(self, stats: Mapping[str, Mapping[str, int]]) -> None:
        for outcome, count in stats.get("maintenance", {}).items():
            self.maintenance_runs.labels(outcome).set(count)
        for table, version in stats.get("versions", {}).items():
            self.table_version.labels(table).set(version)

    def record_learning(self, report: LearningReport, *, finished: bool) -> None:
        """Count one learning job's report (``finished``: applied, else a failed attempt whose
        rejections and calls still count)."""
        if finished:
            self.learning_outcomes.labels(report.status).inc()
        for kind, count in (
            ("extracted", report.facts_extracted),
            ("known", report.facts_known),
            ("unanswered", report.facts_unanswered),
            ("near_duplicate", report.near_duplicates),
        ):
            if count:
                self.learning_facts.labels(kind).inc(count)
        for event, count in report.applied.items():
            if count:
                self.learning_decisions.labels(event).inc(count)
        for reason, count in report.rejected.counts.items():
            self.learning_rejected.labels(reason).inc(count)
        if report.llm_calls:
            self.learning_llm_calls.inc(report.llm_calls)

    def watch_queue(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        self.registry.register(_QueueCollector(stats))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class HttpMetrics:
    """ASGI middleware: every HTTP request counted by its route template (``unmatched`` when
    no route took it), method and status, timed until the response starts."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = False

        async def timed_send(message: dict[str, Any]) -> None:
            nonlocal observed
            if message["type"] == "http.response.start" and not observed:
                observed = True
                self._observe(scope, int(message["status"]), time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not observed:  # failed (or the client left) before a response started
                self._observe(scope, 500, time.perf_counter() - started)

    def _observe(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        template = str(getattr(scope.get("route"), "path", "unmatched"))
        method = str(scope.get("method", ""))
        method = method if method in HTTP_METHODS else "other"  # clients may send any token
        self.metrics.http_requests.labels(template, method, str(status)).inc()
        self.metrics.http_latency.labels(template, method).observe(seconds)
