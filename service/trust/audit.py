"""The audit log: an append-only, hash-chained record of every state-changing request and every
job state change.

Each line holds who (tenant, key id, or `system` for a worker), what (`POST /v1/jobs`,
`job.status`, ...), when, the request's SHA-256 and a little detail, plus `prev_hash` and
`hash` = SHA-256 of the canonical JSON of all of them (see `line_hash`). A line's hash covers the
one before, so an edited line no longer matches its hash and a deleted one breaks the chain;
`audit_head` keeps the last sequence number and hash, so deleting lines from the end shows too.
The database also refuses UPDATE and DELETE on `audit_log` (a trigger, migration 0003).

Appending locks the head row, so lines form one chain across processes. A job's state change is
appended just before its transaction commits (after every other lock the transaction takes),
so the head is held only for a moment and never while waiting for another row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from lethe.evidence.certificate import canonical_json, finite
from lethe.service.infra.db import AuditEntry, AuditHead, Job, transaction, utcnow

GENESIS = "0" * 64
HEAD_ID = 1
FIELDS = (
    "seq",
    "ts",
    "tenant",
    "key_id",
    "actor",
    "action",
    "target",
    "status_code",
    "request_sha256",
    "detail",
    "prev_hash",
)
_PENDING = "lethe_audit_pending"
MAX_PROBLEMS = 20


def line_hash(line: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a line's FIELDS (`ts` in ISO 8601, microseconds)."""
    return hashlib.sha256(canonical_json({k: line.get(k) for k in FIELDS})).hexdigest()


def as_dict(row: AuditEntry) -> dict[str, Any]:
    """A line as exported (JSONL) and as hashed."""
    return {
        "seq": row.seq,
        "ts": row.ts.isoformat(timespec="microseconds"),
        "tenant": row.tenant,
        "key_id": row.key_id,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "status_code": row.status_code,
        "request_sha256": row.request_sha256,
        "detail": row.detail or {},
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


@dataclass(frozen=True)
class Line:
    """What a caller records; the chain fields are added by `append`."""

    actor: str
    action: str
    tenant: str | None = None
    key_id: str | None = None
    target: str | None = None
    status_code: int | None = None
    request_sha256: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def append(session: Session, line: Line) -> AuditEntry:
    """Append one line in the session's transaction (taking the head's lock until commit)."""
    # UPDATE first: it takes the row lock (PostgreSQL) or the write lock (SQLite) before reading.
    seq, prev = session.execute(
        update(AuditHead)
        .where(AuditHead.id == HEAD_ID)
        .values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.hash)
    ).one()
    values = {
        **line.__dict__,
        "detail": finite(json.loads(json.dumps(line.detail, default=str))),
        "seq": seq,
        "ts": utcnow(),
        "prev_hash": prev,
    }
    digest = line_hash({**values, "ts": values["ts"].isoformat(timespec="microseconds")})
    row = AuditEntry(**values, hash=digest)
    session.add(row)
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(hash=digest))
    return row


def record(sessions: sessionmaker[Session], line: Line) -> AuditEntry:
    """Append one line in a transaction of its own (a request's line)."""
    with transaction(sessions) as session:
        return append(session, line)


def record_on_commit(session: Session, line: Line) -> None:
    """Append `line` when the session's transaction commits (and not at all if it rolls back)."""
    # listeners on this session only, attached on first use: importing this module changes no
    # other session's behaviour
    if not event.contains(session, "before_commit", _append_pending):
        event.listen(session, "before_commit", _append_pending)
        event.listen(session, "after_rollback", _drop_pending)
    session.info.setdefault(_PENDING, []).append(line)


def _append_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    for line in pending or ():
        append(session, line)


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def job_status_line(job: Job | None, job_id: Any, payload: dict[str, Any]) -> Line:
    """The line of a job's state change (the traceback of a failure stays in the job's events)."""
    detail = {k: v for k, v in payload.items() if k != "traceback"}
    return Line(
        actor="system",
        action="job.status",
        tenant=job.tenant if job else None,
        target=f"job:{job_id}",
        detail=detail,
    )


# ------------------------------------------------------------------ verification
@dataclass
class ChainReport:
    checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


def _gap(last: int, seq: int) -> str:
    if seq <= last:
        return f"line {seq} is out of order after line {last}"
    missing = f"line {last + 1}" if seq == last + 2 else f"lines {last + 1}-{seq - 1}"
    return f"{missing} {'is' if seq == last + 2 else 'are'} missing: deleted (the next line is {seq})"


def verify_lines(
    lines: Iterable[dict[str, Any]], head: tuple[int, str] | None = None, *, partial: bool = False
) -> ChainReport:
    """Check each line's hash and its link to the line before; with `head`, also the end.

    `partial`: the lines are a filtered export, so gaps in `seq` are expected and only lines
    that follow each other directly are checked for their link.
    """
    report = ChainReport()
    for line in lines:
        seq = line.get("seq")
        if not isinstance(seq, int):
            report.problem(f"a line after line {report.last_seq} has no valid seq: {seq!r}")
            continue
        follows = seq == report.last_seq + 1
        if not follows and not partial:
            report.problem(_gap(report.last_seq, seq))
        elif follows and line.get("prev_hash") != report.last_hash:
            report.problem(
                f"line {seq} does not follow line {report.last_seq}: its prev_hash is not that line's hash"
            )
        if line_hash(line) != line.get("hash"):
            report.problem(f"line {seq} was edited: its content does not match its hash")
        report.checked += 1
        report.last_seq, report.last_hash = seq, str(line.get("hash"))
    if head is not None:
        if head[0] != report.last_seq:
            report.problem(
                f"the log ends at line {report.last_seq} but the head records line "
                f"{head[0]}: lines were deleted from the end"
            )
        elif head[1] != report.last_hash:
            report.problem(f"line {report.last_seq}'s hash is not the one the head records")
    return report


def iter_lines(session: Session, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every line in order, read in batches."""
    after = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(batch)
            )
        )
        yield from (as_dict(r) for r in rows)
        if len(rows) < batch:
            return
        after = rows[-1].seq


def head(session: Session) -> tuple[int, str]:
    row = session.get(AuditHead, HEAD_ID)
    return (row.seq, row.hash) if row else (0, GENESIS)


def verify_database(sessions: sessionmaker[Session]) -> ChainReport:
    """Check the whole chain in the database against its head."""
    with sessions() as session:
        top = head(session)
        return verify_lines(iter_lines(session), top)


# ------------------------------------------------------------------ queries
@dataclass(frozen=True)
class Filters:
    tenant: str
    action: str | None = None
    key_id: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def query(filters: Filters, after: int = 0) -> Select[Any]:
    """A tenant's lines in order (tenant scoping: an admin sees only its own tenant's lines)."""
    q = select(AuditEntry).where(AuditEntry.tenant == filters.tenant, AuditEntry.seq > after)
    if filters.action:
        q = q.where(AuditEntry.action == filters.action)
    if filters.key_id:
        q = q.where(AuditEntry.key_id == filters.key_id)
    if filters.target:
        q = q.where(AuditEntry.target == filters.target)
    if filters.since:
        q = q.where(AuditEntry.ts >= filters.since)
    if filters.until:
        q = q.where(AuditEntry.ts < filters.until)
    return q.order_by(AuditEntry.seq)
