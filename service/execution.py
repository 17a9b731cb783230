"""Running one job on a worker: claim it, resolve its data, call the engine, store the results.

Both transports (a Celery task, the embedded thread) call `execute_job`. It is idempotent:
a job is claimed with one atomic UPDATE (queued, or running with an expired lease), and the claim
number (`attempts`) fences every later write, so a second delivery of the same task, or a worker
that lost its lease, changes nothing. A heartbeat thread keeps the lease and polls cancellation.
"""

from __future__ import annotations

import enum
import logging
import shutil
import threading
import traceback
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from . import artifacts, limits, certificates
from .db import Artifact, CertificateRecord, Job, affected, transaction, utcnow
from .errors import ServiceError
from .jobs import add_event
from .progress import Reporter
from .resolve import resolve_datasets
from .retry import retry_db
from .runtime import Runtime
from .settings import Settings

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
    return update(Job).where(Job.id == claim.job_id, Job.attempts == claim.attempt,
                             Job.status == "running")


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
            update(Job).where(Job.id == job_id, claimable)
            .values(status="running", attempts=Job.attempts + 1, heartbeat_at=now,
                    started_at=now))
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
        reason = (f"its worker stopped responding {settings.max_attempts} times (no heartbeat for "
                  f"{settings.job_lease_s:g} s): gave up; resubmit it, or look for what kills the "
                  "worker (out of memory?)")
        done = session.execute(update(Job).where(Job.id == job_id, *where).values(
            status="failed", error=reason, finished_at=utcnow()))
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


def describe(err: BaseException) -> str:
    """The error message users see: engine errors speak for themselves, others get their type."""
    from lethe.core.errors import USER_ERRORS

    if isinstance(err, (*USER_ERRORS, ServiceError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


def store_files(rt: Runtime, claim: Claim, files: list[artifacts.PackedFile]) -> list[Artifact]:
    """Upload each file to storage first; the rows are written later with the final status."""
    rows = []
    for f in files:
        key = f"jobs/{claim.job_id}/{f.name}"
        rt.storage.put_file(key, f.path)
        rows.append(Artifact(job_id=claim.job_id, name=f.name, storage_key=key, size=f.size,
                             sha256=f.sha256, content_type=f.content_type))
    return rows


@retry_db()  # a finished run is not thrown away for a dropped connection
def finish(rt: Runtime, claim: Claim, status: str, *, rows: list[Artifact], metrics: dict | None = None,
           error: str | None = None, payload: dict[str, Any] | None = None,
           evidence: dict[str, Any] | None = None) -> None:
    """Write the final state, the artifact rows and a success's certificate evidence in one
    transaction, if the claim still holds."""
    with transaction(rt.sessions) as session:
        done = session.execute(fenced(claim).values(
            status=status, finished_at=utcnow(), metrics=metrics, error=error))
        if not affected(done):
            raise LeaseLost(str(claim.job_id))
        session.execute(delete(Artifact).where(Artifact.job_id == claim.job_id))  # from an earlier try
        session.add_all(rows)
        if evidence is not None:
            session.merge(CertificateRecord(job_id=claim.job_id, evidence=evidence, created_at=utcnow()))
        add_event(session, claim.job_id, "status", {"status": status, **({"error": error} if error else {}),
                                                    **(payload or {})})


def _run_engine(rt: Runtime, claim: Claim, work: Path, beat: Heartbeat) -> Any:
    from lethe.core.pipeline import run_job
    from lethe.core.spec import parse_spec

    spec = with_checkpoints(parse_spec(claim.spec), rt.settings.checkpoint_every)
    resolve_datasets(rt, spec, work / "datasets")
    return run_job(spec, work / "run", Reporter(rt, claim, beat).hooks())


def with_checkpoints(spec: Any, every: int) -> Any:
    """Give training stages that set no `checkpoint_every` the service's interval (a redelivered
    job then resumes from its last checkpoint); a spec's own choice, 0 included, is kept."""
    if every > 0:
        stages = [spec.unlearn.train] + ([spec.finetune.train] if spec.finetune is not None else [])
        for train in stages:
            if "checkpoint_every" not in train.model_fields_set:
                train.checkpoint_every = every
    return spec


def write_report_safely(run_dir: Path) -> None:
    """The run's report.html; a job whose report cannot be drawn still succeeds (logged)."""
    from lethe.core.report_html import write_report

    try:
        write_report(run_dir)
    except Exception:
        log.warning("could not write the report of %s", run_dir, exc_info=True)


def _run_claimed(rt: Runtime, claim: Claim, work: Path, beat: Heartbeat) -> str:
    """Run the claimed job to a final state; return that state."""
    from lethe.core.train import Cancelled

    run_dir = work / "run"
    try:
        summary = _run_engine(rt, claim, work, beat)
        if beat.cancel.is_set():  # asked to stop while the last stage ran: honour it
            raise Cancelled("cancelled after the last stage")
        write_report_safely(run_dir)
        rows = store_files(rt, claim, artifacts.collect(run_dir, succeeded=True))
        metrics = {k: summary.metrics.get(k) for k in ("before", "after")}
        finish(rt, claim, "succeeded", rows=rows, metrics=metrics,
               payload={"stopped_reason": summary.stopped_reason},
               evidence=certificates.collect_evidence(rt, claim.spec, work, rows))
        return "succeeded"
    except Cancelled:
        if beat.lost.is_set():
            raise LeaseLost(str(claim.job_id)) from None
        finish(rt, claim, "cancelled", rows=_logs(rt, claim, run_dir))
        return "cancelled"
    except LeaseLost:
        raise
    except Exception as err:
        log.exception("job %s failed", claim.job_id)
        tail = "".join(traceback.format_exception(err)[-3:])[-4000:]
        finish(rt, claim, "failed", rows=_logs(rt, claim, run_dir), error=describe(err),
               payload={"traceback": tail})
        return "failed"


def _logs(rt: Runtime, claim: Claim, run_dir: Path) -> list[Artifact]:
    """The logs of a run that did not succeed, stored if storage allows (best effort)."""
    try:
        return store_files(rt, claim, artifacts.collect(run_dir, succeeded=False))
    except Exception:
        log.warning("could not store the logs of job %s", claim.job_id, exc_info=True)
        return []


def execute_job(rt: Runtime, job_id: uuid.UUID) -> Outcome:
    """Run a queued job (or take over one whose worker vanished) to its end."""
    claimed = claim_job(rt, job_id)
    if not isinstance(claimed, Claim):
        return claimed
    work = rt.settings.work_root / str(job_id)
    log.info("job %s: attempt %d starts in %s", job_id, claimed.attempt, work)
    try:
        with Heartbeat(rt, claimed) as beat:
            status = _run_claimed(rt, claimed, work, beat)
    except LeaseLost:
        log.warning("job %s: another worker took it over; this attempt stops", job_id)
        return Outcome.DONE
    log.info("job %s: %s", job_id, status)
    if not rt.settings.keep_work_dirs:
        shutil.rmtree(work, ignore_errors=True)  # checkpoints are only needed to resume
    return Outcome.DONE


def requeue_orphans(rt: Runtime) -> list[tuple[uuid.UUID, str]]:
    """Embedded mode, at start: jobs left running by a previous process go back to the queue;
    return every queued job (oldest first) for the in-process worker to take."""
    with transaction(rt.sessions) as session:
        orphans = list(session.scalars(select(Job.id).where(Job.status == "running")))
        for job_id in orphans:
            session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
            add_event(session, job_id, "status", {"status": "queued", "reason": "service restarted"})
        queued = session.execute(select(Job.id, Job.queue).where(Job.status == "queued")
                                 .order_by(Job.created_at)).all()
    return [(job_id, queue) for job_id, queue in queued]
