"""Which jobs a Redis broker holds for a live consumer, for the reconciler
(`lethe.service.jobs.reconcile`).

Kombu's Redis transport keeps waiting messages in one list per queue and priority, and delivered
but unacknowledged ones (acks_late: until the task ends) in the `unacked` hash, with the time of
delivery in the `unacked_index` sorted set. A job the database holds as queued that is in neither
was lost (e.g. Redis restarted without persistence) and must be dispatched again.

An unacknowledged message is not proof that anyone holds it: the transport gives a dead worker's
messages back only after the visibility timeout (a day, longer than any job), and a Redis that
keeps its data (`--appendonly yes`) keeps them across a restart. A queued job's message is only
held by a live worker while that worker is due to act on it: a plain delivery is claimed at once,
a retry (`countdown`: a busy job or a tenant at its quota) at its ETA. So a message counts as held
until `grace` seconds (a lease) past that moment; after it, its worker is taken to be gone. A live
worker that was merely slow loses nothing: the atomic claim runs the job once however many
messages name it. Reads only; the lists are scanned in full, which is fine for the queue lengths
a quota allows.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


def job_of(raw: bytes | str | dict[str, Any]) -> uuid.UUID | None:
    """The job id a kombu message (the JSON envelope of one task) carries; None if unreadable."""
    try:
        envelope = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return uuid.UUID(str(args[0]))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def due_at(envelope: dict[str, Any], delivered: float) -> float:
    """When the worker holding this message was to act on it (seconds since 1970): its ETA if it
    has one (Celery's protocol 2 puts it in the headers), else its delivery."""
    eta = (envelope.get("headers") or {}).get("eta")
    if not eta:
        return delivered
    try:
        return max(delivered, datetime.fromisoformat(str(eta)).timestamp())
    except ValueError:
        return delivered


def redis_pending(channel: Any, queues: Iterable[str], now: float, grace: float) -> set[uuid.UUID]:
    """Jobs waiting in the queues' lists (every priority), and those in the unacked hash of a
    kombu channel whose holder was due to act on them less than `grace` seconds before `now`."""
    client = channel.client
    found: set[uuid.UUID] = set()
    keys = {channel._q_for_pri(q, pri) for q in queues for pri in channel.priority_steps}
    for key in sorted(keys):
        found.update(j for raw in client.lrange(key, 0, -1) if (j := job_of(raw)) is not None)
    delivered = {
        _text(tag): score for tag, score in client.zrange(channel.unacked_index_key, 0, -1, withscores=True)
    }
    for tag, raw in client.hgetall(channel.unacked_key).items():
        try:
            envelope = json.loads(raw)[0]  # [message, exchange, routing_key]
        except (ValueError, IndexError, TypeError):
            continue
        job = job_of(envelope) if isinstance(envelope, dict) else None
        if job is None:
            continue
        if due_at(envelope, delivered.get(_text(tag), now)) + grace > now:
            found.add(job)
        else:
            log.info("job %s: its unacknowledged message outlived its worker (no action in %g s)", job, grace)
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
