"""Celery tasks: thin wrappers that pass a job id to the job service (ids, never objects).

Shutdown: systemd and Docker send SIGTERM to the worker's whole process group. The main process
then stops taking tasks and waits for the running one (Celery's warm shutdown); the pool process
running the job, whose SIGTERM billiard makes an exit, instead sets `DRAIN`: the job
stops after its next training step (or at its next stage) with a checkpoint, goes back to the
queue, and resumes on another worker, where it would otherwise start again from an older
checkpoint. A pool process with no job running, or a second SIGTERM, still ends at once.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import uuid
from types import FrameType
from typing import Any

from celery import Task
from celery.signals import worker_init, worker_process_init

from lethe.service.infra.runtime import Runtime, build_runtime
from lethe.service.infra.settings import Settings
from lethe.service.jobs.claim import Outcome
from lethe.service.jobs.execution import execute_job, next_waiting
from lethe.worker.celery_app import app
from lethe.worker.dispatch import TASK_NAME

log = logging.getLogger(__name__)
DRAIN = threading.Event()  # set by SIGTERM while a job runs: stop it at a checkpoint
_RUNNING = threading.Event()
_PREVIOUS: list[Any] = [signal.SIG_DFL]  # the pool process's SIGTERM handler before `_take_sigterm`


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


def _take_sigterm() -> None:
    """Handle SIGTERM with `_on_sigterm` in this pool process, keeping the handler it replaces
    for when no job runs. Installed as each task starts, not at `worker_process_init`: billiard
    replaces the SIGTERM handler after that signal (`reset_signals` in its `Worker.after_fork`),
    so a handler installed there never fires and SIGTERM cut the job off."""
    if threading.current_thread() is not threading.main_thread():
        return  # not a prefork pool process: Python delivers signals to the main thread only
    current = signal.getsignal(signal.SIGTERM)
    if current is not _on_sigterm:
        _PREVIOUS[0] = current
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _RUNNING.is_set() and not DRAIN.is_set():
        log.warning("SIGTERM: the running job stops at its next checkpoint and is queued again")
        DRAIN.set()
        return
    # idle, or asked twice: end now, as the pool's own handler would (it runs `finally` blocks)
    previous = _PREVIOUS[0] if _PREVIOUS[0] is not None else signal.SIG_DFL  # None: set outside Python
    signal.signal(signal.SIGTERM, previous)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        os.kill(os.getpid(), signal.SIGTERM)


@app.task(name=TASK_NAME, bind=True, max_retries=None, acks_late=True)
def run_job_task(self: Task, job_id: str) -> str:
    """Run one job; if another worker still holds it, look again once its lease could expire;
    if its tenant is at its running quota, look again after `quota_retry_after_s`; if this worker
    is shutting down, send it again at once (it resumes from its checkpoint on another worker).
    A job that ended frees a slot: the job in turn for it is sent at once (`next_waiting`)."""
    queue = (self.request.delivery_info or {}).get("routing_key") or "cpu"
    _take_sigterm()
    _RUNNING.set()
    try:
        outcome = execute_job(worker_runtime(), uuid.UUID(job_id), DRAIN)
    finally:
        _RUNNING.clear()
        DRAIN.clear()  # only the job running at the SIGTERM drains; the main process takes no more
    if outcome in (Outcome.BUSY, Outcome.DEFERRED, Outcome.REQUEUED):
        settings = Settings()
        waits = {Outcome.BUSY: settings.job_lease_s, Outcome.DEFERRED: settings.quota_retry_after_s}
        raise self.retry(countdown=waits.get(outcome, 0), queue=queue)
    if outcome is Outcome.DONE:
        _start_next(queue)
    return outcome.value


def _start_next(queue: str) -> None:
    """Send the job in turn for the slot this one freed (best effort: its retry still comes)."""
    try:
        waiting = next_waiting(worker_runtime(), queue)
        if waiting is not None:
            app.send_task(TASK_NAME, args=[str(waiting)], queue=queue)
    except Exception:
        log.warning("could not send the next waiting job of queue %s", queue, exc_info=True)
