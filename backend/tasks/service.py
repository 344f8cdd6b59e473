"""The task rules. REST routes, MCP tools, the agent and the CLI all come through here."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Table,
    and_,
    bindparam,
    case,
    event,
    exists,
    false,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql import Select
from sqlmodel import col

from backend.clock import utc_now
from backend.db import UTCDateTime
from backend.errors import Conflict, InvalidInput, NotFound
from backend.events.outbox import (
    Channel,
    TaskAction,
    changes_between,
    record_task_event,
    record_task_events,
    snapshot,
)
from backend.models import Task, TaskTag
from backend.reminders.recurrence import next_due
from backend.tasks.schemas import TaskCreate, TaskPublic, TaskQuery, TaskReplace, TaskUpdate

logger = logging.getLogger(__name__)

DEFAULT_ZONE = "UTC"
DeleteScope = Literal["occurrence", "series"]

PRIORITY_RANK = case(
    {"low": 0, "medium": 1, "high": 2, "urgent": 3}, value=col(Task.priority), else_=1
)


_OWNER = "owner"  # the user_id parameter of _owned's statements


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, task_id: int) -> None:
        super().__init__(f"Task {task_id} not found")
        self.task_id = task_id


class NotRepeating(Conflict):
    code = "not_repeating"


class TaskAlreadyCompleted(Conflict):
    code = "task_completed"


@dataclass(frozen=True)
class TaskListResult:
    items: Sequence[Task]
    total: int


@dataclass(frozen=True)
class SkipResult:
    skipped: Task
    next: Task | None  # None: the series has ended (COUNT/UNTIL)


# Called after a commit that armed a reminder in this process (the scheduler's wake-up).
_reminder_listeners: set[Callable[[], None]] = set()
_ARMED_KEY = "reminder_armed"


def add_reminder_listener(listener: Callable[[], None]) -> None:
    _reminder_listeners.add(listener)


def remove_reminder_listener(listener: Callable[[], None]) -> None:
    _reminder_listeners.discard(listener)


@event.listens_for(Session, "after_commit")
def _wake_schedulers(session: Session) -> None:
    # Inside the commit: listeners only schedule work.
    if session.info.pop(_ARMED_KEY, False):
        for listener in list(_reminder_listeners):
            listener()


@event.listens_for(Session, "after_transaction_end")
def _forget_armed(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction only: a savepoint rolled back (a spawn that lost its race)
    # leaves the rest of the transaction's reminders armed.
    if transaction.parent is None:
        session.info.pop(_ARMED_KEY, None)


def _owned(
    user_id: str | BindParameter[Any],
    *,
    include_deleted: bool = False,
    only_deleted: bool = False,
) -> Select[Task]:
    """The one access-control point: this user's live tasks (restore also sees deleted ones;
    a `status="deleted"` listing sees those alone).

    A statement kept for reuse passes a parameter without a value (`_owner_param()`), so
    every execution must name its user."""
    owner = user_id if isinstance(user_id, BindParameter) else bindparam(_OWNER, user_id)
    statement = select(Task).where(col(Task.user_id) == owner)
    if only_deleted:
        return statement.where(col(Task.deleted_at).is_not(None))
    return statement if include_deleted else statement.where(col(Task.deleted_at).is_(None))


def _listed(user_id: str | BindParameter[Any], query: TaskQuery) -> Select[Task]:
    """The tasks a listing reads: live ones, or with `status="deleted"` deleted ones only."""
    return _owned(user_id, only_deleted=query.status == "deleted")


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


def _arm(session: AsyncSession, task: Task) -> None:
    """Note that a reminder may have to fire earlier than the scheduler thinks."""
    if task.remind_at is not None and task.reminded_at is None:
        session.sync_session.info[_ARMED_KEY] = True


def _whole_minutes_before(due: datetime | None, remind: datetime | None) -> int | None:
    if due is None or remind is None or remind > due:
        return None
    gap = due - remind
    return gap // timedelta(minutes=1) if gap % timedelta(minutes=1) == timedelta(0) else None


def _settle_reminder(
    session: AsyncSession,
    task: Task,
    sent: dict[str, Any],
    previous_remind_at: datetime | None,
    previous_due: datetime | None,
    *,
    snooze: bool = False,
) -> None:
    """The reminder rules: an offset follows the due time, and is what a repeating task's
    next occurrence keeps. An absolute time replaces the offset; on a repeating task it
    becomes the offset (its distance before the due time), except in a snooze, which moves
    this occurrence's reminder only. A reminder whose time changed fires again."""
    explicit = sent.get("remind_at") is not None
    if explicit and sent.get("remind_before_minutes") is not None:
        raise InvalidInput(
            "Send remind_at or remind_before_minutes, not both", code="conflicting_reminder"
        )
    if "remind_before_minutes" in sent:
        task.remind_before_minutes = sent["remind_before_minutes"]
        if sent["remind_before_minutes"] is None and "remind_at" not in sent:
            task.remind_at = None
    if "remind_at" in sent:
        if snooze:
            if task.remind_before_minutes is None:
                # Later occurrences keep reminding as far ahead as this one did.
                task.remind_before_minutes = _whole_minutes_before(previous_due, previous_remind_at)
        elif explicit and task.recurrence is not None:
            task.remind_before_minutes = _whole_minutes_before(task.due_at, sent["remind_at"])
        elif explicit or "remind_before_minutes" not in sent:
            task.remind_before_minutes = None
        task.remind_at = sent["remind_at"]
    if task.remind_before_minutes is not None:
        if task.due_at is None:
            task.remind_at = None  # the offset waits for a due time
        elif not explicit and ("remind_before_minutes" in sent or "due_at" in sent):
            task.remind_at = task.due_at - timedelta(minutes=task.remind_before_minutes)
    if task.remind_at != previous_remind_at:
        task.reminded_at = None
        _arm(session, task)


def _start_series(task: Task, now: datetime) -> None:
    """Anchor a repeat: its rule runs from the due time (or now, without one) in its zone."""
    if task.series_id is None:
        task.series_id = uuid.uuid4().hex
    task.series_start_at = task.due_at or now
    if task.time_zone is None:
        task.time_zone = DEFAULT_ZONE


def _reminder_offset(task: Task) -> timedelta | None:
    """How long before its due time the task reminds; kept by the next occurrence."""
    if task.remind_before_minutes is not None:
        return timedelta(minutes=task.remind_before_minutes)
    return None


async def _spawn_next(session: AsyncSession, task: Task, channel: Channel) -> Task | None:
    """Create the next occurrence of a repeating task, once: the (series, occurrence) key
    refuses a second one, so a reopened and re-completed occurrence spawns nothing."""
    if task.recurrence is None or task.id is None:
        return None
    now = utc_now()
    if task.series_id is None:  # repeating since before series existed
        _start_series(task, now)
    anchor = task.series_start_at or task.due_at or task.created_at
    try:
        due = next_due(
            task.recurrence,
            anchor=anchor,
            zone=task.time_zone or DEFAULT_ZONE,
            current_due=task.due_at,
            now=now,
        )
    except (ValueError, IndexError, OverflowError) as exc:
        # A rule the schema accepts but dateutil cannot step through (it raises IndexError
        # on some BYWEEKNO/BYYEARDAY mixes): the completion stands, the series ends here.
        logger.warning(
            "Task %s: no next occurrence of %r (%s)", task.id, task.recurrence, repr(exc)
        )
        return None
    if due is None:
        return None
    if await _next_occurrence(session, task) is not None:
        return None
    offset = _reminder_offset(task)
    successor = Task(
        user_id=task.user_id,
        title=task.title,
        description=task.description,
        priority=task.priority,
        due_at=due,
        remind_at=None if offset is None else due - offset,
        remind_before_minutes=task.remind_before_minutes,
        recurrence=task.recurrence,
        time_zone=task.time_zone,
        series_id=task.series_id,
        occurrence=task.occurrence + 1,
        series_start_at=task.series_start_at,
        created_at=now,
        updated_at=now,
    )
    _set_tags(successor, task.tags)
    try:
        async with session.begin_nested():
            session.add(successor)
            await session.flush()
    except IntegrityError:
        # Another transaction spawned it first (the unique link held).
        if successor in session:
            session.expunge(successor)
        return None
    _arm(session, successor)
    await record_task_event(session, successor, "created", changes={}, channel=channel)
    return successor


async def _next_occurrence(session: AsyncSession, task: Task) -> Task | None:
    if task.series_id is None:
        return None
    statement = select(Task).where(
        col(Task.user_id) == task.user_id,
        col(Task.series_id) == task.series_id,
        col(Task.occurrence) == task.occurrence + 1,
    )
    return (await session.scalars(statement)).first()


async def next_occurrence(session: AsyncSession, user_id: str, task_id: int) -> Task | None:
    """The occurrence that followed this one in its series (deleted or not), if any."""
    task = await _load(session, user_id, task_id, include_deleted=True)
    return await _next_occurrence(session, task)


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
    if action not in ("deleted", "skipped"):
        task.updated_at = utc_now()
    task.version += 1
    await session.flush()
    await record_task_event(session, task, action, changes=changes, channel=channel)
    if task.completed and not before.get("completed") and task.deleted_at is None:
        await _spawn_next(session, task, channel)
    return task


async def create_task(
    session: AsyncSession,
    user_id: str,
    data: TaskCreate,
    *,
    channel: Channel,
    zone: str | None = None,
) -> Task:
    """A new task; `zone` (the caller's IANA zone) applies when the data names none."""
    now = utc_now()
    task = Task(
        user_id=user_id,
        title=data.title,
        description=data.description,
        priority=data.priority.value,
        due_at=data.due_at,
        recurrence=data.recurrence,
        time_zone=data.time_zone or zone,
        created_at=now,
        updated_at=now,
    )
    _settle_reminder(session, task, data.model_dump(include=_REMINDER_FIELDS), None, None)
    if task.recurrence is not None:
        _start_series(task, now)
    _set_tags(task, data.tags)
    session.add(task)
    await session.flush()
    await record_task_event(session, task, "created", changes={}, channel=channel)
    return task


_REMINDER_FIELDS = {"remind_at", "remind_before_minutes"}


async def get_task(
    session: AsyncSession, user_id: str, task_id: int, *, include_deleted: bool = False
) -> Task:
    """One of the user's tasks (deleted ones too when asked: history outlives a delete)."""
    return await _load(session, user_id, task_id, include_deleted=include_deleted)


class _Values(dict[str, Any]):
    """The values a query's statement binds, by name: a statement built once for a shape of
    query serves every query of that shape with its own values.

    `for_reuse`: the statement is kept, so it carries no value of its own: a later query
    that failed to pass one must fail, not run with the first query's (another user's).
    """

    def __init__(self, *args: Any, for_reuse: bool = False) -> None:
        super().__init__(*args)
        self.for_reuse = for_reuse

    def bind(self, name: str, value: Any, type_: Any = None) -> BindParameter[Any]:
        self[name] = value
        if self.for_reuse:
            return bindparam(name, type_=type_, required=True)
        return bindparam(name, value, type_=type_)


def _like_escaped(text: str) -> str:
    # What autoescape=True does, with the value bound rather than written into the statement.
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _filters(query: TaskQuery, values: _Values | None = None) -> list[ColumnElement[bool]]:
    bind = (values if values is not None else _Values()).bind
    conditions: list[ColumnElement[bool]] = []
    if query.status in ("pending", "completed"):  # "deleted" is _listed's, not a filter
        conditions.append(
            col(Task.completed).is_(true() if query.status == "completed" else false())
        )
    if query.priority is not None:
        conditions.append(col(Task.priority) == bind("priority", query.priority.value))
    for index, tag in enumerate(query.tag):
        conditions.append(
            exists().where(
                col(TaskTag.task_id) == col(Task.id), col(TaskTag.tag) == bind(f"tag_{index}", tag)
            )
        )
    if query.q:
        pattern = bind("q", _like_escaped(query.q))
        conditions.append(
            or_(
                col(Task.title).icontains(pattern, escape="/"),
                col(Task.description).icontains(pattern, escape="/"),
            )
        )
    if query.due_before is not None:
        conditions.append(col(Task.due_at) < bind("due_before", query.due_before, UTCDateTime))
    if query.due_after is not None:
        conditions.append(col(Task.due_at) >= bind("due_after", query.due_after, UTCDateTime))
    if query.overdue:
        now = bind("now", utc_now(), UTCDateTime)
        conditions.append(and_(col(Task.due_at) < now, col(Task.completed).is_(false())))
    if query.has_reminder:
        conditions.append(
            and_(
                col(Task.remind_at).is_not(None),
                col(Task.reminded_at).is_(None),
                col(Task.completed).is_(false()),
            )
        )
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
    if query.sort in ("due_at", "remind_at"):  # undated tasks last in either direction
        return [column.is_(None), primary, tie_break]
    return [primary, tie_break]


def _matching(user_id: str, query: TaskQuery) -> Select[Task]:
    return _listed(user_id, query).where(*_filters(query))


async def _count(session: AsyncSession, scoped: Select[Any]) -> int:
    return (await session.scalar(select(func.count()).select_from(scoped.subquery()))) or 0


async def list_tasks(session: AsyncSession, user_id: str, query: TaskQuery) -> TaskListResult:
    """A page of tasks as entities (for callers that go on to use them, e.g. MCP tools)."""
    scoped = _matching(user_id, query)
    total = await _count(session, scoped)
    page = scoped.order_by(*_ordering(query)).limit(query.limit).offset(query.offset)
    items = (await session.scalars(page)).all()
    return TaskListResult(items=items, total=total)


# --- the lean read path: tasks as plain records, in one statement -----------------------------

TaskRecord = dict[str, Any]
"""A task as TaskPublic shows it, field for field and in its order (ready for JSON)."""

# Read straight from the tables, so result rows skip the ORM's entity loading.
_TASK: Table = Task.__table__  # type: ignore[attr-defined]
_LINKS: Table = TaskTag.__table__  # type: ignore[attr-defined]
_RECORD_FIELDS = tuple(TaskPublic.model_fields)
_RECORD_COLUMNS = tuple(name for name in _RECORD_FIELDS if name != "tags")


@dataclass(frozen=True)
class TaskRecordPage:
    items: list[TaskRecord]
    total: int


def _tags_of(task_id: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """A task's tags in their order, as one value: aggregated in SQL, not loaded per task."""
    if dialect == "postgresql":
        return (
            select(func.array_agg(aggregate_order_by(_LINKS.c.tag, _LINKS.c.position)))
            .where(_LINKS.c.task_id == task_id)
            .scalar_subquery()
        )
    # SQLite before 3.44 has no ORDER BY inside an aggregate; an ordered subquery under an
    # aggregate is never flattened, so its order is the one aggregated.
    ordered = (
        select(_LINKS.c.tag)
        .where(_LINKS.c.task_id == task_id)
        .order_by(_LINKS.c.position)
        .correlate_except(_LINKS)
        .subquery()
    )
    return select(func.json_group_array(ordered.c.tag)).scalar_subquery()


def _record_columns(dialect: str) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = [_TASK.c[name] for name in _RECORD_COLUMNS]
    tags_at = _RECORD_FIELDS.index("tags")
    columns.insert(tags_at, _tags_of(_TASK.c.id, dialect).label("tags"))
    return columns


def _record(row: Any) -> TaskRecord:
    # zip stops at the last field: a page's trailing total is left out.
    record: TaskRecord = dict(zip(_RECORD_FIELDS, row, strict=False))
    tags = record["tags"]
    if tags is None:
        record["tags"] = []
    elif isinstance(tags, str):  # SQLite's JSON text
        record["tags"] = json.loads(tags)
    return record


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


# Built statements by the shape of their query: building one and deriving its cache key
# costs more than running it. The key keeps every query field whose value is written into
# the statement; a field whose value _filters binds by name keeps only whether it filters.
_BOUND_FIELDS = frozenset({"priority", "tag", "q", "due_before", "due_after", "limit", "offset"})
_MAX_SHAPES = 512
_statements: dict[tuple[Any, ...], Select[Any]] = {}


def _shape(dialect: str, query: TaskQuery) -> tuple[Any, ...]:
    fields = ((name, getattr(query, name)) for name in TaskQuery.model_fields)
    return (
        dialect,
        *(
            (name, len(value) if isinstance(value, list) else bool(value))
            if name in _BOUND_FIELDS
            else (name, value)
            for name, value in fields
        ),
    )


def _owner_param() -> BindParameter[Any]:
    return bindparam(_OWNER, type_=_TASK.c.user_id.type, required=True)


def _page_statement(query: TaskQuery, dialect: str, values: _Values) -> Select[Any]:
    # The page's ids first, counted by a window over every match; the columns and tags are
    # then read for those ids alone.
    page = (
        _listed(_owner_param(), query)
        .where(*_filters(query, values))
        .with_only_columns(_TASK.c.id, func.count().over().label("total"))
        .order_by(*_ordering(query))
        .limit(values.bind("limit", query.limit))
        .offset(values.bind("offset", query.offset))
        .subquery("page")
    )
    return (
        select(*_record_columns(dialect), page.c.total)
        .select_from(page.join(_TASK, _TASK.c.id == page.c.id))
        .order_by(*_ordering(query))
    )


async def list_task_records(
    session: AsyncSession, user_id: str, query: TaskQuery
) -> TaskRecordPage:
    """The same page as list_tasks (same filters, order, paging), as records, with the tags
    and the total from one statement. Only a page past the end needs a second one (a count)."""
    dialect = _dialect(session)
    values = _Values(
        {_OWNER: user_id, "limit": query.limit, "offset": query.offset}, for_reuse=True
    )
    key = _shape(dialect, query)
    statement = _statements.get(key)
    if statement is None:
        statement = _page_statement(query, dialect, values)
        if len(_statements) >= _MAX_SHAPES:
            _statements.clear()
        _statements[key] = statement
    else:
        _filters(query, values)  # this query's values, for the statement already built
    connection = await session.connection()
    rows = (await connection.execute(statement, values)).all()
    if not rows:
        total = await _count(session, _matching(user_id, query)) if query.offset else 0
        return TaskRecordPage(items=[], total=total)
    return TaskRecordPage(items=[_record(row) for row in rows], total=rows[0].total)


def _one_statement(dialect: str) -> Select[Any]:
    key = (dialect, "one")
    statement = _statements.get(key)
    if statement is None:
        statement = _statements[key] = (
            _owned(_owner_param())
            .with_only_columns(*_record_columns(dialect))
            .where(_TASK.c.id == bindparam("task_id", required=True))
        )
    return statement


async def get_task_record(session: AsyncSession, user_id: str, task_id: int) -> TaskRecord:
    """get_task's task (same access rule) as a record, with its tags, in one statement."""
    connection = await session.connection()
    statement = _one_statement(_dialect(session))
    row = (await connection.execute(statement, {_OWNER: user_id, "task_id": task_id})).first()
    if row is None:
        raise TaskNotFound(task_id)
    return _record(row)


async def update_task(
    session: AsyncSession,
    user_id: str,
    task_id: int,
    changes: TaskUpdate,
    *,
    channel: Channel,
    zone: str | None = None,
) -> Task:
    """Change only the fields that were sent; `zone` (the caller's) is the one a task that
    starts repeating keeps, when neither the task nor the change names one."""
    task = await _load(session, user_id, task_id, for_change=True)
    before = snapshot(task)
    fields = changes.model_dump(exclude_unset=True)
    reminder = {name: fields.pop(name) for name in _REMINDER_FIELDS & fields.keys()}
    if "tags" in fields:
        _set_tags(task, fields.pop("tags") or [])
    completed = fields.pop("completed", None)
    old_recurrence, old_due = task.recurrence, task.due_at
    for name, value in fields.items():
        setattr(task, name, value)
    _settle_reminder(session, task, {**reminder, **_due_sent(fields)}, task.remind_at, old_due)
    if task.recurrence is not None and (
        task.recurrence != old_recurrence
        # The first occurrence is still where the series starts.
        or (task.due_at != old_due and task.occurrence == 1)
    ):
        task.time_zone = task.time_zone or zone
        _start_series(task, utc_now())
        if old_recurrence is None and task.remind_before_minutes is None:
            # Its reminder becomes the series' rule: as far before each due time.
            task.remind_before_minutes = _whole_minutes_before(task.due_at, task.remind_at)
    if completed is not None:
        _apply_completion(task, completed)
    return await _record_change(session, task, before, channel)


def _due_sent(fields: dict[str, Any]) -> dict[str, Any]:
    return {"due_at": fields["due_at"]} if "due_at" in fields else {}


async def replace_task(
    session: AsyncSession,
    user_id: str,
    task_id: int,
    data: TaskReplace,
    *,
    channel: Channel,
    zone: str | None = None,
) -> Task:
    """Set every editable field; omitted ones return to their defaults."""
    # A zone is kept, not reset: the task's repeats and reminder texts stay in it.
    fields = data.model_dump(exclude={"time_zone"} if data.time_zone is None else set())
    changes = TaskUpdate.model_validate(fields)
    return await update_task(session, user_id, task_id, changes, channel=channel, zone=zone)


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
    session: AsyncSession,
    user_id: str,
    task_id: int,
    *,
    channel: Channel,
    scope: DeleteScope = "occurrence",
) -> Task:
    """Soft delete: the task disappears from every read until restored (a listing with
    `status="deleted"` alone shows it, so it can be found and restored).

    An unfinished occurrence of a repeating task is deleted as "this one": the series goes
    on with its next occurrence. `scope="series"` deletes every live occurrence instead,
    done ones too (each can be restored).
    """
    if scope == "series":
        task = await _load(session, user_id, task_id)
        if task.series_id is not None:
            return await _delete_series(session, task, channel)
    task = await _load(session, user_id, task_id, for_change=True)
    if scope == "occurrence" and task.recurrence is not None and not task.completed:
        await _spawn_next(session, task, channel)
    return await _soft_delete(session, task, channel, "deleted")


async def _delete_series(session: AsyncSession, task: Task, channel: Channel) -> Task:
    """Every live occurrence, done or not, locked in occurrence order (two series deletes
    then queue instead of deadlocking)."""
    statement = (
        _owned(task.user_id)
        .where(col(Task.series_id) == task.series_id)
        .order_by(col(Task.occurrence))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    # An occurrence completed while this waits on its lock spawns one this query's snapshot
    # did not see: query again until no live occurrence is left.
    while occurrences := (await session.scalars(statement)).all():
        for occurrence in occurrences:
            await _soft_delete(session, occurrence, channel, "deleted")
    return task


async def _soft_delete(
    session: AsyncSession, task: Task, channel: Channel, action: TaskAction
) -> Task:
    before = snapshot(task)
    task.deleted_at = task.updated_at = utc_now()
    return await _record_change(session, task, before, channel, action)


async def skip_occurrence(
    session: AsyncSession, user_id: str, task_id: int, *, channel: Channel
) -> SkipResult:
    """Pass over this occurrence of a repeating task: the next one is created and this one
    is put away (restorable). The series ends instead when its rule has no next date."""
    task = await _load(session, user_id, task_id, for_change=True)
    if task.recurrence is None:
        raise NotRepeating(f"Task {task_id} does not repeat: there is no occurrence to skip")
    if task.completed:
        raise TaskAlreadyCompleted(f"Task {task_id} is already done: nothing to skip")
    # Reopened after completing, an occurrence already has its successor.
    successor = await _spawn_next(session, task, channel) or await _next_occurrence(session, task)
    if successor is not None and successor.deleted_at is not None:
        successor = None
    skipped = await _soft_delete(session, task, channel, "skipped")
    return SkipResult(skipped=skipped, next=successor)


async def snooze_reminder(
    session: AsyncSession, user_id: str, task_id: int, until: datetime, *, channel: Channel
) -> Task:
    """Re-arm the task's reminder for `until` (it fires again, even if it fired already)."""
    task = await _load(session, user_id, task_id, for_change=True)
    if task.completed:
        raise TaskAlreadyCompleted(f"Task {task_id} is already done: no reminder to snooze")
    # A time already past means now (never an instant that may have notified already).
    until = max(until, utc_now())
    before = snapshot(task)
    _settle_reminder(session, task, {"remind_at": until}, task.remind_at, task.due_at, snooze=True)
    task.reminded_at = None  # snoozed to the instant it already had: it fires again
    _arm(session, task)
    return await _record_change(session, task, before, channel)


async def stop_repeating(
    session: AsyncSession, user_id: str, task_id: int, *, channel: Channel
) -> Task:
    """This occurrence stays; no further one is created."""
    return await update_task(
        session, user_id, task_id, TaskUpdate(recurrence=None), channel=channel
    )


async def mark_reminded(session: AsyncSession, tasks: Sequence[Task], fired_at: datetime) -> None:
    """The scheduler's change: these tasks' reminders fired. One `reminder.due` event each,
    written in one statement: a scheduler fires hundreds per transaction."""
    changed: list[tuple[Task, dict[str, Any]]] = []
    for task in tasks:
        before = snapshot(task)
        task.reminded_at = task.updated_at = fired_at
        task.version += 1
        changed.append((task, changes_between(before, snapshot(task))))
    await session.flush()
    await record_task_events(session, changed, "reminder.due", channel="scheduler")


async def restore_task(
    session: AsyncSession, user_id: str, task_id: int, *, channel: Channel
) -> Task:
    """Undo a delete; restoring a live task changes nothing."""
    task = await _load(session, user_id, task_id, include_deleted=True, for_change=True)
    before = snapshot(task)
    task.deleted_at = None
    return await _record_change(session, task, before, channel, "restored")
