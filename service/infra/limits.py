"""Limits on what one request or one tenant may take: row sizes, names, and job quotas.

Body sizes are enforced while the body streams in (`lethe.api.app.LimitsAndMetrics`); here are
the checks that need the parsed content or the database. Quotas: `tenant_max_queued` queued jobs
per tenant (a submission over it gets 429 with Retry-After) and `tenant_max_running` running at
once (a worker defers a job of a tenant at its limit). Both counts are taken under a per-tenant
lock, so two submissions at the same moment cannot both take the last place.
"""

from __future__ import annotations

import re
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lethe.service.infra import locks
from lethe.service.infra.db import Job, JobEvent, utcnow
from lethe.service.infra.errors import Invalid, ServiceError, TooLarge, TooMany
from lethe.service.infra.settings import Settings

if TYPE_CHECKING:
    from lethe.core.data.examples import Example
    from lethe.service.infra.runtime import Runtime

_SPACE = re.compile(r"\s+")
_ROW_OF_ID = re.compile(r":(\d+)(?::\d+)?$")  # example ids end in `:ROW` (`:ROW:K` for pku_saferlhf)


def sanitise_name(raw: str | None, fallback: str = "upload", limit: int = 200) -> str:
    """A display name safe in logs, headers and file names: the last path part, printable
    characters only (no control, format or separator characters), whitespace collapsed."""
    base = re.split(r"[\\/]", raw or "")[-1]
    kept = "".join(ch for ch in base if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    name = _SPACE.sub(" ", kept).strip().strip(".")
    return name[:limit] or fallback


def check_example_sizes(examples: Sequence[Example], settings: Settings, shown_as: str) -> None:
    """413 naming the first example over `max_row_kb` (prompt and answer together, UTF-8); 422
    naming the first one whose text is not Unicode (see `_utf8_size`)."""
    limit = settings.max_row_kb * 1024
    for number, example in enumerate(examples, start=1):
        size = _utf8_size(example, number, shown_as)
        if size > limit:
            raise TooLarge(
                f"{shown_as}: example {number} is {size // 1024} KiB, over the "
                f"{settings.max_row_kb} KiB limit per example (LETHE_MAX_ROW_KB): split or "
                "shorten it"
            )


def _utf8_size(example: Example, number: int, shown_as: str) -> int:
    """Bytes of the example's prompt and answer in UTF-8.

    A JSON file may hold a lone surrogate escape (`"\\ud800"`): valid JSON, but no character, so
    it cannot be stored, tokenised or shown. Refused here, naming the row, rather than failing
    later (as a 500 here, or a failed job).
    """
    size = 0
    for part, text in (("prompt", example.prompt), ("answer", example.response)):
        try:
            size += len(text.encode())
        except UnicodeEncodeError as err:
            found = _ROW_OF_ID.search(example.id)
            where = f"row {int(found.group(1)) + 1}" if found else f"example {number}"
            raise Invalid.one(
                "file", f"{shown_as}: {where}: the {part} {not_text(err.object[err.start : err.end])}"
            ) from None
    return size


def not_text(bad: str) -> str:
    """What is wrong with a lone surrogate and what to do, for a message."""
    return (
        f"holds {ascii(bad)}, half of a UTF-16 surrogate pair and not a character: replace it "
        "with the character it stands for, or remove it"
    )


def lone_surrogate(value: object) -> tuple[str, str] | None:
    """(dotted path, the bad characters) of the first string or key in parsed JSON holding a lone
    surrogate escape, or None. Walked with a list, not recursion: the JSON may be nested as deep as
    its parser allows."""
    pending: deque[tuple[str, object]] = deque([("", value)])
    while pending:
        path, item = pending.popleft()
        texts = [(path, item)] if isinstance(item, str) else []
        if isinstance(item, dict):
            texts = [(_child(path, key), str(key)) for key in item]
            pending.extend((_child(path, key), sub) for key, sub in item.items())
        elif isinstance(item, list):
            pending.extend((_child(path, i), sub) for i, sub in enumerate(item))
        for where, text in texts:
            try:
                text.encode()
            except UnicodeEncodeError as err:
                return where, err.object[err.start : err.end]
    return None


def _child(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


@contextmanager
def tenant_lock(rt: Runtime, tenant: str) -> Iterator[None]:
    """Serialises quota checks of one tenant across threads and API processes."""
    with locks.blob_lock(rt, f"tenant:{tenant}"):
        yield


def count_jobs(session: Session, tenant: str, status: str) -> int:
    query = select(func.count()).select_from(Job).where(Job.tenant == tenant, Job.status == status)
    return int(session.scalar(query) or 0)


def check_queue_quota(session: Session, settings: Settings, tenant: str) -> None:
    """429 when the tenant already has `tenant_max_queued` jobs waiting (its own limit, if
    `tenant_limits` sets one)."""
    settings = settings.for_tenant(tenant)
    queued = count_jobs(session, tenant, "queued")
    if queued >= settings.tenant_max_queued:
        raise TooMany(
            f"tenant {tenant} has {queued} queued jobs, the most allowed "
            f"(LETHE_TENANT_MAX_QUEUED={settings.tenant_max_queued}): retry once some have "
            "started, or cancel some",
            settings.quota_retry_after_s,
        )


def may_start(session: Session, settings: Settings, tenant: str) -> bool:
    """Whether another job of `tenant` may start running now (its own limit, if `tenant_limits`
    sets one)."""
    return count_jobs(session, tenant, "running") < settings.for_tenant(tenant).tenant_max_running


# ------------------------------------------------------------------ time budget of a running job
class OverBudget(ServiceError):
    """A running job past its time budget: the run stops and the job fails with this message
    (a ServiceError, so the job's error shows the message itself)."""


class RunBudget:
    """The time a job may run, over all its attempts (`running_time_s`): `job_time_budget_s`, or
    the tenant's own (`tenant_limits`). A job taken over after its worker died, or resumed after a
    drain, goes on with what its earlier attempts left, not a fresh budget. Checked by the
    engine's hooks at every step and stage, so a job is stopped between two steps."""

    def __init__(self, seconds: float, elapsed_s: float = 0.0) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds - elapsed_s  # monotonic: clock changes do not count

    @classmethod
    def of_job(cls, rt: Runtime, job_id: uuid.UUID) -> RunBudget:
        with rt.sessions() as session:
            tenant = session.scalar(select(Job.tenant).where(Job.id == job_id))
            if tenant is None:
                return cls(0.0)
            elapsed = running_time_s(session, job_id, utcnow())
        return cls(rt.settings.for_tenant(tenant).job_time_budget_s, elapsed)

    def check(self) -> None:
        """OverBudget once the budget is spent; nothing without a budget (0)."""
        now = time.monotonic()
        if self.seconds > 0 and now > self._deadline:
            ran = self.seconds + now - self._deadline
            raise OverBudget(
                f"stopped after {ran:.0f} s: over this deployment's time budget of "
                f"{self.seconds:g} s per job (LETHE_JOB_TIME_BUDGET_S); ask for fewer steps or a "
                "smaller job, or ask an admin for a larger budget"
            )


def running_time_s(session: Session, job_id: uuid.UUID, now: datetime) -> float:
    """Seconds the job has run, over all its attempts, from its status events (a handful of rows).

    An attempt runs from its `running` event to its last sign of work: the drain's own `queued`
    event (the worker stopped it at a checkpoint), else the last event it wrote (stage, progress)
    before the next status change; the attempt running now counts up to `now`. So waiting in the
    queue (after a drain, a requeue, or while deferred by a quota) does not count, nor does the
    lease a dead worker's job waited out before it was taken over."""
    marks = session.execute(
        select(JobEvent.id, JobEvent.ts, JobEvent.payload)
        .where(JobEvent.job_id == job_id, JobEvent.kind == "status")
        .order_by(JobEvent.id)
    ).all()
    total = 0.0
    for index, (event_id, started, payload) in enumerate(marks):
        if payload.get("status") != "running":
            continue
        following = tuple(marks[index + 1]) if index + 1 < len(marks) else None
        ended = _attempt_end(session, job_id, (event_id, started), following, now)
        total += max(0.0, (ended - started).total_seconds())
    return total


def _attempt_end(
    session: Session,
    job_id: uuid.UUID,
    start: tuple[int, datetime],
    following: tuple[int, datetime, dict[str, Any]] | None,
    now: datetime,
) -> datetime:
    """When the attempt begun by the `running` event `start` (id, time) last worked; `following`:
    the next status event (id, time, payload), None for the attempt running now."""
    if following is None:
        return now
    end_id, end_ts, payload = following
    if payload.get("drained"):  # written by the attempt itself as it stopped
        return end_ts
    last = session.scalar(
        select(func.max(JobEvent.ts)).where(
            JobEvent.job_id == job_id, JobEvent.id > start[0], JobEvent.id < end_id
        )
    )
    return last if last is not None else start[1]
