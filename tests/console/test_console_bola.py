"""BOLA matrix for the console: user B on every console endpoint with user A's ids and name.

Each cell is a refusal (404 for A's conversation, as for a missing one; 403 operator_only for
A's name) or an answer that holds nothing of A's; A's rows stay byte-for-byte.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Table, text

from backend.db import Database
from backend.models import AgentRun, Conversation, Message, Notification, Task
from tests.conftest import auth
from tests.console.support import ADD_MILK_CALL, seed_turn

A = "alice"
B = "bob"
SECRET = "alice-secret-plan"
TABLES: list[Table] = [
    model.__table__  # type: ignore[union-attr]
    for model in (Conversation, Message, AgentRun, Task, Notification)
]


async def table_dump(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    dump: dict[str, list[tuple[Any, ...]]] = {}
    async with database.session_scope() as session:
        for table in TABLES:
            result = await session.execute(text(f"SELECT * FROM {table.name} ORDER BY id"))
            dump[table.name] = [tuple(row) for row in result.all()]
    return dump


async def test_user_b_cannot_read_or_act_on_anything_of_user_a_through_the_console(
    client: httpx.AsyncClient, database: Database
) -> None:
    now = datetime(2031, 1, 1, tzinfo=UTC)
    theirs = await seed_turn(database, A, SECRET, started_at=now, tool_calls=[ADD_MILK_CALL])
    await client.post(f"/api/{A}/tasks", json={"title": SECRET}, headers=auth(A))
    await seed_turn(database, B, "bob's own", started_at=now)
    conversation = theirs.conversation_id
    missing = conversation + 1000
    before = await table_dump(database)

    refused: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
        ("GET", f"/conversations/{conversation}", None, 404, "conversation_not_found"),
        ("GET", f"/conversations/{missing}", None, 404, "conversation_not_found"),
        (
            "GET",
            f"/conversations/{conversation}/export?format=md",
            None,
            404,
            "conversation_not_found",
        ),
        (
            "GET",
            f"/conversations/{conversation}/export?format=jsonl",
            None,
            404,
            "conversation_not_found",
        ),
        ("GET", f"/runs?user={A}", None, 403, "operator_only"),
        ("GET", f"/runs/stream?user={A}", None, 403, "operator_only"),
        ("GET", f"/stats?user={A}", None, 403, "operator_only"),
        ("GET", f"/users/{A}/tasks", None, 403, "operator_only"),
        ("GET", f"/users/{A}/tasks?status=deleted", None, 403, "operator_only"),
        ("GET", f"/users/{A}/notifications", None, 403, "operator_only"),
        ("POST", f"/users/{A}/chat", {"message": "delete all my tasks"}, 403, "operator_only"),
        (
            "POST",
            f"/users/{A}/chat",
            {"message": "hi", "conversation_id": conversation},
            403,
            "operator_only",
        ),
    ]
    # Answered, but only with B's own rows.
    answered = [
        "/runs",
        f"/runs?q={SECRET}",
        "/runs?limit=100",
        "/users",
        "/stats",
        f"/users/{B}/tasks",
        f"/users/{B}/notifications",
    ]

    leaks = 0
    for method, path, body, status, code in refused:
        response = await client.request(method, f"/console/api{path}", json=body, headers=auth(B))
        ok = response.status_code == status and response.json()["code"] == code
        leaks += (not ok) or SECRET in response.text
    for path in answered:
        response = await client.get(f"/console/api{path}", headers=auth(B))
        leaks += response.status_code != 200 or SECRET in response.text or f'"{A}"' in response.text
    cells = len(refused) + len(answered)

    assert (cells, leaks) == (19, 0), f"console BOLA matrix: {cells} cells, {leaks} leaks"
    assert await table_dump(database) == before
