"""Cursor pagination over (created_at, id), newest first: stable while rows are added."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, or_
from sqlalchemy.orm import Session

from lethe.service.infra.errors import Invalid

T = TypeVar("T")
MAX_LIMIT = 200


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = raw.split("|")
        return datetime.fromisoformat(stamp), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError):
        raise Invalid.one(
            "query.cursor",
            "not a cursor from a previous page: use the `next_cursor` of the last response, or omit it",
        ) from None


def paginate(session: Session, query: Select[Any], model: Any, limit: int, cursor: str | None) -> Page[Any]:
    """One page of `query` (rows of `model`, which has created_at and id), newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid.one("query.limit", f"must be between 1 and {MAX_LIMIT}")
    if cursor:
        stamp, row_id = decode_cursor(cursor)
        # (created_at, id) < (stamp, row_id), spelled out: row-value comparison is not portable.
        query = query.where(or_(model.created_at < stamp, (model.created_at == stamp) & (model.id < row_id)))
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return Page(rows, next_cursor)
