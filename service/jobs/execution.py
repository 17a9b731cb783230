"""Running one job on a worker: claim it, resolve its data, call the engine, store the results.

Both transports (a Celery task, the embedded thread) call `execute_job`. It is idempotent:
a job is claimed with one atomic UPDATE (queued, or running with an expired lease), and the claim
number (`attempts`) fences every later write, so a second delivery of the same task, or a worker
that lost its lease, changes nothing. A heartbeat thread keeps the lease and polls cancellation.
"""

from __future__ import annotations

import logging
import shutil
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from lethe.service.infra.db import Artifact, CertificateRecord, Job, affected, transaction, utcnow
from lethe.service.infra.errors import ServiceError
from lethe.service.infra.retry import retry_db
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs import fairness, resume_store
from lethe.service.jobs.claim import (
    Claim,
    Heartbeat,
    LeaseLost,
    Outcome,
    attempts_left,
    claim_job,
    fenced,
    requeue,
)
from lethe.service.jobs.progress import Reporter
from lethe.service.jobs.records import add_event
from lethe.service.jobs.resume_store import ResumeStore
from lethe.service.storage import artifacts
from lethe.service.storage.resolve import resolve_datasets
from lethe.service.trust import certificates

log = logging.getLogger(__name__)


def describe(err: BaseException) -> str:
    """The error message users see: engine errors speak for themselves, others get their type."""
    from lethe.core.errors import USER_ERRORS

    if isinstance(err, (*USER_ERRORS, ServiceError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


def store_files(
    rt: Runtime, claim: Claim, files: list[artifacts.PackedFile], fence: Callable[[], None]
) -> list[Artifact]:
    """Upload each file to storage first; the rows are written later with the final status.
    Keys carry the attempt: a worker that lost the job cannot replace the objects of the attempt
    that took it over (their rows carry that attempt's hashes), even with an upload that slipped
    past its `fence` between the check and the write; only the attempt that finishes, fenced in
    the database, writes rows, so a stale attempt's objects are never served."""
    rows = []
    for f in files:
        key = f"jobs/{claim.job_id}/a{claim.attempt}/{f.name}"
        fence()
        rt.storage.put_file(key, f.path)
        rows.append(
            Artifact(
                job_id=claim.job_id,
                name=f.name,
                storage_key=key,
                size=f.size,
                sha256=f.sha256,
                content_type=f.content_type,
            )
        )
    return rows


@retry_db()  # a finished run is not thrown away for a dropped connection
def finish(
    rt: Runtime,
    claim: Claim,
    status: str,
    *,
    rows: list[Artifact],
    metrics: dict | None = None,
    error: str | None = None,
    payload: dict[str, Any] | None = None,
    evidence: dict[str, Any] | None = None,
) -> None:
    """Write the final state, the artifact rows and a success's certificate evidence in one
    transaction, if the claim still holds."""
    with transaction(rt.sessions) as session:
        done = session.execute(
            fenced(claim).values(status=status, finished_at=utcnow(), metrics=metrics, error=error)
        )
        if not affected(done):
            raise LeaseLost(str(claim.job_id))
        session.execute(delete(Artifact).where(Artifact.job_id == claim.job_id))  # from an earlier try
        session.add_all(rows)
        if evidence is not None:
            session.merge(CertificateRecord(job_id=claim.job_id, evidence=evidence, created_at=utcnow()))
        add_event(
            session,
            claim.job_id,
            "status",
            {"status": status, **({"error": error} if error else {}), **(payload or {})},
        )


def _run_engine(rt: Runtime, claim: Claim, work: Path, beat: Heartbeat) -> Any:
    from lethe.core.run.pipeline import run_job
    from lethe.core.spec.job import parse_spec

    spec = resolve_datasets(rt, parse_spec(claim.spec), work / "datasets")
    # checkpoints go to storage too, so a worker on another machine resumes where this one stops
    snapshots = ResumeStore(rt.storage, claim.job_id, claim.attempt, work / "run", beat.ensure_held)
    snapshots.restore()
    hooks = replace(Reporter(rt, claim, beat).hooks(), on_checkpoint=snapshots.save)
    return run_job(spec, work / "run", hooks)


def write_report_safely(run_dir: Path) -> None:
    """The run's report.html; a job whose report cannot be drawn still succeeds (logged)."""
    from lethe.core.run.report_html import write_report

    try:
        write_report(run_dir)
    except Exception:
        log.warning("could not write the report of %s", run_dir, exc_info=True)


def _run_claimed(rt: Runtime, claim: Claim, work: Path, beat: Heartbeat) -> str:
    """Run the claimed job to a final state and return it, or "requeued" if the worker's drain
    flag stopped it at a checkpoint, or a process of a multi-device job failed and the job has
    attempts left (it counts as one, like a vanished worker)."""
    from lethe.core.training.distributed import RankFailed
    from lethe.core.training.hooks import Cancelled, Paused

    run_dir = work / "run"
    try:
        summary = _run_engine(rt, claim, work, beat)
        if beat.cancel.is_set():  # asked to stop while the last stage ran: honour it
            raise Cancelled("cancelled after the last stage")
        beat.ensure_held()
        write_report_safely(run_dir)
        rows = store_files(rt, claim, artifacts.collect(run_dir, succeeded=True), beat.ensure_held)
        metrics = {k: summary.metrics.get(k) for k in ("before", "after")}
        finish(
            rt,
            claim,
            "succeeded",
            rows=rows,
            metrics=metrics,
            payload={"stopped_reason": summary.stopped_reason},
            evidence=certificates.collect_evidence(rt, claim.spec, work, rows),
        )
        return "succeeded"
    except Paused as stop:
        if not requeue(rt, claim, f"its worker is shutting down ({stop}); it resumes there", drained=True):
            raise LeaseLost(str(claim.job_id)) from None
        return "requeued"
    except RankFailed as err:  # a device or its process died: another try resumes from a checkpoint
        if attempts_left(rt, claim) > 0:
            log.warning("job %s: %s; queued again", claim.job_id, err)
            if not requeue(rt, claim, f"a process of the job failed ({err}); it resumes", drained=False):
                raise LeaseLost(str(claim.job_id)) from None
            return "requeued"
        return _fail(rt, claim, run_dir, beat, err)
    except Cancelled:
        if beat.lost.is_set():
            raise LeaseLost(str(claim.job_id)) from None
        finish(rt, claim, "cancelled", rows=_logs(rt, claim, run_dir, beat))
        return "cancelled"
    except LeaseLost:
        raise
    except Exception as err:
        return _fail(rt, claim, run_dir, beat, err)


def _fail(rt: Runtime, claim: Claim, run_dir: Path, beat: Heartbeat, err: Exception) -> str:
    log.exception("job %s failed", claim.job_id, exc_info=err)
    tail = "".join(traceback.format_exception(err)[-3:])[-4000:]
    rows = _logs(rt, claim, run_dir, beat)
    finish(rt, claim, "failed", rows=rows, error=describe(err), payload={"traceback": tail})
    return "failed"


def _logs(rt: Runtime, claim: Claim, run_dir: Path, beat: Heartbeat) -> list[Artifact]:
    """The logs of a run that did not succeed, stored if storage allows (best effort)."""
    try:
        return store_files(rt, claim, artifacts.collect(run_dir, succeeded=False), beat.ensure_held)
    except Exception:
        log.warning("could not store the logs of job %s", claim.job_id, exc_info=True)
        return []


def execute_job(rt: Runtime, job_id: uuid.UUID, drain: threading.Event | None = None) -> Outcome:
    """Run a queued job (or take over one whose worker vanished) to its end; once `drain` is set
    (the worker shuts down), stop it at a checkpoint and queue it again (REQUEUED)."""
    claimed = claim_job(rt, job_id)
    if claimed is Outcome.SKIPPED:  # ended without a worker (cancelled while queued, given up)
        _discard_if_ended(rt, job_id)
    if not isinstance(claimed, Claim):
        return claimed
    work = rt.settings.work_root / str(job_id)
    log.info("job %s: attempt %d starts in %s", job_id, claimed.attempt, work)
    try:
        with Heartbeat(rt, claimed, drain) as beat:
            status = _run_claimed(rt, claimed, work, beat)
    except LeaseLost:
        log.warning("job %s: another worker took it over; this attempt stops", job_id)
        return Outcome.DONE
    log.info("job %s: %s", job_id, status)
    if status == "requeued":  # its checkpoints stay: the next attempt resumes from them
        return Outcome.REQUEUED
    resume_store.discard(rt.storage, job_id)  # the job ended: nothing will resume it
    if not rt.settings.keep_work_dirs:
        shutil.rmtree(work, ignore_errors=True)  # checkpoints are only needed to resume
    return Outcome.DONE


def _discard_if_ended(rt: Runtime, job_id: uuid.UUID) -> None:
    """Delete the snapshots of a job that ended; a job queued again meanwhile keeps them."""
    with rt.sessions() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    if status in ("succeeded", "failed", "cancelled"):
        resume_store.discard(rt.storage, job_id)


def requeue_orphans(rt: Runtime) -> list[tuple[uuid.UUID, str]]:
    """Embedded mode, at start: jobs left running by a previous process go back to the queue;
    return every queued job (oldest first) for the in-process worker to take."""
    with transaction(rt.sessions) as session:
        orphans = list(session.scalars(select(Job.id).where(Job.status == "running")))
        for job_id in orphans:
            session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
            add_event(session, job_id, "status", {"status": "queued", "reason": "service restarted"})
        queued = session.execute(
            select(Job.id, Job.queue).where(Job.status == "queued").order_by(Job.created_at)
        ).all()
    return [(job_id, queue) for job_id, queue in queued]


def next_waiting(rt: Runtime, queue: str) -> uuid.UUID | None:
    """The queued job of `queue` a worker should start now that a job of it ended: the oldest
    of the tenant next in turn (`fairness`). The transports dispatch it at once, so a job that
    waited for its tenant's quota or its turn starts when the slot frees, not at its retry (up
    to `quota_retry_after_s` later); a second message for a job is harmless (the claim)."""
    with rt.sessions() as session:
        turns = fairness.waiting_tenants(session, rt.settings, queue)
        if not turns:
            return None
        tenant = min(turns, key=lambda name: turns[name].key())
        return session.scalar(
            select(Job.id)
            .where(Job.status == "queued", Job.queue == queue, Job.tenant == tenant)
            .order_by(Job.created_at, Job.id)
            .limit(1)
        )
