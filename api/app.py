"""The FastAPI application: `create_app(runtime)` builds it around one service runtime.

The runtime arrives with its dispatcher attached (`lethe.cli.wiring.build_app` does that), so the
API never imports the workers.

The app refuses to start on an unmigrated database (NotMigrated, raised here so `lethe serve`
can print what to run). Routes are thin: HTTP in, a call on the job or dataset service, JSON out.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lethe import __version__
from lethe.api import compliance, openapi
from lethe.api.console import routes as console
from lethe.api.deps import text_only
from lethe.api.routes import audit_chain, datasets, events, health, jobs, keys, specs
from lethe.service.infra.errors import ServiceError
from lethe.service.infra.metrics import REQUEST_SECONDS
from lethe.service.infra.object_store import StorageError
from lethe.service.infra.retry import transient
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs.reconcile import Maintenance
from lethe.service.trust.auth import install_bootstrap_key

log = logging.getLogger(__name__)
SPEC_BYTES = 1024 * 1024  # room for the form fields around an upload
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")  # Allow's order


class BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parsing lets it through.
    The message states the limit as configured (`shown`), not the bytes enforced, which for an
    upload include room for its form fields."""

    def __init__(self, shown: str, setting: str = "LETHE_MAX_UPLOAD_MB") -> None:
        super().__init__(
            413, f"request body larger than {shown}: send less, or ask an admin to raise {setting}"
        )


class LimitsAndMetrics:
    """ASGI middleware: refuses bodies over the upload limit (413, counted while they stream,
    so a huge upload is not spooled to disk first) and times every request by route."""

    def __init__(self, app: ASGIApp, max_upload_mb: int, max_json_kb: int) -> None:
        self.app = app
        self.upload = (max_upload_mb * 2**20 + SPEC_BYTES, f"{max_upload_mb} MiB", "LETHE_MAX_UPLOAD_MB")
        self.json = (max_json_kb * 1024, f"{max_json_kb} KiB", "LETHE_MAX_JSON_KB")

    def _limit(self, scope: Scope) -> tuple[int, str, str]:
        """Uploads (multipart) get the upload limit; everything else the smaller JSON limit.
        Returns (bytes allowed, the limit as configured, its setting)."""
        kind = dict(scope["headers"]).get(b"content-type", b"")
        return self.upload if kind.startswith(b"multipart/") else self.json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, seen, state = time.perf_counter(), 0, {"status": 500, "started": False}
        limit, shown, setting = self._limit(scope)

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(shown, setting)
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            # refuse before reading; a length of more digits than any limit is over it (and
            # more than int() converts)
            if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
                await _send_json(tracking_send, 413, {"detail": BodyTooLarge(shown, setting).detail})
            else:
                await self.app(scope, limited_receive, tracking_send)
        finally:
            # the path as documented (`/v1/jobs/{job_id}`), without its convertors (`:uuid`)
            route = getattr(scope.get("route"), "path_format", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], route, str(state["status"])).observe(
                time.perf_counter() - began
            )


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def _problem(item: Any) -> dict[str, str]:
    """One pydantic or JSON error as `{"field", "msg"}`. A JSON syntax error's location is a
    character position, not a field: it is named `body`, with the position in the message."""
    loc = [str(p) for p in item["loc"]]
    if item["type"] == "json_invalid":
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        reason = item.get("ctx", {}).get("error", "")
        return {"field": "body", "msg": f"not valid JSON ({reason}{where}): send one JSON object"}
    loc = loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc
    return {"field": ".".join(loc), "msg": item["msg"]}


def _unreadable(cause: BaseException | None) -> dict[str, str]:
    if isinstance(cause, RecursionError):
        reason = "it is nested too deeply"
    elif isinstance(cause, ValueError):  # e.g. an integer of more digits than Python converts
        reason = str(cause).split(";")[0] or "it cannot be parsed"
    else:  # e.g. a malformed multipart body
        reason = str(cause).splitlines()[0] if cause is not None and str(cause) else "it is malformed"
        return {
            "field": "body",
            "msg": f"the body cannot be read ({reason}): send JSON, or multipart/form-data to upload",
        }
    return {"field": "body", "msg": f"the JSON body cannot be read ({reason}): send a plain JSON object"}


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method some route serves at the request's path, for a 405's `Allow`: Starlette names
    only the methods of the first route that matched the path (one of `GET /v1/jobs` and
    `POST /v1/jobs`). Each method is tried as the router would route it."""
    allowed = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    ]
    return ", ".join(allowed)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, err: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_problem(item) for item in err.errors()]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)  # what FastAPI's body parsing raises
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        # FastAPI answers 400 for a body its parser gave up on (JSON nested too deeply, a number
        # too long, broken multipart): like any other body that cannot be read, that is the
        # documented 422 naming the body
        if err.status_code == 400:
            return JSONResponse({"detail": [_unreadable(err.__cause__)]}, status_code=422)
        if err.status_code == 405:
            err.headers = {**(err.headers or {}), "Allow": _allowed_methods(request.app, request.scope)}
        return await http_exception_handler(request, err)

    @app.exception_handler(StorageError)
    async def storage_error(_: Request, err: StorageError) -> JSONResponse:
        log.error("storage: %s", err)
        return JSONResponse({"detail": f"storage unavailable, retry later: {err}"}, status_code=503)

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, err: DBAPIError) -> JSONResponse:
        if not transient(err):  # a bug, not an outage: the generic 500
            raise err
        log.error("database: %s", err)
        return JSONResponse(
            {"detail": "database unavailable, retry later"}, status_code=503, headers={"Retry-After": "1"}
        )


def create_app(rt: Runtime) -> FastAPI:
    """The API over a runtime whose dispatcher is attached (see `lethe.cli.wiring.build_app`)."""
    dispatcher = rt.dispatcher
    if dispatcher is None:
        raise ValueError(
            "create_app needs a runtime with a dispatcher; lethe.cli.wiring.build_app attaches one"
        )
    install_bootstrap_key(rt.sessions, rt.settings)
    maintenance = Maintenance(rt)  # heartbeat check and reconciler (lethe.service.jobs.reconcile)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The engine's imports (torch, transformers) leave a big heap; frozen, the collector
        # skips it, and full collections stop adding tens of milliseconds to request latency.
        gc.collect()
        gc.freeze()
        dispatcher.start()
        maintenance.start()
        compliance.start(app)
        try:
            yield
        finally:
            compliance.stop(app)
            maintenance.stop()
            rt.close()

    app = FastAPI(
        title="Lethe",
        version=__version__,
        lifespan=lifespan,
        description="Unlearning jobs over HTTP: upload datasets, submit a job spec, follow "
        "its progress, download the unlearned LoRA adapter and its metrics.",
        dependencies=[Depends(text_only)],
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.runtime = rt
    _install_error_handlers(app)
    for module in (health, datasets, jobs, events, keys, specs, audit_chain):
        app.include_router(module.router)
    compliance.install(app, rt)  # audit middleware, certificates, webhooks
    console.install(app)  # the web console under / (its pages carry their own CSP)
    openapi.install(app)
    app.add_middleware(
        LimitsAndMetrics,
        max_upload_mb=rt.settings.max_upload_mb,
        max_json_kb=rt.settings.max_json_kb,
    )
    return app
