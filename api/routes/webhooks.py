"""Webhooks: the tenant's default callback and signing secret (`/v1/webhook`, admin) and a job's
delivery log (`GET /v1/jobs/{id}/webhooks`)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lethe.api.deps import AdminDep, ReadDep, RuntimeDep, SessionDep
from lethe.api.schemas import errors
from lethe.service.infra import tenancy
from lethe.service.trust import webhooks

router = APIRouter(tags=["webhooks"])


class WebhookConfigIn(BaseModel):
    # strict: a JSON body's values are taken as the schema types them (no "true" for true)
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str | None = Field(
        max_length=2000,
        description="an http(s):// callback for every job of the tenant without its own (its host "
        "must resolve to a public address); null: none",
        # null is the one value every server accepts: a URL example would have to resolve
        examples=[None],
    )
    rotate_secret: bool = Field(False, description="replace the signing secret (the old one stops at once)")


class WebhookConfigOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    tenant: str
    url: str | None
    secret: str = Field(description="HMAC-SHA256 key of X-Lethe-Signature (`v1=` hex of TIMESTAMP.BODY)")
    updated_at: datetime


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ts: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event: str
    url: str
    status: str = Field(description="pending | delivered | failed")
    attempts: int
    next_attempt_at: datetime | None = Field(description="when the next try is due (pending only)")
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    body: dict[str, Any] = Field(description="the JSON that is sent")
    tries: list[AttemptOut]


@router.get("/v1/webhook", name="get_config", responses=errors(401, 403, 503))
def get_webhook(rt: RuntimeDep, principal: AdminDep) -> WebhookConfigOut:
    """The tenant's default callback URL and the secret that signs all its callbacks."""
    return WebhookConfigOut.model_validate(webhooks.read_config(rt, principal.tenant))


@router.put("/v1/webhook", name="set_config", responses=errors(401, 403, 413, 422, 503))
def put_webhook(rt: RuntimeDep, principal: AdminDep, body: WebhookConfigIn) -> WebhookConfigOut:
    """Set or clear the tenant's default callback URL; optionally rotate the secret."""
    return WebhookConfigOut.model_validate(
        webhooks.configure(rt, principal.tenant, body.url, body.rotate_secret)
    )


@router.get("/v1/jobs/{job_id:uuid}/webhooks", name="deliveries", responses=errors(401, 403, 404, 422, 503))
def job_deliveries(session: SessionDep, principal: ReadDep, job_id: uuid.UUID) -> list[DeliveryOut]:
    """Every callback of the job's state changes, with each try and what the receiver answered."""
    tenancy.job(session, principal.tenant, job_id)
    return [
        DeliveryOut(
            id=d.id,
            event=d.event,
            url=d.url,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
            body=json.loads(d.body),
            tries=[AttemptOut.model_validate(t) for t in tries],
        )
        for d, tries in webhooks.list_deliveries(session, job_id)
    ]
