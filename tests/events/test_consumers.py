"""Our consumers apply each event once, whatever the number of deliveries, and never choke
on an event they cannot read."""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from backend.db import Database
from backend.events.consumers import (
    CONSUMERS,
    TASK_ACTIVITY,
    PoisonEvent,
    apply_locally,
    deliver,
    parse_event,
)
from backend.events.outbox import cloud_event
from backend.models import InboxEvent, OutboxEvent, TaskActivity
from backend.tasks import service
from backend.tasks.schemas import TaskCreate, TaskUpdate
from tests.events.conftest import release_once_a_lock_wait_is_seen

ALICE = "alice"


async def make_history(database: Database) -> list[dict[str, Any]]:
    """A task created, renamed and completed: its three CloudEvents, in order."""
    async with database.session_scope(write=True) as session:
        task = await service.create_task(session, ALICE, TaskCreate(title="Draft"), channel="rest")
        assert task.id is not None
        task_id = task.id
    async with database.session_scope(write=True) as session:
        await service.update_task(
            session, ALICE, task_id, TaskUpdate(title="Report"), channel="mcp"
        )
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, task_id, True, channel="chat")
    async with database.session_scope() as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(col(OutboxEvent.id)))).all()
        return [dict(row.payload) for row in rows]


async def activity(database: Database) -> list[TaskActivity]:
    async with database.session_scope() as session:
        statement = select(TaskActivity).order_by(col(TaskActivity.version))
        return list((await session.scalars(statement)).all())


async def inbox_count(database: Database) -> int:
    async with database.session_scope() as session:
        return int(await session.scalar(select(func.count()).select_from(InboxEvent)) or 0)


async def test_a_delivery_writes_one_activity_row_and_a_second_one_changes_nothing(
    database: Database,
) -> None:
    events = await make_history(database)
    outcomes = []
    for event in [*events, events[1], *events]:
        async with database.session_scope(write=True) as session:
            outcomes.append(await deliver(session, TASK_ACTIVITY, event))

    assert outcomes == ["applied"] * 3 + ["duplicate"] * 4
    rows = await activity(database)
    assert [(r.version, r.action, r.channel, r.title) for r in rows] == [
        (1, "created", "rest", "Draft"),
        (2, "updated", "mcp", "Report"),
        (3, "completed", "chat", "Report"),
    ]
    assert rows[1].changes == {"title": {"from": "Draft", "to": "Report"}}
    assert rows[0].changes == {}
    assert [r.event_id for r in rows] == [e["id"] for e in events]
    expected_time = datetime.fromisoformat(events[2]["time"].replace("Z", "+00:00"))
    assert rows[2].occurred_at == expected_time
    assert rows[2].occurred_at.tzinfo is not None
    assert rows[2].occurred_at.utcoffset() == UTC.utcoffset(None)
    assert await inbox_count(database) == 3


async def test_a_failed_transaction_leaves_no_inbox_row_so_the_redelivery_applies(
    database: Database,
) -> None:
    events = await make_history(database)

    async def deliver_then_fail() -> None:
        async with database.session_scope(write=True) as session:
            assert await deliver(session, TASK_ACTIVITY, events[0]) == "applied"
            raise RuntimeError("the commit never happens")

    with pytest.raises(RuntimeError):
        await deliver_then_fail()

    async with database.session_scope(write=True) as session:
        assert await deliver(session, TASK_ACTIVITY, events[0]) == "applied"
    assert len(await activity(database)) == 1


def valid_event() -> dict[str, Any]:
    """A well-formed task event, built as the outbox builds them."""
    return cloud_event(
        event_id=str(uuid.uuid4()),
        action="created",
        task={"id": 7, "title": "Draft", "completed": False},
        changes={},
        user_id=ALICE,
        channel="rest",
        version=1,
        time=datetime.now(UTC),
    )


def _broken(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(event)
    *parents, last = path.split(".")
    target = broken
    for part in parents:
        target = target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return broken


POISON = [
    ("specversion", "0.3"),
    ("id", KeyError),
    ("id", ""),
    ("id", "x" * 65),
    ("id", "bad id\nforged log line"),
    ("id", 12345),
    ("type", "com.todo-assistant.task.exploded"),
    ("type", "com.example.other.created"),
    ("type", KeyError),
    ("time", "yesterday"),
    ("time", "2026-01-01T00:00:00"),  # no offset: not an instant
    ("data", "not an object"),
    ("data.task", KeyError),
    ("data.task.id", "seven"),
    ("data.task.title", ""),
    ("data.task.title", "a\x00b"),  # PostgreSQL text cannot hold it: poison, not a retry
    ("data.user_id", KeyError),
    ("data.channel", None),
    ("data.version", 0),
    ("data.changes", ["not", "a", "mapping"]),
]


@pytest.mark.parametrize(("path", "value"), POISON, ids=[f"{p}={v!r}"[:40] for p, v in POISON])
async def test_an_event_that_can_never_be_processed_is_poison_and_leaves_nothing(
    database: Database, path: str, value: Any
) -> None:
    with pytest.raises(PoisonEvent):
        async with database.session_scope(write=True) as session:
            await deliver(session, TASK_ACTIVITY, _broken(valid_event(), path, value))
    assert await activity(database) == []
    assert await inbox_count(database) == 0


async def test_the_unbroken_template_applies(database: Database) -> None:
    async with database.session_scope(write=True) as session:
        assert await deliver(session, TASK_ACTIVITY, valid_event()) == "applied"
    assert len(await activity(database)) == 1


@pytest.mark.parametrize("body", [None, [], "text", 3])
def test_a_body_that_is_not_an_object_is_poison(body: object) -> None:
    with pytest.raises(PoisonEvent, match="not a JSON object"):
        parse_event(body)


def test_the_attributes_a_sidecar_adds_are_accepted() -> None:
    event = {
        "specversion": "1.0",
        "id": "5929aaac-a5e2-4ca1-859c-edfe73f11565",
        "source": "/todo-assistant/tasks",
        "type": "com.todo-assistant.task.created",
        "time": "2026-01-02T03:04:05Z",
        "data": {"task": {"id": 1, "title": "t"}, "user_id": "u", "channel": "rest", "version": 1},
        "pubsubname": "taskpubsub",
        "topic": "task-events",
        "traceid": "00-113ad9c4e42b27583ae98ba698d54255-e3743e35ff56f219-01",
        "traceparent": "00-113ad9c4e42b27583ae98ba698d54255-e3743e35ff56f219-01",
        "tracestate": "",
    }
    assert parse_event(event).action == "created"


async def test_apply_locally_applies_each_event_once_and_skips_poison_with_one_line(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    events = await make_history(database)
    poison = _broken(events[1], "type", "com.todo-assistant.task.exploded")
    poison["id"] = "poison-1"
    caplog.set_level(logging.WARNING, logger="backend.events.consumers")

    async with database.session_scope(write=True) as session:
        await apply_locally(session, [events[0], poison, events[1]])
    async with database.session_scope(write=True) as session:
        await apply_locally(session, [events[1], events[2]])  # a replayed batch

    assert [row.version for row in await activity(database)] == [1, 2, 3]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "poison-1" in message
    assert "\n" not in message
    assert await inbox_count(database) == 3


async def test_an_event_the_database_refuses_is_skipped_and_the_rest_of_the_batch_applies(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    events = await make_history(database)
    # A consumer whose state disagrees with its inbox (a bug, a restore from backup): the
    # activity row of the second event exists, so inserting it again breaks a unique key.
    async with database.session_scope(write=True) as session:
        await apply_locally(session, [events[1]])
        await session.execute(InboxEvent.__table__.delete())  # type: ignore[attr-defined]
    caplog.set_level(logging.WARNING, logger="backend.events.consumers")

    async with database.session_scope(write=True) as session:
        await apply_locally(session, events)

    assert [row.version for row in await activity(database)] == [1, 2, 3]
    assert await inbox_count(database) == 2
    skipped = [r.getMessage() for r in caplog.records if "skipped event" in r.getMessage()]
    assert len(skipped) == 1
    assert events[1]["id"] in skipped[0]
    assert "Report" not in skipped[0]  # the error is named, its parameters are not


async def test_unknown_consumers_are_refused_and_task_activity_is_registered(
    database: Database,
) -> None:
    assert TASK_ACTIVITY in CONSUMERS
    event = (await make_history(database))[0]
    with pytest.raises(KeyError):
        async with database.session_scope(write=True) as session:
            await deliver(session, "no-such-consumer", event)


@pytest.mark.postgres_only
async def test_two_concurrent_deliveries_of_one_event_apply_it_once_on_postgresql(
    database: Database,
) -> None:
    event = (await make_history(database))[0]
    first_inserted = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> str:
        async with database.session_scope(write=True) as session:
            outcome = await deliver(session, TASK_ACTIVITY, event)
            first_inserted.set()
            await release_first.wait()  # hold the transaction open while the second arrives
            return outcome

    async def second() -> str:
        await first_inserted.wait()
        async with database.session_scope(write=True) as session:
            return await deliver(session, TASK_ACTIVITY, event)

    outcomes = await asyncio.gather(
        first(), second(), release_once_a_lock_wait_is_seen(database, release_first)
    )

    assert outcomes[2] is True, "the second delivery never waited: the race was not tested"
    assert sorted(outcomes[:2]) == ["applied", "duplicate"]
    assert len(await activity(database)) == 1
    assert await inbox_count(database) == 1
