"""Errors the job and dataset services raise; the API turns each into one HTTP status.

Messages are written for the person who sent the request: they say what to change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the field's dotted path and what to fix."""

    field: str
    msg: str


class ServiceError(Exception):
    status = 400
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only default; subclasses set their own

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def detail(self) -> object:
        return self.message


class Unauthorized(ServiceError):
    """No key, or an unknown or revoked one."""

    status = 401
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012


class Forbidden(ServiceError):
    """A valid key without the scope the request needs."""

    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class TooLarge(ServiceError):
    status = 413


class TooMany(ServiceError):
    """Over a tenant's quota: 429 with Retry-After."""

    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, int(retry_after_s)))}


class Unavailable(ServiceError):
    """A backend (database, broker, storage) failed; the request may be retried."""

    status = 503


class Invalid(ServiceError):
    """The request is well-formed but cannot be run: 422 with one entry per field."""

    status = 422

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.msg}" for p in problems))
        self.problems = problems

    @classmethod
    def one(cls, field: str, msg: str) -> Invalid:
        return cls([Problem(field, msg)])

    @property
    def detail(self) -> object:
        return [{"field": p.field, "msg": p.msg} for p in self.problems]
