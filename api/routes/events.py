"""/v1/events: the progress log of all the caller's tenant's jobs at once, as JSON or as one
server-sent event stream (`/v1/events/stream`).

The stream lives while any of the tenant's jobs is queued or running, as the per-job one lives
while its job does: an idle tenant's follower does not hold a database poll open for hours, and
nothing that reads every GET route (a test, a fuzzer) waits forever. A client waiting for new
jobs reopens it after a pause with `after` set to the last id it saw (each stream starts with
its position as a bare `id`), so nothing is missed between two streams.

A jobs list follows every job on it through this one stream, where it would otherwise need a
stream per job (a browser keeps about six connections to a server). Scoping is the API's own:
the `read` scope and `tenancy.tenant_events`, so another tenant's events are never seen.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from lethe.api.deps import ReadDep, RuntimeDep, SessionDep
from lethe.api.openapi import event_stream
from lethe.api.schemas import TenantEventOut, errors
from lethe.service.infra.db import JobEvent
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs import records as service

router = APIRouter(prefix="/v1/events", tags=["events"])
ERRORS = errors(401, 403, 422, 503)
POLL_S = 0.5  # as the per-job stream: one indexed query per stream and half-second
KEEPALIVE_S = 15.0
BATCH = 1000

After = Annotated[
    int | None,
    Query(ge=0, le=2**63 - 1, description="only events with a larger id; left out: from now on"),
]
LastEventId = Annotated[
    int,
    Header(ge=0, le=2**63 - 1, description="sent by an EventSource when it reconnects: resume after it"),
]


@router.get("", name="list", responses=ERRORS)
def list_events(
    session: SessionDep,
    principal: ReadDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=BATCH)] = 100,
) -> list[TenantEventOut]:
    """Events of every job of the tenant, oldest first, with their `job_id`."""
    events = service.list_tenant_events(session, after, limit, tenant=principal.tenant)
    return [TenantEventOut.model_validate(e) for e in events]


def _sse(event: JobEvent) -> str:
    data = TenantEventOut.model_validate(event).model_dump(mode="json")
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"


def _closing(request: Request) -> threading.Event:
    """Set when `lethe serve` shuts down (as for the per-job stream, api/routes/jobs.py): this
    stream never ends on its own, so without it a follower would hold the process open."""
    closing = getattr(request.app.state, "closing", None)
    return closing if isinstance(closing, threading.Event) else threading.Event()


def _poll(rt: Runtime, after: int, tenant: str) -> tuple[bool, list[JobEvent]]:
    with rt.sessions() as session:
        active = service.has_active_jobs(session, tenant=tenant)  # read first: no event is missed
        return active, service.list_tenant_events(session, after, BATCH, tenant=tenant)


async def _stream(rt: Runtime, after: int, tenant: str, closing: threading.Event) -> AsyncIterator[str]:
    """Events as they are written, while any job of the tenant is queued or running (then every
    event was sent, and the stream ends), or until the server shuts down. It opens with its
    start as the `id`, so a client resumes from there even before the first event."""
    yield f"id: {after}\n: following\n\n"
    last, quiet = after, 0.0
    while not closing.is_set():
        active, events = await run_in_threadpool(_poll, rt, last, tenant)
        for event in events:
            yield _sse(event)
            last = event.id
        if len(events) >= BATCH:
            continue  # more are waiting: no sleep
        if not active:
            return
        quiet = 0.0 if events else quiet + POLL_S
        if quiet >= KEEPALIVE_S:  # a comment line keeps proxies from closing an idle stream
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(POLL_S)


def _start(session: SessionDep, after: int | None, last_event_id: int) -> int:
    """Where the stream starts: the larger of `after` and `Last-Event-ID`, or, with neither,
    the newest event now (a list already shows the state; its past events would only replay)."""
    if after is None and last_event_id == 0:
        return service.last_event_id(session)
    return max(after or 0, last_event_id)


@router.get(
    "/stream",
    name="stream",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {
            "description": "server-sent events (`id`, `event`: the kind, `data`: the event as JSON, "
            "with its `job_id`) while any job of the tenant is queued or running, then until "
            "every event was sent; it opens with a bare `id` (where it starts) to resume from",
            "content": event_stream("TenantEventOut"),
        },
    },
)
def stream_events(
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    principal: ReadDep,
    after: After = None,
    last_event_id: LastEventId = 0,
) -> Any:
    """Every job's progress log as one live stream of server-sent events (a jobs list's feed):
    live while any job is queued or running; reopen it, with `after`, to wait for new ones."""
    start = _start(session, after, last_event_id)
    return StreamingResponse(
        _stream(rt, start, principal.tenant, _closing(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
