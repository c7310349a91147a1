"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
        self.recalls = Counter(
            "memproxy_recalls",
            "memory recalls by API and source (search; reused: a later agent-loop step)",
            ["api", "source"],
            registry=self.registry,
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
        self.lag = Histogram(
            "memproxy_learning_lag_seconds",
            "enqueue to applied",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

    def watch_queue(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        self.registry.register(_QueueCollector(stats))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
