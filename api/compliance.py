"""Compliance wiring of the app: the request audit middleware, the signing key, webhook delivery.

`install(app, rt)` adds the routers, the middleware and the signing key (created on first
start); the app's lifespan calls `start(app)` and `stop(app)` for the webhook deliverer.

Every POST, PUT, PATCH and DELETE is audited, whatever its answer (a refused request is worth
recording too): who (the principal that `PrincipalDep` put on `request.state`; none for a
request without a valid key), what (method and route path, the created object's id), when, the
status code, and the request's SHA-256 over `METHOD PATH[?QUERY]\\n` + body, hashed as the body
streams in. The line is written before the answer is sent, so a client that got an answer can
find its line.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lethe.api.routes import audit as audit_routes
from lethe.api.routes import certificates as certificate_routes
from lethe.api.routes import webhooks as webhook_routes
from lethe.service.infra.runtime import Runtime
from lethe.service.trust import audit, certificates, webhooks

log = logging.getLogger(__name__)
AUDITED = {"POST", "PUT", "PATCH", "DELETE"}
ID_BODY_LIMIT = 64 * 1024


def install(app: FastAPI, rt: Runtime) -> None:
    app.state.signing_key = certificates.load_signing_key(rt.settings)
    app.state.deliverer = webhooks.Deliverer(rt)
    for module in (audit_routes, certificate_routes, webhook_routes):
        app.include_router(module.router)
    app.add_middleware(AuditRequests, sessions=rt.sessions)


def start(app: FastAPI) -> None:
    app.state.deliverer.start()


def stop(app: FastAPI) -> None:
    app.state.deliverer.stop()


def _created_id(start: Message, body: bytes) -> str | None:
    """The id of an object a request created (the `id` of a JSON 201 answer)."""
    if start.get("status") != 201 or len(body) > ID_BODY_LIMIT:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return str(value["id"]) if isinstance(value, dict) and "id" in value else None


def _target(scope: Scope, route: str, created: str | None) -> str:
    """`job:ID`, `dataset:ID`, `key:ID` (as in job.status lines), else the path."""
    params = scope.get("path_params") or {}
    for name in ("job_id", "dataset_id", "key_id"):
        if name in params:
            return f"{name.removesuffix('_id')}:{params[name]}"
    if created:  # POST /v1/jobs, /v1/datasets[/register], /v1/keys: the resource is the first segment
        resource = route.removeprefix("/v1/").split("/")[0].removesuffix("s")
        return f"{resource}:{created}"
    return scope["path"]


def request_line(scope: Scope, digest: str, start: Message, body: bytes) -> audit.Line:
    principal = (scope.get("state") or {}).get("principal")
    # the path as documented (`/v1/jobs/{job_id}`), without its convertors (`:uuid`)
    route = getattr(scope.get("route"), "path_format", None) or scope["path"]
    target = _target(scope, route, _created_id(start, body))
    return audit.Line(
        actor="key" if principal else "anonymous",
        action=f"{scope['method']} {route}",
        tenant=getattr(principal, "tenant", None),
        key_id=getattr(principal, "key_id", None),
        target=target[:300],
        status_code=start.get("status"),
        request_sha256=digest,
        detail={"query": scope.get("query_string", b"").decode("latin-1")[:500]}
        if scope.get("query_string")
        else {},
    )


class AuditRequests:
    """ASGI middleware: one audit line per state-changing request, written before the answer."""

    def __init__(self, app: ASGIApp, sessions: sessionmaker[Session]) -> None:
        self.app, self.sessions = app, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in AUDITED:
            return await self.app(scope, receive, send)
        query = scope.get("query_string", b"")
        digest = hashlib.sha256(
            f"{scope['method']} {scope['path']}".encode() + (b"?" + query if query else b"") + b"\n"
        )
        held: dict[str, Any] = {}

        async def hashing_receive() -> Message:
            message = await receive()
            digest.update(message.get("body", b""))
            return message

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                held["start"] = message  # wait for the body: a 201's id is in it
                return
            if "start" in held:
                start = held.pop("start")
                held["written"] = True
                await self._write(scope, digest.hexdigest(), start, message.get("body", b""))
                await send(start)
            await send(message)

        try:
            await self.app(scope, hashing_receive, audited_send)
        except Exception:  # a crash (answered 500 further out) is recorded too
            if not held.get("written"):
                await self._write(scope, digest.hexdigest(), {"status": 500}, b"")
            raise

    async def _write(self, scope: Scope, digest: str, start: Message, body: bytes) -> None:
        try:
            line = request_line(scope, digest, start, body)
            await run_in_threadpool(audit.record, self.sessions, line)
        except Exception:  # the request has already happened: losing its line is logged loudly
            log.exception("could not write the audit line of %s %s", scope["method"], scope["path"])
