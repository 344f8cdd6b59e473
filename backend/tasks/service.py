"""The task rules. REST routes, MCP tools, the agent and the CLI all come through here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select
from sqlmodel import col

from backend.clock import utc_now
from backend.errors import NotFound
from backend.events.outbox import Channel, TaskAction, changes_between, record_task_event, snapshot
from backend.models import Task, TaskTag
from backend.tasks.schemas import TaskCreate, TaskQuery, TaskReplace, TaskUpdate

PRIORITY_RANK = case(
    {"low": 0, "medium": 1, "high": 2, "urgent": 3}, value=col(Task.priority), else_=1
)


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, task_id: int) -> None:
        super().__init__(f"Task {task_id} not found")
        self.task_id = task_id


@dataclass(frozen=True)
class TaskListResult:
    items: Sequence[Task]
    total: int


def _owned(user_id: str, *, include_deleted: bool = False) -> Select[Task]:
    """The one access-control point: this user's live tasks (restore also sees deleted ones)."""
    statement = select(Task).where(col(Task.user_id) == user_id)
    return statement if include_deleted else statement.where(col(Task.deleted_at).is_(None))


async def _load(
    session: AsyncSession,
    user_id: str,
    task_id: int,
    *,
    include_deleted: bool = False,
    for_change: bool = False,
) -> Task:
    statement = _owned(user_id, include_deleted=include_deleted).where(col(Task.id) == task_id)
    if for_change:
        # Changes to one task queue on its row (PostgreSQL; SQLite writers are serial anyway),
        # so versions and events follow the order the changes commit in.
        # populate_existing: a copy already in the session is refreshed from the locked row.
        statement = statement.with_for_update().execution_options(populate_existing=True)
    task = (await session.scalars(statement)).first()
    if task is None:
        raise TaskNotFound(task_id)
    return task


def _set_tags(task: Task, tags: list[str]) -> None:
    task.tag_links = [TaskTag(tag=tag, position=index) for index, tag in enumerate(tags)]


def _apply_completion(task: Task, completed: bool) -> None:
    if completed and not task.completed:
        task.completed_at = utc_now()
    elif not completed:
        task.completed_at = None
    task.completed = completed


async def _record_change(
    session: AsyncSession,
    task: Task,
    before: dict[str, Any],
    channel: Channel,
    action: TaskAction | None = None,
) -> Task:
    """Stamp, version and log a change; a change that changed nothing leaves no trace.

    Without an explicit action, a change of completion alone is `completed`/`reopened`.
    """
    changes = changes_between(before, snapshot(task))
    if not changes:
        return task
    if action is None:
        only_completion = set(changes) <= {"completed", "completed_at"}
        action = ("completed" if task.completed else "reopened") if only_completion else "updated"
    if action != "deleted":
        task.updated_at = utc_now()
    task.version += 1
    await session.flush()
    await record_task_event(session, task, action, changes=changes, channel=channel)
    return task


async def create_task(
    session: AsyncSession, user_id: str, data: TaskCreate, *, channel: Channel
) -> Task:
    now = utc_now()
    task = Task(
        user_id=user_id,
        title=data.title,
        description=data.description,
        priority=data.priority.value,
        due_at=data.due_at,
        remind_at=data.remind_at,
        recurrence=data.recurrence,
        created_at=now,
        updated_at=now,
    )
    _set_tags(task, data.tags)
    session.add(task)
    await session.flush()
    await record_task_event(session, task, "created", changes={}, channel=channel)
    return task


async def get_task(
    session: AsyncSession, user_id: str, task_id: int, *, include_deleted: bool = False
) -> Task:
    """One of the user's tasks (deleted ones too when asked: history outlives a delete)."""
    return await _load(session, user_id, task_id, include_deleted=include_deleted)


def _filters(query: TaskQuery) -> list[ColumnElement[bool]]:
    now = utc_now()
    conditions: list[ColumnElement[bool]] = []
    if query.status != "all":
        conditions.append(
            col(Task.completed).is_(true() if query.status == "completed" else false())
        )
    if query.priority is not None:
        conditions.append(col(Task.priority) == query.priority.value)
    for tag in query.tag:
        conditions.append(
            exists().where(col(TaskTag.task_id) == col(Task.id), col(TaskTag.tag) == tag)
        )
    if query.q:
        conditions.append(
            or_(
                col(Task.title).icontains(query.q, autoescape=True),
                col(Task.description).icontains(query.q, autoescape=True),
            )
        )
    if query.due_before is not None:
        conditions.append(col(Task.due_at) < query.due_before)
    if query.due_after is not None:
        conditions.append(col(Task.due_at) >= query.due_after)
    if query.overdue:
        conditions.append(and_(col(Task.due_at) < now, col(Task.completed).is_(false())))
    return conditions


def _ordering(query: TaskQuery) -> list[Any]:
    column: Any = getattr(Task, query.sort)
    if query.sort == "priority":
        column = PRIORITY_RANK
    elif query.sort == "title":  # case-insensitive, so SQLite (bytes) and PostgreSQL agree
        column = func.lower(col(Task.title))
    order = query.order or ("desc" if query.sort in ("created_at", "updated_at") else "asc")
    primary = column.desc() if order == "desc" else column.asc()
    tie_break = col(Task.id).desc() if order == "desc" else col(Task.id).asc()
    if query.sort == "due_at":  # undated tasks last in either direction
        return [col(Task.due_at).is_(None), primary, tie_break]
    return [primary, tie_break]


async def list_tasks(session: AsyncSession, user_id: str, query: TaskQuery) -> TaskListResult:
    scoped = _owned(user_id).where(*_filters(query))
    total = await session.scalar(select(func.count()).select_from(scoped.subquery()))
    page = scoped.order_by(*_ordering(query)).limit(query.limit).offset(query.offset)
    items = (await session.scalars(page)).all()
    return TaskListResult(items=items, total=total or 0)


async def update_task(
    session: AsyncSession, user_id: str, task_id: int, changes: TaskUpdate, *, channel: Channel
) -> Task:
    """Change only the fields that were sent."""
    task = await _load(session, user_id, task_id, for_change=True)
    before = snapshot(task)
    fields = changes.model_dump(exclude_unset=True)
    if "tags" in fields:
        _set_tags(task, fields.pop("tags") or [])
    if "completed" in fields:
        _apply_completion(task, fields.pop("completed"))
    for name, value in fields.items():
        setattr(task, name, value)
    return await _record_change(session, task, before, channel)


async def replace_task(
    session: AsyncSession, user_id: str, task_id: int, data: TaskReplace, *, channel: Channel
) -> Task:
    """Set every editable field; omitted ones return to their defaults."""
    changes = TaskUpdate.model_validate(data.model_dump())
    return await update_task(session, user_id, task_id, changes, channel=channel)


async def set_completion(
    session: AsyncSession,
    user_id: str,
    task_id: int,
    completed: bool | None = None,
    *,
    channel: Channel,
) -> Task:
    """Mark done or not done; `None` toggles. Marking a done task done changes nothing."""
    task = await _load(session, user_id, task_id, for_change=True)
    before = snapshot(task)
    _apply_completion(task, (not task.completed) if completed is None else completed)
    return await _record_change(session, task, before, channel)


async def delete_task(
    session: AsyncSession, user_id: str, task_id: int, *, channel: Channel
) -> Task:
    """Soft delete: the task disappears from every read until restored."""
    task = await _load(session, user_id, task_id, for_change=True)
    before = snapshot(task)
    task.deleted_at = task.updated_at = utc_now()
    return await _record_change(session, task, before, channel, "deleted")


async def restore_task(
    session: AsyncSession, user_id: str, task_id: int, *, channel: Channel
) -> Task:
    """Undo a delete; restoring a live task changes nothing."""
    task = await _load(session, user_id, task_id, include_deleted=True, for_change=True)
    before = snapshot(task)
    task.deleted_at = None
    return await _record_change(session, task, before, channel, "restored")
