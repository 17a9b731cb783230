"""/v1/jobs: submit, list, get, cancel, events (JSON, or server-sent events at /events/stream),
artifacts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from lethe.api.deps import IdempotencyKey, ReadDep, RuntimeDep, SessionDep, SubmitDep
from lethe.api.openapi import event_stream, file_content, served_type
from lethe.api.schemas import ArtifactOut, EventOut, JobDetail, JobOut, JobPage, JobStatus, errors
from lethe.core.spec.job import JobSpec
from lethe.service.infra import idempotency
from lethe.service.infra.db import FINAL_STATES, Artifact, Job, JobEvent
from lethe.service.infra.object_store import iter_chunks
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs import records as service
from lethe.service.storage.artifacts import RUN_FILES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
READ_ERRORS = errors(401, 403, 404, 422, 503)
# every type an artifact is served with (adapter.tar.gz, then the run folder's files)
ARTIFACT_TYPES = sorted({"application/gzip", *(kind.split(";")[0] for kind in RUN_FILES.values())})
SSE_POLL_S = 0.5
CallbackUrl = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="called (signed) on every state "
        "change of this job, instead of the tenant's default webhook",
    ),
]
SSE_KEEPALIVE_S = 15.0


def job_detail(job: Job) -> JobDetail:
    return JobDetail.model_validate(job)


@router.post(
    "",
    name="submit",
    status_code=status.HTTP_201_CREATED,
    response_model=JobDetail,
    responses={
        **errors(401, 403, 409, 413, 422, 429, 503),
        201: {"headers": {"ETag": {"description": "the answer's version", "schema": {"type": "string"}}}},
    },
)
def submit_job(
    rt: RuntimeDep,
    principal: SubmitDep,
    spec: JobSpec,
    idempotency_key: IdempotencyKey = None,
    callback_url: CallbackUrl = None,
) -> Response:
    """Validate a job spec completely (model, datasets, hyperparameters) and queue it.

    With an `Idempotency-Key`, a retry returns the job the first request made. The `ETag` is the
    one GET /v1/jobs/{id} gives the same answer, so polling can start with `If-None-Match`."""
    slot = (
        idempotency.Slot(principal.tenant, "POST /v1/jobs", idempotency.check_key(idempotency_key))
        if idempotency_key is not None
        else None
    )
    request: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if callback_url is not None:  # part of the request: a retry with another callback is another request
        request = {"spec": request, "callback_url": callback_url}
    digest = idempotency.body_hash(request)
    job_id, replayed = idempotency.run_once(
        rt,
        slot,
        digest,
        lambda: (
            service.create_job(
                rt, spec, tenant=principal.tenant, callback_url=callback_url, submitted_by=principal.key_id
            ).id
        ),
    )
    body = _job_json(rt, job_id, principal.tenant)  # serialised as GET does: the same ETag
    headers = {"Location": f"/v1/jobs/{job_id}", "ETag": _etag(body), "Cache-Control": "no-cache"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body, status_code=status.HTTP_201_CREATED, media_type="application/json", headers=headers)


@router.get("", name="list", responses=errors(401, 403, 422, 503))
def list_jobs(
    session: SessionDep,
    principal: ReadDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JobPage:
    page = service.list_jobs(session, status, limit, cursor, tenant=principal.tenant)
    return JobPage(items=[JobOut.model_validate(j) for j in page.items], next_cursor=page.next_cursor)


def _read_job(rt: Runtime, job_id: uuid.UUID, tenant: str) -> JobDetail:
    with rt.sessions() as session:
        return job_detail(service.get_job(session, job_id, tenant=tenant))


def _job_json(rt: Runtime, job_id: uuid.UUID, tenant: str) -> bytes:
    """The job as the JSON body of GET /v1/jobs/{id}: one query, serialised once (a returned
    model would be validated again against the response model, a second walk over the spec)."""
    return _read_job(rt, job_id, tenant).model_dump_json().encode()


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _not_modified(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison: a listed tag (with or without W/) or `*` matches."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


IfNoneMatch = Annotated[
    str | None,
    Header(
        max_length=2000,
        description="the `ETag` of an earlier answer: 304 with no body while the job is unchanged",
    ),
]


@router.get(
    "/{job_id:uuid}",
    name="get",
    response_model=JobDetail,
    responses={
        **READ_ERRORS,
        200: {"headers": {"ETag": {"description": "the answer's version", "schema": {"type": "string"}}}},
        304: {"description": "not modified: the job is as it was when its `ETag` was given"},
    },
)
async def get_job(
    rt: RuntimeDep, principal: ReadDep, job_id: uuid.UUID, if_none_match: IfNoneMatch = None
) -> Response:
    """The job's status, stage, progress, metrics and error (the endpoint clients poll). Send the
    `ETag` back in `If-None-Match` to get a 304 while nothing changed."""
    body = await run_in_threadpool(_job_json, rt, job_id, principal.tenant)
    headers = {"ETag": _etag(body), "Cache-Control": "no-cache"}
    if _not_modified(if_none_match, headers["ETag"]):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.post("/{job_id:uuid}/cancel", name="cancel", responses=errors(401, 403, 404, 409, 413, 422, 503))
def cancel_job(rt: RuntimeDep, principal: SubmitDep, job_id: uuid.UUID) -> JobDetail:
    """Cancel: a queued job at once, a running one at its next training step."""
    return job_detail(service.cancel_job(rt, job_id, tenant=principal.tenant))


def _poll(rt: Runtime, job_id: uuid.UUID, after: int, tenant: str) -> tuple[str, list[JobEvent]]:
    with rt.sessions() as session:
        state = service.get_job(session, job_id, tenant=tenant).status  # read first: no event is missed
        return state, service.list_events(session, job_id, after, tenant=tenant)


def _sse(event: JobEvent) -> str:
    data = json.dumps(
        {"id": event.id, "ts": event.ts.isoformat(), "kind": event.kind, "payload": event.payload}
    )
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


def _closing(request: Request) -> threading.Event:
    """Set when the server shuts down (`lethe serve` sets it on SIGTERM): open streams end, so an
    idle follower of a long job does not keep the process from exiting; an EventSource reconnects
    (to another replica) with Last-Event-ID and misses nothing."""
    closing = getattr(request.app.state, "closing", None)
    return closing if isinstance(closing, threading.Event) else threading.Event()


async def _stream(
    rt: Runtime, job_id: uuid.UUID, after: int, tenant: str, closing: threading.Event
) -> AsyncIterator[str]:
    """Events as they are written, until the job has ended and every event was sent, or the
    server shuts down."""
    last, quiet = after, 0.0
    while not closing.is_set():
        state, events = await run_in_threadpool(_poll, rt, job_id, last, tenant)
        for event in events:
            yield _sse(event)
            last = event.id
        if state in FINAL_STATES and len(events) < 1000:
            return
        quiet = 0.0 if events else quiet + SSE_POLL_S
        if quiet >= SSE_KEEPALIVE_S:  # a comment line keeps proxies from closing an idle stream
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(SSE_POLL_S)


def _event_stream(
    rt: Runtime, job_id: uuid.UUID, after: int, tenant: str, closing: threading.Event
) -> StreamingResponse:
    return StreamingResponse(
        _stream(rt, job_id, after, tenant, closing),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


AfterEvent = Annotated[int, Query(ge=0, le=2**63 - 1, description="only events with a larger id")]
# an integer, not nullable: a header has no null (a generator would send the text "null")
LastEventId = Annotated[
    int,
    Header(ge=0, le=2**63 - 1, description="sent by an EventSource when it reconnects: resume after it"),
]


@router.get("/{job_id:uuid}/events", name="events", response_model=list[EventOut], responses=READ_ERRORS)
def job_events(
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    principal: ReadDep,
    job_id: uuid.UUID,
    after: AfterEvent = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    # the stream's old spelling, kept working but out of the schema: one operation, one type
    stream: Annotated[bool, Query(include_in_schema=False)] = False,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**63 - 1, include_in_schema=False)] = None,
) -> Any:
    """The job's progress log, oldest first (`GET .../events/stream` follows it live)."""
    if stream or "text/event-stream" in request.headers.get("accept", ""):
        service.get_job(session, job_id, tenant=principal.tenant)  # 404 before the stream starts
        return _event_stream(rt, job_id, max(after, last_event_id or 0), principal.tenant, _closing(request))
    events = service.list_events(session, job_id, after, limit, tenant=principal.tenant)
    return [EventOut.model_validate(e) for e in events]


@router.get(
    "/{job_id:uuid}/events/stream",
    name="stream_events",
    response_class=StreamingResponse,
    responses={
        **READ_ERRORS,
        200: {
            "description": "server-sent events (`id`, `event`: the kind, `data`: the event as JSON) "
            "until the job has ended and every event was sent",
            "content": event_stream("EventOut"),
        },
    },
)
def stream_job_events(
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    principal: ReadDep,
    job_id: uuid.UUID,
    after: AfterEvent = 0,
    last_event_id: LastEventId = 0,
) -> StreamingResponse:
    """The job's progress log as server-sent events, live until the job ends."""
    service.get_job(session, job_id, tenant=principal.tenant)  # 404 before the stream starts
    return _event_stream(rt, job_id, max(after, last_event_id), principal.tenant, _closing(request))


def artifact_out(row: Artifact) -> ArtifactOut:
    return ArtifactOut(
        name=row.name,
        size=row.size,
        sha256=row.sha256,
        content_type=row.content_type,
        created_at=row.created_at,
        url=f"/v1/jobs/{row.job_id}/artifacts/{row.name}",
    )


@router.get("/{job_id:uuid}/artifacts", name="list_artifacts", responses=READ_ERRORS)
def list_artifacts(session: SessionDep, principal: ReadDep, job_id: uuid.UUID) -> list[ArtifactOut]:
    return [artifact_out(a) for a in service.list_artifacts(session, job_id, tenant=principal.tenant)]


@router.get(
    "/{job_id:uuid}/artifacts/{name}",
    name="download_artifact",
    response_class=StreamingResponse,
    responses={
        **READ_ERRORS,
        200: {
            "description": "the file, in its own type (the listing's `content_type`), or "
            "application/octet-stream when `Accept` asks for that first",
            "content": file_content(*ARTIFACT_TYPES),
            "headers": {
                "X-Content-SHA256": {
                    "description": "SHA-256 (hex) of the file",
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
        },
    },
)
def download_artifact(
    request: Request, rt: RuntimeDep, session: SessionDep, principal: ReadDep, job_id: uuid.UUID, name: str
) -> StreamingResponse:
    """Stream an artifact with its Content-Length and SHA-256 (`X-Content-SHA256`)."""
    row = service.get_artifact(session, job_id, name, tenant=principal.tenant)
    headers = {
        "Content-Length": str(row.size),
        "X-Content-SHA256": row.sha256,
        "ETag": f'"{row.sha256}"',
        "Content-Disposition": f'attachment; filename="{row.name}"',
    }
    return StreamingResponse(
        iter_chunks(rt.storage.open(row.storage_key)),
        media_type=served_type(request, row.content_type),
        headers=headers,
    )
