"""A task's history over REST and as the MCP tool `task_history`: built from the events,
paged, kept for deleted tasks, and visible only to the task's owner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from sqlmodel import col

from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.db import Database
from backend.events.consumers import apply_locally
from backend.models import OutboxEvent
from mcp_server.server import create_http_app
from tests.chat.conftest import TEST_MCP_SECRET
from tests.conftest import auth, make_settings
from tests.mcp_server.conftest import open_session

ALICE = "alice"
BOB = "bob"


async def consume_outbox(database: Database) -> None:
    """What the relay does for our own consumers: feed them every event, in log order."""
    async with database.session_scope(write=True) as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(col(OutboxEvent.id)))).all()
        await apply_locally(session, [dict(row.payload) for row in rows])


async def task_with_a_past(client: httpx.AsyncClient, user: str = ALICE) -> int:
    """Created, renamed, completed, reopened, deleted and restored: versions 1-6."""
    base = f"/api/{user}/tasks"
    created = await client.post(base, json={"title": "Draft"}, headers=auth(user))
    assert created.status_code == 201, created.text
    task_id: int = created.json()["id"]
    steps = [
        ("PATCH", "", {"title": "Report", "priority": "high"}),
        ("PATCH", "/complete", {"completed": True}),
        ("PATCH", "/complete", {"completed": False}),
        ("DELETE", "", None),
        ("POST", "/restore", None),
    ]
    for method, suffix, body in steps:
        response = await client.request(
            method, f"{base}/{task_id}{suffix}", json=body, headers=auth(user)
        )
        assert response.is_success, response.text
    return task_id


async def history(
    client: httpx.AsyncClient, task_id: int, user: str = ALICE, **params: Any
) -> httpx.Response:
    return await client.get(
        f"/api/{user}/tasks/{task_id}/history", params=params, headers=auth(user)
    )


async def test_the_history_lists_every_change_newest_first_with_what_changed(
    client: httpx.AsyncClient, database: Database
) -> None:
    task_id = await task_with_a_past(client)
    assert (await history(client, task_id)).json()["items"] == []  # not consumed yet
    await consume_outbox(database)

    response = await history(client, task_id)

    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == task_id
    assert body["has_more"] is False
    items = body["items"]
    assert [(i["version"], i["action"]) for i in items] == [
        (6, "restored"),
        (5, "deleted"),
        (4, "reopened"),
        (3, "completed"),
        (2, "updated"),
        (1, "created"),
    ]
    assert {i["channel"] for i in items} == {"rest"}
    assert items[4]["changes"] == {
        "title": {"from": "Draft", "to": "Report"},
        "priority": {"from": "medium", "to": "high"},
    }
    assert items[3]["changes"]["completed"] == {"from": False, "to": True}
    assert items[-1]["changes"] == {}
    assert all(i["at"].endswith("Z") for i in items)


async def test_paging_walks_back_with_before_version_until_has_more_is_false(
    client: httpx.AsyncClient, database: Database
) -> None:
    task_id = await task_with_a_past(client)
    await consume_outbox(database)

    seen: list[int] = []
    params: dict[str, Any] = {"limit": 4}
    pages = 0
    while True:
        body = (await history(client, task_id, **params)).json()
        pages += 1
        seen += [item["version"] for item in body["items"]]
        if not body["has_more"]:
            break
        params["before_version"] = body["items"][-1]["version"]

    assert pages == 2
    assert seen == [6, 5, 4, 3, 2, 1]
    last = (await history(client, task_id, limit=2, before_version=3)).json()
    assert ([i["version"] for i in last["items"]], last["has_more"]) == ([2, 1], False)
    exact = (await history(client, task_id, limit=6)).json()
    assert (len(exact["items"]), exact["has_more"]) == (6, False)


async def test_a_deleted_task_keeps_its_readable_history(
    client: httpx.AsyncClient, database: Database
) -> None:
    task_id = await task_with_a_past(client)
    await client.delete(f"/api/{ALICE}/tasks/{task_id}", headers=auth(ALICE))
    await consume_outbox(database)

    response = await history(client, task_id, limit=1)

    assert response.status_code == 200
    assert response.json()["items"][0]["action"] == "deleted"
    assert (
        await client.get(f"/api/{ALICE}/tasks/{task_id}", headers=auth(ALICE))
    ).status_code == 404


async def test_another_users_task_and_a_missing_one_are_the_same_404(
    client: httpx.AsyncClient, database: Database
) -> None:
    task_id = await task_with_a_past(client)
    await consume_outbox(database)

    theirs = await history(client, task_id, user=BOB)
    missing = await history(client, task_id + 1000, user=BOB)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["code"] == missing.json()["code"] == "task_not_found"
    assert "Draft" not in theirs.text
    assert "Report" not in theirs.text


async def test_bad_paging_parameters_are_422(client: httpx.AsyncClient) -> None:
    for params in ({"limit": 0}, {"limit": 101}, {"before_version": 0}, {"limit": "x"}):
        response = await history(client, 1, **params)
        assert response.status_code == 422, params
        assert response.json()["code"] == "validation_error"


async def test_the_mcp_tool_tells_when_a_task_was_finished_oldest_first(
    client: httpx.AsyncClient, database: Database, tmp_path: Path, database_url: str
) -> None:
    task_id = await task_with_a_past(client)
    await consume_outbox(database)
    settings = make_settings(tmp_path, database_url, mcp_token_secret=TEST_MCP_SECRET)
    config = mcp_token_config(settings)
    app = create_http_app(settings)

    async with LifespanManager(app):
        async with open_session(app, mint_mcp_token(config, ALICE, client_id="tests")) as alice:
            full = await alice.ok("task_history", task_id=task_id)
            latest = await alice.ok("task_history", task_id=task_id, limit=2)
        async with open_session(app, mint_mcp_token(config, BOB, client_id="tests")) as bob:
            refused = await bob.fail("task_history", task_id=task_id)
            missing = await bob.fail("task_history", task_id=task_id + 1000)

    assert full["task_id"] == task_id
    assert full["title"] == "Report"
    entries = full["entries"]
    assert [e["action"] for e in entries] == [
        "created",
        "updated",
        "completed",
        "reopened",
        "deleted",
        "restored",
    ]
    completed = entries[2]
    assert completed["changes"]["completed"] == {"from": False, "to": True}
    assert completed["channel"] == "rest"
    assert completed["at"].endswith("Z")
    assert [e["version"] for e in latest["entries"]] == [5, 6]
    assert refused == missing.replace(str(task_id + 1000), str(task_id))
    assert f"Task {task_id} not found" in refused
