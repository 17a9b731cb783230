"""Typed dependencies: each route's needs are visible in its signature.

`PrincipalDep` authenticates the request's `Authorization: Bearer KEY` (401 without a valid key)
and stores the principal on `request.state.principal` for middleware; `ReadDep`, `SubmitDep` and
`AdminDep` also require a scope (403 without it). Routes pass `principal.tenant` to the services,
whose queries are scoped by `lethe.service.infra.tenancy`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from lethe.service.infra import idempotency
from lethe.service.infra.errors import Forbidden, Invalid, Unauthorized
from lethe.service.infra.limits import lone_surrogate, not_text
from lethe.service.infra.runtime import Runtime
from lethe.service.trust.auth import Principal, authenticate

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


def current_principal(request: Request, rt: RuntimeDep, credentials: Credentials) -> Principal:
    """The principal of the request's API key; 401 when it is missing, unknown or revoked."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "no API key: send 'Authorization: Bearer KEY' (create one with "
            "`lethe keys create --tenant NAME --scopes read,submit`)"
        )
    with rt.sessions() as session:
        principal = authenticate(session, credentials.credentials)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked: ask an admin for a new one")
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
