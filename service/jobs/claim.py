"""The claim on a job: taken with one atomic UPDATE, fencing every later write, kept by a heartbeat.

A job is claimed when queued, or running with an expired lease; the claim number (`attempts`)
fences every write of the attempt (`fenced`), so a second delivery of the same task, or a worker
that lost its lease, changes nothing. The heartbeat thread renews the lease and polls cancellation.
"""

from __future__ import annotations

import enum
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from lethe.service.infra import limits
from lethe.service.infra.db import Job, affected, transaction, utcnow
from lethe.service.infra.runtime import Runtime
from lethe.service.infra.settings import Settings
from lethe.service.jobs.records import add_event

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    DONE = "done"  # this call ran the job to an end (or lost it to another worker)
    BUSY = "busy"  # another worker holds a live lease: try again after the lease
    DEFERRED = "deferred"  # the job's tenant is at its running quota: try again later
    SKIPPED = "skipped"  # nothing to do: the job ended, was cancelled, or does not exist


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    attempt: int
    spec: dict[str, Any]


class LeaseLost(Exception):
    """Another worker took the job over; this one must stop without writing."""


def fenced(claim: Claim) -> Any:
    """UPDATE of the claimed job that matches only while this claim still holds it."""
    return update(Job).where(Job.id == claim.job_id, Job.attempts == claim.attempt, Job.status == "running")


def claim_job(rt: Runtime, job_id: uuid.UUID) -> Claim | Outcome:
    """Take the job (queued, or running with an expired lease) under its tenant's lock: a job of
    a tenant at its running quota is DEFERRED, one started `max_attempts` times is failed."""
    with rt.sessions() as session:
        tenant = session.scalar(select(Job.tenant).where(Job.id == job_id))
    if tenant is None:
        return Outcome.SKIPPED
    with limits.tenant_lock(rt, tenant):
        return _claim(rt, job_id, tenant)


def _claim(rt: Runtime, job_id: uuid.UUID, tenant: str) -> Claim | Outcome:
    now = utcnow()
    stale = now - timedelta(seconds=rt.settings.job_lease_s)
    claimable = or_(Job.status == "queued", and_(Job.status == "running", Job.heartbeat_at < stale))
    with transaction(rt.sessions) as session:
        if give_up(session, rt.settings, Job.id == job_id, claimable):
            return Outcome.SKIPPED
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status == "queued" and not limits.may_start(session, rt.settings, tenant):
            return Outcome.DEFERRED
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(status="running", attempts=Job.attempts + 1, heartbeat_at=now, started_at=now)
        )
        job = session.get(Job, job_id)
        if job is None or not affected(claimed):
            return Outcome.BUSY if job is not None and job.status == "running" else Outcome.SKIPPED
        session.refresh(job)
        add_event(session, job_id, "status", {"status": "running", "attempt": job.attempts})
        return Claim(job_id, job.attempts, dict(job.spec))


def give_up(session: Session, settings: Settings, *where: Any) -> bool:
    """Fail the jobs matching `where` that were started `max_attempts` times already (their
    workers kept vanishing); True if any was."""
    ids = list(session.scalars(select(Job.id).where(*where, Job.attempts >= settings.max_attempts)))
    for job_id in ids:
        reason = (
            f"its worker stopped responding {settings.max_attempts} times (no heartbeat for "
            f"{settings.job_lease_s:g} s): gave up; resubmit it, or look for what kills the "
            "worker (out of memory?)"
        )
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, *where)
            .values(status="failed", error=reason, finished_at=utcnow())
        )
        if affected(done):
            add_event(session, job_id, "status", {"status": "failed", "error": reason})
    return bool(ids)


class Heartbeat:
    """A thread that renews the lease every `heartbeat_s` and notices cancel requests."""

    def __init__(self, rt: Runtime, claim: Claim) -> None:
        self.rt, self.claim = rt, claim
        self.cancel, self.lost, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.rt.settings.heartbeat_s):
            try:
                self.beat()
            except Exception:  # a database blip must not kill the run; the next beat retries
                log.warning("heartbeat of job %s failed", self.claim.job_id, exc_info=True)

    def beat(self) -> None:
        with transaction(self.rt.sessions) as session:
            renewed = session.execute(fenced(self.claim).values(heartbeat_at=utcnow()))
            requested = session.scalar(select(Job.cancel_requested).where(Job.id == self.claim.job_id))
        if not affected(renewed):
            self.lost.set()
        if requested or self.lost.is_set():
            self.cancel.set()
