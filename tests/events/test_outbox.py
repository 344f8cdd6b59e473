"""Every task change writes exactly one event, in its own transaction, naming where it came from."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from sqlmodel import col

from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.config import Settings
from backend.db import Database
from backend.events.outbox import EVENT_SOURCE
from backend.models import OutboxEvent
from backend.tasks import service
from backend.tasks.schemas import TaskCreate, TaskReplace, TaskUpdate
from mcp_server.server import create_http_app
from tests.conftest import auth
from tests.events.conftest import release_once_a_lock_wait_is_seen
from tests.mcp_server.conftest import open_session

ALICE = "alice"


async def events(database: Database) -> list[OutboxEvent]:
    async with database.session_scope() as session:
        statement = select(OutboxEvent).order_by(col(OutboxEvent.id))
        return list((await session.scalars(statement)).all())


async def created(database: Database, title: str = "Report", **fields: Any) -> int:
    async with database.session_scope(write=True) as session:
        data = TaskCreate.model_validate({"title": title, **fields})
        task = await service.create_task(session, ALICE, data, channel="rest")
        assert task.id is not None
        return task.id


async def test_each_kind_of_change_is_one_event_with_the_task_its_changes_and_a_version(
    database: Database,
) -> None:
    task_id = await created(database, tags=["work"])
    async with database.session_scope(write=True) as session:
        await service.update_task(
            session, ALICE, task_id, TaskUpdate(title="Final report"), channel="rest"
        )
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, task_id, True, channel="rest")
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, task_id, False, channel="rest")
    async with database.session_scope(write=True) as session:
        await service.delete_task(session, ALICE, task_id, channel="rest")
    async with database.session_scope(write=True) as session:
        await service.restore_task(session, ALICE, task_id, channel="rest")

    rows = await events(database)
    actions = [row.type.rsplit(".", 1)[1] for row in rows]
    assert actions == ["created", "updated", "completed", "reopened", "deleted", "restored"]
    assert [row.version for row in rows] == [1, 2, 3, 4, 5, 6]
    assert len({row.event_id for row in rows}) == 6
    assert all(row.status == "pending" and row.task_id == task_id for row in rows)
    updated = rows[1].payload
    assert updated["specversion"] == "1.0"
    assert updated["id"] == rows[1].event_id
    assert updated["source"] == EVENT_SOURCE
    assert updated["subject"] == updated["partitionkey"] == str(task_id)
    assert updated["time"].endswith("Z")
    assert updated["data"]["changes"] == {"title": {"from": "Report", "to": "Final report"}}
    assert updated["data"]["task"]["title"] == "Final report"
    assert updated["data"]["task"]["tags"] == ["work"]
    assert (updated["data"]["user_id"], updated["data"]["channel"]) == (ALICE, "rest")
    assert rows[2].payload["data"]["changes"]["completed"] == {"from": False, "to": True}
    deleted = rows[4].payload["data"]["changes"]["deleted_at"]
    assert deleted["from"] is None
    assert deleted["to"] is not None
    assert "deleted_at" not in rows[4].payload["data"]["task"]


async def test_a_change_that_changes_nothing_leaves_no_event_and_no_new_version(
    database: Database,
) -> None:
    task_id = await created(database, priority="high")
    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, task_id, True, channel="rest")
    before = await events(database)

    async with database.session_scope(write=True) as session:
        await service.set_completion(session, ALICE, task_id, True, channel="rest")
        await service.update_task(
            session, ALICE, task_id, TaskUpdate(priority="high"), channel="rest"
        )
        await service.restore_task(session, ALICE, task_id, channel="rest")
        task = await service.replace_task(
            session,
            ALICE,
            task_id,
            TaskReplace(title="Report", priority="high", completed=True),
            channel="rest",
        )

    assert task.version == 2
    assert [row.id for row in await events(database)] == [row.id for row in before]


async def test_a_rolled_back_change_leaves_no_event(database: Database) -> None:
    task_id = await created(database)

    async def delete_then_fail() -> None:
        async with database.session_scope(write=True) as session:
            await service.delete_task(session, ALICE, task_id, channel="rest")
            raise RuntimeError("the request failed after the change")

    with pytest.raises(RuntimeError):
        await delete_then_fail()

    assert [row.type for row in await events(database)] == ["com.todo-assistant.task.created"]


async def test_rest_changes_are_rest_events(client: httpx.AsyncClient, database: Database) -> None:
    response = await client.post(
        "/api/alice/tasks", json={"title": "Call mom"}, headers=auth(ALICE)
    )
    assert response.status_code == 201, response.text
    [row] = await events(database)
    assert (row.channel, row.payload["data"]["channel"]) == ("rest", "rest")
    assert row.payload["data"]["task"] == response.json()


async def test_mcp_clients_are_mcp_and_a_turns_token_names_its_front_end(
    settings: Settings, database: Database
) -> None:
    config = mcp_token_config(settings)
    forged_claim = jwt.encode(
        {
            "iss": config.issuer,
            "aud": config.audience,
            "sub": ALICE,
            "scope": "tasks:read tasks:write",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "channel": "rest",  # not a chat front end: the server says "mcp"
        },
        config.secret,
        algorithm="HS256",
    )
    tokens = {
        "own client": mint_mcp_token(config, ALICE, client_id="tests"),
        "chatkit turn": mint_mcp_token(config, ALICE, channel="chatkit"),
        "cli turn": mint_mcp_token(config, ALICE, channel="cli"),
        "odd claim": forged_claim,
    }
    app = create_http_app(settings)
    async with LifespanManager(app):
        for name, token in tokens.items():
            async with open_session(app, token) as mcp:
                await mcp.ok("add_task", title=name)

    assert [
        (row.payload["data"]["task"]["title"], row.channel) for row in await events(database)
    ] == [
        ("own client", "mcp"),
        ("chatkit turn", "chatkit"),
        ("cli turn", "cli"),
        ("odd claim", "mcp"),
    ]
    with pytest.raises(ValueError, match="not a chat channel"):
        mint_mcp_token(config, ALICE, channel="rest")


@pytest.mark.postgres_only
async def test_concurrent_changes_to_one_task_get_versions_in_commit_order(
    database: Database,
) -> None:
    task_id = await created(database)
    first_changed, release_first = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with database.session_scope(write=True) as session:
            await service.update_task(
                session, ALICE, task_id, TaskUpdate(title="first"), channel="rest"
            )
            first_changed.set()
            await release_first.wait()

    async def second() -> None:
        await first_changed.wait()
        async with database.session_scope(write=True) as session:
            await service.update_task(
                session, ALICE, task_id, TaskUpdate(priority="high"), channel="mcp"
            )

    *_, waited = await asyncio.gather(
        first(), second(), release_once_a_lock_wait_is_seen(database, release_first)
    )

    assert waited, "the second change never queued on the task's row"
    rows = await events(database)
    assert [(row.version, row.channel) for row in rows] == [(1, "rest"), (2, "rest"), (3, "mcp")]
    # The second change saw the first: its event carries the new title.
    assert rows[2].payload["data"]["task"]["title"] == "first"
