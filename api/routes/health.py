"""/healthz (the process), /readyz (database, broker, storage) and /metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from lethe.api.deps import RuntimeDep
from lethe.api.schemas import HealthOut, NotReadyOut, ReadyOut
from lethe.service.infra.metrics import exposition

router = APIRouter(tags=["health"])


@router.get("/healthz", name="live")
def healthz() -> HealthOut:
    """The process answers (no dependency is checked)."""
    return HealthOut(status="ok")


def _probe(fn: Callable[[], object]) -> str:
    try:
        fn()
        return "ok"
    except Exception as err:  # noqa: BLE001 - any failure means not ready; say which and why
        return f"unreachable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


@router.get(
    "/readyz",
    name="ready",
    response_model=ReadyOut,
    responses={503: {"model": NotReadyOut, "description": "a dependency is unreachable"}},
)
def readyz(rt: RuntimeDep) -> JSONResponse:
    """Whether the database, storage and broker (or in-process worker) answer."""

    def database() -> None:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    checks = {"database": _probe(database), "storage": _probe(rt.storage.check)}
    if rt.dispatcher is not None:
        checks["broker" if rt.settings.broker_url else "worker"] = _probe(rt.dispatcher.check)
    failed = {k: v for k, v in checks.items() if v != "ok"}
    if failed:
        detail = "not ready: " + "; ".join(f"{k} {v}" for k, v in failed.items())
        return JSONResponse(NotReadyOut(detail=detail, checks=checks).model_dump(), status_code=503)
    return JSONResponse(ReadyOut(status="ready", checks=checks).model_dump())


@router.get(
    "/metrics",
    name="metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(rt: RuntimeDep) -> Response:
    return Response(exposition(rt), media_type=CONTENT_TYPE_LATEST)
