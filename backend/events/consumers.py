"""Our own consumers of the task events, and the task history the first of them builds.

Events arrive at least once: from the relay in this process (`apply_locally`) or through the
Dapr sidecar (`deliver`, called by the /events routes). Each consumer records the event id in
the inbox in the transaction of its effect, so a second delivery changes nothing. The history
is therefore built a moment after the change: the relay's round trip, milliseconds when it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.clock import utc_now
from backend.db import is_database_unavailable
from backend.events.outbox import TASK_ACTIONS
from backend.events.schemas import TaskEvent
from backend.models import InboxEvent, Task, TaskActivity
from backend.tasks import service

logger = logging.getLogger(__name__)

Outcome = Literal["applied", "duplicate"]
Effect = Callable[[AsyncSession, Sequence[TaskEvent]], Awaitable[None]]
TASK_ACTIVITY = "task-activity"
MAX_LOGGED_ID = 64


class PoisonEvent(Exception):
    """An event no retry can ever process (malformed, or of a type nobody knows)."""


@dataclass(frozen=True)
class HistoryPage:
    task: Task
    entries: list[TaskActivity]  # newest first
    has_more: bool


def parse_event(cloud_event: object) -> TaskEvent:
    """The envelope checked; anything else is poison, described without echoing its data."""
    if not isinstance(cloud_event, dict):
        raise PoisonEvent(f"not a JSON object but {type(cloud_event).__name__}")
    try:
        event = TaskEvent.model_validate(cloud_event)
    except ValidationError as exc:
        where = ", ".join(
            ".".join(str(part) for part in error["loc"]) or "event"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise PoisonEvent(f"invalid task event ({where})") from None
    if event.action not in TASK_ACTIONS:
        raise PoisonEvent(f"unknown event type {event.type}")
    return event


async def _record_activity(session: AsyncSession, events: Sequence[TaskEvent]) -> None:
    rows = [
        {
            "event_id": event.id,
            "user_id": event.data.user_id,
            "task_id": event.data.task.id,
            "version": event.data.version,
            "action": event.action,
            "channel": event.data.channel,
            "title": event.data.task.title,
            "changes": event.data.changes,
            "occurred_at": event.time,
        }
        for event in events
    ]
    await session.execute(insert(TaskActivity), rows)


# Each consumer's effect takes a batch: the relay hands over hundreds of events at a time,
# and one statement for all of them is what keeps it fast.
CONSUMERS: Mapping[str, Effect] = MappingProxyType({TASK_ACTIVITY: _record_activity})
# The consumers the relay feeds in-process (when settings.feeds_local_consumers).
LOCAL_CONSUMERS: tuple[str, ...] = (TASK_ACTIVITY,)


async def _claim(session: AsyncSession, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Insert the inbox rows that do not exist yet; the ids this delivery got first.

    ON CONFLICT DO NOTHING rather than a read then a write: two deliveries racing on
    PostgreSQL queue on the key, and the second one sees the first one's row once it commits.
    """
    now = utc_now()
    values = [
        {"consumer": consumer, "event_id": event_id, "received_at": now} for event_id in event_ids
    ]
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        upsert(InboxEvent)
        .values(values)
        .on_conflict_do_nothing()
        .returning(col(InboxEvent.event_id))
    )
    return set((await session.scalars(statement)).all())


async def _apply(session: AsyncSession, consumer: str, events: Sequence[TaskEvent]) -> int:
    """Claim then apply, in the caller's transaction; how many were new to `consumer`."""
    claimed = await _claim(session, consumer, [event.id for event in events])
    fresh = [event for event in events if event.id in claimed]
    if fresh:
        await CONSUMERS[consumer](session, fresh)
    return len(fresh)


async def deliver(session: AsyncSession, consumer: str, cloud_event: object) -> Outcome:
    """Apply one event for `consumer` in the caller's transaction, at most once.

    Raises PoisonEvent for an event that can never be processed, KeyError for an unknown
    consumer; database errors propagate (the caller retries later).
    """
    if consumer not in CONSUMERS:
        raise KeyError(consumer)
    event = parse_event(cloud_event)
    return "applied" if await _apply(session, consumer, [event]) else "duplicate"


def _describe(cloud_event: object) -> str:
    raw = cloud_event.get("id") if isinstance(cloud_event, dict) else None
    text = raw if isinstance(raw, str) else repr(raw)
    return text[:MAX_LOGGED_ID].encode("unicode_escape").decode()


async def apply_locally(session: AsyncSession, cloud_events: list[dict[str, Any]]) -> None:
    """Feed events to every local consumer, in order, in the caller's transaction.

    A poison event is logged and skipped; duplicates (already applied, or twice in the
    batch) change nothing. The whole batch is one inbox statement and one effect per
    consumer.
    """
    events: dict[str, TaskEvent] = {}
    for cloud_event in cloud_events:
        try:
            event = parse_event(cloud_event)
        except PoisonEvent as exc:
            logger.warning(
                "local consumers skipped poison event %s: %s", _describe(cloud_event), exc
            )
            continue
        events.setdefault(event.id, event)
    if not events:
        return
    batch = list(events.values())
    try:
        async with session.begin_nested():
            await _apply_all(session, batch)
    except SQLAlchemyError as exc:
        if is_database_unavailable(exc):
            raise
        # One event the database refuses must not hold back the rest (nor the relay, whose
        # marking commits with this): find it, one SAVEPOINT per event, and skip it.
        logger.warning("local consumers: a batch failed (%s); applying one by one", _brief(exc))
        for event in batch:
            try:
                async with session.begin_nested():
                    await _apply_all(session, [event])
            except SQLAlchemyError as failure:
                if is_database_unavailable(failure):
                    raise
                logger.warning("local consumers skipped event %s: %s", event.id, _brief(failure))


async def _apply_all(session: AsyncSession, events: list[TaskEvent]) -> None:
    for consumer in LOCAL_CONSUMERS:
        await _apply(session, consumer, events)


def _brief(exc: SQLAlchemyError) -> str:
    """The error's class and first line: never its parameters (titles, user ids)."""
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}"


async def task_history(
    session: AsyncSession,
    user_id: str,
    task_id: int,
    *,
    limit: int,
    before_version: int | None = None,
) -> HistoryPage:
    """A page of the task's history, newest first; deleted tasks keep theirs.

    Raises TaskNotFound for a task that is not this user's (or does not exist).
    """
    task = await service.get_task(session, user_id, task_id, include_deleted=True)
    statement = select(TaskActivity).where(
        col(TaskActivity.user_id) == user_id, col(TaskActivity.task_id) == task_id
    )
    if before_version is not None:
        statement = statement.where(col(TaskActivity.version) < before_version)
    statement = statement.order_by(
        col(TaskActivity.version).desc(), col(TaskActivity.id).desc()
    ).limit(limit + 1)
    rows = list((await session.scalars(statement)).all())
    return HistoryPage(task=task, entries=rows[:limit], has_more=len(rows) > limit)
