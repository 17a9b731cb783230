"""`Idempotency-Key` on POST /v1/jobs and POST /v1/datasets: a retry gets the first result.

The first request with a key reserves it (a row with the request's hash and no result yet), does
its work, and records the id it created. A retry with the same body gets that id back (the route
answers with the object as it is now); the same key with a different body gets 409. A request
that fails releases its reservation, so a retry after a 4xx or 503 runs afresh; a reservation
left by a process that died mid-request is taken over after `STALE_S`. Keys are per tenant and
per endpoint, and are forgotten after `idempotency_ttl_h`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from lethe.service.infra.db import IdempotencyRecord, affected, transaction, utcnow
from lethe.service.infra.errors import Conflict, Invalid
from lethe.service.infra.runtime import Runtime

log = logging.getLogger(__name__)
STALE_S = 300.0
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class Slot:
    tenant: str
    endpoint: str
    key: str


def body_hash(value: Any) -> str:
    """A stable hash of a request body (JSON-like values; keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise Invalid.one(
            "header.Idempotency-Key",
            f"must be 1-{MAX_KEY_CHARS} printable characters, "
            "e.g. a UUID the client makes for each logical request",
        )
    return key


def _where(slot: Slot) -> Any:
    return (
        IdempotencyRecord.tenant == slot.tenant,
        IdempotencyRecord.endpoint == slot.endpoint,
        IdempotencyRecord.key == slot.key,
    )


def _reserve(rt: Runtime, slot: Slot, digest: str) -> uuid.UUID | None:
    """None: the slot is ours to fill. An id: the first request's result, to replay."""
    try:
        with transaction(rt.sessions) as session:
            session.add(
                IdempotencyRecord(
                    tenant=slot.tenant,
                    endpoint=slot.endpoint,
                    key=slot.key,
                    request_hash=digest,
                    resource_id=None,
                )
            )
        return None
    except IntegrityError:
        pass
    with transaction(rt.sessions) as session:
        row = session.scalars(select(IdempotencyRecord).where(*_where(slot))).first()
        if row is None:  # released in between: try once more
            raise Conflict(f"Idempotency-Key {slot.key!r} was just released: retry")
        if row.request_hash != digest:
            raise Conflict(
                f"Idempotency-Key {slot.key!r} was already used with a different request "
                "body: use a new key for a new request"
            )
        if row.resource_id is not None:
            return row.resource_id
        stale = utcnow() - timedelta(seconds=STALE_S)
        taken = session.execute(
            update(IdempotencyRecord)
            .where(
                *_where(slot), IdempotencyRecord.resource_id.is_(None), IdempotencyRecord.created_at < stale
            )
            .values(created_at=utcnow())
        )
        if not affected(taken):
            raise Conflict(
                f"a request with Idempotency-Key {slot.key!r} is still in progress: retry in a few seconds"
            )
    return None


def run_once(
    rt: Runtime, slot: Slot | None, digest: str, create: Callable[[], uuid.UUID]
) -> tuple[uuid.UUID, bool]:
    """Run `create` once per slot: (the id it made, False), or (the first id, True) on a retry."""
    if slot is None:
        return create(), False
    first = _reserve(rt, slot, digest)
    if first is not None:
        return first, True
    try:
        made = create()
    except BaseException:
        _release(rt, slot)
        raise
    with transaction(rt.sessions) as session:
        session.execute(update(IdempotencyRecord).where(*_where(slot)).values(resource_id=made))
    return made, False


def _release(rt: Runtime, slot: Slot) -> None:
    try:
        with transaction(rt.sessions) as session:
            session.execute(delete(IdempotencyRecord).where(*_where(slot)))
    except Exception:  # the database is down too: the reservation goes stale after STALE_S
        log.warning("could not release Idempotency-Key %r", slot.key, exc_info=True)


def forget_expired(rt: Runtime) -> int:
    """Drop keys older than `idempotency_ttl_h` (the maintenance loop calls this)."""
    cutoff = utcnow() - timedelta(hours=rt.settings.idempotency_ttl_h)
    with transaction(rt.sessions) as session:
        return affected(
            session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
        )
