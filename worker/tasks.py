"""Celery tasks: thin wrappers that pass a job id to the job service (ids, never objects)."""

from __future__ import annotations

import functools
import logging
import uuid

from celery import Task
from celery.signals import worker_init, worker_process_init

from lethe.service.infra.runtime import Runtime, build_runtime
from lethe.service.infra.settings import Settings
from lethe.service.jobs.claim import Outcome
from lethe.service.jobs.execution import execute_job
from lethe.worker.celery_app import app
from lethe.worker.dispatch import TASK_NAME

log = logging.getLogger(__name__)


@functools.cache
def worker_runtime() -> Runtime:
    """One runtime per worker process, built in the process that runs tasks (after the fork)."""
    return build_runtime(Settings())


@worker_init.connect
def _preload_engine(**_: object) -> None:
    # Import torch and the engine once in the parent: forked pool processes start warm, so the
    # first job does not spend seconds on imports (CUDA itself initialises later, in the child).
    import lethe.core.run.pipeline  # noqa: F401


@worker_process_init.connect
def _serve_metrics(**_: object) -> None:
    port = Settings().worker_metrics_port
    if port:
        from prometheus_client import start_http_server

        from lethe.service.infra.metrics import REGISTRY

        try:
            start_http_server(port, registry=REGISTRY)
        except OSError as err:  # a second process on the same machine: its metrics stay local
            log.warning("worker metrics port %d unavailable: %s", port, err)


@app.task(name=TASK_NAME, bind=True, max_retries=None, acks_late=True)
def run_job_task(self: Task, job_id: str) -> str:
    """Run one job; if another worker still holds it, look again once its lease could expire;
    if its tenant is at its running quota, look again after `quota_retry_after_s`."""
    outcome = execute_job(worker_runtime(), uuid.UUID(job_id))
    if outcome in (Outcome.BUSY, Outcome.DEFERRED):
        queue = (self.request.delivery_info or {}).get("routing_key")
        settings = Settings()
        wait = settings.job_lease_s if outcome is Outcome.BUSY else settings.quota_retry_after_s
        raise self.retry(countdown=wait, queue=queue)
    return outcome.value
