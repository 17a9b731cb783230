"""Keeping the database and the workers in step: no job stays `running` or `queued` forever.

- **Heartbeat check**: a running job whose heartbeat is older than `job_lease_s` lost its worker.
  It is queued again and dispatched (the next worker resumes from its checkpoint), failed with the
  reason once its workers vanished `max_attempts` times (a graceful drain is no such time: see
  `claim.give_up`), or cancelled if a cancel was asked for.
- **Reconciler**: a queued job that the broker no longer holds for a live consumer (Redis
  restarted without persistence, a publish that was lost, a message delivered to a worker that
  died: see `lethe.worker.broker_scan` for how a dead worker's unacknowledged message is told
  from a live one's) is dispatched again. A job must be missing on two passes in a row, so a
  message in flight between the queue and a worker is not doubled; were it doubled anyway, the
  atomic claim still runs the job once.

The API runs both every `maintenance_interval_s` on a background thread (`Maintenance`); each
step is an atomic UPDATE, so several API processes may run them at once.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lethe.service.infra import idempotency
from lethe.service.infra.db import Job, affected, transaction, utcnow
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs import resume_store
from lethe.service.jobs.claim import give_up
from lethe.service.jobs.records import add_event

log = logging.getLogger(__name__)


def check_heartbeats(rt: Runtime) -> dict[uuid.UUID, str]:
    """Requeue, fail or cancel running jobs whose worker vanished; {job id: new status}."""
    stale = utcnow() - timedelta(seconds=rt.settings.job_lease_s)
    lost = (Job.status == "running", Job.heartbeat_at < stale)
    changed: dict[uuid.UUID, str] = {}
    with transaction(rt.sessions) as session:
        rows = session.execute(
            select(Job.id, Job.attempts, Job.queue, Job.cancel_requested).where(*lost)
        ).all()
        for job_id, attempts, _queue, cancel in rows:
            status = _settle(session, rt, job_id, attempts, cancel, lost)
            if status is not None:
                changed[job_id] = status
    queues = {job_id: queue for job_id, _a, queue, _c in rows}
    for job_id, status in changed.items():
        if status == "queued":
            _dispatch(rt, job_id, queues[job_id])
        else:  # ended: no worker will resume it, so its checkpoints in storage go
            resume_store.discard(rt.storage, job_id)
    return changed


def _settle(
    session: Session, rt: Runtime, job_id: uuid.UUID, attempts: int, cancel: bool, lost: tuple[Any, ...]
) -> str | None:
    """One lost job's new status (None if another process settled it first)."""
    if not cancel and give_up(session, rt.settings, Job.id == job_id, *lost):
        return "failed"
    status = "cancelled" if cancel else "queued"
    payload: dict[str, Any] = (
        {"reason": "its worker vanished after the cancel request"}
        if cancel
        else {"reason": "its worker stopped sending heartbeats", "attempt": attempts}
    )
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempts == attempts, *lost)
        .values(status=status, finished_at=utcnow() if cancel else None)
    )
    if not affected(done):
        return None
    add_event(session, job_id, "status", {"status": status, **payload})
    return status


def _dispatch(rt: Runtime, job_id: uuid.UUID, queue: str) -> None:
    if rt.dispatcher is None:  # a runtime without workers (tests): the job stays queued
        log.warning("job %s: no dispatcher to send it to", job_id)
        return
    try:
        rt.dispatcher.dispatch(job_id, queue)
    except Exception:  # the broker is down: the reconciler dispatches it once it is back
        log.warning("job %s: could not dispatch it again yet", job_id, exc_info=True)


class Reconciler:
    """Dispatches again the queued jobs the broker lost (see the module's docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.suspects: set[uuid.UUID] = set()

    def run_once(self) -> list[uuid.UUID]:
        """One pass: the ids dispatched again."""
        dispatcher = self.rt.dispatcher
        held = dispatcher.pending() if dispatcher is not None else None
        if dispatcher is None or held is None:
            return []
        with self.rt.sessions() as session:
            queued = dict(session.execute(select(Job.id, Job.queue).where(Job.status == "queued")).all())
        held_now = dispatcher.pending() or set()  # again: messages in flight during the query
        missing = set(queued) - held - held_now
        again = sorted(missing & self.suspects)
        self.suspects = missing - set(again)
        for job_id in again:
            log.warning("job %s is queued but the broker does not hold it: dispatching it again", job_id)
            with transaction(self.rt.sessions) as session:
                add_event(session, job_id, "dispatched", {"reason": "the broker had lost it"})
            _dispatch(self.rt, job_id, queued[job_id])
        return again


class Maintenance:
    """A daemon thread of the API: heartbeat check, reconciler, expired idempotency keys."""

    def __init__(self, rt: Runtime) -> None:
        self.rt, self.reconciler = rt, Reconciler(rt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lethe-maintenance", daemon=True)

    def start(self) -> None:
        if self.rt.settings.maintenance_interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def run_once(self) -> None:
        for step in (check_heartbeats, lambda rt: self.reconciler.run_once(), idempotency.forget_expired):
            try:
                step(self.rt)
            except Exception:  # a database or broker blip: the next round tries again
                log.warning("maintenance step failed", exc_info=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.rt.settings.maintenance_interval_s):
            self.run_once()
