"""/v1/audit: the audit log of the caller's tenant (admin), as JSON pages or a JSONL export
(`/v1/audit/export`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from lethe.api.deps import AdminDep, RuntimeDep, SessionDep
from lethe.api.openapi import file_content, served_type
from lethe.api.schemas import errors
from lethe.service.infra.runtime import Runtime
from lethe.service.trust import audit

router = APIRouter(prefix="/v1/audit", tags=["audit"])
ERRORS = errors(401, 403, 422, 503)
NDJSON = "application/x-ndjson"
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


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _instant(value: object) -> datetime | None:
    """An RFC 3339 date-time with its offset, or a day (its start, UTC), as the schema says:
    pydantic alone would also take a number as seconds since 1970, and a time with no zone."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        if isinstance(value, str) and DAY.match(value):
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        if isinstance(value, str) and RFC3339.match(value):
            leap = value[17:19] == "60"  # a leap second (RFC 3339 allows it; Python does not)
            return datetime.fromisoformat((value[:17] + "59" + value[19:] if leap else value).upper())
    except ValueError:  # the right shape, but no such day or time (2025-02-30)
        pass
    raise ValueError("use an RFC 3339 date-time with its offset (2025-11-01T09:30:00Z) or a day (2025-11-01)")


Instant = Annotated[
    datetime | None,
    BeforeValidator(_instant),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}
    ),
]


def audit_filters(
    principal: AdminDep,
    action: Annotated[str | None, Query(description="e.g. `POST /v1/jobs`, `job.status`")] = None,
    key_id: str | None = None,
    target: Annotated[str | None, Query(description="e.g. `job:ID`")] = None,
    since: Annotated[Instant, Query(description="only lines at or after it")] = None,
    until: Annotated[Instant, Query(description="only lines before it")] = None,
) -> audit.Filters:
    """The filters both audit operations take, scoped to the caller's tenant."""
    return audit.Filters(
        tenant=principal.tenant, action=action, key_id=key_id, target=target, since=since, until=until
    )


FiltersDep = Annotated[audit.Filters, Depends(audit_filters)]
After = Annotated[int, Query(ge=0, le=2**63 - 1, description="only lines with a larger seq")]


@router.get("", name="list", response_model=AuditPage, responses=ERRORS)
def list_audit(
    rt: RuntimeDep,
    session: SessionDep,
    filters: FiltersDep,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    # the export's old spelling, kept working but out of the schema: one operation, one type
    format: Annotated[Literal["json", "jsonl"], Query(include_in_schema=False)] = "json",
) -> Any:
    """The tenant's audit lines in order, a page at a time (`GET /v1/audit/export`: all of them)."""
    if format == "jsonl":
        return _export_response(rt, filters, after)
    rows = list(session.scalars(audit.query(filters, after).limit(limit + 1)))
    items = [AuditLineOut.model_validate(audit.as_dict(r)) for r in rows[:limit]]
    return AuditPage(items=items, next_after=items[-1].seq if len(rows) > limit else None)


@router.get(
    "/export",
    name="export",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {
            "description": "every matching line as JSON Lines (one AuditLineOut per line), or as "
            "application/octet-stream when `Accept` asks for that first",
            "content": file_content(NDJSON),
        },
    },
)
def export_audit(
    request: Request, rt: RuntimeDep, filters: FiltersDep, after: After = 0
) -> StreamingResponse:
    """Every matching audit line, streamed: what `lethe audit verify --file` checks."""
    return _export_response(rt, filters, after, served_type(request, NDJSON))


def _export_response(
    rt: Runtime, filters: audit.Filters, after: int, media_type: str = NDJSON
) -> StreamingResponse:
    return StreamingResponse(
        _export(rt, filters, after),
        media_type=media_type,
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )
