"""Reminder rules, snooze, firing (once, not early, late after downtime) and the scheduler."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from backend.chat import service as chat_service
from backend.clock import Clock
from backend.config import Settings
from backend.db import Database
from backend.errors import InvalidInput
from backend.models import Notification, Task
from backend.reminders.scheduler import Scheduler
from backend.tasks import service
from backend.tasks.schemas import TaskUpdate
from tests.conftest import auth
from tests.reminders.conftest import (
    ALICE,
    BOB,
    all_notifications,
    create,
    event_types,
    fire,
    messages_of,
    series,
    stored,
)

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
WAIT_SECONDS = 20.0


async def update(database: Database, task_id: int | None, **fields: object) -> Task:
    assert task_id is not None
    async with database.session_scope(write=True) as session:
        return await service.update_task(
            session, ALICE, task_id, TaskUpdate.model_validate(fields), channel="rest"
        )


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `condition` holds; fail after a generous timeout (no duration asserted)."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- rules --------------------------------------------------------------------------------


async def test_an_offset_follows_the_due_time(database: Database, frozen: Clock) -> None:
    due = frozen.now() + 5 * HOUR
    task = await create(database, title="Call mom", due_at=due, remind_before_minutes=60)
    assert task.remind_at == due - HOUR

    moved = await update(database, task.id, due_at=due + 2 * HOUR)
    assert moved.remind_at == due + HOUR
    assert moved.remind_before_minutes == 60

    closer = await update(database, task.id, remind_before_minutes=10)
    assert closer.remind_at == due + 2 * HOUR - 10 * MINUTE

    undated = await update(database, task.id, due_at=None)
    assert undated.remind_at is None  # nothing to be before

    absolute = await update(database, task.id, remind_at=due)
    assert (absolute.remind_at, absolute.remind_before_minutes) == (due, None)
    redated = await update(database, task.id, due_at=due + 9 * HOUR)
    assert redated.remind_at == due  # an absolute reminder stays where it was put


async def test_conflicting_reminders_are_refused_and_an_offset_waits_for_a_due_time(
    database: Database, frozen: Clock
) -> None:
    now = frozen.now()
    with pytest.raises(InvalidInput) as both:
        await create(database, title="x", due_at=now, remind_at=now, remind_before_minutes=5)
    assert both.value.code == "conflicting_reminder"

    dateless = await create(database, title="x", remind_before_minutes=5)
    assert (dateless.remind_before_minutes, dateless.remind_at) == (5, None)
    dated = await update(database, dateless.id, due_at=now + HOUR)
    assert dated.remind_at == now + HOUR - 5 * MINUTE


async def test_rest_reminder_errors_are_422(client: httpx.AsyncClient, frozen: Clock) -> None:
    now = frozen.now().isoformat()
    both = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "x", "due_at": now, "remind_at": now, "remind_before_minutes": 5},
        headers=auth(ALICE),
    )
    assert (both.status_code, both.json()["code"]) == (422, "conflicting_reminder")


async def test_a_changed_reminder_is_armed_again(database: Database, frozen: Clock) -> None:
    task = await create(database, title="Call mom", remind_at=frozen.now())
    assert len(await fire(database)) == 1
    assert (await stored(database, task.id)).reminded_at is not None

    await update(database, task.id, title="Call mom back")  # not a reminder change
    assert (await stored(database, task.id)).reminded_at is not None

    rearmed = await update(database, task.id, remind_at=frozen.now() + HOUR)
    assert rearmed.reminded_at is None
    frozen.advance(HOUR)
    assert len(await fire(database)) == 1
    assert len(await all_notifications(database)) == 2


async def test_rest_snooze_by_minutes_and_until(
    client: httpx.AsyncClient, database: Database, frozen: Clock
) -> None:
    created = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Stretch", "remind_at": frozen.now().isoformat()},
        headers=auth(ALICE),
    )
    task_id = created.json()["id"]
    assert len(await fire(database)) == 1
    path = f"/api/{ALICE}/tasks/{task_id}/snooze"

    snoozed = await client.post(path, json={"minutes": 10}, headers=auth(ALICE))
    assert snoozed.status_code == 200, snoozed.text
    body = snoozed.json()
    assert body["reminded_at"] is None
    assert body["remind_at"] == (frozen.now() + 10 * MINUTE).isoformat().replace("+00:00", "Z")
    assert await fire(database) == []  # not before its time
    frozen.advance(10 * MINUTE)
    assert len(await fire(database)) == 1

    until = frozen.now() + 3 * HOUR
    again = await client.post(path, json={"until": until.isoformat()}, headers=auth(ALICE))
    assert again.status_code == 200
    assert (await stored(database, task_id)).remind_at == until

    for wrong in ({}, {"minutes": 5, "until": until.isoformat()}, {"minutes": 0}):
        refused = await client.post(path, json=wrong, headers=auth(ALICE))
        assert refused.status_code == 422, wrong

    await client.patch(f"/api/{ALICE}/tasks/{task_id}/complete", headers=auth(ALICE))
    done = await client.post(path, json={"minutes": 5}, headers=auth(ALICE))
    assert (done.status_code, done.json()["code"]) == (409, "task_completed")

    missing = await client.post(
        f"/api/{ALICE}/tasks/{task_id + 999}/snooze", json={"minutes": 5}, headers=auth(ALICE)
    )
    assert missing.status_code == 404


async def test_a_snoozed_repeat_keeps_its_reminder_offset_for_the_next_occurrence(
    client: httpx.AsyncClient, database: Database, frozen: Clock
) -> None:
    due = frozen.now() + 2 * HOUR
    created = await client.post(
        f"/api/{ALICE}/tasks",
        json={
            "title": "Pills",
            "due_at": due.isoformat(),
            "remind_at": (due - HOUR).isoformat(),
            "recurrence": "daily",
        },
        headers=auth(ALICE),
    )
    task_id = created.json()["id"]
    frozen.advance(HOUR)
    assert len(await fire(database)) == 1
    # Snoozed past the due time: the next occurrence must still remind an hour before.
    until = due + 30 * MINUTE
    snoozed = await client.post(
        f"/api/{ALICE}/tasks/{task_id}/snooze",
        json={"until": until.isoformat()},
        headers=auth(ALICE),
    )
    assert snoozed.status_code == 200
    assert (await stored(database, task_id)).remind_at == until
    await client.patch(f"/api/{ALICE}/tasks/{task_id}/complete", headers=auth(ALICE))
    successor = (await series(database, (await stored(database, task_id)).series_id))[1]
    assert successor.due_at == due + 24 * HOUR
    assert successor.remind_at == due + 23 * HOUR


@pytest.mark.parametrize("reminder", ["absolute", "remind_before_minutes"])
async def test_a_repeats_reminder_rule_is_its_distance_before_the_due_time(
    client: httpx.AsyncClient, database: Database, frozen: Clock, reminder: str
) -> None:
    """A new remind_at on a repeating task sets how far ahead every occurrence reminds; a
    snooze moves this occurrence's reminder only."""
    due = frozen.now() + 2 * HOUR
    first = (
        {"remind_at": (due - HOUR).isoformat()}
        if reminder == "absolute"
        else {"remind_before_minutes": 60}
    )
    created = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Pills", "due_at": due.isoformat(), "recurrence": "daily", **first},
        headers=auth(ALICE),
    )
    task_id = created.json()["id"]
    assert created.json()["remind_before_minutes"] == 60
    snoozed = await client.post(
        f"/api/{ALICE}/tasks/{task_id}/snooze", json={"minutes": 150}, headers=auth(ALICE)
    )
    assert snoozed.json()["remind_before_minutes"] == 60  # past the due time: this one only
    patched = await client.patch(
        f"/api/{ALICE}/tasks/{task_id}",
        json={"remind_at": (due - 30 * MINUTE).isoformat()},
        headers=auth(ALICE),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["remind_before_minutes"] == 30

    await client.patch(f"/api/{ALICE}/tasks/{task_id}/complete", headers=auth(ALICE))
    successor = (await series(database, (await stored(database, task_id)).series_id))[1]
    assert successor.due_at == due + 24 * HOUR
    assert successor.remind_at == due + 24 * HOUR - 30 * MINUTE


async def test_a_snooze_to_a_time_already_past_reminds_now(
    client: httpx.AsyncClient, database: Database, frozen: Clock
) -> None:
    created = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Call", "remind_at": frozen.now().isoformat()},
        headers=auth(ALICE),
    )
    assert len(await fire(database)) == 1
    frozen.advance(MINUTE)
    snoozed = await client.post(
        f"/api/{ALICE}/tasks/{created.json()['id']}/snooze",
        json={"until": (frozen.now() - HOUR).isoformat()},
        headers=auth(ALICE),
    )
    assert snoozed.status_code == 200, snoozed.text
    assert snoozed.json()["remind_at"] == frozen.now().isoformat().replace("+00:00", "Z")
    assert len(await fire(database)) == 1  # a second notification, not a silent disarm


async def test_a_new_remind_at_on_a_plain_task_replaces_its_offset(
    client: httpx.AsyncClient, frozen: Clock
) -> None:
    due = frozen.now() + 2 * HOUR
    created = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Call", "due_at": due.isoformat(), "remind_before_minutes": 30},
        headers=auth(ALICE),
    )
    patched = await client.patch(
        f"/api/{ALICE}/tasks/{created.json()['id']}",
        json={"remind_at": (due - HOUR).isoformat(), "due_at": (due + HOUR).isoformat()},
        headers=auth(ALICE),
    )
    assert patched.json()["remind_before_minutes"] is None
    assert patched.json()["remind_at"] == (due - HOUR).isoformat().replace("+00:00", "Z")


# --- firing -------------------------------------------------------------------------------


async def test_a_due_reminder_fires_once_with_everything_it_writes(
    database: Database, frozen: Clock
) -> None:
    async with database.session_scope(write=True) as session:
        older = await chat_service.create_conversation(session, ALICE, "older")
    frozen.advance(MINUTE)
    async with database.session_scope(write=True) as session:
        latest = await chat_service.create_conversation(session, ALICE, "latest")
    due = frozen.now() + 2 * HOUR
    task = await create(
        database, title="Call mom", due_at=due, remind_at=frozen.now() + HOUR, zone="UTC"
    )

    assert await fire(database) == []  # not yet
    frozen.advance(HOUR)
    fired = await fire(database)
    assert [(item.task_id, item.user_id, item.late) for item in fired] == [(task.id, ALICE, False)]
    assert await fire(database) == []  # once

    [notification] = await all_notifications(database)
    assert (notification.seq, notification.task_id, notification.title) == (1, task.id, "Call mom")
    assert notification.remind_at == task.remind_at
    assert notification.fired_at == frozen.now()
    assert (await stored(database, task.id)).reminded_at == frozen.now()
    assert (await event_types(database, task.id))[-1] == "reminder.due"

    assert await messages_of(database, older.id) == []
    [message] = await messages_of(database, latest.id)
    assert message.role == "assistant"
    assert message.content.startswith("⏰ Reminder: Call mom")
    assert message.content == "⏰ Reminder: Call mom — due 10:01 AM"
    assert notification.message_id == message.id


async def test_without_a_conversation_only_the_notification_is_written(
    database: Database, frozen: Clock
) -> None:
    await create(database, title="Stretch", remind_at=frozen.now())
    [fired] = await fire(database)
    [notification] = await all_notifications(database)
    assert notification.message_id is None
    assert fired.notification_id == notification.id


async def test_completed_and_deleted_tasks_do_not_fire(database: Database, frozen: Clock) -> None:
    done = await create(database, title="done", remind_at=frozen.now() + MINUTE)
    gone = await create(database, title="gone", remind_at=frozen.now() + MINUTE)
    kept = await create(database, title="kept", remind_at=frozen.now() + MINUTE)
    assert done.id is not None
    assert gone.id is not None
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, done.id, True, channel="rest")
        await service.delete_task(session, ALICE, gone.id, channel="rest")
    frozen.advance(HOUR)
    assert [item.task_id for item in await fire(database)] == [kept.id]


async def test_a_reminder_missed_while_down_fires_late(database: Database, frozen: Clock) -> None:
    task = await create(database, title="Pills", remind_at=frozen.now() + MINUTE)
    async with database.session_scope(write=True) as session:
        conversation = await chat_service.create_conversation(session, ALICE, "chat")
    frozen.advance(6 * HOUR)  # everything was down
    [fired] = await fire(database)
    assert fired.late
    [notification] = await all_notifications(database)
    assert notification.late
    assert notification.remind_at == task.remind_at
    [message] = await messages_of(database, conversation.id)
    assert "(late" in message.content


async def test_batches_fire_in_time_order_and_respect_the_batch_size(
    database: Database, frozen: Clock
) -> None:
    for minutes in (3, 1, 2):
        await create(database, title=f"in {minutes}", remind_at=frozen.now() + minutes * MINUTE)
    frozen.advance(HOUR)
    first = await fire(database, batch_size=2)
    second = await fire(database, batch_size=2)
    assert len(first) == 2
    assert len(second) == 1
    titles = [row.title for row in await all_notifications(database)]
    assert titles == ["in 1", "in 2", "in 3"]
    assert [row.seq for row in await all_notifications(database)] == [1, 2, 3]


# --- the scheduler ------------------------------------------------------------------------


async def fired_count(database: Database) -> int:
    return len(await all_notifications(database))


async def test_a_running_scheduler_fires_when_the_time_comes(
    database: Database, fast_settings: Settings, frozen: Clock
) -> None:
    await create(database, title="Tea", remind_at=frozen.now() + 5 * MINUTE)
    scheduler = Scheduler(database, fast_settings)
    scheduler.start()
    try:
        rounds = scheduler.rounds
        await eventually(lambda: asyncio.sleep(0, scheduler.rounds > rounds + 1))
        assert await fired_count(database) == 0
        frozen.advance(5 * MINUTE)
        await eventually(lambda: _has(database, 1))
    finally:
        await scheduler.aclose()
    assert scheduler.fired == 1


async def _has(database: Database, count: int) -> bool:
    return await fired_count(database) >= count


async def test_a_reminder_written_through_rest_wakes_the_scheduler(
    client: httpx.AsyncClient, database: Database, settings: Settings, frozen: Clock
) -> None:
    # The longest poll interval: only the in-process wake-up fires it within the wait.
    slow = settings.model_copy(update={"reminders_poll_seconds": 60.0})
    scheduler = Scheduler(database, slow)
    scheduler.start()
    try:
        await eventually(lambda: asyncio.sleep(0, scheduler.rounds >= 1))
        response = await client.post(
            f"/api/{ALICE}/tasks",
            json={"title": "Stretch", "remind_at": frozen.now().isoformat()},
            headers=auth(ALICE),
        )
        assert response.status_code == 201
        await eventually(lambda: _has(database, 1))
    finally:
        await scheduler.aclose()


@pytest.mark.postgres_only
async def test_two_schedulers_fire_every_reminder_exactly_once(
    database_url: str, database: Database, fast_settings: Settings, frozen: Clock
) -> None:
    # Enough users that two batches can hold different ones: a scheduler leaves a user whose
    # notifications the other one is numbering to a later round.
    users = [ALICE, BOB, *(f"user-{n}" for n in range(28))]
    for index in range(60):
        await create(
            database,
            users[index % len(users)],
            title=f"r{index}",
            remind_at=frozen.now() + (index % 4) * MINUTE,
        )
    frozen.advance(HOUR)
    small = fast_settings.model_copy(update={"reminders_batch_size": 7})
    other = Database(database_url)
    try:
        first, second = Scheduler(database, small), Scheduler(other, small)
        for _ in range(100):
            fired = await asyncio.gather(first.run_once(), second.run_once())
            if not any(fired):
                break
        else:
            pytest.fail("the schedulers never ran out of reminders")
    finally:
        await other.dispose()

    assert first.fired + second.fired == 60
    # Both took part.
    assert first.fired > 0
    assert second.fired > 0
    rows = await all_notifications(database)
    assert Counter(row.task_id for row in rows).most_common(1)[0][1] == 1
    assert len(rows) == 60
    for user in users:
        seqs = sorted(row.seq for row in rows if row.user_id == user)
        assert seqs == [1, 2], user
    async with database.session_scope() as session:
        unfired = await session.scalar(select(Task).where(col(Task.reminded_at).is_(None)))
        late = (
            await session.scalars(
                select(col(Notification.task_id)).where(col(Notification.late).is_(True))
            )
        ).all()
    assert unfired is None
    assert len(late) == 60
    for row in rows[:5]:
        assert (await event_types(database, row.task_id)).count("reminder.due") == 1


async def test_a_scheduler_started_after_downtime_fires_the_missed_reminder_late(
    database: Database, settings: Settings, frozen: Clock
) -> None:
    await create(database, title="Pills", remind_at=frozen.now() + MINUTE)
    frozen.advance(12 * HOUR)  # nothing ran meanwhile
    # The longest poll: the reminder must fire on the first round, not after a wait.
    scheduler = Scheduler(database, settings.model_copy(update={"reminders_poll_seconds": 60.0}))
    scheduler.start()
    try:
        await eventually(lambda: _has(database, 1))
    finally:
        await scheduler.aclose()
    [notification] = await all_notifications(database)
    assert notification.late
    assert notification.fired_at == frozen.now()
