"""Prometheus metrics: request latency and step time (observed in process), and jobs by state
and queue depth (read from the database at scrape time, so every API replica reports the truth).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from lethe.service.infra.db import JOB_STATES, Job
from lethe.service.infra.runtime import Runtime

# One registry per process for the histograms; a worker process serves it on
# LETHE_WORKER_METRICS_PORT, the API on /metrics.
REGISTRY = CollectorRegistry()
REQUEST_SECONDS = Histogram(
    "lethe_http_request_duration_seconds",
    "HTTP request latency by route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STEP_SECONDS = Histogram(
    "lethe_train_step_duration_seconds",
    "Seconds per optimizer step, by stage.",
    ["stage"],
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)


class JobsCollector(Collector):
    """Jobs by state and queued jobs by queue, counted in the database."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily("lethe_jobs", "Jobs by state.", labels=["state"])
        depth = GaugeMetricFamily("lethe_queue_depth", "Queued jobs by queue.", labels=["queue"])
        with self.rt.sessions() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            queued = session.execute(
                select(Job.queue, func.count()).where(Job.status == "queued").group_by(Job.queue)
            ).all()
        for state in JOB_STATES:
            states.add_metric([state], counts.get(state, 0))
        for queue in {"cpu", "gpu"} | {q for q, _ in queued}:
            depth.add_metric([queue], dict(queued).get(queue, 0))
        yield states
        yield depth


def exposition(rt: Runtime) -> bytes:
    """The text of /metrics: the process histograms plus the database gauges."""
    gauges = CollectorRegistry()
    gauges.register(JobsCollector(rt))
    return generate_latest(REGISTRY) + generate_latest(gauges)
