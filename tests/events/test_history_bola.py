"""BOLA on the history route: user B with user A's task ids learns nothing, not even that
the task exists, whatever the paging parameters."""

from __future__ import annotations

import httpx

from backend.db import Database
from tests.conftest import auth
from tests.events.test_history import consume_outbox
from tests.tasks.test_bola import SECRET_TITLE, A, B, seed, shape

QUERIES: list[dict[str, int]] = [{}, {"limit": 100}, {"limit": 1, "before_version": 3}]


async def test_user_b_cannot_read_the_history_of_any_task_of_user_a(
    client: httpx.AsyncClient, database: Database
) -> None:
    live, deleted = await seed(client)
    await consume_outbox(database)
    missing = deleted + 1000
    cells = leaks = 0

    for task_id in (live, deleted):
        for params in QUERIES:
            own_path = await client.get(
                f"/api/{B}/tasks/{task_id}/history", params=params, headers=auth(B)
            )
            unknown = await client.get(
                f"/api/{B}/tasks/{missing}/history", params=params, headers=auth(B)
            )
            cells += 1
            if (
                shape(own_path, task_id) != (404, "task_not_found", "Task {id} not found")
                or shape(own_path, task_id) != shape(unknown, missing)
                or SECRET_TITLE in own_path.text
            ):
                leaks += 1
            a_path = await client.get(
                f"/api/{A}/tasks/{task_id}/history", params=params, headers=auth(B)
            )
            cells += 1
            if shape(a_path, task_id)[:2] != (403, "user_mismatch") or "created" in a_path.text:
                leaks += 1

    assert cells == 2 * len(QUERIES) * 2
    assert leaks == 0
    # A still reads both histories (the attack changed nothing, the deleted task included).
    for task_id in (live, deleted):
        own = await client.get(f"/api/{A}/tasks/{task_id}/history", headers=auth(A))
        assert own.status_code == 200
        assert own.json()["items"], task_id
