"""Retrying work that must not be lost to a dropped database connection.

A connection killed under a statement (a database restart, `pg_terminate_backend`, a network
blip) raises a DBAPIError marked `connection_invalidated`, or an OperationalError/InterfaceError
when the server cannot be reached; the pool (pre-ping) then reconnects. Only those are retried:
a bad statement or a constraint violation is raised at once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def transient(err: BaseException) -> bool:
    """A dropped or unreachable database connection (worth retrying), not a bad statement."""
    return isinstance(err, DBAPIError) and (
        err.connection_invalidated or isinstance(err, (OperationalError, InterfaceError))
    )


def retry_db(
    tries: int = 6, first_delay_s: float = 0.5, max_delay_s: float = 10.0
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry a function (it must be safe to run again) while the database is unreachable."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(tries):
                try:
                    return fn(*args, **kwargs)
                except DBAPIError as err:
                    if attempt == tries - 1 or not transient(err):
                        raise
                    delay = min(first_delay_s * 2**attempt, max_delay_s)
                    log.warning(
                        "%s: database unreachable (%s); retrying in %.1f s",
                        fn.__name__,
                        str(err).splitlines()[0][:200],
                        delay,
                    )
                    time.sleep(delay)
            raise AssertionError("unreachable")

        return call

    return wrap
