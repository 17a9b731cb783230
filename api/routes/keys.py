"""/v1/keys: an admin manages its own tenant's API keys (the `lethe keys` CLI manages any tenant's)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from lethe.api.deps import AdminDep, RuntimeDep, SessionDep
from lethe.api.schemas import errors
from lethe.service.trust import auth

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant: str
    scopes: str = Field(description="comma-separated: read, submit, admin")
    name: str
    created_at: datetime
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="the key itself: shown only in this answer, never stored")


class CreateKey(BaseModel):
    # strict: a JSON body's values are taken as the schema types them
    model_config = ConfigDict(extra="forbid", strict=True)

    scopes: list[auth.Scope] = Field(min_length=1, examples=[["read", "submit"]])
    name: str = Field("", max_length=200)


@router.post(
    "", name="create", status_code=status.HTTP_201_CREATED, responses=errors(401, 403, 413, 422, 503)
)
def create_key(rt: RuntimeDep, principal: AdminDep, body: CreateKey) -> NewKeyOut:
    """A new key for the caller's tenant; the answer holds the key, once."""
    row, key = auth.create_key(rt.sessions, principal.tenant, list(body.scopes), body.name)
    return NewKeyOut.model_validate({**KeyOut.model_validate(row).model_dump(), "key": key})


@router.get("", name="list", responses=errors(401, 403, 503))
def list_keys(session: SessionDep, principal: AdminDep) -> list[KeyOut]:
    return [KeyOut.model_validate(r) for r in auth.list_keys(session, principal.tenant)]


@router.post("/{key_id}/revoke", name="revoke", responses=errors(401, 403, 404, 409, 413, 422, 503))
def revoke_key(rt: RuntimeDep, principal: AdminDep, key_id: str) -> KeyOut:
    """Revoke one of the tenant's keys: requests with it get 401 from now on. The key making the
    request cannot revoke itself (409): use another admin key."""
    return KeyOut.model_validate(
        auth.revoke_key(rt.sessions, key_id, principal.tenant, acting_key=principal.key_id)
    )
