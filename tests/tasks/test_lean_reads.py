"""The REST list and get read records in one statement and write them without a second
validation: the bytes must be those the entity path (service.list_tasks/get_task through
TaskPage/TaskPublic) gives, for every filter, sort and page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.exc import StatementError

from backend.clock import Clock
from backend.db import Database
from backend.tasks import service
from backend.tasks import service as task_service
from backend.tasks.schemas import TaskCreate, TaskPage, TaskPublic, TaskQuery
from tests.conftest import auth

ALICE = "alice"
BOB = "bob"
BASE = f"/api/{ALICE}/tasks"
# Not a whole second: the fraction must come out as it did before.
START = datetime(2031, 3, 2, 8, 15, 30, 250000, tzinfo=UTC)


async def _create(database: Database, user: str = ALICE, **fields: Any) -> int:
    async with database.session_scope(write=True) as session:
        task = await service.create_task(
            session, user, TaskCreate.model_validate(fields), channel="rest"
        )
    assert task.id is not None
    return task.id


@pytest.fixture
async def seeded(database: Database, clock: Clock) -> dict[str, int]:
    """Tasks with several tags (not in alphabetical order), none, due dates past and future,
    repeats, reminders (armed, fired), done, deleted, another user's, and two created at the
    same instant (the id breaks the tie)."""
    clock.freeze(START)
    ids: dict[str, int] = {}

    async def add(name: str, user: str = ALICE, **fields: Any) -> None:
        ids[name] = await _create(database, user, **fields)
        clock.advance(timedelta(seconds=1, microseconds=7))

    await add(
        "tagged",
        title="Buy milk",
        tags=["zeta", "alpha", "mid"],
        priority="high",
        due_at=START + timedelta(days=3),
        remind_before_minutes=30,
    )
    await add("bare", title="call Bob")
    await add(
        "repeating",
        title="Pay 100% of rent_x",
        tags=["home"],
        due_at=START - timedelta(days=2),
        recurrence="FREQ=WEEKLY;BYDAY=MO",
        time_zone="Europe/Paris",
    )
    await add(
        "done",
        title="Älpha “quotes” \\ back",
        description='tab\tand "quotes"',
        tags=["café", "home"],
        priority="urgent",
        due_at=START + timedelta(hours=5),
    )
    await add("deleted", title="gone", tags=["home"])
    await add("bobs", user=BOB, title="Bob's milk", tags=["home"])
    await add("reminder", title="stretch", remind_at=START + timedelta(hours=1), priority="low")
    await add("fired", title="water plants", remind_at=START - timedelta(hours=1))
    clock.advance(timedelta(microseconds=-7))  # a created_at on the whole microsecond
    await add("twin_a", title="twin", due_at=START + timedelta(days=3), tags=["home"])
    clock.advance(timedelta(seconds=-1))
    await add("twin_b", title="Twin", tags=["home", "work"])
    clock.advance(timedelta(minutes=5))
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, ids["done"], True, channel="rest")
        await service.delete_task(session, ALICE, ids["deleted"], channel="rest")
        fired = await service.get_task(session, ALICE, ids["fired"])
        await service.mark_reminded(session, [fired], START)
    return ids


async def _expected_page(database: Database, query: TaskQuery) -> bytes:
    """What the list answered before: entities, validated into TaskPage, dumped."""
    async with database.session_scope() as session:
        result = await service.list_tasks(session, ALICE, query)
        page = TaskPage(
            items=[TaskPublic.model_validate(task) for task in result.items],
            total=result.total,
            limit=query.limit,
            offset=query.offset,
        )
    return page.model_dump_json().encode()


def _params(fields: dict[str, Any]) -> list[tuple[str, str | int | float | bool | None]]:
    params: list[tuple[str, str | int | float | bool | None]] = []
    for name, value in fields.items():
        for one in value if isinstance(value, list) else [value]:
            params.append((name, str(one).lower() if isinstance(one, bool) else str(one)))
    return params


SORTS = ["created_at", "updated_at", "due_at", "remind_at", "priority", "title"]
QUERIES: list[dict[str, Any]] = [
    {},
    {"limit": 3},
    {"limit": 3, "offset": 3},
    {"limit": 4, "offset": 7},  # the last, short page
    {"offset": 8},  # past the end: no items, the total still right
    {"offset": 1_000_000},
    {"status": "pending"},
    {"status": "completed"},
    {"priority": "high"},
    {"priority": "medium", "limit": 2},
    {"tag": ["home"]},
    {"tag": ["#HOME", "work"]},
    {"tag": ["café", "home"]},
    {"tag": ["nowhere"]},
    {"tag": ["nowhere"], "offset": 5},  # nothing matches: an empty page past the end, total 0
    {"q": "100%"},
    {"q": "rent_x"},
    {"q": "MILK"},
    {"q": '"quotes"'},
    {"due_before": "2031-03-03T00:00:00Z"},
    {"due_after": "2031-03-02T12:00:00+05:30"},
    {"due_after": "2031-03-01T00:00:00Z", "due_before": "2031-03-05T09:15:30.250000+01:00"},
    {"overdue": True},
    {"has_reminder": True, "sort": "remind_at"},
    {"status": "pending", "tag": ["home"], "sort": "due_at", "order": "desc", "limit": 2},
    *({"sort": sort} for sort in SORTS),
    *({"sort": sort, "order": order} for sort in SORTS for order in ("asc", "desc")),
    *({"sort": sort, "limit": 2, "offset": 2} for sort in SORTS),
]


@pytest.mark.parametrize("fields", QUERIES, ids=[str(_params(q)) for q in QUERIES])
async def test_the_list_answers_the_bytes_the_entity_path_gives(
    client: httpx.AsyncClient, database: Database, seeded: dict[str, int], fields: dict[str, Any]
) -> None:
    response = await client.get(BASE, params=_params(fields), headers=auth(ALICE))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == await _expected_page(database, TaskQuery.model_validate(fields))


async def test_the_list_keeps_tags_in_their_order_and_none_as_empty(
    client: httpx.AsyncClient, seeded: dict[str, int]
) -> None:
    response = await client.get(BASE, params={"limit": 100}, headers=auth(ALICE))

    tags = {item["id"]: item["tags"] for item in response.json()["items"]}
    assert tags[seeded["tagged"]] == ["zeta", "alpha", "mid"]
    assert tags[seeded["done"]] == ["café", "home"]
    assert tags[seeded["bare"]] == []
    assert seeded["deleted"] not in tags
    assert seeded["bobs"] not in tags
    assert response.json()["total"] == len(tags) == 8


async def test_a_page_past_the_end_still_counts_every_match(
    client: httpx.AsyncClient, seeded: dict[str, int]
) -> None:
    response = await client.get(BASE, params={"offset": 50, "tag": "home"}, headers=auth(ALICE))

    assert response.json() == {"items": [], "total": 4, "limit": 50, "offset": 50}


@pytest.mark.parametrize(
    "name", ["tagged", "bare", "repeating", "done", "reminder", "fired", "twin_a"]
)
async def test_get_answers_the_bytes_the_entity_path_gives(
    client: httpx.AsyncClient, database: Database, seeded: dict[str, int], name: str
) -> None:
    response = await client.get(f"{BASE}/{seeded[name]}", headers=auth(ALICE))

    async with database.session_scope() as session:
        task = await service.get_task(session, ALICE, seeded[name])
        expected = TaskPublic.model_validate(task).model_dump_json().encode()
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == expected


@pytest.mark.parametrize("name", ["deleted", "bobs"])
async def test_get_of_a_deleted_or_someone_elses_task_is_404(
    client: httpx.AsyncClient, seeded: dict[str, int], name: str
) -> None:
    response = await client.get(f"{BASE}/{seeded[name]}", headers=auth(ALICE))

    assert response.status_code == 404
    assert response.json()["code"] == "task_not_found"


@contextmanager
def _statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements the app sends (transaction control left out)."""
    engine = app.state.database.engine.sync_engine
    sent: list[str] = []

    def record(*args: Any) -> None:
        statement = str(args[2]).lstrip().upper()
        if not statement.startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")):
            sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 20},
        {"tag": ["home", "work"], "q": "twin", "sort": "priority", "limit": 1},
        {"has_reminder": "true", "sort": "remind_at", "order": "desc"},
    ],
)
async def test_a_list_request_is_one_statement(
    app: FastAPI, client: httpx.AsyncClient, seeded: dict[str, int], params: dict[str, Any]
) -> None:
    await client.get(BASE, headers=auth(ALICE))  # the pool's first connection set up

    with _statements(app) as sent:
        response = await client.get(BASE, params=params, headers=auth(ALICE))

    assert response.status_code == 200
    assert response.json()["items"]
    assert len(sent) == 1, sent


async def test_only_a_page_past_the_end_needs_a_count(
    app: FastAPI, client: httpx.AsyncClient, seeded: dict[str, int]
) -> None:
    await client.get(BASE, headers=auth(ALICE))

    with _statements(app) as past_the_end:
        await client.get(BASE, params={"offset": 100}, headers=auth(ALICE))
    with _statements(app) as nothing_matches:
        await client.get(BASE, params={"tag": ["nowhere"]}, headers=auth(ALICE))

    assert len(past_the_end) == 2
    assert len(nothing_matches) == 1


@pytest.mark.parametrize("name", ["tagged", "deleted"])
async def test_a_get_request_is_one_statement(
    app: FastAPI, client: httpx.AsyncClient, seeded: dict[str, int], name: str
) -> None:
    await client.get(BASE, headers=auth(ALICE))

    with _statements(app) as sent:
        await client.get(f"{BASE}/{seeded[name]}", headers=auth(ALICE))

    assert len(sent) == 1, sent


async def test_a_kept_statement_without_its_user_fails_rather_than_reading_someones_rows(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_service, "_statements", {})
    async with database.session_scope() as session:
        await task_service.list_task_records(session, "alice", TaskQuery())  # builds and keeps
        [statement] = task_service._statements.values()
        connection = await session.connection()
        with pytest.raises(StatementError, match="owner"):
            await connection.execute(statement, {"limit": 20, "offset": 0})
