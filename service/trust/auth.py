"""API keys and the principal a request acts as.

A key is `lethe_<id>_<secret>`; only the SHA-256 of the whole key is stored, so a database dump
gives nobody a usable key. A key belongs to one tenant and carries scopes: `read` (GET),
`submit` (upload datasets, submit and cancel jobs, delete datasets) and `admin` (everything,
including the tenant's keys). `LETHE_BOOTSTRAP_KEY` installs one admin key at start (row id
`bootstrap`), so scripts and the embedded demo can run before any key was created.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from lethe.service.infra.db import ApiKey, affected, transaction, utcnow
from lethe.service.infra.errors import Conflict, Invalid, NotFound
from lethe.service.infra.settings import Settings

Scope = Literal["read", "submit", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "submit", "admin")
BOOTSTRAP_ID = "bootstrap"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # also a storage path part: no "_", "/", "."
KEY_PREFIX = "lethe_"
MAX_KEY_CHARS = 512


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key's id, its tenant and its scopes."""

    key_id: str
    tenant: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """`admin` allows everything; other scopes only themselves."""
        return scope in self.scopes or "admin" in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_NAME.match(tenant):
        raise Invalid.one(
            "tenant",
            f"{tenant!r} is not a tenant name: use 1-63 lowercase letters, "
            "digits or '-', starting with a letter or digit",
        )
    return tenant


def parse_scopes(raw: str | list[str]) -> frozenset[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise Invalid.one(
            "scopes",
            f"unknown or no scopes {unknown or ''}: use a comma-separated subset of {', '.join(SCOPES)}",
        )
    return scopes


def _principal(row: ApiKey) -> Principal:
    return Principal(row.id, row.tenant, frozenset(row.scopes.split(",")))


def create_key(
    sessions: sessionmaker[Session], tenant: str, scopes: str | list[str], name: str = ""
) -> tuple[ApiKey, str]:
    """A new key for `tenant`: (its row, the key itself, shown once and never stored)."""
    check_tenant(tenant)
    wanted = parse_scopes(scopes)
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=key_id,
        tenant=tenant,
        scopes=",".join(s for s in SCOPES if s in wanted),
        key_hash=hash_key(key),
        name=name[:200],
    )
    with transaction(sessions) as session:
        session.add(row)
    return row, key


def revoke_key(
    sessions: sessionmaker[Session], key_id: str, tenant: str | None = None, acting_key: str | None = None
) -> ApiKey:
    """Revoke a key (within `tenant` when given: the API's admins manage only their own).

    `acting_key` is the key making the request: it may not revoke itself, since the last admin
    key (the bootstrap key included) revoking itself would lock its tenant out of key management.
    """
    if acting_key is not None and key_id == acting_key:
        raise Conflict(
            f"API key {key_id} is the key making this request and cannot revoke itself: "
            "revoke it with another admin key of the tenant (create one with POST /v1/keys), "
            "or with `lethe keys revoke` on the server"
        )
    with transaction(sessions) as session:
        query = select(ApiKey).where(ApiKey.id == key_id)
        if tenant is not None:
            query = query.where(ApiKey.tenant == tenant)
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return row


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list(session.scalars(query))


def active_key_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0
        )


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of an active key; None for an unknown or revoked one."""
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
    if row is None or row.revoked_at is not None:
        return None
    return _principal(row)


def install_bootstrap_key(sessions: sessionmaker[Session], settings: Settings, retry: bool = True) -> None:
    """Make LETHE_BOOTSTRAP_KEY an active admin key, or revoke the old one when it is unset."""
    key = settings.bootstrap_key.get_secret_value()
    with transaction(sessions) as session:
        if not key:
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == BOOTSTRAP_ID, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return
        values = {
            "tenant": check_tenant(settings.bootstrap_tenant),
            "scopes": ",".join(SCOPES),
            "key_hash": hash_key(key),
            "revoked_at": None,
        }
        if affected(session.execute(update(ApiKey).where(ApiKey.id == BOOTSTRAP_ID).values(**values))):
            return
    try:
        with transaction(sessions) as session:
            session.add(ApiKey(id=BOOTSTRAP_ID, name="LETHE_BOOTSTRAP_KEY", **values))
    except IntegrityError:  # another API process inserted it at the same moment
        if not retry:
            raise
        install_bootstrap_key(sessions, settings, retry=False)
