"""/healthz (the process), /readyz (database, broker, storage) and /metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from lethe.api.deps import RuntimeDep
from lethe.service.infra.metrics import exposition

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _probe(fn: Callable[[], object]) -> str:
    try:
        fn()
        return "ok"
    except Exception as err:  # noqa: BLE001 - any failure means not ready; say which and why
        return f"unreachable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


@router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
def readyz(rt: RuntimeDep) -> JSONResponse:
    def database() -> None:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    checks = {"database": _probe(database), "storage": _probe(rt.storage.check)}
    if rt.dispatcher is not None:
        checks["broker" if rt.settings.broker_url else "worker"] = _probe(rt.dispatcher.check)
    failed = {k: v for k, v in checks.items() if v != "ok"}
    if failed:
        detail = "not ready: " + "; ".join(f"{k} {v}" for k, v in failed.items())
        return JSONResponse({"detail": detail, "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


@router.get("/metrics", response_class=Response)
def metrics(rt: RuntimeDep) -> Response:
    return Response(exposition(rt), media_type=CONTENT_TYPE_LATEST)
