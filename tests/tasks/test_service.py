"""Every task rule, exercised through backend.tasks.service on a real database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.clock import utc_now
from backend.db import Database
from backend.models import Priority, Task, TaskTag
from backend.tasks import service
from backend.tasks.schemas import TaskCreate, TaskQuery, TaskReplace, TaskUpdate
from backend.tasks.service import TaskNotFound

ALICE = "alice"
BOB = "bob"
IST = timezone(timedelta(hours=5, minutes=30))
ZERO = timedelta(0)
COLUMNS = [column.name for column in Task.__table__.columns]  # type: ignore[attr-defined]


async def create(database: Database, user: str = ALICE, **fields: Any) -> int:
    async with database.session_scope(write=True) as session:
        task = await service.create_task(
            session, user, TaskCreate.model_validate(fields), channel="rest"
        )
    assert task.id is not None
    return task.id


async def stored(database: Database, task_id: int) -> Task:
    """The row as the database holds it, deleted or not, bypassing the service."""
    async with database.session_scope() as session:
        task = await session.get(Task, task_id)
    assert task is not None
    return task


async def stored_tags(database: Database, task_id: int) -> list[str]:
    async with database.session_scope() as session:
        rows = await session.scalars(
            select(col(TaskTag.tag))
            .where(col(TaskTag.task_id) == task_id)
            .order_by(col(TaskTag.position))
        )
        return list(rows)


async def row(database: Database, task_id: int) -> dict[str, Any]:
    task = await stored(database, task_id)
    return {name: getattr(task, name) for name in COLUMNS} | {"tags": task.tags}


async def titles(database: Database, user: str = ALICE, **params: Any) -> list[str]:
    async with database.session_scope() as session:
        result = await service.list_tasks(session, user, TaskQuery.model_validate(params))
    return [task.title for task in result.items]


async def write(database: Database, action: Callable[[AsyncSession], Awaitable[Task]]) -> Task:
    async with database.session_scope(write=True) as session:
        return await action(session)


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == ZERO


# --- create -------------------------------------------------------------------------------


async def test_create_trims_the_title_and_applies_defaults(database: Database) -> None:
    task_id = await create(database, title="   Buy milk \t ")

    task = await stored(database, task_id)
    assert task.title == "Buy milk"
    assert task.user_id == ALICE
    assert task.priority == "medium"
    assert task.completed is False
    assert task.completed_at is None
    assert task.deleted_at is None
    assert task.description is None
    assert task.tags == []
    assert task.created_at == task.updated_at


async def test_create_lowercases_dedupes_and_strips_hash_from_tags(database: Database) -> None:
    task_id = await create(
        database, title="Tagged", tags=["#Home", "home", " Errands ", "#ERRANDS", "Q3"]
    )

    assert await stored_tags(database, task_id) == ["home", "errands", "q3"]


async def test_create_keeps_every_given_field(database: Database) -> None:
    due = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    task_id = await create(
        database,
        title="Full",
        description="All the fields",
        priority="urgent",
        tags=["a"],
        due_at=due,
        remind_at=due - timedelta(hours=1),
        recurrence="FREQ=WEEKLY;BYDAY=MO",
    )

    task = await stored(database, task_id)
    assert (task.description, task.priority, task.recurrence) == (
        "All the fields",
        "urgent",
        "FREQ=WEEKLY;BYDAY=MO",
    )
    assert task.due_at == due
    assert task.remind_at == due - timedelta(hours=1)


async def test_due_at_given_in_plus_0530_is_stored_and_returned_as_the_same_instant_in_utc(
    database: Database,
) -> None:
    local = datetime(2030, 1, 1, 9, 0, tzinfo=IST)
    async with database.session_scope(write=True) as session:
        created = await service.create_task(
            session,
            ALICE,
            TaskCreate(title="Standup", due_at=local, remind_at=local),
            channel="rest",
        )
    assert created.id is not None

    assert created.due_at == local
    assert_utc(created.due_at)
    reread = await stored(database, created.id)
    assert reread.due_at == local
    assert_utc(reread.due_at)
    assert reread.due_at == datetime(2030, 1, 1, 3, 30, tzinfo=UTC)
    assert reread.remind_at == datetime(2030, 1, 1, 3, 30, tzinfo=UTC)
    async with database.session_scope() as session:
        raw: Any = (await session.execute(text("SELECT due_at FROM task"))).scalar_one()
    if isinstance(raw, str):  # SQLite: naive UTC text
        assert raw.startswith("2030-01-01 03:30:00")
    else:  # PostgreSQL: timestamptz
        assert raw == datetime(2030, 1, 1, 3, 30, tzinfo=UTC)


async def test_every_datetime_comes_back_timezone_aware_utc(database: Database) -> None:
    due = datetime(2030, 6, 1, 12, 0, tzinfo=IST)
    task_id = await create(database, title="Dates", due_at=due, remind_at=due)
    await write(database, lambda s: service.set_completion(s, ALICE, task_id, True, channel="rest"))
    await write(database, lambda s: service.delete_task(s, ALICE, task_id, channel="rest"))

    task = await stored(database, task_id)
    for value in (
        task.created_at,
        task.updated_at,
        task.due_at,
        task.remind_at,
        task.completed_at,
        task.deleted_at,
    ):
        assert_utc(value)


# --- get and not-found ---------------------------------------------------------------------


async def test_get_returns_the_users_own_task(database: Database) -> None:
    task_id = await create(database, title="Mine", tags=["x"])

    async with database.session_scope() as session:
        task = await service.get_task(session, ALICE, task_id)

    assert (task.id, task.title, task.tags) == (task_id, "Mine", ["x"])


OPERATIONS: dict[str, Callable[[AsyncSession, str, int], Awaitable[Task]]] = {
    "get": service.get_task,
    "update": lambda s, u, i: service.update_task(
        s, u, i, TaskUpdate(title="taken"), channel="rest"
    ),
    "replace": lambda s, u, i: service.replace_task(
        s, u, i, TaskReplace(title="taken"), channel="rest"
    ),
    "complete": lambda s, u, i: service.set_completion(s, u, i, True, channel="rest"),
    "toggle": lambda s, u, i: service.set_completion(s, u, i, channel="rest"),
    "delete": lambda s, u, i: service.delete_task(s, u, i, channel="rest"),
    "restore": lambda s, u, i: service.restore_task(s, u, i, channel="rest"),
}


async def attempt(database: Database, operation: str, user: str, task_id: int) -> Task:
    async with database.session_scope(write=True) as session:
        return await OPERATIONS[operation](session, user, task_id)


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_another_users_task_and_a_missing_task_raise_the_same_not_found(
    database: Database, operation: str
) -> None:
    task_id = await create(database, title="Alice's", tags=["private"])
    missing_id = task_id + 1000
    before = await row(database, task_id)

    errors: list[TaskNotFound] = []
    for target in (task_id, missing_id):
        with pytest.raises(TaskNotFound) as caught:
            await attempt(database, operation, BOB, target)
        errors.append(caught.value)

    foreign, missing = errors
    assert str(foreign) == f"Task {task_id} not found"
    assert str(missing) == f"Task {missing_id} not found"
    assert (foreign.code, foreign.status_code) == (missing.code, missing.status_code)
    assert (foreign.code, foreign.status_code) == ("task_not_found", 404)
    assert await row(database, task_id) == before


# --- list: filters -------------------------------------------------------------------------


async def test_list_shows_only_the_users_live_tasks(database: Database) -> None:
    await create(database, title="Alice live")
    gone = await create(database, title="Alice deleted")
    await create(database, BOB, title="Bob's")
    await write(database, lambda s: service.delete_task(s, ALICE, gone, channel="rest"))

    assert await titles(database) == ["Alice live"]
    assert await titles(database, BOB) == ["Bob's"]


async def test_list_filters_by_status(database: Database) -> None:
    done = await create(database, title="done")
    await create(database, title="todo")
    await write(database, lambda s: service.set_completion(s, ALICE, done, True, channel="rest"))

    assert await titles(database, status="completed") == ["done"]
    assert await titles(database, status="pending") == ["todo"]
    assert sorted(await titles(database, status="all")) == ["done", "todo"]


async def test_list_filters_by_priority(database: Database) -> None:
    for priority in ("low", "medium", "high", "urgent"):
        await create(database, title=priority, priority=priority)

    assert await titles(database, priority="high") == ["high"]
    assert await titles(database, priority="urgent") == ["urgent"]


async def test_list_tag_filter_requires_every_tag_to_match(database: Database) -> None:
    await create(database, title="both", tags=["home", "urgent"])
    await create(database, title="home only", tags=["home"])
    await create(database, title="work", tags=["work"])
    await create(database, title="untagged")

    assert sorted(await titles(database, tag=["home"])) == ["both", "home only"]
    assert await titles(database, tag=["home", "urgent"]) == ["both"]
    assert await titles(database, tag=["#URGENT", "Home"]) == ["both"]
    assert await titles(database, tag=["home", "work"]) == []


async def test_list_search_is_case_insensitive_in_title_and_description(
    database: Database,
) -> None:
    await create(database, title="Buy MILK")
    await create(database, title="Groceries", description="oat Milk and bread")
    await create(database, title="Bread")

    assert sorted(await titles(database, q="milk")) == ["Buy MILK", "Groceries"]
    assert sorted(await titles(database, q="mIlK")) == ["Buy MILK", "Groceries"]
    assert await titles(database, q="BREAD", sort="title") == ["Bread", "Groceries"]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("%", ["100% done"]),
        ("0% d", ["100% done"]),
        ("_", ["snake_case"]),
        ("e_c", ["snake_case"]),
        ("a/b", ["a/b path"]),
        ("\\", ["back\\slash"]),
    ],
)
async def test_list_search_treats_wildcards_literally(
    database: Database, q: str, expected: list[str]
) -> None:
    for title in ("100% done", "1000 done", "snake_case", "snakeXcase", "a/b path", "back\\slash"):
        await create(database, title=title)

    assert await titles(database, q=q) == expected


async def test_list_filters_by_due_window_with_before_exclusive_and_after_inclusive(
    database: Database,
) -> None:
    base = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
    for offset, title in enumerate(("early", "middle", "late")):
        await create(database, title=title, due_at=base + timedelta(days=offset))
    await create(database, title="undated")
    middle_in_ist = (base + timedelta(days=1)).astimezone(IST)

    assert await titles(database, due_before=middle_in_ist) == ["early"]
    assert await titles(database, due_after=middle_in_ist, sort="due_at") == ["middle", "late"]
    assert await titles(database, due_after=base, due_before=base + timedelta(days=2)) == [
        "middle",
        "early",
    ]


async def test_overdue_means_past_due_and_not_completed(database: Database) -> None:
    now = utc_now()
    await create(database, title="late", due_at=now - timedelta(hours=1))
    done = await create(database, title="late but done", due_at=now - timedelta(hours=1))
    await create(database, title="future", due_at=now + timedelta(hours=1))
    await create(database, title="undated")
    await write(database, lambda s: service.set_completion(s, ALICE, done, True, channel="rest"))

    assert await titles(database, overdue=True) == ["late"]
    assert len(await titles(database, overdue=False)) == 4


# --- list: sort and paging -----------------------------------------------------------------

T0 = datetime(2030, 1, 1, tzinfo=UTC)
SORT_FIXTURE: dict[str, dict[str, Any]] = {
    # title: priority, due day, created minute, updated minute
    "alpha": {"priority": "high", "due": 2, "created": 3, "updated": 3},
    "bravo": {"priority": "low", "due": None, "created": 1, "updated": 1},
    "charlie": {"priority": "urgent", "due": 1, "created": 4, "updated": 2},
    "delta": {"priority": "medium", "due": 3, "created": 2, "updated": 4},
}


async def seed_for_sorting(database: Database) -> None:
    for title, spec in SORT_FIXTURE.items():
        due = None if spec["due"] is None else T0 + timedelta(days=spec["due"])
        task_id = await create(database, title=title, priority=spec["priority"], due_at=due)
        async with database.session_scope(write=True) as session:
            await session.execute(
                update(Task)
                .where(Task.id == task_id)  # type: ignore[arg-type]
                .values(
                    created_at=T0 + timedelta(minutes=spec["created"]),
                    updated_at=T0 + timedelta(minutes=spec["updated"]),
                )
            )


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("created_at", "asc", ["bravo", "delta", "alpha", "charlie"]),
        ("created_at", "desc", ["charlie", "alpha", "delta", "bravo"]),
        ("updated_at", "asc", ["bravo", "charlie", "alpha", "delta"]),
        ("updated_at", "desc", ["delta", "alpha", "charlie", "bravo"]),
        ("due_at", "asc", ["charlie", "alpha", "delta", "bravo"]),
        ("due_at", "desc", ["delta", "alpha", "charlie", "bravo"]),
        ("priority", "asc", ["bravo", "delta", "alpha", "charlie"]),
        ("priority", "desc", ["charlie", "alpha", "delta", "bravo"]),
        ("title", "asc", ["alpha", "bravo", "charlie", "delta"]),
        ("title", "desc", ["delta", "charlie", "bravo", "alpha"]),
    ],
)
async def test_list_sorts_by_each_field_in_both_orders(
    database: Database, sort: str, order: str, expected: list[str]
) -> None:
    await seed_for_sorting(database)

    assert await titles(database, sort=sort, order=order) == expected


async def test_default_order_is_newest_first_and_soonest_due_first(database: Database) -> None:
    await seed_for_sorting(database)

    assert await titles(database) == ["charlie", "alpha", "delta", "bravo"]
    assert await titles(database, sort="due_at") == ["charlie", "alpha", "delta", "bravo"]


async def test_list_pages_with_limit_offset_and_a_total_of_all_matches(
    database: Database,
) -> None:
    for index in range(5):
        await create(database, title=f"task {index}", priority="high" if index % 2 else "low")

    async def page(**params: Any) -> tuple[list[str], int]:
        async with database.session_scope() as session:
            result = await service.list_tasks(
                session, ALICE, TaskQuery.model_validate({"sort": "title", **params})
            )
        return [task.title for task in result.items], result.total

    assert await page(limit=2) == (["task 0", "task 1"], 5)
    assert await page(limit=2, offset=2) == (["task 2", "task 3"], 5)
    assert await page(limit=2, offset=4) == (["task 4"], 5)
    assert await page(limit=2, offset=10) == ([], 5)
    assert await page(limit=1, priority="high") == (["task 1"], 2)


# --- update and replace --------------------------------------------------------------------


async def seed_full(database: Database) -> int:
    return await create(
        database,
        title="Original",
        description="Some words",
        priority="high",
        tags=["one", "two"],
        due_at=datetime(2030, 1, 1, tzinfo=UTC),
        remind_at=datetime(2029, 12, 31, tzinfo=UTC),
        recurrence="weekly",
    )


async def test_partial_update_changes_only_the_fields_sent(database: Database) -> None:
    task_id = await seed_full(database)
    before = await row(database, task_id)

    await write(
        database,
        lambda s: service.update_task(
            s, ALICE, task_id, TaskUpdate(priority=Priority.low), channel="rest"
        ),
    )

    after = await row(database, task_id)
    assert after["priority"] == "low"
    assert after["updated_at"] > before["updated_at"]
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"priority", "updated_at", "version"}


async def test_update_with_null_clears_description_and_due_at(database: Database) -> None:
    task_id = await seed_full(database)
    changes = TaskUpdate.model_validate(
        {"description": None, "due_at": None, "remind_at": None, "recurrence": None}
    )

    await write(database, lambda s: service.update_task(s, ALICE, task_id, changes, channel="rest"))

    task = await stored(database, task_id)
    assert (task.description, task.due_at, task.remind_at, task.recurrence) == (
        None,
        None,
        None,
        None,
    )
    assert (task.title, task.priority, task.tags) == ("Original", "high", ["one", "two"])


async def test_update_replaces_the_tag_set_even_when_tags_overlap(database: Database) -> None:
    task_id = await seed_full(database)

    await write(
        database,
        lambda s: service.update_task(
            s, ALICE, task_id, TaskUpdate(tags=["Two", "three"]), channel="rest"
        ),
    )

    assert await stored_tags(database, task_id) == ["two", "three"]
    await write(
        database,
        lambda s: service.update_task(s, ALICE, task_id, TaskUpdate(tags=[]), channel="rest"),
    )
    assert await stored_tags(database, task_id) == []


def test_update_refuses_null_for_required_fields() -> None:
    for name in ("title", "priority", "completed"):
        with pytest.raises(ValidationError, match=f"{name} cannot be null"):
            TaskUpdate.model_validate({name: None})


async def test_replace_resets_every_omitted_field_to_its_default(database: Database) -> None:
    task_id = await seed_full(database)
    await write(database, lambda s: service.set_completion(s, ALICE, task_id, True, channel="rest"))
    before = await row(database, task_id)

    await write(
        database,
        lambda s: service.replace_task(
            s, ALICE, task_id, TaskReplace(title=" New "), channel="rest"
        ),
    )

    after = await row(database, task_id)
    assert after | {"updated_at": None} == before | {
        "title": "New",
        "description": None,
        "priority": "medium",
        "tags": [],
        "due_at": None,
        "remind_at": None,
        "remind_before_minutes": None,
        "recurrence": None,
        "completed": False,
        "completed_at": None,
        "updated_at": None,
        "version": before["version"] + 1,
    }
    assert after["updated_at"] > before["updated_at"]


# --- completion ----------------------------------------------------------------------------


async def test_setting_completion_stamps_completed_at_once_and_clearing_removes_it(
    database: Database,
) -> None:
    task_id = await create(database, title="Finish me")

    before = utc_now()
    first = await write(
        database, lambda s: service.set_completion(s, ALICE, task_id, True, channel="rest")
    )
    assert first.completed is True
    assert first.completed_at is not None
    assert before <= first.completed_at <= utc_now()
    stamped = (await stored(database, task_id)).completed_at

    again = await write(
        database, lambda s: service.set_completion(s, ALICE, task_id, True, channel="rest")
    )
    assert again.completed is True
    assert (await stored(database, task_id)).completed_at == stamped

    await write(
        database, lambda s: service.set_completion(s, ALICE, task_id, False, channel="rest")
    )
    task = await stored(database, task_id)
    assert (task.completed, task.completed_at) == (False, None)


async def test_toggling_completion_flips_it_each_time(database: Database) -> None:
    task_id = await create(database, title="Flip")

    await write(database, lambda s: service.set_completion(s, ALICE, task_id, channel="rest"))
    task = await stored(database, task_id)
    assert task.completed is True
    assert_utc(task.completed_at)

    await write(database, lambda s: service.set_completion(s, ALICE, task_id, channel="rest"))
    task = await stored(database, task_id)
    assert (task.completed, task.completed_at) == (False, None)


async def test_partial_update_of_completed_sets_and_clears_completed_at(
    database: Database,
) -> None:
    task_id = await create(database, title="Via update")

    await write(
        database,
        lambda s: service.update_task(
            s, ALICE, task_id, TaskUpdate(completed=True), channel="rest"
        ),
    )
    assert_utc((await stored(database, task_id)).completed_at)

    await write(
        database,
        lambda s: service.update_task(
            s, ALICE, task_id, TaskUpdate(completed=False), channel="rest"
        ),
    )
    task = await stored(database, task_id)
    assert (task.completed, task.completed_at) == (False, None)


# --- soft delete and restore ---------------------------------------------------------------


async def test_soft_delete_keeps_the_row_but_hides_it_from_get_list_and_update(
    database: Database,
) -> None:
    task_id = await create(database, title="Doomed", tags=["x"])

    await write(database, lambda s: service.delete_task(s, ALICE, task_id, channel="rest"))

    task = await stored(database, task_id)
    assert_utc(task.deleted_at)
    assert (task.title, task.tags) == ("Doomed", ["x"])
    assert await titles(database) == []
    for operation in ("get", "update", "replace", "complete", "toggle", "delete"):
        with pytest.raises(TaskNotFound):
            await attempt(database, operation, ALICE, task_id)
    assert (await stored(database, task_id)).title == "Doomed"


async def test_restore_brings_a_deleted_task_back_intact(database: Database) -> None:
    task_id = await seed_full(database)
    before = await row(database, task_id)
    await write(
        database, lambda s: service.delete_task(s, ALICE, task_id, channel="rest", scope="series")
    )

    restored = await write(
        database, lambda s: service.restore_task(s, ALICE, task_id, channel="rest")
    )

    assert restored.deleted_at is None
    after = await row(database, task_id)
    assert after | {"updated_at": None, "version": None} == before | {
        "updated_at": None,
        "version": None,
    }
    assert after["version"] == before["version"] + 2  # deleted, restored
    assert await titles(database) == ["Original"]
    async with database.session_scope() as session:
        assert (await service.get_task(session, ALICE, task_id)).title == "Original"


async def test_restoring_a_live_task_changes_nothing(database: Database) -> None:
    task_id = await seed_full(database)
    before = await row(database, task_id)

    await write(database, lambda s: service.restore_task(s, ALICE, task_id, channel="rest"))

    assert await row(database, task_id) == before


async def test_another_user_cannot_restore_a_deleted_task(database: Database) -> None:
    task_id = await create(database, title="Alice's deleted")
    await write(database, lambda s: service.delete_task(s, ALICE, task_id, channel="rest"))
    before = await row(database, task_id)

    with pytest.raises(TaskNotFound):
        await write(database, lambda s: service.restore_task(s, BOB, task_id, channel="rest"))

    assert await row(database, task_id) == before
    assert before["deleted_at"] is not None
