"""What every job state change sets off, in the transaction that makes the change: a line in the
audit log and, if the job or its tenant has a callback URL, a webhook delivery.

`lethe.service.jobs.records.add_event` calls `on_status` for each `status` event, so every path that
changes a job's state (submission, claim, finish, cancel, requeue, the reconciler) is covered.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from lethe.service.infra.db import Job
from lethe.service.trust import audit, webhooks


def on_status(session: Session, job_id: uuid.UUID, payload: dict[str, Any]) -> None:
    job = session.get(Job, job_id)
    audit.record_on_commit(session, audit.job_status_line(job, job_id, payload))
    if job is not None:
        webhooks.enqueue(session, job, payload)
