"""Every task event the service writes matches specs/events.schema.json, and so do the
examples of specs/events.md: the published contract is checked against what is produced."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.clock import clock as the_clock
from backend.clock import utc_now
from backend.db import Database
from backend.events.outbox import EVENT_TYPE_PREFIX, TASK_ACTIONS, event_type
from backend.models import OutboxEvent, Task
from backend.reminders import notifications
from backend.tasks import service
from backend.tasks.schemas import TaskCreate, TaskReplace, TaskUpdate

SPECS = Path(__file__).resolve().parents[2] / "specs"
SCHEMA = json.loads((SPECS / "events.schema.json").read_text(encoding="utf-8"))
EXAMPLES = [
    json.loads(block)
    for block in re.findall(
        r"^```json\n(.*?)^```", (SPECS / "events.md").read_text(encoding="utf-8"), re.M | re.S
    )
    if '"specversion"' in block
]


def _is_date_time(value: object) -> bool:
    # jsonschema checks date-time only with an optional package; an aware ISO 8601 time will do.
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


FORMATS = FormatChecker()  # uuid is checked by the standard library
FORMATS.checks("date-time", raises=ValueError)(_is_date_time)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FORMATS)


def problems(event: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(event)
    ]


Change = Callable[[AsyncSession, int], Awaitable[Any]]


def edit(**fields: Any) -> Change:
    async def change(session: AsyncSession, task_id: int) -> Any:
        update = TaskUpdate.model_validate(fields)
        return await service.update_task(session, "alice", task_id, update, channel="chat")

    return change


async def _fire_two_minutes_later(session: AsyncSession, _task_id: int) -> None:
    the_clock.advance(timedelta(minutes=2))
    await notifications.fire_due(session, batch_size=10)


async def every_kind_of_change(database: Database) -> list[int]:
    """Each action, through each channel, with every field changed at least once."""
    due = utc_now() + timedelta(days=2)
    changes: list[Change] = [
        edit(title="Write the report", priority="urgent", tags=["work", "q4"]),
        edit(description=None, due_at=None, remind_at=(due - timedelta(hours=1)).isoformat()),
        edit(recurrence="FREQ=WEEKLY;BYDAY=MO"),
        edit(title="Write the report"),  # the same title: changes nothing, emits nothing
        lambda s, t: service.set_completion(s, "alice", t, True, channel="mcp"),
        lambda s, t: service.set_completion(s, "alice", t, True, channel="mcp"),  # no-op
        lambda s, t: service.set_completion(s, "alice", t, None, channel="chatkit"),
        edit(completed=True, priority="low"),  # completion with another field: updated
        lambda s, t: service.replace_task(
            s, "alice", t, TaskReplace(title="Report"), channel="rest"
        ),
        lambda s, t: service.delete_task(s, "alice", t, channel="cli"),
        lambda s, t: service.restore_task(s, "alice", t, channel="rest"),
        lambda s, t: service.restore_task(s, "alice", t, channel="rest"),  # no-op
        lambda s, t: service.set_completion(s, "alice", t, False, channel="rest"),
        lambda s, t: service.snooze_reminder(
            s, "alice", t, utc_now() + timedelta(minutes=1), channel="rest"
        ),
        _fire_two_minutes_later,
        edit(recurrence="daily"),
        lambda s, t: service.skip_occurrence(s, "alice", t, channel="chat"),
    ]
    async with database.session_scope(write=True) as session:
        first = await service.create_task(
            session,
            "alice",
            TaskCreate(
                title="Report",
                description="Quarterly numbers",
                priority="high",
                tags=["#Work"],
                due_at=due,
                remind_at=due - timedelta(hours=2),
                recurrence="weekly",
            ),
            channel="rest",
        )
        second = await service.create_task(
            session, "bob", TaskCreate(title="Buy milk"), channel="mcp"
        )
    assert first.id is not None
    assert second.id is not None
    for change in changes:
        async with database.session_scope(write=True) as session:
            await change(session, first.id)
    return [first.id, second.id]


async def outbox(database: Database) -> list[OutboxEvent]:
    async with database.session_scope() as session:
        rows = await session.scalars(select(OutboxEvent).order_by(col(OutboxEvent.id)))
        return list(rows)


async def test_every_event_the_service_writes_matches_the_schema(database: Database) -> None:
    first_id, _ = await every_kind_of_change(database)
    rows = await outbox(database)

    assert {row.event_id: problems(row.payload) for row in rows} == {
        row.event_id: [] for row in rows
    }
    payloads = [row.payload for row in rows]
    actions = [p["type"].removeprefix("com.todo-assistant.task.") for p in payloads]
    assert set(actions) == set(TASK_ACTIONS)
    # The no-op changes emitted nothing; completing the weekly task created its next
    # occurrence (once: completing it again after reopening did not), and skipping found
    # that next occurrence already there.
    # Task numbers counted from the first task's id (PostgreSQL's ids do not restart).
    numbered = [p["data"]["task"]["id"] - first_id + 1 for p in payloads]
    assert list(zip(actions, numbered, strict=True)) == [
        ("created", 1),
        ("created", 2),
        ("updated", 1),
        ("updated", 1),
        ("updated", 1),
        ("completed", 1),
        ("created", 3),
        ("reopened", 1),
        ("updated", 1),
        ("updated", 1),
        ("deleted", 1),
        ("restored", 1),
        ("updated", 1),
        ("reminder.due", 1),
        ("updated", 1),
        ("skipped", 1),
    ]
    assert {p["data"]["channel"] for p in payloads} == {
        "rest",
        "mcp",
        "chat",
        "chatkit",
        "cli",
        "scheduler",
    }


async def test_what_the_schema_cannot_say_holds_too(database: Database) -> None:
    task_ids = await every_kind_of_change(database)
    rows = await outbox(database)

    assert len({row.event_id for row in rows}) == len(rows)
    for task_id in task_ids:
        mine = [row for row in rows if row.task_id == task_id]
        assert [row.payload["data"]["version"] for row in mine] == list(range(1, len(mine) + 1))
        assert [row.version for row in mine] == list(range(1, len(mine) + 1))
    for row in rows:
        payload = row.payload
        assert payload["id"] == row.event_id
        action = payload["type"].removeprefix(EVENT_TYPE_PREFIX)
        assert payload["type"] == row.type == event_type(action)
        assert payload["subject"] == payload["partitionkey"] == str(payload["data"]["task"]["id"])
        assert payload["data"]["user_id"] == payload["data"]["task"]["user_id"] == row.user_id
        assert payload["data"]["channel"] == row.channel
    async with database.session_scope() as session:
        task = await session.get(Task, task_ids[0])
        assert task is not None
        assert task.version == rows[-1].payload["data"]["version"]


def test_the_examples_in_the_spec_match_the_schema() -> None:
    by_type = {example["type"] for example in EXAMPLES}

    assert by_type == {event_type(action) for action in TASK_ACTIONS}
    for example in EXAMPLES:
        assert problems(example) == [], example["type"]


def _example(action: str) -> dict[str, Any]:
    example = next(e for e in EXAMPLES if e["type"] == event_type(action))
    copy: dict[str, Any] = json.loads(json.dumps(example))
    return copy


@pytest.mark.parametrize(
    ("action", "spoil", "complaint"),
    [
        ("created", lambda e: e.pop("id"), "'id' is a required property"),
        ("created", lambda e: e.update(type="com.todo-assistant.task.renamed"), "is not one of"),
        ("created", lambda e: e.update(id="not-a-uuid"), "does not match"),
        ("updated", lambda e: e["data"].update(channel="email"), "is not one of"),
        ("updated", lambda e: e["data"].update(changes={}), "should be non-empty"),
        ("created", lambda e: e["data"].update(version=2), "was expected"),
        ("completed", lambda e: e["data"]["task"].update(completed=False), "was expected"),
        ("deleted", lambda e: e["data"]["task"].update(deleted_at=None), "Additional properties"),
        ("restored", lambda e: e.update(time="yesterday"), "does not match"),
    ],
)
def test_the_schema_refuses_what_we_do_not_send(
    action: str, spoil: Callable[[dict[str, Any]], Any], complaint: str
) -> None:
    event = _example(action)
    assert problems(event) == []

    spoil(event)

    assert any(complaint in problem for problem in problems(event)), problems(event)
