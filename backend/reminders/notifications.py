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


def _user_key(user_id: str) -> int:
    return zlib.crc32(f"notification:{user_id}".encode())


async def _lockable_users(session: AsyncSession, user_ids: Sequence[str]) -> set[str]:
    """The users whose notifications this transaction may number (PostgreSQL: a per-user
    advisory lock held to commit, so `seq` follows commit order; SQLite has one writer).

    Try-locks, so two schedulers never wait on each other: a user another one is firing for
    is left to the next round (its reminders stay armed)."""
    if session.get_bind().dialect.name != "postgresql":
        return set(user_ids)
    keys: dict[int, list[str]] = {}
    for user_id in user_ids:
        keys.setdefault(_user_key(user_id), []).append(user_id)
    rows = await session.execute(
        text(
            "SELECT key FROM unnest(CAST(:keys AS bigint[])) AS key"
            " WHERE pg_try_advisory_xact_lock(key)"
        ),
        {"keys": sorted(keys)},
    )
    # Users whose keys collide share the lock: all of them are this round's, or none.
    return {user_id for row in rows.all() for user_id in keys[int(str(row[0]))]}


@dataclass(frozen=True)
class Fired:
    notification_id: int
    user_id: str
    task_id: int
    late: bool
    # How long after its set time the reminder fired.
    lag_seconds: float


async def fire_due(session: AsyncSession, *, batch_size: int) -> list[Fired]:
    """Fire up to `batch_size` reminders whose time has come, in the caller's transaction.

    A batch costs a fixed number of statements (plus two per conversation noted), not a
    few per reminder: a minute with thousands due must drain in seconds."""
    now = utc_now()
    statement = (
        select(Task)
        .where(_ARMED, col(Task.remind_at) <= now)
        .order_by(col(Task.remind_at), col(Task.id))
        .limit(batch_size)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True, of=Task)
    claimed = (await session.scalars(statement)).all()
    if not claimed:
        return []
    users = await _lockable_users(session, sorted({task.user_id for task in claimed}))
    tasks = [task for task in claimed if task.user_id in users]
    if not tasks:
        return []
    already = await _already_notified(session, tasks)
    # Re-armed at an instant that already notified: disarmed, not told twice (no event
    # either, or a push subscriber would deliver it again).
    repeats = [task.id for task in tasks if (task.id, task.remind_at) in already]
    if repeats:
        await session.execute(
            update(Task)
            .where(col(Task.id).in_(repeats))
            .values(reminded_at=now)
            .execution_options(synchronize_session=False)
        )
    firing = [task for task in tasks if (task.id, task.remind_at) not in already]
    if not firing:
        return []
    await task_service.mark_reminded(session, firing, now)
    last_seq = await _last_seqs(session, users)
    conversations = await _latest_conversations(session, users)
    rows: list[Notification] = []
    notes: dict[int, list[tuple[Notification, str]]] = {}
    for task in firing:
        remind_at = task.remind_at
        assert remind_at is not None
        assert task.id is not None
        late = now - remind_at > LATE_AFTER
        last_seq[task.user_id] = seq = last_seq.get(task.user_id, 0) + 1
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
        rows.append(notification)
        conversation_id = conversations.get(task.user_id)
        if conversation_id is not None:
            text_ = reminder_text(task, remind_at=remind_at, late=late)
            notes.setdefault(conversation_id, []).append((notification, text_))
    for conversation_id, said in notes.items():
        messages = await chat_service.add_messages(
            session, conversation_id, said[0][0].user_id, "assistant", [t for _, t in said]
        )
        for (notification, _), message in zip(said, messages, strict=True):
            notification.message_id = message.id
    session.add_all(rows)
    await session.flush()
    return [
        Fired(
            row.id or 0,
            row.user_id,
            row.task_id,
            row.late,
            (row.fired_at - row.remind_at).total_seconds(),
        )
        for row in rows
    ]


async def _already_notified(
    session: AsyncSession, tasks: Sequence[Task]
) -> set[tuple[int | None, datetime | None]]:
    statement = select(col(Notification.task_id), col(Notification.remind_at)).where(
        col(Notification.task_id).in_([task.id for task in tasks])
    )
    wanted = {(task.id, task.remind_at) for task in tasks}
    found: set[tuple[int | None, datetime | None]] = {
        (row[0], row[1]) for row in (await session.execute(statement)).all()
    }
    return found & wanted


async def _last_seqs(session: AsyncSession, users: set[str]) -> dict[str, int]:
    statement = (
        select(col(Notification.user_id), func.max(col(Notification.seq)))
        .where(col(Notification.user_id).in_(sorted(users)))
        .group_by(col(Notification.user_id))
    )
    return {str(row[0]): int(row[1]) for row in (await session.execute(statement)).all()}


async def _latest_conversations(session: AsyncSession, users: set[str]) -> dict[str, int]:
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
        .where(col(Conversation.user_id).in_(sorted(users)), col(Conversation.deleted_at).is_(None))
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
