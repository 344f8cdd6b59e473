"""Repeating tasks: completing one creates the next occurrence, exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from backend.clock import Clock
from backend.db import Database
from backend.errors import Conflict
from backend.tasks import service
from backend.tasks.schemas import TaskUpdate
from tests.conftest import auth
from tests.events.conftest import release_once_a_lock_wait_is_seen
from tests.mcp_server.conftest import Connector
from tests.reminders.conftest import (
    ALICE,
    create,
    event_types,
    live_tasks,
    series,
    stored,
)

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


async def complete(database: Database, task_id: int | None, done: bool = True) -> None:
    assert task_id is not None
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, task_id, done, channel="rest")


async def test_completing_creates_one_next_occurrence_that_keeps_the_task(
    database: Database, frozen: Clock
) -> None:
    due = frozen.now() + 2 * HOUR
    first = await create(
        database,
        title="Water plants",
        description="the balcony ones",
        priority="high",
        tags=["home", "garden"],
        due_at=due,
        remind_at=due - HOUR,
        recurrence="FREQ=WEEKLY",
        time_zone="Asia/Tokyo",  # no DST: a week later is 7 x 24 hours later
    )
    await complete(database, first.id)

    occurrences = await series(database, first.series_id)
    assert [task.occurrence for task in occurrences] == [1, 2]
    successor = occurrences[1]
    assert successor.title == "Water plants"
    assert successor.description == "the balcony ones"
    assert successor.priority == "high"
    assert successor.tags == ["home", "garden"]
    assert successor.recurrence == "FREQ=WEEKLY"
    assert successor.time_zone == "Asia/Tokyo"
    assert successor.due_at == due + 7 * DAY
    assert successor.remind_at == due + 7 * DAY - HOUR
    assert successor.reminded_at is None
    assert not successor.completed
    assert await event_types(database, successor.id) == ["created"]


async def test_an_offset_reminder_stays_the_same_offset(database: Database, frozen: Clock) -> None:
    due = frozen.now() + 3 * HOUR
    first = await create(
        database, title="Stand-up", due_at=due, remind_before_minutes=15, recurrence="daily"
    )
    await complete(database, first.id)
    successor = (await series(database, first.series_id))[1]
    assert successor.due_at == due + DAY
    assert successor.remind_before_minutes == 15
    assert successor.remind_at == due + DAY - timedelta(minutes=15)


async def test_daily_at_nine_berlin_stays_nine_local_across_spring_forward(
    database: Database, frozen: Clock
) -> None:
    # The clocks go forward on Sunday 30 March 2031: 09:00 is 08:00 UTC before, 07:00 after.
    due = datetime(2031, 3, 29, 9, 0, tzinfo=BERLIN).astimezone(UTC)
    first = await create(
        database, title="Vitamins", due_at=due, recurrence="FREQ=DAILY", zone="Europe/Berlin"
    )
    assert first.time_zone == "Europe/Berlin"
    await complete(database, first.id)
    successor = (await series(database, first.series_id))[1]
    assert successor.due_at is not None
    assert successor.due_at == datetime(2031, 3, 30, 7, 0, tzinfo=UTC)
    local = successor.due_at.astimezone(BERLIN)
    assert (local.day, local.hour, local.minute) == (30, 9, 0)


async def test_an_overdue_repeat_leaves_no_backlog(database: Database, frozen: Clock) -> None:
    due = frozen.now() + HOUR
    first = await create(database, title="Journal", due_at=due, recurrence="daily")
    frozen.advance(3 * DAY + 2 * HOUR)  # three slots missed
    await complete(database, first.id)

    occurrences = await series(database, first.series_id)
    assert len(occurrences) == 2
    assert occurrences[1].due_at == due + 4 * DAY  # the first slot after now
    assert [task.title for task in await live_tasks(database)] == ["Journal", "Journal"]


async def test_count_ends_the_series(database: Database, frozen: Clock) -> None:
    first = await create(
        database, title="Course", due_at=frozen.now() + HOUR, recurrence="FREQ=DAILY;COUNT=2"
    )
    await complete(database, first.id)
    second = (await series(database, first.series_id))[1]
    await complete(database, second.id)
    assert len(await series(database, first.series_id)) == 2


async def test_reopening_and_completing_again_spawns_nothing_more(
    database: Database, frozen: Clock
) -> None:
    first = await create(database, title="Gym", due_at=frozen.now() + HOUR, recurrence="daily")
    await complete(database, first.id)
    await complete(database, first.id, done=False)
    await complete(database, first.id)
    assert len(await series(database, first.series_id)) == 2
    assert await event_types(database, first.id) == [
        "created",
        "completed",
        "reopened",
        "completed",
    ]


async def test_skip_creates_the_next_and_puts_this_one_away(
    database: Database, frozen: Clock
) -> None:
    due = frozen.now() + HOUR
    first = await create(database, title="Bins", due_at=due, recurrence="weekly")
    assert first.id is not None
    async with database.session_scope(write=True) as session:
        result = await service.skip_occurrence(session, ALICE, first.id, channel="rest")
    assert result.next is not None
    assert result.next.due_at == due + 7 * DAY
    assert result.skipped.deleted_at is not None

    assert (await stored(database, first.id)).deleted_at is not None
    assert await event_types(database, first.id) == ["created", "skipped"]
    assert [task.id for task in await live_tasks(database)] == [result.next.id]


async def test_skipping_the_last_occurrence_ends_the_series(
    database: Database, frozen: Clock
) -> None:
    only = await create(
        database, title="Once more", due_at=frozen.now() + HOUR, recurrence="FREQ=DAILY;COUNT=1"
    )
    assert only.id is not None
    async with database.session_scope(write=True) as session:
        result = await service.skip_occurrence(session, ALICE, only.id, channel="rest")
    assert result.next is None
    assert await live_tasks(database) == []


async def test_skip_refuses_a_plain_task_and_a_completed_one(
    database: Database, frozen: Clock
) -> None:
    plain = await create(database, title="Once")
    repeating = await create(database, title="Often", due_at=frozen.now(), recurrence="daily")
    await complete(database, repeating.id)
    assert plain.id is not None
    assert repeating.id is not None
    for task_id, code in ((plain.id, "not_repeating"), (repeating.id, "task_completed")):
        with pytest.raises(Conflict) as refused:
            async with database.session_scope(write=True) as session:
                await service.skip_occurrence(session, ALICE, task_id, channel="rest")
        assert refused.value.code == code
    assert len(await series(database, repeating.series_id)) == 2  # nothing more spawned


async def test_deleting_one_occurrence_lets_the_series_go_on(
    database: Database, frozen: Clock
) -> None:
    due = frozen.now() + HOUR
    first = await create(database, title="Bins", due_at=due, recurrence="weekly")
    assert first.id is not None
    async with database.session_scope(write=True) as session:
        await service.delete_task(session, ALICE, first.id, channel="rest", scope="occurrence")
    live = await live_tasks(database)
    assert [(task.occurrence, task.due_at) for task in live] == [(2, due + 7 * DAY)]


async def test_deleting_the_series_deletes_every_occurrence_and_spawns_nothing(
    database: Database, frozen: Clock
) -> None:
    first = await create(database, title="Bins", due_at=frozen.now() + HOUR, recurrence="weekly")
    await complete(database, first.id)
    second = (await series(database, first.series_id))[1]
    other = await create(database, title="Unrelated")
    assert second.id is not None
    async with database.session_scope(write=True) as session:
        await service.delete_task(session, ALICE, second.id, channel="rest", scope="series")

    occurrences = await series(database, first.series_id)
    assert len(occurrences) == 2
    assert all(task.deleted_at is not None for task in occurrences)
    assert [task.id for task in await live_tasks(database)] == [other.id]


async def test_stopping_a_repeat_spawns_nothing_more(database: Database, frozen: Clock) -> None:
    by_service = await create(database, title="A", due_at=frozen.now(), recurrence="daily")
    by_patch = await create(database, title="B", due_at=frozen.now(), recurrence="daily")
    assert by_service.id is not None
    assert by_patch.id is not None
    async with database.session_scope(write=True) as session:
        stopped = await service.stop_repeating(session, ALICE, by_service.id, channel="rest")
        assert stopped.recurrence is None
        await service.update_task(
            session, ALICE, by_patch.id, TaskUpdate(recurrence=None), channel="rest"
        )
    await complete(database, by_service.id)
    await complete(database, by_patch.id)
    assert len(await live_tasks(database)) == 2


# --- REST ---------------------------------------------------------------------------------


async def test_rest_skip_answers_skipped_and_next(client: httpx.AsyncClient, frozen: Clock) -> None:
    due = frozen.now() + HOUR
    created = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Bins", "due_at": due.isoformat(), "recurrence": "weekly"},
        headers=auth(ALICE),
    )
    task_id = created.json()["id"]
    response = await client.post(f"/api/{ALICE}/tasks/{task_id}/skip", headers=auth(ALICE))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"skipped", "next"}
    assert body["skipped"]["id"] == task_id
    assert body["next"]["title"] == "Bins"
    assert datetime.fromisoformat(body["next"]["due_at"]) == due + 7 * DAY

    again = await client.post(f"/api/{ALICE}/tasks/{task_id}/skip", headers=auth(ALICE))
    assert again.status_code == 404  # skipped means deleted

    plain = await client.post(f"/api/{ALICE}/tasks", json={"title": "x"}, headers=auth(ALICE))
    refused = await client.post(
        f"/api/{ALICE}/tasks/{plain.json()['id']}/skip", headers=auth(ALICE)
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "not_repeating")


async def test_rest_completion_and_patch_recurrence_null(
    client: httpx.AsyncClient, database: Database, frozen: Clock
) -> None:
    due = frozen.now() + HOUR
    created = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Run", "due_at": due.isoformat(), "recurrence": "daily"},
        headers=auth(ALICE),
    )
    task_id = created.json()["id"]
    done = await client.patch(
        f"/api/{ALICE}/tasks/{task_id}/complete", json={"completed": True}, headers=auth(ALICE)
    )
    assert done.status_code == 200
    listed = (await client.get(f"/api/{ALICE}/tasks?status=pending", headers=auth(ALICE))).json()
    assert [datetime.fromisoformat(item["due_at"]) for item in listed["items"]] == [due + DAY]

    next_id = listed["items"][0]["id"]
    patched = await client.patch(
        f"/api/{ALICE}/tasks/{next_id}", json={"recurrence": None}, headers=auth(ALICE)
    )
    assert patched.json()["recurrence"] is None
    await client.patch(f"/api/{ALICE}/tasks/{next_id}/complete", headers=auth(ALICE))
    assert len(await live_tasks(database)) == 2


async def test_rest_delete_scope_series(client: httpx.AsyncClient, database: Database) -> None:
    created = await client.post(
        f"/api/{ALICE}/tasks", json={"title": "Bins", "recurrence": "weekly"}, headers=auth(ALICE)
    )
    task_id = created.json()["id"]
    response = await client.delete(
        f"/api/{ALICE}/tasks/{task_id}", params={"scope": "series"}, headers=auth(ALICE)
    )
    assert response.status_code == 204
    assert await live_tasks(database) == []
    bad = await client.delete(
        f"/api/{ALICE}/tasks/{task_id}", params={"scope": "all"}, headers=auth(ALICE)
    )
    assert bad.status_code == 422


async def test_x_timezone_header_sets_the_zone(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Local", "recurrence": "daily"},
        headers={**auth(ALICE), "X-Timezone": "Asia/Tokyo"},
    )
    assert response.status_code == 201
    assert response.json()["time_zone"] == "Asia/Tokyo"

    named = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Named", "time_zone": "Europe/Paris"},
        headers={**auth(ALICE), "X-Timezone": "Asia/Tokyo"},
    )
    assert named.json()["time_zone"] == "Europe/Paris"  # the body wins

    invalid = await client.post(
        f"/api/{ALICE}/tasks",
        json={"title": "Nowhere"},
        headers={**auth(ALICE), "X-Timezone": "Mars/Olympus"},
    )
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "invalid_timezone"


# --- two API instances --------------------------------------------------------------------


@pytest.mark.postgres_only
async def test_concurrent_completion_on_two_instances_spawns_once(
    client: httpx.AsyncClient,
    second_app: httpx.AsyncClient,
    database: Database,
    frozen: Clock,
) -> None:
    for round_ in range(5):
        created = await client.post(
            f"/api/{ALICE}/tasks",
            json={
                "title": f"Race {round_}",
                "due_at": (frozen.now() + HOUR).isoformat(),
                "recurrence": "daily",
            },
            headers=auth(ALICE),
        )
        task_id = created.json()["id"]
        path = f"/api/{ALICE}/tasks/{task_id}/complete"
        answers = await asyncio.gather(
            *(
                instance.patch(path, json={"completed": True}, headers=auth(ALICE))
                for instance in (client, second_app, client, second_app)
            )
        )
        assert [answer.status_code for answer in answers] == [200] * 4
        first = await stored(database, task_id)
        occurrences = await series(database, first.series_id)
        assert [task.occurrence for task in occurrences] == [1, 2], round_
        assert (await event_types(database, task_id)).count("completed") == 1


# --- MCP ----------------------------------------------------------------------------------


async def test_mcp_complete_and_skip_name_the_next_occurrence(
    connect: Connector, database: Database, frozen: Clock
) -> None:
    due = frozen.now() + HOUR
    async with connect(ALICE) as alice:
        added = await alice.ok(
            "add_task",
            title="Water plants",
            due_at=due.isoformat(),
            recurrence="FREQ=WEEKLY;BYDAY=MO",
            time_zone="Europe/Berlin",
            remind_before_minutes=30,
        )
        done = await alice.ok("complete_task", task_id=added["task_id"])
        assert done["status"] == "completed"
        successor = await stored(database, done["next_task_id"])
        assert successor.due_at is not None
        assert datetime.fromisoformat(done["next_due_at"]) == successor.due_at
        assert successor.due_at.astimezone(BERLIN).strftime("%a") == "Mon"
        assert successor.remind_at == successor.due_at - timedelta(minutes=30)

        skipped = await alice.ok("skip_occurrence", task_id=done["next_task_id"])
        assert skipped["status"] == "skipped"
        after_skip = await stored(database, skipped["next_task_id"])
        assert after_skip.due_at == successor.due_at + 7 * DAY
        assert datetime.fromisoformat(skipped["next_due_at"]) == after_skip.due_at

        plain = await alice.ok("add_task", title="Once")
        plain_done = await alice.ok("complete_task", task_id=plain["task_id"])
        assert "next_task_id" not in plain_done
        assert "next_due_at" not in plain_done
        refused = await alice.fail("skip_occurrence", task_id=plain["task_id"])
        assert "does not repeat" in refused

        stopped = await alice.ok("update_task", task_id=after_skip.id, recurrence="none")
        assert stopped["status"] == "updated"
        assert (await stored(database, after_skip.id)).recurrence is None


@pytest.mark.postgres_only
async def test_deleting_the_series_while_an_occurrence_is_completed_leaves_nothing_live(
    database_url: str, database: Database, frozen: Clock
) -> None:
    first = await create(database, title="Bins", due_at=frozen.now() + HOUR, recurrence="weekly")
    await complete(database, first.id)
    second = (await series(database, first.series_id))[1]
    first_id, second_id = first.id, second.id
    assert first_id is not None
    assert second_id is not None
    release = asyncio.Event()
    other = Database(database_url)

    async def completing() -> None:
        # Completes the second occurrence (spawning the third) and commits only once the
        # series delete waits on its lock.
        async with database.session_scope(write=True) as session:
            await service.set_completion(session, ALICE, second_id, True, channel="rest")
            await release.wait()

    async def deleting() -> None:
        await asyncio.sleep(0)  # let the completion take its lock first
        async with other.session_scope(write=True) as session:
            await service.delete_task(session, ALICE, first_id, channel="rest", scope="series")

    try:
        _, _, raced = await asyncio.gather(
            completing(), deleting(), release_once_a_lock_wait_is_seen(database, release)
        )
    finally:
        await other.dispose()
    assert raced
    occurrences = await series(database, first.series_id)
    assert len(occurrences) == 3
    assert await live_tasks(database) == []


async def test_a_rule_dateutil_cannot_step_through_ends_the_series_instead_of_failing(
    client: httpx.AsyncClient, database: Database, frozen: Clock
) -> None:
    # Found by schemathesis: dateutil raises IndexError stepping through this accepted rule.
    rule = (
        "WKST=SA;BYYEARDAY=9,-1;BYWEEKNO=-18,-36,51,-37,-52,+50,36,+51;FREQ=YEARLY;"
        "INTERVAL=494000;BYDAY=FR,TH,45TU;BYMONTH=10,12,6,12,12,2"
    )
    created = await client.post(
        f"/api/{ALICE}/tasks", json={"title": "Odd", "recurrence": rule}, headers=auth(ALICE)
    )
    assert created.status_code == 201, created.text
    done = await client.patch(
        f"/api/{ALICE}/tasks/{created.json()['id']}",
        json={"completed": True},
        headers=auth(ALICE),
    )
    assert done.status_code == 200, done.text
    assert done.json()["completed"] is True
    assert [task.title for task in await live_tasks(database)] == ["Odd"]
