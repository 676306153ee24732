"""Prometheus metrics of a worker, on a registry of its own (served on `metrics_port` when set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """Queue depth, running jobs, job duration by kind, batch sizes, failures by cause, pending deliveries."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge("likeness_queue_depth", "Jobs waiting in the queue", registry=self.registry)
        self.running = Gauge("likeness_jobs_running", "Jobs running on all workers", registry=self.registry)
        self.job_seconds = Histogram(
            "likeness_job_seconds",
            "Job duration from start to delivery",
            ["kind"],
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "likeness_batch_size", "Requests per engine call", buckets=(1, 2, 3, 4, 6, 8), registry=self.registry
        )
        self.failures = Counter("likeness_job_failures", "Failed jobs by cause", ["cause"], registry=self.registry)
        self.deliveries_pending = Gauge(
            "likeness_deliveries_pending", "Deliveries not acknowledged by a bot", ["platform"], registry=self.registry
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=self.registry)
