"""Which jobs a Redis broker holds, for the reconciler (`lethe.service.jobs.reconcile`).

Kombu's Redis transport keeps waiting messages in one list per queue and priority, and delivered
but unacknowledged ones (acks_late: until the task ends) in the `unacked` hash. A job the
database holds as queued that is in neither was lost (e.g. Redis restarted without persistence)
and must be dispatched again. Reads only; the lists are scanned in full, which is fine for the
queue lengths a quota allows.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def job_of(raw: bytes | str) -> uuid.UUID | None:
    """The job id a kombu message (the JSON envelope of one task) carries; None if unreadable."""
    try:
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return uuid.UUID(str(args[0]))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def redis_pending(channel: Any, queues: Iterable[str]) -> set[uuid.UUID]:
    """Jobs in the queues' lists (every priority) and in the unacked hash of a kombu channel."""
    client = channel.client
    found: set[uuid.UUID] = set()
    keys = {channel._q_for_pri(q, pri) for q in queues for pri in channel.priority_steps}
    for key in sorted(keys):
        found.update(j for raw in client.lrange(key, 0, -1) if (j := job_of(raw)) is not None)
    for raw in client.hvals(channel.unacked_key):
        try:
            message = json.loads(raw)[0]  # [message, exchange, routing_key]
        except (ValueError, IndexError, TypeError):
            continue
        job = job_of(json.dumps(message))
        if job is not None:
            found.add(job)
    return found
