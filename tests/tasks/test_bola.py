"""BOLA matrix: user B on every task route with user A's ids; A's rows stay byte-for-byte."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Table, text

from backend.db import Database
from backend.models import Task, TaskTag
from tests.conftest import auth

A = "alice"
B = "bob"
SECRET_TITLE = "alice secret plan"
TASK_TABLES: list[Table] = [Task.__table__, TaskTag.__table__]  # type: ignore[attr-defined]

# (method, path suffix after /tasks/{id}, JSON body or None)
TASK_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("PUT", "", {"title": "pwned by bob", "completed": True}),
    ("PATCH", "", {"title": "pwned by bob"}),
    ("PATCH", "", {"completed": True, "tags": ["bob"]}),
    ("DELETE", "", None),
    ("PATCH", "/complete", None),
    ("PATCH", "/complete", {"completed": True}),
    ("PATCH", "/complete", {"completed": False}),
    ("POST", "/restore", None),
]


async def table_dump(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every task and tag row as the driver returns it, ordered by primary key."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    async with database.session_scope() as session:
        for table in TASK_TABLES:
            keys = ", ".join(column.name for column in table.primary_key.columns)
            result = await session.execute(text(f"SELECT * FROM {table.name} ORDER BY {keys}"))
            dump[table.name] = [tuple(row) for row in result.all()]
    return dump


async def create(client: httpx.AsyncClient, user: str, **body: Any) -> int:
    response = await client.post(f"/api/{user}/tasks", json=body, headers=auth(user))
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


async def seed(client: httpx.AsyncClient) -> tuple[int, int]:
    """A live and a deleted task for A (both tagged, one completed), one task for B."""
    live = await create(client, A, title=SECRET_TITLE, tags=["private"], description="x")
    deleted = await create(client, A, title=f"{SECRET_TITLE} (deleted)", tags=["old"])
    await client.patch(f"/api/{A}/tasks/{live}/complete", headers=auth(A))
    await client.delete(f"/api/{A}/tasks/{deleted}", headers=auth(A))
    await create(client, B, title="bob's own task")
    return live, deleted


def shape(response: httpx.Response, task_id: int) -> tuple[int, str, str]:
    """Status, error code and detail with the id masked; tolerant of non-error bodies."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail", "")).replace(str(task_id), "{id}")
    return response.status_code, str(body.get("code", "")), detail


async def test_user_b_cannot_read_or_change_any_task_of_user_a(
    client: httpx.AsyncClient, database: Database
) -> None:
    live, deleted = await seed(client)
    missing = deleted + 1000
    before = await table_dump(database)
    cells = leaks = 0

    for task_id in (live, deleted):
        for method, suffix, body in TASK_ROUTES:
            # B's own path with A's id: indistinguishable from a task that does not exist.
            own_path = await client.request(
                method, f"/api/{B}/tasks/{task_id}{suffix}", json=body, headers=auth(B)
            )
            unknown = await client.request(
                method, f"/api/{B}/tasks/{missing}{suffix}", json=body, headers=auth(B)
            )
            cells += 1
            if (
                shape(own_path, task_id) != (404, "task_not_found", "Task {id} not found")
                or shape(own_path, task_id) != shape(unknown, missing)
                or SECRET_TITLE in own_path.text
            ):
                leaks += 1
            # A's path with B's token: refused before any lookup.
            a_path = await client.request(
                method, f"/api/{A}/tasks/{task_id}{suffix}", json=body, headers=auth(B)
            )
            cells += 1
            if shape(a_path, task_id)[:2] != (403, "user_mismatch"):
                leaks += 1

    for method, body in (("GET", None), ("POST", {"title": "planted by bob"})):
        on_a_path = await client.request(method, f"/api/{A}/tasks", json=body, headers=auth(B))
        cells += 1
        if on_a_path.status_code != 403 or SECRET_TITLE in on_a_path.text:
            leaks += 1

    for params in ({}, {"q": "secret"}, {"tag": "private"}, {"status": "completed"}):
        own_list = await client.get(f"/api/{B}/tasks", params=params, headers=auth(B))
        cells += 1
        ids = {item["id"] for item in own_list.json()["items"]}
        if own_list.status_code != 200 or ids & {live, deleted} or SECRET_TITLE in own_list.text:
            leaks += 1

    assert cells == 2 * len(TASK_ROUTES) * 2 + 2 + 4
    assert leaks == 0
    assert await table_dump(database) == before


async def test_user_a_still_sees_their_tasks_untouched_after_the_attack(
    client: httpx.AsyncClient, database: Database
) -> None:
    live, deleted = await seed(client)
    before = await client.get(f"/api/{A}/tasks/{live}", headers=auth(A))
    for method, suffix, body in TASK_ROUTES:
        for task_id in (live, deleted):
            await client.request(
                method, f"/api/{B}/tasks/{task_id}{suffix}", json=body, headers=auth(B)
            )

    after = await client.get(f"/api/{A}/tasks/{live}", headers=auth(A))
    restored = await client.post(f"/api/{A}/tasks/{deleted}/restore", headers=auth(A))

    assert after.status_code == 200
    assert after.json() == before.json()
    assert after.json()["completed"] is True
    assert after.json()["tags"] == ["private"]
    assert restored.status_code == 200
    assert restored.json()["tags"] == ["old"]
