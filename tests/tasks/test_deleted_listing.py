"""Finding deleted tasks to bring them back: `status="deleted"` lists the user's deleted tasks
(and only them) with every other filter applied as usual; the other statuses never show them.
Through the service (both read paths), the REST list and the MCP `list_tasks` tool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.exc import StatementError
from starlette.applications import Starlette

from backend.auth.mcp_tokens import ALL_SCOPES, mcp_token_config, mint_mcp_token
from backend.clock import Clock
from backend.config import Settings
from backend.db import Database
from backend.tasks import service
from backend.tasks.schemas import TaskCreate, TaskQuery
from mcp_server.server import create_http_app
from tests.conftest import auth
from tests.mcp_server.conftest import McpUser, open_session

ALICE = "alice"
BOB = "bob"
START = datetime(2031, 5, 4, 9, 0, tzinfo=UTC)


async def _create(database: Database, user: str = ALICE, **fields: Any) -> int:
    async with database.session_scope(write=True) as session:
        task = await service.create_task(
            session, user, TaskCreate.model_validate(fields), channel="rest"
        )
    assert task.id is not None
    return task.id


async def _delete(database: Database, task_id: int, user: str = ALICE) -> None:
    async with database.session_scope(write=True) as session:
        await service.delete_task(session, user, task_id, channel="rest")


async def _complete(database: Database, task_id: int, user: str = ALICE) -> None:
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, user, task_id, True, channel="rest")


async def _restore(database: Database, task_id: int, user: str = ALICE) -> None:
    async with database.session_scope(write=True) as session:
        await service.restore_task(session, user, task_id, channel="rest")


async def _ids(database: Database, user: str = ALICE, **query: Any) -> list[int]:
    """The ids of a listing, checked to be the same on both read paths (entities, records)."""
    parsed = TaskQuery.model_validate(query)
    async with database.session_scope() as session:
        entities = await service.list_tasks(session, user, parsed)
        records = await service.list_task_records(session, user, parsed)
    ids = [task.id for task in entities.items]
    assert [record["id"] for record in records.items] == ids
    assert records.total == entities.total
    assert all(task.deleted_at is not None for task in entities.items) == (
        parsed.status == "deleted" or not ids
    )
    return [task_id for task_id in ids if task_id is not None]


@pytest.fixture
async def seeded(database: Database, clock: Clock) -> dict[str, int]:
    """Alice: live milk and bread; deleted milk (pending), deleted milk (done), deleted soap.
    Bob: a deleted milk task of his own. One second apart, in this order."""
    clock.freeze(START)
    ids: dict[str, int] = {}

    async def add(name: str, user: str = ALICE, **fields: Any) -> None:
        ids[name] = await _create(database, user, **fields)
        clock.advance(timedelta(seconds=1))

    await add("live_milk", title="Buy milk", tags=["shop"])
    await add("bread", title="Buy bread", tags=["shop"], priority="high")
    await add(
        "gone_milk",
        title="Buy oat milk",
        tags=["shop"],
        priority="high",
        due_at=START - timedelta(days=1),
    )
    await add("done_milk", title="Milk the budget", description="spreadsheet", tags=["work"])
    await add("soap", title="Buy soap", tags=["shop"], due_at=START + timedelta(days=2))
    await add("bob_milk", BOB, title="Bob's milk run", tags=["shop"])
    await _complete(database, ids["done_milk"])
    for name in ("gone_milk", "done_milk", "soap"):
        await _delete(database, ids[name])
    await _delete(database, ids["bob_milk"], BOB)
    return ids


async def test_deleted_lists_only_deleted_tasks_done_or_not(
    database: Database, seeded: dict[str, int]
) -> None:
    assert await _ids(database, status="deleted") == [
        seeded["soap"],
        seeded["done_milk"],
        seeded["gone_milk"],
    ]


async def test_the_other_statuses_still_never_show_deleted_tasks(
    database: Database, seeded: dict[str, int]
) -> None:
    assert await _ids(database, status="all") == [seeded["bread"], seeded["live_milk"]]
    assert await _ids(database, status="pending") == [seeded["bread"], seeded["live_milk"]]
    assert await _ids(database, status="completed") == []


async def test_every_other_filter_applies_to_the_deleted_list(
    database: Database, seeded: dict[str, int]
) -> None:
    # Search, in title or description, any case: the "bring back the milk task" look-up.
    assert await _ids(database, status="deleted", q="MILK") == [
        seeded["done_milk"],
        seeded["gone_milk"],
    ]
    assert await _ids(database, status="deleted", q="spreadsheet") == [seeded["done_milk"]]
    assert await _ids(database, status="deleted", tag=["shop"]) == [
        seeded["soap"],
        seeded["gone_milk"],
    ]
    assert await _ids(database, status="deleted", priority="high") == [seeded["gone_milk"]]
    assert await _ids(database, status="deleted", due_before=START.isoformat()) == [
        seeded["gone_milk"]
    ]
    assert await _ids(database, status="deleted", due_after=START.isoformat()) == [seeded["soap"]]
    assert await _ids(database, status="deleted", overdue=True) == [seeded["gone_milk"]]
    assert await _ids(database, status="deleted", q="nothing like it") == []


async def test_the_deleted_list_sorts_and_pages_as_any_other(
    database: Database, seeded: dict[str, int]
) -> None:
    assert await _ids(database, status="deleted", sort="title") == [
        seeded["gone_milk"],
        seeded["soap"],
        seeded["done_milk"],
    ]
    assert await _ids(database, status="deleted", sort="due_at") == [
        seeded["gone_milk"],
        seeded["soap"],
        seeded["done_milk"],
    ]
    async with database.session_scope() as session:
        page = await service.list_task_records(
            session, ALICE, TaskQuery(status="deleted", limit=1, offset=1)
        )
        past_the_end = await service.list_task_records(
            session, ALICE, TaskQuery(status="deleted", offset=10)
        )
    assert [record["id"] for record in page.items] == [seeded["done_milk"]]
    assert page.total == 3
    assert past_the_end.items == []
    assert past_the_end.total == 3


async def test_another_users_deleted_tasks_never_appear(
    database: Database, seeded: dict[str, int]
) -> None:
    assert seeded["bob_milk"] not in await _ids(database, status="deleted")
    assert seeded["bob_milk"] not in await _ids(database, status="deleted", q="bob")
    assert await _ids(database, BOB, status="deleted") == [seeded["bob_milk"]]
    assert await _ids(database, BOB, status="deleted", q="oat") == []
    assert await _ids(database, "carol", status="deleted") == []


async def test_a_restored_task_leaves_the_deleted_list(
    database: Database, seeded: dict[str, int]
) -> None:
    [found] = await _ids(database, status="deleted", q="oat milk")
    await _restore(database, found)

    assert found not in await _ids(database, status="deleted")
    assert await _ids(database, status="deleted", q="milk") == [seeded["done_milk"]]
    assert found in await _ids(database, status="all")
    async with database.session_scope() as session:
        task = await service.get_task(session, ALICE, found)
    assert task.deleted_at is None
    assert task.title == "Buy oat milk"


async def test_restoring_another_users_deleted_task_is_not_found(
    database: Database, seeded: dict[str, int]
) -> None:
    with pytest.raises(service.TaskNotFound):
        await _restore(database, seeded["bob_milk"])
    assert await _ids(database, BOB, status="deleted") == [seeded["bob_milk"]]


async def test_a_deleted_listing_is_its_own_kept_statement_and_names_its_user(
    database: Database, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "_statements", {})
    # The same shape but for the status, one after the other: neither reuses the other's.
    assert await _ids(database, status="deleted", q="milk") == [
        seeded["done_milk"],
        seeded["gone_milk"],
    ]
    assert await _ids(database, status="all", q="milk") == [seeded["live_milk"]]
    assert await _ids(database, status="deleted", q="soap") == [seeded["soap"]]
    assert len(service._statements) == 2
    deleted_shape = next(key for key in service._statements if ("status", "deleted") in key)
    statement = service._statements[deleted_shape]
    async with database.session_scope() as session:
        connection = await session.connection()
        with pytest.raises(StatementError, match="owner"):
            await connection.execute(statement, {"q": "milk", "limit": 20, "offset": 0})


# --- REST ---------------------------------------------------------------------------------


async def _rest_ids(client: httpx.AsyncClient, user: str, params: dict[str, Any]) -> list[int]:
    response = await client.get(f"/api/{user}/tasks", params=params, headers=auth(user))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return [item["id"] for item in body["items"]]


async def test_rest_lists_deleted_tasks_and_restores_one_found_so(
    client: httpx.AsyncClient, seeded: dict[str, int]
) -> None:
    assert await _rest_ids(client, ALICE, {"status": "deleted"}) == [
        seeded["soap"],
        seeded["done_milk"],
        seeded["gone_milk"],
    ]
    assert await _rest_ids(client, ALICE, {"status": "deleted", "q": "milk"}) == [
        seeded["done_milk"],
        seeded["gone_milk"],
    ]
    assert await _rest_ids(client, ALICE, {"status": "deleted", "tag": "shop"}) == [
        seeded["soap"],
        seeded["gone_milk"],
    ]
    assert await _rest_ids(client, ALICE, {}) == [seeded["bread"], seeded["live_milk"]]
    assert await _rest_ids(client, BOB, {"status": "deleted"}) == [seeded["bob_milk"]]

    # A deleted task stays hidden from a single read; restore brings it back.
    hidden = await client.get(f"/api/{ALICE}/tasks/{seeded['gone_milk']}", headers=auth(ALICE))
    assert hidden.status_code == 404
    restored = await client.post(
        f"/api/{ALICE}/tasks/{seeded['gone_milk']}/restore", headers=auth(ALICE)
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["title"] == "Buy oat milk"
    assert await _rest_ids(client, ALICE, {"status": "deleted", "q": "milk"}) == [
        seeded["done_milk"]
    ]


async def test_rest_refuses_an_unknown_status(client: httpx.AsyncClient) -> None:
    response = await client.get(
        f"/api/{ALICE}/tasks", params={"status": "trashed"}, headers=auth(ALICE)
    )
    assert response.status_code == 422


async def test_rest_document_lists_the_deleted_status(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    parameters = document["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    [status] = [parameter for parameter in parameters if parameter["name"] == "status"]
    assert status["schema"]["enum"] == ["all", "pending", "completed", "deleted"]


# --- MCP ----------------------------------------------------------------------------------


@pytest.fixture
async def mcp_app(settings: Settings, database: Database) -> AsyncIterator[Starlette]:
    app = create_http_app(settings)
    async with LifespanManager(app):
        yield app


def _session(app: Starlette, settings: Settings, user: str) -> Any:
    token = mint_mcp_token(mcp_token_config(settings), user, scopes=ALL_SCOPES, client_id="tests")
    return open_session(app, token)


async def _tool_ids(user: McpUser, **arguments: Any) -> list[int]:
    page = await user.ok("list_tasks", **arguments)
    return [task["id"] for task in page["tasks"]]


async def test_the_mcp_tool_finds_a_deleted_task_by_name_and_restores_it(
    mcp_app: Starlette, settings: Settings, seeded: dict[str, int]
) -> None:
    async with _session(mcp_app, settings, ALICE) as alice:
        tools = {tool.name: tool for tool in (await alice.session.list_tools()).tools}
        status = tools["list_tasks"].input_schema["properties"]["status"]
        assert status["enum"] == ["all", "pending", "completed", "deleted"]
        assert "restore_task" in status["description"]

        assert await _tool_ids(alice, status="deleted", search="oat milk") == [seeded["gone_milk"]]
        assert await _tool_ids(alice, status="deleted", search="milk") == [
            seeded["done_milk"],
            seeded["gone_milk"],
        ]
        assert await _tool_ids(alice, search="milk") == [seeded["live_milk"]]
        assert seeded["bob_milk"] not in await _tool_ids(alice, status="deleted")

        restored = await alice.ok("restore_task", task_id=seeded["gone_milk"])
        assert restored == {
            "task_id": seeded["gone_milk"],
            "status": "restored",
            "title": "Buy oat milk",
        }
        assert await _tool_ids(alice, status="deleted", search="milk") == [seeded["done_milk"]]
        assert await _tool_ids(alice, search="milk") == [seeded["gone_milk"], seeded["live_milk"]]

    async with _session(mcp_app, settings, BOB) as bob:
        assert await _tool_ids(bob, status="deleted") == [seeded["bob_milk"]]
        await bob.fail("restore_task", task_id=seeded["done_milk"])
