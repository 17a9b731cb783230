"""Webhooks: a callback on every job state change, signed, retried, and logged.

A job's callback URL is the one given with its submission (`callback_url`) or else its tenant's
default (`PUT /v1/webhook`). Each state change writes a delivery row in the same transaction (an
outbox), so no change is lost and none is sent for a change that rolled back. API processes send
due deliveries (`Deliverer`), each claimed with one UPDATE so two replicas never send it at once.

Every request carries `X-Lethe-Timestamp` (Unix seconds) and `X-Lethe-Signature: v1=HEX`, the
HMAC-SHA256 with the tenant's secret of `TIMESTAMP + "." + BODY`: a receiver recomputes it,
rejects old timestamps (replays) and remembers `X-Lethe-Delivery` ids (duplicates: delivery is
at least once). A failed try (no 2xx, or no answer) is retried after `webhook_backoff_s`, doubled
each time up to `webhook_backoff_max_s`, at most `webhook_max_attempts` times. URLs that resolve
to private addresses are refused, at submission and again before each try, unless
`webhook_allow_private`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lethe import __version__
from lethe.service.infra.db import (
    Job,
    JobCallback,
    TenantWebhook,
    WebhookAttempt,
    WebhookDelivery,
    affected,
    transaction,
    utcnow,
)
from lethe.service.infra.errors import Invalid
from lethe.service.infra.runtime import Runtime
from lethe.service.infra.settings import Settings

log = logging.getLogger(__name__)
EVENT = "job.status"
CLAIM_S = 60.0  # a claimed delivery whose sender vanished is tried again after this
BATCH = 20


class Refused(ValueError):
    """A URL the service will not call."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Lethe-Signature` value: `v1=` + hex HMAC-SHA256 of `TIMESTAMP.BODY`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError) as err:
        raise Refused(f"cannot resolve host {host!r}: {err}") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_url(settings: Settings, url: str) -> str:
    """Raise Refused unless `url` is an http(s) URL the service may call; return it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as err:
        raise Refused(f"{url!r} is not a URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise Refused("a callback URL must not hold credentials: the signature authenticates us")
    if not settings.webhook_allow_private:
        private = [a for a in _addresses(parts.hostname) if not a.is_global]
        if private:
            raise Refused(
                f"{parts.hostname} resolves to the non-public address {private[0]}: callbacks "
                "to private networks are refused (an admin may set LETHE_WEBHOOK_ALLOW_PRIVATE)"
            )
    return url


def checked_url(settings: Settings, url: str, field: str = "callback_url") -> str:
    """`check_url` for a request: 422 naming the field."""
    if len(url) > 2000:
        raise Invalid.one(field, "longer than 2000 characters")
    try:
        return check_url(settings, url)
    except Refused as err:
        raise Invalid.one(field, str(err)) from None


# ------------------------------------------------------------------ tenant configuration
def tenant_config(session: Session, tenant: str) -> TenantWebhook:
    """The tenant's row, created (with a new secret) the first time it is needed."""
    row = session.get(TenantWebhook, tenant)
    if row is None:
        row = TenantWebhook(tenant=tenant, url=None, secret=new_secret(), updated_at=utcnow())
        session.add(row)
        session.flush()
    return row


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def configure(rt: Runtime, tenant: str, url: str | None, rotate: bool = False) -> TenantWebhook:
    """Set (or clear, with None) the tenant's default callback URL; optionally a new secret."""
    if url is not None:
        checked_url(rt.settings, url, "url")
    with transaction(rt.sessions) as session:
        row = tenant_config(session, tenant)
        row.url, row.updated_at = url, utcnow()
        if rotate:
            row.secret = new_secret()
        return row


def read_config(rt: Runtime, tenant: str) -> TenantWebhook:
    with transaction(rt.sessions) as session:
        return tenant_config(session, tenant)


# ------------------------------------------------------------------ the outbox
def enqueue(session: Session, job: Job, payload: dict[str, Any]) -> WebhookDelivery | None:
    """Write a delivery for a job's state change, if the job or its tenant has a callback URL."""
    own = session.scalars(select(JobCallback.url).where(JobCallback.job_id == job.id)).first()
    url = own or session.scalars(select(TenantWebhook.url).where(TenantWebhook.tenant == job.tenant)).first()
    if not url:
        return None
    delivery_id, now = uuid.uuid4(), utcnow()
    body = {
        "id": str(delivery_id),
        "type": EVENT,
        "created_at": now.isoformat(),
        "tenant": job.tenant,
        "job": {
            "id": str(job.id),
            "name": job.name,
            "status": payload.get("status"),
            "url": f"/v1/jobs/{job.id}",
        },
        "data": {k: v for k, v in payload.items() if k != "traceback"},
    }
    row = WebhookDelivery(
        id=delivery_id,
        job_id=job.id,
        tenant=job.tenant,
        event=EVENT,
        url=url,
        body=json.dumps(body, default=str, sort_keys=True),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row


def list_deliveries(
    session: Session, job_id: uuid.UUID
) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """A job's deliveries, oldest first, each with its tries (the caller checks the tenant)."""
    rows = list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.created_at)
        )
    )
    tries = (
        list(
            session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_([r.id for r in rows]))
                .order_by(WebhookAttempt.id)
            )
        )
        if rows
        else []
    )
    return [(r, [t for t in tries if t.delivery_id == r.id]) for r in rows]


# ------------------------------------------------------------------ sending
def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before try `attempts + 1`: backoff_s, 2x, 4x, ... capped at backoff_max_s."""
    return min(settings.webhook_backoff_s * 2 ** (attempts - 1), settings.webhook_backoff_max_s)


def claim_due(rt: Runtime, limit: int = BATCH) -> list[uuid.UUID]:
    """Take due deliveries: each one's next try moves CLAIM_S ahead, so no one else sends it."""
    now = utcnow()
    with rt.sessions() as session:
        due = list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            )
        )
    claimed = []
    for delivery_id in due:
        with transaction(rt.sessions) as session:
            taken = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + timedelta(seconds=CLAIM_S))
            )
            if affected(taken):
                claimed.append(delivery_id)
    return claimed


def post(settings: Settings, url: str, secret: str, delivery_id: str, body: bytes) -> int:
    """One signed POST; the receiver's status code (raises on refusal or no answer)."""
    import httpx

    check_url(settings, url)  # again: DNS may have changed since submission
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"lethe-webhooks/{__version__}",
        "X-Lethe-Event": EVENT,
        "X-Lethe-Delivery": delivery_id,
        "X-Lethe-Timestamp": str(timestamp),
        "X-Lethe-Signature": sign(secret, timestamp, body),
    }
    with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False) as client:
        return client.post(url, content=body, headers=headers).status_code


def deliver(rt: Runtime, delivery_id: uuid.UUID) -> str:
    """Try a claimed delivery once and record the try; return the delivery's new status."""
    with rt.sessions() as session:
        row = session.get(WebhookDelivery, delivery_id)
        secret = tenant_secret(rt, row.tenant) if row else ""
    if row is None:
        return "gone"
    began, code, error = time.monotonic(), None, None
    try:
        code = post(rt.settings, row.url, secret, str(row.id), row.body.encode())
        if not 200 <= code < 300:
            error = f"the receiver answered {code}"
    except Refused as err:
        error = f"refused: {err}"
    except Exception as err:  # noqa: BLE001 - any transport failure is a failed try
        error = f"{type(err).__name__}: {err}"
    return _record(rt, row, code, error, int((time.monotonic() - began) * 1000))


def tenant_secret(rt: Runtime, tenant: str) -> str:
    with transaction(rt.sessions) as session:
        return tenant_config(session, tenant).secret


def _record(rt: Runtime, row: WebhookDelivery, code: int | None, error: str | None, ms: int) -> str:
    attempts, now = row.attempts + 1, utcnow()
    final = error is None or error.startswith("refused") or attempts >= rt.settings.webhook_max_attempts
    status = "delivered" if error is None else "failed" if final else "pending"
    with transaction(rt.sessions) as session:
        session.add(WebhookAttempt(delivery_id=row.id, ts=now, status_code=code, error=error, duration_ms=ms))
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == row.id)
            .values(
                attempts=attempts,
                status=status,
                last_status_code=code,
                last_error=error,
                delivered_at=now if status == "delivered" else None,
                next_attempt_at=now + timedelta(seconds=0 if final else backoff(rt.settings, attempts)),
            )
        )
    log.log(
        logging.INFO if error is None else logging.WARNING,
        "webhook %s to %s: try %d %s",
        row.id,
        row.url,
        attempts,
        "delivered" if error is None else f"failed ({error}); now {status}",
    )
    return status


class Deliverer:
    """A thread in each API process that sends due deliveries every `webhook_poll_s`."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.rt.settings.webhook_timeout_s + 5)

    def run_once(self) -> int:
        """Send what is due now; the number of tries made."""
        claimed = claim_due(self.rt)
        for delivery_id in claimed:
            deliver(self.rt, delivery_id)
        return len(claimed)

    def _run(self) -> None:
        while not self._stop.wait(self.rt.settings.webhook_poll_s):
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # a database blip must not end the thread: the next round retries
                log.warning("webhook delivery round failed", exc_info=True)
