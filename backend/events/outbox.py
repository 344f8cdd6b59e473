"""Writing task events: a CloudEvent row in the transaction of the change it describes.

Only the task service calls `record_task_event`; REST, MCP, chat and the CLI produce events
by changing tasks, without knowing events exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import Table, event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from backend.clock import utc_now
from backend.models import OutboxEvent, Task
from backend.tasks.schemas import TaskPublic

# Who changed the task: the REST API, an MCP client of its own, the assistant in a chat
# turn (our chat endpoint, ChatKit, the terminal chat), or the reminder scheduler.
Channel = Literal["rest", "mcp", "chat", "chatkit", "cli", "scheduler"]
CHANNELS: frozenset[str] = frozenset(get_args(Channel))
TaskAction = Literal[
    "created", "updated", "completed", "reopened", "deleted", "restored", "skipped", "reminder.due"
]
TASK_ACTIONS: tuple[str, ...] = get_args(TaskAction)
EVENT_TYPE_PREFIX = "com.todo-assistant.task."
SPEC_VERSION = "1.0"
# The CloudEvents `source`: the context the event happened in (a URI reference).
EVENT_SOURCE = "/todo-assistant/tasks"
# PostgreSQL delivers a NOTIFY at commit, to relays in any process (the MCP server writes
# events too); a trigger on outbox_event sends it, folded into one per transaction.
NOTIFY_CHANNEL = "todo_outbox"  # also named by the trigger in migration 0004
# Fields a change is described by; updated_at and version move with every change.
_UNTRACKED = frozenset({"updated_at", "version"})
_WRITTEN_KEY = "outbox_written"

_commit_listeners: set[Callable[[], None]] = set()
# The table, not the mapped class: a plain INSERT skips the ORM's bulk-insert machinery.
OUTBOX_TABLE: Table = OutboxEvent.__table__  # type: ignore[attr-defined]


def event_type(action: str) -> str:
    return EVENT_TYPE_PREFIX + action


def _utc_text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def snapshot(task: Task) -> dict[str, Any]:
    """The task as the API shows it, plus whether it is deleted: what changes are read from."""
    view = TaskPublic.model_validate(task).model_dump(mode="json")
    view["deleted_at"] = _utc_text(task.deleted_at) if task.deleted_at else None
    return view


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`{field: {"from": old, "to": new}}` for every field that differs."""
    return {
        name: {"from": before.get(name), "to": value}
        for name, value in after.items()
        if name not in _UNTRACKED and before.get(name) != value
    }


def cloud_event(
    *,
    event_id: str,
    action: str,
    task: dict[str, Any],
    changes: dict[str, Any],
    user_id: str,
    channel: str,
    version: int,
    time: datetime,
) -> dict[str, Any]:
    """The envelope as published: CloudEvents 1.0, structured JSON (specs/events.md)."""
    task_id = str(task["id"])
    return {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": EVENT_SOURCE,
        "type": event_type(action),
        "subject": task_id,
        "time": _utc_text(time),
        "datacontenttype": "application/json",
        # The CloudEvents Kafka partitioning extension: one task, one partition, in order.
        "partitionkey": task_id,
        "data": {
            "task": {key: value for key, value in task.items() if key != "deleted_at"},
            "changes": changes,
            "user_id": user_id,
            "channel": channel,
            "version": version,
        },
    }


async def record_task_event(
    session: AsyncSession,
    task: Task,
    action: TaskAction,
    *,
    changes: dict[str, Any],
    channel: Channel,
) -> str:
    """Write the event of a change in its transaction; its id. It commits or rolls back
    with the change."""
    [event_id] = await record_task_events(session, [(task, changes)], action, channel=channel)
    return event_id


async def record_task_events(
    session: AsyncSession,
    changed: Sequence[tuple[Task, dict[str, Any]]],
    action: TaskAction,
    *,
    channel: Channel,
) -> list[str]:
    """The events of several tasks' changes of one kind, in one statement; their ids."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    now = utc_now()
    rows: list[dict[str, Any]] = []
    for task, changes in changed:
        assert task.id is not None, "flush the task before recording its event"
        event_id = str(uuid.uuid4())
        payload = cloud_event(
            event_id=event_id,
            action=action,
            task=snapshot(task),
            changes=changes,
            user_id=task.user_id,
            channel=channel,
            version=task.version,
            time=now,
        )
        rows.append(
            {
                "event_id": event_id,
                "type": payload["type"],
                "task_id": task.id,
                "user_id": task.user_id,
                "channel": channel,
                "version": task.version,
                "payload": payload,
                "created_at": now,
                "available_at": now,
                "status": "pending",
                "attempts": 0,
            }
        )
    if not rows:
        return []
    # A Core insert: the rows are never read back here, so the unit of work has nothing to
    # do. On PostgreSQL a statement trigger (migration 0004) sends the NOTIFY.
    statement = insert(OUTBOX_TABLE)
    if len(rows) == 1:
        await session.execute(statement.values(**rows[0]))
    else:
        await session.execute(statement, rows)
    session.sync_session.info[_WRITTEN_KEY] = True
    return [row["event_id"] for row in rows]


def add_commit_listener(listener: Callable[[], None]) -> None:
    """Call `listener` after any commit in this process that wrote events (relay wake-up).

    It runs inside the commit: it must only schedule work (set an event, call_soon_threadsafe).
    """
    _commit_listeners.add(listener)


def remove_commit_listener(listener: Callable[[], None]) -> None:
    _commit_listeners.discard(listener)


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.info.pop(_WRITTEN_KEY, False):
        for listener in list(_commit_listeners):
            listener()


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_WRITTEN_KEY, None)
