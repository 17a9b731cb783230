"""Typed dependencies: each route's needs are visible in its signature.

`PrincipalDep` authenticates the request's `Authorization: Bearer KEY` (401 without a valid key)
and stores the principal on `request.state.principal` for middleware; `ReadDep`, `SubmitDep` and
`AdminDep` also require a scope (403 without it). Routes pass `principal.tenant` to the services,
whose queries are scoped by `lethe.service.infra.tenancy`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from lethe.service.infra import idempotency
from lethe.service.infra.db import ApiKey
from lethe.service.infra.errors import Forbidden, Invalid, Unauthorized
from lethe.service.infra.limits import lone_surrogate, not_text
from lethe.service.infra.runtime import Runtime
from lethe.service.trust.auth import Principal, authenticate, hash_key

SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # JSON's only way to write a lone surrogate


async def text_only(request: Request) -> None:
    """An app-wide dependency: 422 for a JSON body holding a lone surrogate escape (`"\\ud800"`).
    It is valid JSON but no character: pydantic lets it through in plain strings, and the row
    holding it could then never be served (every answer naming it would be a 500)."""
    kind = request.headers.get("content-type", "")
    if request.method not in ("POST", "PUT", "PATCH") or "json" not in kind:
        return
    if not SURROGATE_ESCAPE.search(await request.body()):
        return  # the usual case, found by a scan: no walk over a large body on the event loop
    try:
        body = await request.json()  # parsed once: FastAPI reads the same cached body
    except (ValueError, RecursionError):
        return  # not JSON: FastAPI's own parsing answers for it
    found = lone_surrogate(body)
    if found is not None:
        raise Invalid.one(found[0] or "body", not_text(found[1]))


async def get_runtime(request: Request) -> Runtime:
    # async: a trivial lookup should not take a trip through the thread pool
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    with rt.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
bearer = HTTPBearer(auto_error=False, description="an API key: `lethe keys create` or LETHE_BOOTSTRAP_KEY")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class KeyCache:
    """Principals of recently seen API keys, each for `ttl_s` seconds: a client polling a job
    authenticates many times a second, and each lookup was a database round trip on a thread
    of the pool (at 200 requests/s the pool and the database connections were the queue).

    A key revoked through this process (the API, or `auth.revoke_key` here) stops working at
    once: any write to the keys table empties every cache of the process (`_keys_changed`). One
    revoked elsewhere (the CLI, another API replica) keeps working here for up to `ttl_s`
    (LETHE_AUTH_CACHE_S; 0 turns the cache off). Unknown and revoked keys are never cached, so a
    new key works at once. Entries are keyed by the key's SHA-256, as at rest."""

    MAX_ENTRIES = 10_000  # a bound, not an eviction policy: past it the cache starts again
    generation = 0  # bumped by every write to the keys table in this process

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, int, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic() or entry[1] != KeyCache.generation:
            return None
        return entry[2]

    def put(self, digest: str, principal: Principal, generation: int) -> None:
        """`generation`: KeyCache.generation read before the lookup, so a revocation that lands
        during the lookup is not hidden by caching its older answer."""
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl_s, generation, principal)


@event.listens_for(ApiKey, "after_update")
@event.listens_for(ApiKey, "after_delete")
def _key_row_changed(*_: object) -> None:
    KeyCache.generation += 1


@event.listens_for(Session, "do_orm_execute")
def _keys_changed(state: ORMExecuteState) -> None:
    """UPDATE and DELETE statements on the keys table (the bootstrap key's rotation)."""
    if (state.is_update or state.is_delete) and state.bind_mapper is not None:
        if state.bind_mapper.class_ is ApiKey:
            KeyCache.generation += 1


def key_cache(request: Request, rt: Runtime) -> KeyCache:
    """The app's cache (one per API process), made on first use."""
    cache: KeyCache | None = getattr(request.app.state, "key_cache", None)
    if cache is None:
        cache = request.app.state.key_cache = KeyCache(rt.settings.auth_cache_s)
    return cache


def _look_up(rt: Runtime, key: str) -> Principal | None:
    with rt.sessions() as session:
        return authenticate(session, key)


async def current_principal(request: Request, rt: RuntimeDep, credentials: Credentials) -> Principal:
    """The principal of the request's API key; 401 when it is missing, unknown or revoked.
    Async: a cached key costs no trip through the thread pool; a lookup takes one."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "no API key: send 'Authorization: Bearer KEY' (create one with "
            "`lethe keys create --tenant NAME --scopes read,submit`)"
        )
    key, cache = credentials.credentials, key_cache(request, rt)
    digest = hash_key(key)
    principal = cache.get(digest)
    if principal is None:
        generation = KeyCache.generation
        principal = await run_in_threadpool(_look_up, rt, key)
        if principal is None:
            raise Unauthorized("the API key is unknown or revoked: ask an admin for a new one")
        cache.put(digest, principal, generation)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets only principals with `scope` (or `admin`) through."""

    async def check(principal: PrincipalDep) -> Principal:  # async: no thread-pool trip
        if not principal.allows(scope):
            raise Forbidden(
                f"this API key lacks the {scope!r} scope (it has "
                f"{', '.join(sorted(principal.scopes))}): use a key with {scope!r}"
            )
        return principal

    check.__name__ = f"require_{scope}"
    return check


ReadDep = Annotated[Principal, Depends(require("read"))]
SubmitDep = Annotated[Principal, Depends(require("submit"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        # documented here, checked by the service (whose message says what to send)
        json_schema_extra={"minLength": 1, "maxLength": idempotency.MAX_KEY_CHARS},
        description="a client-made key (e.g. a UUID): a retry with it returns the first result",
    ),
]
