"""Fair share of the workers across tenants: whose queued job a free worker should start next.

Jobs reach workers in the order they were queued (a Celery queue, the embedded thread's queue),
so without a rule one tenant that queues many jobs holds every worker while another tenant's job
waits behind all of them. The rule, applied when a worker claims a queued job: the job starts only
if its tenant is next in turn among the tenants with jobs queued on the same queue that may start
one (below their `tenant_max_running`). Next in turn is the tenant with the fewest running jobs on
that queue; on a tie, the one whose last job started longest ago (never: first); then the one
whose oldest queued job is oldest. Otherwise the job is deferred (`Outcome.DEFERRED`, tried again
after `quota_retry_after_s`) and the worker takes the next message, which is how the other
tenant's job reaches it. The order is total, so some tenant is always in turn: no two tenants can
defer each other for ever. Both transports claim through `lethe.service.jobs.claim`, so the rule
holds in the Celery and the embedded modes alike.

Nothing is preempted: a running job keeps its worker until it ends, or until its time budget
(`job_time_budget_s`) stops it, so another tenant's job waits at most one job slot's time.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from lethe.service.infra import limits
from lethe.service.infra.db import Job
from lethe.service.infra.settings import Settings

log = logging.getLogger(__name__)
NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Turn:
    """What orders tenants waiting for a worker (smallest first)."""

    running_here: int  # running jobs on the queue being served
    last_start: datetime  # NEVER when none of its jobs ever started
    oldest_queued: datetime

    def key(self) -> tuple[int, datetime, datetime]:
        return (self.running_here, self.last_start, self.oldest_queued)


def _aware(value: datetime | None, default: datetime) -> datetime:
    if value is None:
        return default
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def waiting_tenants(session: Session, settings: Settings, queue: str) -> dict[str, Turn]:
    """Tenants with jobs queued on `queue` that their running quota lets start one, with their turn."""
    oldest: dict[str, datetime] = dict(
        session.execute(
            select(Job.tenant, func.min(Job.created_at))
            .where(Job.status == "queued", Job.queue == queue)
            .group_by(Job.tenant)
        ).all()
    )
    if not oldest:
        return {}
    running = case((Job.status == "running", 1), else_=0)
    running_here = case((and_(Job.status == "running", Job.queue == queue), 1), else_=0)
    rows = session.execute(
        select(Job.tenant, func.sum(running), func.sum(running_here), func.max(Job.started_at))
        .where(Job.tenant.in_(list(oldest)))
        .group_by(Job.tenant)
    ).all()
    turns = {}
    for tenant, total, here, last in rows:
        if int(total or 0) >= settings.for_tenant(tenant).tenant_max_running:
            continue  # at its quota: not waiting for a worker, whatever it has queued
        turns[tenant] = Turn(int(here or 0), _aware(last, NEVER), _aware(oldest[tenant], NEVER))
    return turns


def in_turn(session: Session, settings: Settings, tenant: str, queue: str) -> bool:
    """Whether `tenant` is next in turn for a worker of `queue` (see the module's docstring)."""
    turns = waiting_tenants(session, settings, queue)
    mine = turns.get(tenant)
    others = [turn.key() for name, turn in turns.items() if name != tenant]
    if mine is None or not others:
        return True  # nobody else waits (or the job is no longer queued: the claim decides)
    return mine.key() <= min(others)


def may_start(session: Session, settings: Settings, tenant: str, job_id: uuid.UUID) -> bool:
    """Whether the queued job `job_id` of `tenant` may start now: its tenant is below its running
    quota (`limits.may_start`) and in turn for a worker of the job's queue."""
    if not limits.may_start(session, settings, tenant):
        return False
    queue = session.scalar(select(Job.queue).where(Job.id == job_id))
    if queue is None or in_turn(session, settings, tenant, queue):
        return True
    log.info("job %s: deferred, another tenant is in turn for a %s worker", job_id, queue)
    return False
