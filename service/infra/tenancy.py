"""Tenant scoping, in one place: every query a request makes for its tenant's objects starts here.

Datasets and jobs carry a `tenant` column; events and artifacts belong to the tenant of their
job. Each helper filters by tenant in the query itself, so another tenant's object is simply not
found: the same 404, with the same message, as an id that was never used.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from lethe.service.infra.db import Artifact, Dataset, Job, JobEvent
from lethe.service.infra.errors import NotFound


def jobs(tenant: str) -> Select[Any]:
    """Jobs of `tenant` (extend it with .where, .order_by ...)."""
    return select(Job).where(Job.tenant == tenant)


def datasets(tenant: str) -> Select[Any]:
    """Datasets of `tenant` that were not deleted."""
    return select(Dataset).where(Dataset.tenant == tenant, Dataset.deleted.is_(False))


def events(tenant: str, job_id: uuid.UUID) -> Select[Any]:
    return (
        select(JobEvent)
        .join(Job, Job.id == JobEvent.job_id)
        .where(Job.tenant == tenant, JobEvent.job_id == job_id)
    )


def tenant_events(tenant: str) -> Select[Any]:
    """Events of every job of `tenant` (the tenant-wide stream: one stream for a whole list)."""
    return select(JobEvent).join(Job, Job.id == JobEvent.job_id).where(Job.tenant == tenant)


def artifacts(tenant: str, job_id: uuid.UUID) -> Select[Any]:
    return (
        select(Artifact)
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.tenant == tenant, Artifact.job_id == job_id)
    )


def job(session: Session, tenant: str, job_id: uuid.UUID, *, for_update: bool = False) -> Job:
    """The tenant's job, or 404 (also when it belongs to another tenant)."""
    query = jobs(tenant).where(Job.id == job_id)
    row = session.scalars(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return row


def dataset(session: Session, tenant: str, dataset_id: uuid.UUID, *, for_update: bool = False) -> Dataset:
    """The tenant's live dataset, or 404 (also when deleted or another tenant's)."""
    query = datasets(tenant).where(Dataset.id == dataset_id)
    row = session.scalars(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return row


def artifact(session: Session, tenant: str, job_id: uuid.UUID, name: str) -> Artifact:
    """The tenant's job's artifact, or 404."""
    job(session, tenant, job_id)
    row = session.scalars(artifacts(tenant, job_id).where(Artifact.name == name)).first()
    if row is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}: GET /v1/jobs/{job_id}/artifacts lists them")
    return row
