"""Hostile and over-limit input: rejected with 413/422 (never 5xx) and nothing written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backend.db import Database
from tests.conftest import auth
from tests.tasks.test_bola import table_dump

ALICE = "alice"
BASE = f"/api/{ALICE}/tasks"
LIMIT = 64 * 1024


def json_headers() -> dict[str, str]:
    """Minted per call: a token made at import could expire before a slow run reaches it."""
    return {**auth(ALICE), "Content-Type": "application/json"}


async def seed(client: httpx.AsyncClient) -> int:
    response = await client.post(
        BASE, json={"title": "Original", "tags": ["keep"]}, headers=auth(ALICE)
    )
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def assert_rejected(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]


# --- mass assignment -----------------------------------------------------------------------

PROTECTED = {
    "id": 999,
    "user_id": "mallory",
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
    "deleted_at": "2000-01-01T00:00:00Z",
    "completed_at": "2000-01-01T00:00:00Z",
}


@pytest.mark.parametrize("field", PROTECTED)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "PATCH complete"])
async def test_protected_fields_in_a_body_are_rejected_and_nothing_changes(
    client: httpx.AsyncClient, database: Database, field: str, method: str
) -> None:
    task_id = await seed(client)
    url = {
        "POST": BASE,
        "PUT": f"{BASE}/{task_id}",
        "PATCH": f"{BASE}/{task_id}",
        "PATCH complete": f"{BASE}/{task_id}/complete",
    }[method]
    body: dict[str, Any] = {"completed": True} if method == "PATCH complete" else {"title": "x"}
    before = await table_dump(database)

    response = await client.request(
        method.split()[0], url, json={**body, field: PROTECTED[field]}, headers=auth(ALICE)
    )

    assert_rejected(response, 422, "validation_error")
    assert any(
        error["loc"][-1] == field and error["type"] == "extra_forbidden"
        for error in response.json()["errors"]
    )
    assert await table_dump(database) == before


# --- limits --------------------------------------------------------------------------------

OVER_LIMIT: dict[str, dict[str, Any]] = {
    "title 201 chars": {"title": "x" * 201},
    "blank title": {"title": "   "},
    "empty title": {"title": ""},
    "missing title": {"description": "no title"},
    "description 2001 chars": {"title": "t", "description": "d" * 2001},
    "11 tags": {"title": "t", "tags": [f"tag{index}" for index in range(11)]},
    "33-char tag": {"title": "t", "tags": ["x" * 33]},
    "empty tag": {"title": "t", "tags": ["#"]},
    "tag with a space": {"title": "t", "tags": ["two words"]},
    "bad RRULE": {"title": "t", "recurrence": "FREQ=SOMETIMES"},
    "free-text recurrence": {"title": "t", "recurrence": "every other tuesday"},
    "naive due_at": {"title": "t", "due_at": "2030-01-01T09:00:00"},
    "naive remind_at": {"title": "t", "remind_at": "2030-01-01T09:00:00"},
    "unknown priority": {"title": "t", "priority": "critical"},
}
AT_LIMIT: dict[str, dict[str, Any]] = {
    "title 200 chars": {"title": "x" * 200},
    "description 2000 chars": {"title": "t", "description": "d" * 2000},
    "10 tags": {"title": "t", "tags": [f"tag{index}" for index in range(10)]},
    "32-char tag": {"title": "t", "tags": ["x" * 32]},
}


@pytest.mark.parametrize("body", OVER_LIMIT.values(), ids=OVER_LIMIT)
async def test_each_over_limit_create_is_a_422_and_writes_nothing(
    client: httpx.AsyncClient, database: Database, body: dict[str, Any]
) -> None:
    before = await table_dump(database)

    response = await client.post(BASE, json=body, headers=auth(ALICE))

    assert_rejected(response, 422, "validation_error")
    assert await table_dump(database) == before


@pytest.mark.parametrize("body", OVER_LIMIT.values(), ids=OVER_LIMIT)
async def test_each_over_limit_replace_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient, database: Database, body: dict[str, Any]
) -> None:
    task_id = await seed(client)
    before = await table_dump(database)

    response = await client.put(f"{BASE}/{task_id}", json=body, headers=auth(ALICE))

    assert_rejected(response, 422, "validation_error")
    assert await table_dump(database) == before


@pytest.mark.parametrize(
    "body",
    [value for key, value in OVER_LIMIT.items() if key != "missing title"],
    ids=[key for key in OVER_LIMIT if key != "missing title"],
)
async def test_each_over_limit_patch_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient, database: Database, body: dict[str, Any]
) -> None:
    task_id = await seed(client)
    before = await table_dump(database)

    response = await client.patch(f"{BASE}/{task_id}", json=body, headers=auth(ALICE))

    assert_rejected(response, 422, "validation_error")
    assert await table_dump(database) == before


@pytest.mark.parametrize("body", AT_LIMIT.values(), ids=AT_LIMIT)
async def test_each_value_exactly_at_its_limit_is_accepted(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post(BASE, json=body, headers=auth(ALICE))

    assert response.status_code == 201, response.text
    assert {key: response.json()[key] for key in body} == body


@pytest.mark.parametrize("limit", ["101", "1000", "0"])
async def test_page_size_outside_1_to_100_is_a_422(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get(BASE, params={"limit": limit}, headers=auth(ALICE))

    assert_rejected(response, 422, "validation_error")


@pytest.mark.parametrize(
    "params",
    [
        {"q": "q" * 201},
        {"tag": [f"t{index}" for index in range(11)]},
        {"tag": "x" * 33},
        {"q": "nul\x00byte"},
        {"tag": "nul\x00byte"},
    ],
    ids=["q 201 chars", "11 tag filters", "33-char tag filter", "NUL in q", "NUL in tag"],
)
async def test_over_limit_list_filters_are_a_422(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await client.get(BASE, params=params, headers=auth(ALICE))

    assert_rejected(response, 422, "validation_error")


# --- body size -----------------------------------------------------------------------------


def padded_body(size: int) -> bytes:
    """A valid task body padded with JSON whitespace to exactly `size` bytes."""
    body = json.dumps({"title": "padded"}).encode()
    return body + b" " * (size - len(body))


async def chunks(data: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_body_over_64_kib_with_content_length_is_a_413(
    client: httpx.AsyncClient, database: Database
) -> None:
    before = await table_dump(database)

    response = await client.post(BASE, content=padded_body(LIMIT + 1), headers=json_headers())

    assert response.request.headers["Content-Length"] == str(LIMIT + 1)
    assert_rejected(response, 413, "payload_too_large")
    assert await table_dump(database) == before


async def test_a_streamed_body_over_64_kib_without_content_length_is_a_413(
    client: httpx.AsyncClient, database: Database
) -> None:
    before = await table_dump(database)

    response = await client.post(
        BASE, content=chunks(padded_body(LIMIT + 1)), headers=json_headers()
    )

    assert "Content-Length" not in response.request.headers
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert_rejected(response, 413, "payload_too_large")
    assert await table_dump(database) == before


async def test_a_streamed_body_over_the_limit_is_refused_on_patch_too(
    client: httpx.AsyncClient, database: Database
) -> None:
    task_id = await seed(client)
    before = await table_dump(database)

    response = await client.patch(
        f"{BASE}/{task_id}", content=chunks(padded_body(10 * LIMIT)), headers=json_headers()
    )

    assert_rejected(response, 413, "payload_too_large")
    assert await table_dump(database) == before


async def test_a_lying_content_length_is_a_413(client: httpx.AsyncClient) -> None:
    headers = {**json_headers(), "Content-Length": "not-a-number"}

    response = await client.post(BASE, content=b'{"title": "x"}', headers=headers)

    assert_rejected(response, 413, "payload_too_large")


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_body_of_exactly_64_kib_is_accepted(
    client: httpx.AsyncClient, streamed: bool
) -> None:
    data = padded_body(LIMIT)
    content = chunks(data) if streamed else data

    response = await client.post(BASE, content=content, headers=json_headers())

    assert response.status_code == 201, response.text
    assert response.json()["title"] == "padded"


# --- text round-trips ----------------------------------------------------------------------

TRICKY_TEXT = {
    "accents": "Café naïve façade — ünïcødé ß",
    "cjk": "買い物リスト 买牛奶",
    "emoji": "🎉 ship it 🚀 👩‍👩‍👧‍👦 🏳️‍🌈",
    "rtl": "שלום עולם — مرحبا بالعالم",
    "rtl override": "abc\u202edcba\u202c end",
    "sql": "'; DROP TABLE task; --",
    "sql union": "x' UNION SELECT * FROM task_tag WHERE '1'='1",
    "html": "<script>alert('x')</script>",
    "html entity": '&lt;b&gt; &amp; "quotes" \\ backslash',
    "like wildcards": "100% of snake_case /% /_",
    "astral math": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
}


@pytest.mark.parametrize("text", TRICKY_TEXT.values(), ids=TRICKY_TEXT)
async def test_tricky_text_round_trips_exactly(
    client: httpx.AsyncClient, database: Database, text: str
) -> None:
    created = await client.post(
        BASE, json={"title": text, "description": text}, headers=auth(ALICE)
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    fetched = await client.get(f"{BASE}/{task_id}", headers=auth(ALICE))
    searched = await client.get(BASE, params={"q": text}, headers=auth(ALICE))

    assert created.json()["title"] == fetched.json()["title"] == text
    assert fetched.json()["description"] == text
    assert [item["id"] for item in searched.json()["items"]] == [task_id]
    dump = await table_dump(database)
    assert len(dump["task"]) == 1
    assert text in dump["task"][0]


async def test_unicode_tags_are_lowercased_and_round_trip(client: httpx.AsyncClient) -> None:
    created = await client.post(
        BASE, json={"title": "t", "tags": ["Éclair", "🎉", "ΣΟΦΙΑ"]}, headers=auth(ALICE)
    )

    assert created.status_code == 201, created.text
    assert created.json()["tags"] == ["éclair", "🎉", "σοφια"]
    listed = await client.get(BASE, params={"tag": "ÉCLAIR"}, headers=auth(ALICE))
    assert listed.json()["total"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"title": "nul\x00byte"},
        {"title": "t", "description": "nul\x00byte"},
        {"title": "t", "tags": ["nul\x00byte"]},
        {"title": "t", "recurrence": "FREQ=DAILY\x00"},
    ],
    ids=["title", "description", "tag", "recurrence"],
)
async def test_a_nul_byte_is_a_422_not_a_5xx(
    client: httpx.AsyncClient, database: Database, body: dict[str, Any]
) -> None:
    task_id = await seed(client)
    before = await table_dump(database)

    created = await client.post(BASE, json=body, headers=auth(ALICE))
    patched = await client.patch(f"{BASE}/{task_id}", json=body, headers=auth(ALICE))

    assert_rejected(created, 422, "validation_error")
    assert_rejected(patched, 422, "validation_error")
    assert await table_dump(database) == before


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("daily", "daily"),
        ("Weekly", "weekly"),
        ("monthly", "monthly"),
        ("FREQ=WEEKLY;BYDAY=MO", "FREQ=WEEKLY;BYDAY=MO"),
        ("RRULE:FREQ=MONTHLY;BYMONTHDAY=1", "FREQ=MONTHLY;BYMONTHDAY=1"),
        ("none", None),
    ],
)
async def test_recurrence_accepts_simple_words_and_rrules(
    client: httpx.AsyncClient, given: str, stored: str | None
) -> None:
    response = await client.post(
        BASE, json={"title": "repeat", "recurrence": given}, headers=auth(ALICE)
    )

    assert response.status_code == 201, response.text
    assert response.json()["recurrence"] == stored


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'"title"', b"null", b'{"title": "x"', b"\xff\xfe"],
    ids=["empty", "truncated", "array", "string", "null", "unclosed", "not utf-8"],
)
async def test_malformed_json_is_a_422(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(BASE, content=raw, headers=json_headers())

    assert_rejected(response, 422, "validation_error")
