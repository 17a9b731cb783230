"""A lock per stored blob, held across a storage write and the database commit that follows.

Uploads of the same content share one object (`datasets/<sha256>`); deleting the last dataset
that holds it removes the object. Both take this lock, so a delete never removes an object that a
concurrent upload is about to point a row at. PostgreSQL: a session advisory lock on a dedicated
connection (works across API processes). SQLite: the embedded mode has one process, so a lock in
memory suffices.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from lethe.service.infra.runtime import Runtime

_STRIPES = [threading.Lock() for _ in range(64)]  # bounded memory: names hash onto stripes


def _lock_id(name: str) -> int:
    # pg advisory locks take a signed 64-bit key
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def blob_lock(rt: Runtime, name: str) -> Iterator[None]:
    if rt.engine.dialect.name != "postgresql":
        with _STRIPES[_lock_id(name) % len(_STRIPES)]:
            yield
        return
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _lock_id(name)})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_id(name)})
            conn.commit()
