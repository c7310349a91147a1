"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from memory_core.learning_report import LearningReport

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Learning lag (enqueue → applied): seconds when idle, minutes to hours behind a backlog.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600)


class _QueueCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        for key in ("pending", "leased", "dead", "oldest_age_s", "applied", "retried"):
            family = GaugeMetricFamily(f"memproxy_queue_{key}", f"learning queue: {key}")
            family.add_metric([], float(stats.get(key, 0)))
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "memproxy_requests",
            "chat requests",
            ["status", "memory_status", "upstream"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memproxy_request_seconds",
            "chat request time until the response starts",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "memproxy_memory_overhead_seconds",
            "time spent on memory before forwarding",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.recalled = Counter(
            "memproxy_memories_recalled", "memories injected", registry=self.registry
        )
        self.enqueued = Counter(
            "memproxy_learning_enqueued", "exchanges queued for learning", registry=self.registry
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
