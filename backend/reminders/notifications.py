"""Reminders that fire, and the notifications they leave for the user.

Firing is one transaction per batch: the claimed tasks' `reminded_at`, their `reminder.due`
events (through the task service), one `notification` row each and a note in the user's
latest conversation. On PostgreSQL the batch is claimed with FOR UPDATE SKIP LOCKED, so any
number of schedulers fire each reminder once; the unique (task, instant) key on
`notification` is the backstop.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.chat import service as chat_service
from backend.clock import utc_now
from backend.models import REMINDER_ARMED_SQL, Conversation, Notification, Task
from backend.tasks import service as task_service

# A reminder that fires later than this after its time says it is late.
LATE_AFTER = timedelta(minutes=1)
_ARMED = text(REMINDER_ARMED_SQL)

_fired_listeners: set[Callable[[], None]] = set()


def add_fired_listener(listener: Callable[[], None]) -> None:
    """Called after this process fired reminders (open notification streams wake up)."""
    _fired_listeners.add(listener)


def remove_fired_listener(listener: Callable[[], None]) -> None:
    _fired_listeners.discard(listener)


def notify_fired() -> None:
    for listener in list(_fired_listeners):
        listener()


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def _clock_time(moment: datetime) -> str:
    return moment.strftime("%I:%M %p").lstrip("0")


def reminder_text(task: Task, *, remind_at: datetime, late: bool) -> str:
    """What the user reads: "⏰ Reminder: Call mom — due 5:00 PM", in the task's zone."""
    zone = _zone(task.time_zone)
    line = f"⏰ Reminder: {task.title}"
    if task.due_at is not None:
        due = task.due_at.astimezone(zone)
        same_day = due.date() == remind_at.astimezone(zone).date()
        when = _clock_time(due) if same_day else f"{due:%a %-d %b}, {_clock_time(due)}"
        line += f" — due {when}"
    if late:
        line += f" (late: it was set for {_clock_time(remind_at.astimezone(zone))})"
    return line


async def next_reminder_at(session: AsyncSession) -> datetime | None:
    """When the earliest armed reminder is due (read from the scheduler's partial index)."""
    return await session.scalar(select(func.min(col(Task.remind_at))).where(_ARMED))


async def _lock_users(session: AsyncSession, user_ids: Sequence[str]) -> None:
    """Serialise firings per user on PostgreSQL, so `seq` follows commit order.

    Locks are taken in sorted order, so two schedulers never wait on each other in a cycle.
    SQLite has one writer at a time: nothing to do.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    for user_id in sorted(user_ids):
        key = zlib.crc32(f"notification:{user_id}".encode())
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@dataclass(frozen=True)
class Fired:
    notification_id: int
    user_id: str
    task_id: int
    late: bool


async def fire_due(session: AsyncSession, *, batch_size: int) -> list[Fired]:
    """Fire up to `batch_size` reminders whose time has come, in the caller's transaction."""
    now = utc_now()
    statement = (
        select(Task)
        .where(_ARMED, col(Task.remind_at) <= now)
        .order_by(col(Task.remind_at), col(Task.id))
        .limit(batch_size)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True, of=Task)
    tasks = (await session.scalars(statement)).all()
    if not tasks:
        return []
    users = sorted({task.user_id for task in tasks})
    await _lock_users(session, users)
    last_seq: dict[str, int] = dict(
        (
            await session.execute(
                select(col(Notification.user_id), func.max(col(Notification.seq)))
                .where(col(Notification.user_id).in_(users))
                .group_by(col(Notification.user_id))
            )
        ).all()
    )
    conversations = await _latest_conversations(session, users)
    fired: list[Fired] = []
    for task in tasks:
        remind_at = task.remind_at
        assert remind_at is not None
        assert task.id is not None
        already = await session.scalar(
            select(col(Notification.id)).where(
                col(Notification.task_id) == task.id, col(Notification.remind_at) == remind_at
            )
        )
        await task_service.mark_reminded(session, task, now)
        if already is not None:
            continue  # fired before (re-armed at the same instant): once is enough
        late = now - remind_at > LATE_AFTER
        seq = last_seq.get(task.user_id, 0) + 1
        last_seq[task.user_id] = seq
        notification = Notification(
            user_id=task.user_id,
            seq=seq,
            task_id=task.id,
            title=task.title,
            due_at=task.due_at,
            remind_at=remind_at,
            time_zone=task.time_zone,
            fired_at=now,
            late=late,
        )
        conversation_id = conversations.get(task.user_id)
        if conversation_id is not None:
            message = await chat_service.add_message(
                session,
                conversation_id,
                task.user_id,
                "assistant",
                reminder_text(task, remind_at=remind_at, late=late),
            )
            notification.message_id = message.id
        session.add(notification)
        await session.flush()
        assert notification.id is not None
        fired.append(Fired(notification.id, task.user_id, task.id, late))
    return fired


async def _latest_conversations(session: AsyncSession, users: Sequence[str]) -> dict[str, int]:
    """Each user's most recently active conversation."""
    ranked = (
        select(
            col(Conversation.user_id),
            col(Conversation.id),
            func.row_number()
            .over(
                partition_by=col(Conversation.user_id),
                order_by=(col(Conversation.updated_at).desc(), col(Conversation.id).desc()),
            )
            .label("rank"),
        )
        .where(col(Conversation.user_id).in_(users), col(Conversation.deleted_at).is_(None))
        .subquery()
    )
    rows = await session.execute(select(ranked.c.user_id, ranked.c.id).where(ranked.c.rank == 1))
    return {str(row[0]): int(row[1]) for row in rows.all()}


# --- reading them ---


async def list_notifications(
    session: AsyncSession, user_id: str, *, unread_only: bool, limit: int, offset: int
) -> tuple[Sequence[Notification], int, int]:
    """A page of the user's notifications, unread first, newest first; (page, total, unread)."""
    scoped = select(Notification).where(col(Notification.user_id) == user_id)
    if unread_only:
        scoped = scoped.where(col(Notification.read_at).is_(None))
    page = (
        await session.scalars(
            scoped.order_by(col(Notification.read_at).is_not(None), col(Notification.seq).desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = await session.scalar(select(func.count()).select_from(scoped.subquery())) or 0
    unread = (
        await session.scalar(
            select(func.count()).where(
                col(Notification.user_id) == user_id, col(Notification.read_at).is_(None)
            )
        )
        or 0
    )
    return page, total, unread


async def notifications_after(
    session: AsyncSession, user_id: str, seq: int, *, limit: int
) -> Sequence[Notification]:
    """The user's notifications after `seq`, oldest first (what a stream sends next)."""
    statement = (
        select(Notification)
        .where(col(Notification.user_id) == user_id, col(Notification.seq) > seq)
        .order_by(col(Notification.seq))
        .limit(limit)
    )
    return (await session.scalars(statement)).all()


async def last_seq(session: AsyncSession, user_id: str) -> int:
    value = await session.scalar(
        select(func.max(col(Notification.seq))).where(col(Notification.user_id) == user_id)
    )
    return int(value or 0)


async def mark_read(
    session: AsyncSession, user_id: str, *, ids: Sequence[int] | None = None
) -> int:
    """Mark the user's notifications read (the given ones, or all); how many changed."""
    statement = (
        update(Notification)
        .where(col(Notification.user_id) == user_id, col(Notification.read_at).is_(None))
        .values(read_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    if ids is not None:
        statement = statement.where(col(Notification.id).in_(ids))
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


async def get_notification(
    session: AsyncSession, user_id: str, notification_id: int
) -> Notification | None:
    statement = select(Notification).where(
        col(Notification.user_id) == user_id, col(Notification.id) == notification_id
    )
    return (await session.scalars(statement)).first()
