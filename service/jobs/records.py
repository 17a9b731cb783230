"""The job service shared by the API and the workers: create, list, get, cancel, events, artifacts.

A job is validated completely before it is queued: the spec by pydantic (at the API boundary or
`parse_spec`), the model reference by the engine, and every dataset reference here. Running it is
`lethe.service.jobs.execution.execute_job`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lethe.core.spec.fields import DatasetRef
from lethe.core.spec.job import JobSpec
from lethe.core.spec.refs import with_refs
from lethe.service.infra import limits, tenancy
from lethe.service.infra.db import (
    JOB_STATES,
    ApiKey,
    Artifact,
    Dataset,
    Job,
    JobCallback,
    JobDataset,
    JobEvent,
    affected,
    transaction,
    utcnow,
)
from lethe.service.infra.errors import Conflict, Invalid, Problem, Unavailable
from lethe.service.infra.pages import Page, paginate
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs import placement, policy, transitions
from lethe.service.storage.datasets import check_s3_uri, dataset_id_of, hub_unreachable
from lethe.service.storage.subjects import subject_problems
from lethe.service.trust import webhooks

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ spec inspection
@dataclass(frozen=True)
class Validated:
    """A spec that passed `_validate`: as it is stored (normalised references), the datasets it
    uses, and where it runs (`placement.place`, which found a queue)."""

    spec: JobSpec
    used: set[uuid.UUID]
    placed: placement.Placement


def _check_ref(
    rt: Runtime, session: Session, path: str, ref: DatasetRef, tenant: str
) -> tuple[uuid.UUID | None, DatasetRef]:
    """Raise Invalid unless the reference can be resolved; return the dataset id it names and the
    reference as the job will store it (a plain reference normalised by the policy)."""
    field = f"{path}.source"
    source = ref.source
    try:
        dataset_id = dataset_id_of(source)
    except ValueError:
        raise Invalid.one(
            field, f"{source!r} is not dataset:<uuid>: use the id that POST /v1/datasets returned"
        ) from None
    if dataset_id is not None:
        row = session.scalars(
            tenancy.datasets(tenant).where(Dataset.id == dataset_id).with_for_update()
        ).first()
        if row is None:
            raise Invalid.one(
                field,
                f"no dataset {dataset_id}: upload it with POST /v1/datasets "
                "(or check the id with GET /v1/datasets)",
            )
        # registered while the hub was reachable (or cached), but the workers cannot read it now
        unreachable = hub_unreachable(row.source, rt.settings) if row.kind == "hub" else None
        if unreachable is not None:
            raise Invalid.one(field, f"{source} (registered as {row.source!r}) {unreachable}")
        return dataset_id, ref
    if source.startswith("s3://"):
        check_s3_uri(rt, source, field)
        return None, ref
    checked = policy.check_plain_reference(source, rt.settings, field)
    return None, ref if checked == source else ref.model_copy(update={"source": checked})


def _validate(rt: Runtime, session: Session, spec: JobSpec, tenant: str) -> Validated:
    """Check what pydantic cannot: the model reference, every dataset reference, the job's size
    (`policy.size_problems`) and that some queue's workers can run it (`placement`)."""
    from lethe.core.models.errors import ModelError
    from lethe.core.models.loading import check_model_reference

    problems = policy.model_problems(spec, rt.settings)
    try:
        if not any(p.field == "model.name" for p in problems):
            check_model_reference(spec.model)
    except ModelError as err:
        problems.append(Problem("model.name", str(err)))
    placed = placement.Placement(None)
    if not any(p.field == "model.name" for p in problems):  # only an allowed model's config is read
        placed = placement.place(spec, rt.settings)
        problems.extend(placed.problems)  # no queue's workers can run it
    used: set[uuid.UUID] = set()
    counts: dict[str, int | None] = {}  # examples of each dataset the tenant may use, by source

    def check(path: str, ref: DatasetRef) -> DatasetRef:
        try:
            dataset_id, checked = _check_ref(rt, session, path, ref, tenant)
        except Invalid as err:
            problems.extend(err.problems)
            return ref
        if dataset_id is not None:
            used.add(dataset_id)
            row = session.get(Dataset, dataset_id)  # loaded (and locked) by _check_ref
            counts[ref.source] = row.row_count if row is not None else None
        return checked

    checked_spec = with_refs(spec, check)
    if not problems:  # the subjects of an erasure request must be in its (now known) dataset
        problems.extend(subject_problems(rt, session, checked_spec))
    limits_of_tenant = rt.settings.for_tenant(tenant)  # LETHE_TENANT_LIMITS overrides
    problems.extend(policy.size_problems(spec, limits_of_tenant, lambda ref: counts.get(ref.source)))
    if problems:
        raise Invalid(problems)
    return Validated(checked_spec, used, placed)


# ------------------------------------------------------------------ create and read
def add_event(session: Session, job_id: uuid.UUID, kind: str, payload: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, payload=payload))
    if kind == "status":  # every state change is audited and sent to the job's webhook
        transitions.on_status(session, job_id, payload)


def _key_name(session: Session, key_id: str | None) -> str | None:
    """The name of the submitting key, copied onto the job: keys are never renamed or deleted."""
    if key_id is None:
        return None
    key = session.get(ApiKey, key_id)
    return key.name if key is not None else None


def create_job(
    rt: Runtime,
    spec: JobSpec,
    *,
    tenant: str,
    callback_url: str | None = None,
    submitted_by: str | None = None,
) -> Job:
    """Validate, store as queued and hand to a worker; 503 if no worker can be reached.
    `submitted_by`: the id of the API key that asked (shown as the job's "who")."""
    callback = webhooks.checked_url(rt.settings, callback_url) if callback_url else None
    with limits.tenant_lock(rt, tenant), transaction(rt.sessions) as session:
        limits.check_queue_quota(session, rt.settings, tenant)
        valid = _validate(rt, session, spec, tenant)
        spec, queue = valid.spec, valid.placed.queue or "cpu"  # a validated spec has its queue
        # exclude_unset: the worker needs to know which dataset options the user set (see
        # execution.resolve_datasets); the run folder's spec.yaml has every default filled in.
        job = Job(
            tenant=tenant,
            name=spec.name,
            status="queued",
            spec=spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
            queue=queue,
            attempts=0,
            cancel_requested=False,
            submitted_by=submitted_by,
            submitted_by_name=_key_name(session, submitted_by),
        )
        session.add(job)
        session.flush()
        if callback:
            session.add(JobCallback(job_id=job.id, url=callback))
        session.add_all(JobDataset(job_id=job.id, dataset_id=d) for d in sorted(valid.used))
        # why this queue: the memory estimate and its source, for whoever wonders where it runs
        queued = {"status": "queued", "queue": queue, "placement": valid.placed.describe()}
        add_event(session, job.id, "status", queued)
    if rt.dispatcher is None:
        raise RuntimeError("the runtime has no dispatcher (see lethe.worker.dispatch)")
    try:
        rt.dispatcher.dispatch(job.id, job.queue)
    except Exception as err:  # the broker is down: fail the job rather than leave it unseen
        log.exception("could not dispatch job %s", job.id)
        if _fail_undispatched(rt, job.id, str(err)):
            raise Unavailable(
                f"the job queue is unreachable ({err}); job {job.id} was not queued: retry later"
            ) from None
    return job


def _fail_undispatched(rt: Runtime, job_id: uuid.UUID, reason: str) -> bool:
    """Mark a job that could not be dispatched as failed; False if a worker took it after all
    (the publish went through although the broker client reported an error)."""
    with transaction(rt.sessions) as session:
        failed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="failed", error=f"could not be queued: {reason}", finished_at=utcnow())
        )
        if not affected(failed):
            return False
        add_event(session, job_id, "status", {"status": "failed", "error": reason})
        return True


def list_jobs(
    session: Session, status: str | None = None, limit: int = 50, cursor: str | None = None, *, tenant: str
) -> Page[Job]:
    query = tenancy.jobs(tenant)
    if status is not None:
        if status not in JOB_STATES:
            raise Invalid.one(
                "query.status", f"unknown status {status!r}: use one of {', '.join(JOB_STATES)}"
            )
        query = query.where(Job.status == status)
    return paginate(session, query, Job, limit, cursor)


def get_job(session: Session, job_id: uuid.UUID, *, tenant: str) -> Job:
    return tenancy.job(session, tenant, job_id)


def cancel_job(rt: Runtime, job_id: uuid.UUID, *, tenant: str) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop at its next step."""
    with transaction(rt.sessions) as session:
        job = get_job(session, job_id, tenant=tenant)
        now = utcnow()
        queued = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="cancelled", finished_at=now, cancel_requested=True)
        )
        if affected(queued):
            add_event(session, job_id, "status", {"status": "cancelled"})
        else:
            running = session.execute(
                update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True)
            )
            if not affected(running):
                raise Conflict(f"job {job_id} has already ended ({job.status}): nothing to cancel")
            add_event(session, job_id, "cancel_requested", {})
    with rt.sessions() as session:
        return get_job(session, job_id, tenant=tenant)


def list_events(
    session: Session, job_id: uuid.UUID, after: int = 0, limit: int = 1000, *, tenant: str
) -> list[JobEvent]:
    get_job(session, job_id, tenant=tenant)
    query = tenancy.events(tenant, job_id).where(JobEvent.id > after).order_by(JobEvent.id).limit(limit)
    return list(session.scalars(query))


def list_tenant_events(session: Session, after: int = 0, limit: int = 1000, *, tenant: str) -> list[JobEvent]:
    """Events of all the tenant's jobs with an id above `after`, oldest first."""
    query = tenancy.tenant_events(tenant).where(JobEvent.id > after).order_by(JobEvent.id).limit(limit)
    return list(session.scalars(query))


def has_active_jobs(session: Session, *, tenant: str) -> bool:
    """Whether any job of the tenant is queued or running (the tenant-wide stream lives while so)."""
    query = tenancy.jobs(tenant).where(Job.status.in_(("queued", "running"))).limit(1)
    return session.scalars(query.with_only_columns(Job.id)).first() is not None


def last_event_id(session: Session) -> int:
    """The newest event's id (0: none), where a stream that starts "now" begins: one step down
    the primary key (the tenant's own newest would be a join over all its events). Ids are
    global, so starting there skips nothing of the tenant's, and the id itself is never sent."""
    return int(session.scalar(select(func.max(JobEvent.id))) or 0)


def list_artifacts(session: Session, job_id: uuid.UUID, *, tenant: str) -> list[Artifact]:
    get_job(session, job_id, tenant=tenant)
    return list(session.scalars(tenancy.artifacts(tenant, job_id).order_by(Artifact.name)))


def get_artifact(session: Session, job_id: uuid.UUID, name: str, *, tenant: str) -> Artifact:
    return tenancy.artifact(session, tenant, job_id, name)
