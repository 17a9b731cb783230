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

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lethe import __version__
from lethe.api import compliance
from lethe.api.routes import datasets, health, jobs, keys
from lethe.service.infra.errors import ServiceError
from lethe.service.infra.metrics import REQUEST_SECONDS
from lethe.service.infra.object_store import StorageError
from lethe.service.infra.retry import transient
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs.reconcile import Maintenance
from lethe.service.trust.auth import install_bootstrap_key

log = logging.getLogger(__name__)
SPEC_BYTES = 1024 * 1024  # room for the form fields around an upload


class BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parsing lets it through."""

    def __init__(self, limit: int, setting: str = "LETHE_MAX_UPLOAD_MB") -> None:
        size = f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"
        super().__init__(
            413, f"request body larger than {size}: send less, or ask an admin to raise {setting}"
        )


class LimitsAndMetrics:
    """ASGI middleware: refuses bodies over the upload limit (413, counted while they stream,
    so a huge upload is not spooled to disk first) and times every request by route."""

    def __init__(self, app: ASGIApp, max_body: int, max_json: int | None = None) -> None:
        self.app, self.max_body, self.max_json = app, max_body, max_json or max_body

    def _limit(self, scope: Scope) -> tuple[int, str]:
        """Uploads (multipart) get the upload limit; everything else the smaller JSON limit."""
        kind = dict(scope["headers"]).get(b"content-type", b"")
        if kind.startswith(b"multipart/"):
            return self.max_body, "LETHE_MAX_UPLOAD_MB"
        return self.max_json, "LETHE_MAX_JSON_KB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, seen, state = time.perf_counter(), 0, {"status": 500, "started": False}
        limit, setting = self._limit(scope)

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit, setting)
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if declared.isdigit() and int(declared) > limit:  # refuse before reading
                await _send_json(tracking_send, 413, {"detail": BodyTooLarge(limit, setting).detail})
            else:
                await self.app(scope, limited_receive, tracking_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, err: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = []
        for item in err.errors():
            loc = [str(p) for p in item["loc"]]
            loc = loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc
            problems.append({"field": ".".join(loc), "msg": item["msg"]})
        return JSONResponse({"detail": problems}, status_code=422)

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
    )
    app.state.runtime = rt
    _install_error_handlers(app)
    for module in (health, datasets, jobs, keys):
        app.include_router(module.router)
    compliance.install(app, rt)  # audit middleware, certificates, webhooks
    app.add_middleware(
        LimitsAndMetrics,
        max_body=rt.settings.max_upload_bytes + SPEC_BYTES,
        max_json=rt.settings.max_json_kb * 1024,
    )
    return app
