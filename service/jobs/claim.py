"""The claim on a job: taken with one atomic UPDATE, fencing every later write, kept by a heartbeat.

A job is claimed when queued, or running with an expired lease; the claim number (`attempts`)
fences every write of the attempt (`fenced`), so a second delivery of the same task, or a worker
that lost its lease, changes nothing. The heartbeat thread renews the lease and polls cancellation.

Writes outside the database (the run folder shared by the workers of one machine, storage) are
fenced by `Heartbeat.ensure_held`, called before each: a process that stood still (SIGSTOP, a
swapped-out machine) past its lease may have been replaced, and learns it before writing, not at
its next heartbeat.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from lethe.service.infra import limits
from lethe.service.infra.db import Job, JobEvent, affected, transaction, utcnow
from lethe.service.infra.runtime import Runtime
from lethe.service.infra.settings import Settings
from lethe.service.jobs import fairness
from lethe.service.jobs.records import add_event

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    DONE = "done"  # this call ran the job to an end (or lost it to another worker)
    REQUEUED = "requeued"  # the worker is shutting down: the job checkpointed; dispatch it again
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
    a tenant at its running quota is DEFERRED, one whose workers vanished `max_attempts` times
    is failed (`give_up`)."""
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
        if status == "queued" and not fairness.may_start(session, rt.settings, tenant, job_id):
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
    """Fail the jobs matching `where` whose workers vanished `max_attempts` times already; True
    if any was. A claim that ended in a graceful drain (`requeue(drained=True)`: its worker was asked to
    shut down and stopped the job at a checkpoint) is no such failure: a long job that outlives
    several deploys must not be failed for them, so drains do not count."""
    candidates = session.execute(
        select(Job.id, Job.attempts).where(*where, Job.attempts >= settings.max_attempts)
    ).all()
    ids = [job_id for job_id, tries in candidates if tries - drains(session, job_id) >= settings.max_attempts]
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


def drains(session: Session, job_id: uuid.UUID) -> int:
    """How many of the job's claims ended in a graceful drain: its `queued` status events marked
    `drained` (written in the same transaction as the requeue, so the count is exact). Read only
    for jobs at their attempt limit, a handful of status rows each."""
    payloads = session.scalars(
        select(JobEvent.payload).where(JobEvent.job_id == job_id, JobEvent.kind == "status")
    )
    return sum(1 for p in payloads if p.get("status") == "queued" and p.get("drained"))


class Heartbeat:
    """A thread that renews the lease every `heartbeat_s` and notices cancel requests; `drain` is
    the worker's flag that it is shutting down (the run stops at its next checkpoint)."""

    def __init__(self, rt: Runtime, claim: Claim, drain: threading.Event | None = None) -> None:
        self.rt, self.claim = rt, claim
        self.drain = drain or threading.Event()
        self.cancel, self.lost, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job_id}", daemon=True)
        self.renewed_at = time.monotonic()  # the claim itself set the lease just now

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
        sent = time.monotonic()  # before the UPDATE: the lease runs at least from here
        with transaction(self.rt.sessions) as session:
            renewed = session.execute(fenced(self.claim).values(heartbeat_at=utcnow()))
            requested = session.scalar(select(Job.cancel_requested).where(Job.id == self.claim.job_id))
        if not affected(renewed):
            self.lost.set()
        else:
            self.renewed_at = max(self.renewed_at, sent)
        if requested or self.lost.is_set():
            self.cancel.set()

    def ensure_held(self) -> None:
        """Raise LeaseLost unless this attempt surely still holds the job: the fence of every
        write outside the database. Another worker can take the job only once the lease has run
        out since the last renewal, so within half a lease of it no query is needed; past that
        (this process stood still, or the database was unreachable) the lease is renewed here,
        synchronously, before the write. Unable to renew, the attempt stops: the job resumes from
        its checkpoint once the lease expires."""
        if self.lost.is_set():
            raise LeaseLost(str(self.claim.job_id))
        if time.monotonic() - self.renewed_at < self.rt.settings.job_lease_s / 2:
            return
        try:
            self.beat()
        except Exception as err:  # cannot confirm the claim: writing could clobber another attempt
            raise LeaseLost(f"{self.claim.job_id}: lease not renewed ({type(err).__name__})") from err
        if self.lost.is_set():
            raise LeaseLost(str(self.claim.job_id))


def requeue(rt: Runtime, claim: Claim, reason: str, *, drained: bool) -> bool:
    """Queue a job again, if the claim still holds; the next claim resumes from its last
    checkpoint. False if another worker has it. `drained`: the worker stopped the job at a
    checkpoint to shut down, no failure of it (not counted by `give_up`); otherwise the attempt
    failed in a way another try may not (a rank of a multi-device job died) and counts."""
    with transaction(rt.sessions) as session:
        done = session.execute(fenced(claim).values(status="queued"))
        if not affected(done):
            return False
        event = {"status": "queued", "reason": reason, "attempt": claim.attempt, "drained": drained}
        add_event(session, claim.job_id, "status", event)
    return True


def attempts_left(rt: Runtime, claim: Claim) -> int:
    """How many more failed attempts the job may have (`max_attempts` less those counted so far,
    this one included; drains do not count)."""
    with rt.sessions() as session:
        return rt.settings.max_attempts - (claim.attempt - drains(session, claim.job_id))
