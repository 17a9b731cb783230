"""/v1/audit: the audit log of the caller's tenant (admin), as JSON pages or a JSONL export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from lethe.api.deps import AdminDep, RuntimeDep, SessionDep
from lethe.api.schemas import ErrorOut
from lethe.service.infra.runtime import Runtime
from lethe.service.trust import audit

router = APIRouter(prefix="/v1/audit", tags=["audit"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 422, 503)}
EXPORT_BATCH = 1000


class AuditLineOut(BaseModel):
    seq: int
    ts: str
    tenant: str | None
    key_id: str | None
    actor: str = Field(description="key | anonymous | system")
    action: str = Field(
        description="`METHOD /route/path` of a request, or `job.status`, `certificate.issued`"
    )
    target: str | None
    status_code: int | None
    request_sha256: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditLineOut]
    next_after: int | None = Field(None, description="pass as ?after= for the next page; null: last page")


def _export(rt: Runtime, filters: audit.Filters, after: int) -> Iterator[bytes]:
    """JSONL, read in batches, so a long log streams without being held in memory."""
    while True:
        with rt.sessions() as session:
            rows = list(session.scalars(audit.query(filters, after).limit(EXPORT_BATCH)))
        for row in rows:
            yield (json.dumps(audit.as_dict(row), sort_keys=True) + "\n").encode()
        if len(rows) < EXPORT_BATCH:
            return
        after = rows[-1].seq


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.get("", responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}}})
def list_audit(
    rt: RuntimeDep,
    session: SessionDep,
    principal: AdminDep,
    action: Annotated[str | None, Query(description="e.g. `POST /v1/jobs`, `job.status`")] = None,
    key_id: str | None = None,
    target: Annotated[str | None, Query(description="e.g. `job:ID`")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="only lines with a larger seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Literal["json", "jsonl"] = "json",
) -> Any:
    """The tenant's audit lines in order; `format=jsonl` exports every matching line."""
    filters = audit.Filters(
        tenant=principal.tenant,
        action=action,
        key_id=key_id,
        target=target,
        since=_utc(since),
        until=_utc(until),
    )
    if format == "jsonl":
        return StreamingResponse(
            _export(rt, filters, after),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
        )
    rows = list(session.scalars(audit.query(filters, after).limit(limit + 1)))
    items = [AuditLineOut.model_validate(audit.as_dict(r)) for r in rows[:limit]]
    return AuditPage(items=items, next_after=items[-1].seq if len(rows) > limit else None)
