"""The event log for operators: list, show and requeue outbox events, and prune old ones."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, Select, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.clock import utc_now
from backend.errors import InvalidInput, NotFound
from backend.events.outbox import NOTIFY_CHANNEL
from backend.models import OutboxEvent

EventStatus = Literal["pending", "published", "dead"]
EVENT_STATUSES: tuple[EventStatus, ...] = ("pending", "published", "dead")
EVENT_HEADER = (
    f"{'LOG ID':>8}  {'CREATED (UTC)':19}  {'STATUS':9}  {'TRIES':>5}  TASK  VERSION  TYPE"
)
ERROR_PREVIEW_CHARS = 120


async def list_events(
    session: AsyncSession,
    *,
    status: str | None = None,
    task_id: int | None = None,
    limit: int = 50,
) -> Sequence[OutboxEvent]:
    """The newest `limit` events that match, oldest first (as a log reads)."""
    statement = select(OutboxEvent)
    if status:
        statement = statement.where(col(OutboxEvent.status) == status)
    if task_id is not None:
        statement = statement.where(col(OutboxEvent.task_id) == task_id)
    newest = statement.order_by(col(OutboxEvent.id).desc()).limit(limit)
    return list(reversed((await session.scalars(newest)).all()))


def _lookup(key: str) -> ColumnElement[bool]:
    """A CloudEvent id (UUID) or a log id (the number `events list` shows)."""
    key = key.strip()
    if key.isdigit():
        return col(OutboxEvent.id) == int(key)
    try:
        return col(OutboxEvent.event_id) == str(uuid.UUID(key))
    except ValueError:
        raise InvalidInput(f"{key!r} is neither an event id (UUID) nor a log id") from None


async def find_event(session: AsyncSession, key: str) -> OutboxEvent:
    event = (await session.scalars(select(OutboxEvent).where(_lookup(key)))).first()
    if event is None:
        raise NotFound(f"Event {key} not found", code="event_not_found")
    return event


async def requeue(
    session: AsyncSession, keys: Sequence[str] = (), *, all_dead: bool = False
) -> int:
    """Dead events back to pending with their attempts reset; how many were requeued.

    Only dead events: a pending one is on its way, and publishing a published one again
    could put it after later events of its task.
    """
    if all_dead:
        rows = list((await session.scalars(_dead())).all())
    else:
        rows = [await find_event(session, key) for key in keys]
        alive = [row for row in rows if row.status != "dead"]
        if alive:
            names = ", ".join(f"{row.id} ({row.status})" for row in alive)
            raise InvalidInput(f"only dead events can be requeued; not {names}")
    now = utc_now()
    for row in rows:
        row.status = "pending"
        row.attempts = 0
        row.available_at = now
    if rows and session.get_bind().dialect.name == "postgresql":
        # Relays in other processes wake now rather than at their next poll.
        await session.execute(text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"))
    return len(rows)


def _dead() -> Select[OutboxEvent]:
    return (
        select(OutboxEvent)
        .where(col(OutboxEvent.status) == "dead")
        .order_by(col(OutboxEvent.id))
        .with_for_update()
    )


async def prune_published(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` published events created before `before`; how many went.

    Pending and dead events are never pruned: they are work left, or evidence.
    """
    oldest = (
        select(col(OutboxEvent.id))
        .where(col(OutboxEvent.status) == "published", col(OutboxEvent.created_at) < before)
        .order_by(col(OutboxEvent.id))
        .limit(limit)
    )
    ids = list((await session.scalars(oldest)).all())
    if ids:
        await session.execute(delete(OutboxEvent).where(col(OutboxEvent.id).in_(ids)))
    return len(ids)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def format_event_line(event: OutboxEvent) -> str:
    action = event.type.rsplit(".", 1)[-1]
    line = (
        f"{event.id:>8}  {_when(event.created_at):19}  {event.status:9}  {event.attempts:>5}"
        f"  {event.task_id:>4}  {event.version:>7}  {action}"
    )
    if event.status != "published" and event.last_error:
        line += f"  ({' '.join(event.last_error.split())[:ERROR_PREVIEW_CHARS]})"
    return line


def format_event(event: OutboxEvent) -> str:
    """Everything about one event: its delivery state, then the CloudEvent as published."""
    lines = [
        f"log id      {event.id}",
        f"event id    {event.event_id}",
        f"status      {event.status}",
        f"attempts    {event.attempts}",
        f"created     {_when(event.created_at)} UTC",
        f"next try    {_when(event.available_at) if event.status == 'pending' else '-'}",
        f"published   {_when(event.published_at)}",
        f"last error  {event.last_error or '-'}",
        "",
        json.dumps(event.payload, indent=2, ensure_ascii=False),
    ]
    return "\n".join(lines)
