"""REST status codes and bodies for every task route, plus health and the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.db import Database
from backend.models import Task
from tests.conftest import auth

ALICE = "alice"
BASE = f"/api/{ALICE}/tasks"
TASK_FIELDS = {
    "id",
    "user_id",
    "title",
    "description",
    "completed",
    "completed_at",
    "priority",
    "tags",
    "due_at",
    "remind_at",
    "remind_before_minutes",
    "reminded_at",
    "recurrence",
    "time_zone",
    "series_id",
    "occurrence",
    "created_at",
    "updated_at",
}


async def post_task(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(BASE, json=body, headers=auth(ALICE))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def stored(database: Database, task_id: int) -> Task:
    async with database.session_scope() as session:
        task = await session.get(Task, task_id)
    assert task is not None
    return task


async def task_count(database: Database) -> int:
    async with database.session_scope() as session:
        return (await session.scalar(select(func.count()).select_from(Task))) or 0


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert {"detail", "code", "request_id"} <= body.keys()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


# --- create, get, replace, update, delete --------------------------------------------------


async def test_post_creates_a_task_with_201_location_and_the_stored_body(
    client: httpx.AsyncClient, database: Database
) -> None:
    response = await client.post(
        BASE,
        json={"title": "  Buy milk ", "tags": ["#Home"], "due_at": "2030-01-01T09:00:00+05:30"},
        headers=auth(ALICE),
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == TASK_FIELDS
    assert response.headers["Location"] == f"{BASE}/{body['id']}"
    assert body["title"] == "Buy milk"
    assert body["tags"] == ["home"]
    assert body["user_id"] == ALICE
    assert body["priority"] == "medium"
    assert body["completed"] is False
    assert datetime.fromisoformat(body["due_at"]) == datetime(2030, 1, 1, 3, 30, tzinfo=UTC)
    assert datetime.fromisoformat(body["due_at"]).utcoffset() == timedelta(0)
    task = await stored(database, body["id"])
    assert (task.title, task.tags, task.user_id) == ("Buy milk", ["home"], ALICE)


async def test_get_returns_200_with_the_task(client: httpx.AsyncClient) -> None:
    created = await post_task(client, title="Read", description="a book")

    response = await client.get(f"{BASE}/{created['id']}", headers=auth(ALICE))

    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PUT", "", {"title": "x"}),
        ("PATCH", "", {"title": "x"}),
        ("DELETE", "", None),
        ("PATCH", "/complete", None),
        ("POST", "/restore", None),
    ],
)
async def test_every_route_on_a_missing_task_returns_404_task_not_found(
    client: httpx.AsyncClient, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    response = await client.request(
        method, f"{BASE}/424242{suffix}", json=body, headers=auth(ALICE)
    )

    error = assert_error(response, 404, "task_not_found")
    assert error["detail"] == "Task 424242 not found"


@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "99999999999"])
async def test_a_malformed_task_id_is_a_422(client: httpx.AsyncClient, bad_id: str) -> None:
    response = await client.get(f"{BASE}/{bad_id}", headers=auth(ALICE))

    assert_error(response, 422, "validation_error")


async def test_put_replaces_every_editable_field(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await post_task(
        client, title="Old", description="d", priority="high", tags=["a"], recurrence="daily"
    )

    response = await client.put(
        f"{BASE}/{created['id']}", json={"title": "New", "tags": ["b"]}, headers=auth(ALICE)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["title"], body["tags"], body["description"]) == ("New", ["b"], None)
    assert (body["priority"], body["recurrence"]) == ("medium", None)
    assert body["created_at"] == created["created_at"]
    task = await stored(database, created["id"])
    assert (task.title, task.priority, task.description) == ("New", "medium", None)


async def test_patch_changes_only_what_is_sent(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await post_task(client, title="Keep", description="keep me", priority="high")

    response = await client.patch(
        f"{BASE}/{created['id']}", json={"priority": "urgent"}, headers=auth(ALICE)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body | {"priority": None, "updated_at": None} == created | {
        "priority": None,
        "updated_at": None,
    }
    assert body["priority"] == "urgent"
    assert (await stored(database, created["id"])).description == "keep me"


async def test_patch_with_null_clears_an_optional_field_but_not_the_title(
    client: httpx.AsyncClient,
) -> None:
    created = await post_task(client, title="T", description="gone soon")
    url = f"{BASE}/{created['id']}"

    cleared = await client.patch(url, json={"description": None}, headers=auth(ALICE))
    refused = await client.patch(url, json={"title": None}, headers=auth(ALICE))

    assert cleared.status_code == 200
    assert cleared.json()["description"] is None
    assert_error(refused, 422, "validation_error")


async def test_delete_returns_204_and_the_task_is_gone_but_the_row_kept(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await post_task(client, title="Bye")

    response = await client.delete(f"{BASE}/{created['id']}", headers=auth(ALICE))

    assert response.status_code == 204
    assert response.content == b""
    assert_error(
        await client.get(f"{BASE}/{created['id']}", headers=auth(ALICE)), 404, "task_not_found"
    )
    assert_error(
        await client.delete(f"{BASE}/{created['id']}", headers=auth(ALICE)),
        404,
        "task_not_found",
    )
    assert (await stored(database, created["id"])).deleted_at is not None


async def test_restore_route_brings_a_deleted_task_back(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await post_task(client, title="Oops")
    await client.delete(f"{BASE}/{created['id']}", headers=auth(ALICE))

    response = await client.post(f"{BASE}/{created['id']}/restore", headers=auth(ALICE))

    assert response.status_code == 200, response.text
    assert response.json()["title"] == "Oops"
    listed = await client.get(BASE, headers=auth(ALICE))
    assert [item["id"] for item in listed.json()["items"]] == [created["id"]]
    assert (await stored(database, created["id"])).deleted_at is None


async def test_restoring_a_live_task_returns_it_unchanged(client: httpx.AsyncClient) -> None:
    created = await post_task(client, title="Alive")

    response = await client.post(f"{BASE}/{created['id']}/restore", headers=auth(ALICE))

    assert response.status_code == 200
    assert response.json() == created


# --- completion ----------------------------------------------------------------------------


async def test_complete_without_a_body_toggles(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await post_task(client, title="Toggle")
    url = f"{BASE}/{created['id']}/complete"

    first = await client.patch(url, headers=auth(ALICE))
    second = await client.patch(url, headers=auth(ALICE))

    assert first.status_code == second.status_code == 200
    assert first.json()["completed"] is True
    assert first.json()["completed_at"] is not None
    assert second.json()["completed"] is False
    assert second.json()["completed_at"] is None
    task = await stored(database, created["id"])
    assert (task.completed, task.completed_at) == (False, None)


async def test_complete_with_true_sets_it_and_twice_keeps_it_true(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await post_task(client, title="Done")
    url = f"{BASE}/{created['id']}/complete"

    first = await client.patch(url, json={"completed": True}, headers=auth(ALICE))
    second = await client.patch(url, json={"completed": True}, headers=auth(ALICE))

    assert first.status_code == second.status_code == 200
    assert first.json()["completed"] is second.json()["completed"] is True
    assert first.json()["completed_at"] == second.json()["completed_at"]
    assert (await stored(database, created["id"])).completed is True


async def test_complete_with_false_marks_it_pending(client: httpx.AsyncClient) -> None:
    created = await post_task(client, title="Undo")
    url = f"{BASE}/{created['id']}/complete"
    await client.patch(url, json={"completed": True}, headers=auth(ALICE))

    response = await client.patch(url, json={"completed": False}, headers=auth(ALICE))

    assert response.status_code == 200
    assert (response.json()["completed"], response.json()["completed_at"]) == (False, None)


@pytest.mark.parametrize("body", [{}, {"done": True}, {"completed": [1]}])
async def test_complete_with_a_bad_body_is_a_422(
    client: httpx.AsyncClient, database: Database, body: dict[str, Any]
) -> None:
    created = await post_task(client, title="Stay")

    response = await client.patch(
        f"{BASE}/{created['id']}/complete", json=body, headers=auth(ALICE)
    )

    assert_error(response, 422, "validation_error")
    assert (await stored(database, created["id"])).completed is False


# --- list ----------------------------------------------------------------------------------


async def test_list_body_has_items_total_limit_and_offset(client: httpx.AsyncClient) -> None:
    for index in range(3):
        await post_task(client, title=f"t{index}")

    default = await client.get(BASE, headers=auth(ALICE))
    paged = await client.get(BASE, params={"limit": 2, "offset": 1}, headers=auth(ALICE))

    assert default.status_code == 200
    body = default.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (3, 50, 0)
    assert [item["title"] for item in body["items"]] == ["t2", "t1", "t0"]
    assert all(set(item) == TASK_FIELDS for item in body["items"])
    assert paged.json() | {"items": None} == {"items": None, "total": 3, "limit": 2, "offset": 1}
    assert [item["title"] for item in paged.json()["items"]] == ["t1", "t0"]


async def test_list_applies_query_filters_and_sort(client: httpx.AsyncClient) -> None:
    past = "2000-01-01T00:00:00+05:30"
    await post_task(client, title="b urgent home", priority="urgent", tags=["home", "x"])
    await post_task(client, title="a low home", priority="low", tags=["home"], due_at=past)
    await post_task(client, title="c 100% work", tags=["work"])

    async def titles(*params: tuple[str, str]) -> list[str]:
        response = await client.get(BASE, params=params, headers=auth(ALICE))
        assert response.status_code == 200, response.text
        return [item["title"] for item in response.json()["items"]]

    assert await titles(("tag", "home"), ("tag", "#X")) == ["b urgent home"]
    assert await titles(("priority", "low")) == ["a low home"]
    assert await titles(("q", "100%")) == ["c 100% work"]
    assert await titles(("overdue", "true")) == ["a low home"]
    assert await titles(("due_before", "2000-01-02T00:00:00+05:30")) == ["a low home"]
    assert await titles(("status", "completed")) == []
    assert await titles(("sort", "title"), ("order", "desc")) == [
        "c 100% work",
        "b urgent home",
        "a low home",
    ]
    assert await titles(("sort", "priority"), ("order", "desc"), ("limit", "1")) == [
        "b urgent home"
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"offset": "-1"},
        {"status": "maybe"},
        {"sort": "user_id"},
        {"order": "sideways"},
        {"priority": "critical"},
        {"due_before": "2030-01-01T00:00:00"},
        {"overdue": "perhaps"},
        {"user_id": "bob"},
        {"include_deleted": "true"},
    ],
)
async def test_list_rejects_bad_or_unknown_query_parameters_with_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get(BASE, params=params, headers=auth(ALICE))

    body = assert_error(response, 422, "validation_error")
    assert isinstance(body["errors"], list)
    assert body["errors"]


async def test_validation_errors_use_the_error_body_without_echoing_input(
    client: httpx.AsyncClient, database: Database
) -> None:
    response = await client.post(
        BASE, json={"title": "x" * 201, "secret": "s3cr3t"}, headers=auth(ALICE)
    )

    body = assert_error(response, 422, "validation_error")
    assert set(body) == {"detail", "code", "request_id", "errors"}
    assert "s3cr3t" not in response.text
    assert "x" * 201 not in response.text
    assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
    assert await task_count(database) == 0


async def test_every_task_route_requires_a_bearer_token(client: httpx.AsyncClient) -> None:
    created = await post_task(client, title="Locked")
    task_url = f"{BASE}/{created['id']}"
    routes = [
        ("GET", BASE),
        ("POST", BASE),
        ("GET", task_url),
        ("PUT", task_url),
        ("PATCH", task_url),
        ("DELETE", task_url),
        ("PATCH", f"{task_url}/complete"),
        ("POST", f"{task_url}/restore"),
    ]

    for method, url in routes:
        response = await client.request(method, url, json={"title": "x"})
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


# --- request ids ---------------------------------------------------------------------------


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get(
        f"{BASE}/1", headers={**auth(ALICE), "X-Request-ID": "abc-123.x:y_z"}
    )

    assert response.headers["X-Request-ID"] == "abc-123.x:y_z"
    assert response.json()["request_id"] == "abc-123.x:y_z"


@pytest.mark.parametrize("bad", ["r" * 300, "has spaces in it", "new\tline", "<script>", ""])
async def test_an_insane_request_id_is_replaced_by_a_generated_one(
    client: httpx.AsyncClient, bad: str
) -> None:
    response = await client.get(f"{BASE}/1", headers={**auth(ALICE), "X-Request-ID": bad})

    generated = response.headers["X-Request-ID"]
    assert generated != bad
    assert 1 <= len(generated) <= 128
    assert generated.isalnum()
    assert response.json()["request_id"] == generated


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    ok = await client.get("/healthz")
    created = await client.post(BASE, json={"title": "x"}, headers=auth(ALICE))

    assert ok.headers["X-Request-ID"]
    assert created.headers["X-Request-ID"]
    assert ok.headers["X-Request-ID"] != created.headers["X-Request-ID"]


# --- health and OpenAPI --------------------------------------------------------------------


async def test_healthz_says_the_process_is_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_says_the_database_answers(
    client: httpx.AsyncClient, is_postgres: bool
) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["auth_mode"]) == (
        "ok",
        "postgresql" if is_postgres else "sqlite",
        "shared_secret",
    )


async def test_openapi_lists_error_bodies_for_every_task_route(app: FastAPI) -> None:
    document = app.openapi()
    task_operations = [
        (path, method, operation)
        for path, operations in document["paths"].items()
        if path.startswith("/api/{user_id}/tasks")
        for method, operation in operations.items()
    ]

    # eight task operations, the history, skip and snooze
    assert len(task_operations) == 11
    for path, method, operation in task_operations:
        for status in ("401", "403", "404", "422"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, status)
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"detail", "code", "request_id"}
