from __future__ import annotations

import httpx

from tests.conftest import auth


async def test_create_then_list(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/alice/tasks", json={"title": " Buy milk ", "tags": ["Home"]}, headers=auth("alice")
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["title"] == "Buy milk"
    assert created.headers["Location"] == f"/api/alice/tasks/{body['id']}"
    listed = await client.get("/api/alice/tasks", params={"tag": "home"}, headers=auth("alice"))
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 1
