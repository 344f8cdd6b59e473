"""Edges of the chat routes: content negotiation, paged conversations, hostile input → 4xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel
from fastapi import FastAPI
from sqlalchemy import func, insert, select, text

from backend.chat import service as chat_service
from backend.chat.router import negotiate
from backend.clock import utc_now
from backend.db import Database
from backend.errors import AppError
from backend.models import Message
from backend.tasks.schemas import zone_names
from tests.chat.conftest import AppFactory, echo_model
from tests.chat.test_streaming_and_concurrency import parse_sse
from tests.conftest import auth

# --- Accept: JSON, Server-Sent Events or 406 -------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("", "json"),
        ("*/*", "json"),
        ("application/json", "json"),
        ("text/event-stream", "event-stream"),
        ("TEXT/EVENT-STREAM", "event-stream"),
        ("Text/Event-Stream; charset=UTF-8", "event-stream"),
        ("text/*", "event-stream"),
        ("application/*", "json"),
        # q=0 means "not acceptable", whatever else the range says.
        ("text/event-stream;q=0, application/json", "json"),
        ("text/event-stream; Q=0, */*", "json"),
        ("*/*, text/event-stream;q=0", "json"),
        ("text/event-stream;q=0.000, application/json;q=0.001", "json"),
        # The higher weight wins; on equal weights the more specific range wins...
        ("application/json;q=0.5, text/event-stream", "event-stream"),
        ("text/event-stream;q=0.9, application/json;q=0.8", "event-stream"),
        ("application/json;q=0.9, text/event-stream;q=0.8", "json"),
        ("text/event-stream, */*", "event-stream"),
        ("text/*, application/json", "json"),
        ("text/*;q=0.9, application/*;q=0.8", "event-stream"),
        # ...and an exact tie goes to JSON.
        ("text/event-stream, application/json", "json"),
        ("application/json, text/event-stream", "json"),
        # The most specific range decides for a type, not the first or the highest.
        ("text/event-stream;q=0.1, text/*;q=1, application/json;q=0.5", "json"),
        # A comma or q=0 inside a quoted parameter value is not a separator or a weight.
        ('text/event-stream;x="a,b;q=0", application/json;q=0.1', "event-stream"),
        # Malformed ranges are skipped; nothing readable left means "anything".
        ("text/event-stream;q=2, application/json;q=0.1", "json"),
        ("text/event-stream;q=abc, application/json;q=0.1", "json"),
        ("text/event-stream;q=0.0001, application/json;q=0.1", "json"),
        ("*/event-stream, application/json;q=0.1", "json"),
        ("garbage", "json"),
        ("text/event-stream;q=", "json"),
        (",,, ,", "json"),
    ],
)
def test_accept_is_negotiated_by_weight_and_specificity(accept: str | None, expected: str) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "text/event-stream;q=0",
        "text/html",
        "application/xml, text/plain;q=0.5",
        "*/*;q=0",
        "application/json;q=0, text/event-stream;q=0, image/*",
        "text/*;q=0, application/*;q=0",
    ],
)
def test_accept_allowing_neither_format_is_not_acceptable(accept: str) -> None:
    with pytest.raises(AppError) as raised:
        negotiate(accept)
    assert (raised.value.status_code, raised.value.code) == (406, "not_acceptable")


async def _message_count(database: Database) -> int:
    async with database.session_scope() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


@pytest.mark.parametrize(
    "accept", ["text/event-stream;q=0", "text/html", "application/xml;q=1, */*;q=0"]
)
async def test_chat_answers_406_before_anything_is_stored(
    chat_client: AppFactory, database: Database, accept: str
) -> None:
    model = ScriptedModel([])
    async with chat_client(model) as client:
        response = await client.post(
            "/api/alice/chat",
            json={"message": "add milk"},
            headers={**auth("alice"), "Accept": accept},
        )
    assert response.status_code == 406
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == "not_acceptable"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "text/event-stream" in body["detail"]
    assert len(model.calls) == 0
    assert await _message_count(database) == 0


@pytest.mark.parametrize(
    ("headers", "streamed"),
    [
        ([("Accept", "TEXT/EVENT-STREAM")], True),
        ([("Accept", "text/event-stream;q=0, application/json")], False),
        ([("Accept", "text/event-stream, application/json")], False),
        ([("Accept", "application/json;q=0.2, text/event-stream")], True),
        # Two Accept lines are one list.
        ([("Accept", "application/json;q=0.1"), ("Accept", "text/event-stream")], True),
        ([], False),
    ],
)
async def test_chat_streams_only_when_event_stream_is_preferred(
    chat_client: AppFactory, headers: list[tuple[str, str]], streamed: bool
) -> None:
    async with chat_client(echo_model()) as client:
        response = await client.post(
            "/api/alice/chat",
            json={"message": "hello"},
            headers=httpx.Headers([*auth("alice").items(), *headers]),
        )
    assert response.status_code == 200
    if streamed:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
        assert events[-1] == ("done", {**events[-1][1], "response": "echo: hello"})
    else:
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["response"] == "echo: hello"


# --- X-Timezone: exactly the documented names ------------------------------------------------


@pytest.mark.parametrize(
    "zone", ["", "posix/Europe/Paris", "right/UTC", "localtime", "Mars/Olympus"]
)
async def test_a_timezone_outside_the_documented_list_is_refused(
    chat_client: AppFactory, database: Database, zone: str
) -> None:
    model = ScriptedModel([])
    async with chat_client(model) as client:
        response = await client.post(
            "/api/alice/chat",
            json={"message": "remind me tomorrow"},
            headers={**auth("alice"), "X-Timezone": zone},
        )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_timezone"
    assert len(model.calls) == 0
    assert await _message_count(database) == 0


async def test_a_documented_timezone_is_accepted(chat_client: AppFactory) -> None:
    assert {"UTC", "Europe/Paris", "Asia/Kolkata"} <= zone_names()
    async with chat_client(echo_model()) as client:
        response = await client.post(
            "/api/alice/chat",
            json={"message": "hi"},
            headers={**auth("alice"), "X-Timezone": "Asia/Kolkata"},
        )
    assert response.status_code == 200


# --- Bodies that must be 422, never 5xx, with nothing stored and no model call ---------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"message": "lone \\ud800 high"}',
        '{"message": "\\udfff"}',
        '{"message": "pair reversed \\ude00\\ud83d"}',
        '{"message": "nul \\u0000 inside"}',
        '{"message": "' + "x" * 4001 + '"}',
        '{"message": "x", "conversation_id": 9223372036854775808}',
        '{"message": "x", "conversation_id": 2147483648}',
        '{"message": "x", "conversation_id": -1}',
        '{"message": "x", "conversation_id": 0}',
        '{"message": "x", "conversation_id": 1e400}',
        '{"message": "x", "client_message_id": "a\\u0000b"}',
        '{"message": "x", "client_message_id": "a\\ud800"}',
        '{"message": "x", "client_message_id": "' + "a" * 129 + '"}',
        '{"message": "x", "client_message_id": "line\\n"}',
        '{"message": "x", "client_message_id": ""}',
        '{"message": "x", "client_message_id": "caf\\u00e9"}',
    ],
)
async def test_hostile_chat_bodies_get_422(
    chat_client: AppFactory, database: Database, raw: str
) -> None:
    model = ScriptedModel([])
    async with chat_client(model) as client:
        response = await client.post(
            "/api/alice/chat",
            content=raw.encode(),
            headers={**auth("alice"), "Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert len(model.calls) == 0
    assert await _message_count(database) == 0


async def test_unusual_text_is_stored_and_returned_exactly(chat_client: AppFactory) -> None:
    message = (
        "Emoji \U0001f600\U0001f469\U0001f3fd\u200d\U0001f4bb, RTL שלום عربى, e\u0301, "
        "\u2028sep, \x01ctl, '; DROP TABLE task;-- <b>x</b>"
    )
    async with chat_client(echo_model()) as client:
        turn = await client.post(
            "/api/alice/chat", json={"message": message}, headers=auth("alice")
        )
        assert turn.status_code == 200
        conversation_id = turn.json()["conversation_id"]
        shown = await client.get(
            f"/api/alice/conversations/{conversation_id}", headers=auth("alice")
        )
    assert [m["content"] for m in shown.json()["messages"]] == [message, f"echo: {message}"]


# --- Paged conversations ---------------------------------------------------------------------


async def seed_conversation(
    database: Database, user_id: str, count: int, *, hidden: frozenset[int] = frozenset()
) -> int:
    """A conversation of `count` messages (seq 1..count), written in one statement."""
    async with database.session_scope(write=True) as session:
        conversation = await chat_service.create_conversation(session, user_id, "seeded")
        assert conversation.id is not None
        conversation_id = conversation.id
        now = utc_now()
        rows: list[dict[str, Any]] = [
            {
                "conversation_id": conversation_id,
                "user_id": user_id,
                "seq": seq,
                "role": "user" if seq % 2 else "assistant",
                "content": f"m{seq}",
                "item_id": f"msg_{conversation_id}_{seq}",
                "created_at": now,
                "deleted_at": now if seq in hidden else None,
            }
            for seq in range(1, count + 1)
        ]
        await session.execute(insert(Message), rows)
    return conversation_id


def seqs(body: dict[str, Any]) -> list[int]:
    return [message["seq"] for message in body["messages"]]


async def test_a_small_conversation_comes_whole_and_in_order(
    client: httpx.AsyncClient, database: Database
) -> None:
    conversation_id = await seed_conversation(database, "alice", 7)
    response = await client.get(
        f"/api/alice/conversations/{conversation_id}", headers=auth("alice")
    )
    assert response.status_code == 200
    body = response.json()
    assert seqs(body) == [1, 2, 3, 4, 5, 6, 7]
    assert body["messages"][0] == {
        "id": body["messages"][0]["id"],
        "seq": 1,
        "role": "user",
        "content": "m1",
        "tool_calls": None,
        "created_at": body["messages"][0]["created_at"],
    }
    assert (body["has_more"], body["next_cursor"]) == (False, None)
    assert {"id", "title", "created_at", "updated_at"} <= body.keys()


async def test_scrolling_back_pages_from_the_newest_to_the_first_message(
    client: httpx.AsyncClient, database: Database
) -> None:
    conversation_id = await seed_conversation(database, "alice", 7, hidden=frozenset({4}))
    url = f"/api/alice/conversations/{conversation_id}"
    pages = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        body = (await client.get(url, params=params, headers=auth("alice"))).json()
        pages.append(seqs(body))
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        assert body["next_cursor"] == seqs(body)[0]
        params = {"limit": 3, "before": body["next_cursor"]}
    assert pages == [[5, 6, 7], [1, 2, 3]]


async def test_paging_forward_after_a_seq_catches_up_oldest_first(
    client: httpx.AsyncClient, database: Database
) -> None:
    conversation_id = await seed_conversation(database, "alice", 7)
    url = f"/api/alice/conversations/{conversation_id}"
    first = (await client.get(url, params={"after": 0, "limit": 3}, headers=auth("alice"))).json()
    assert (seqs(first), first["has_more"], first["next_cursor"]) == ([1, 2, 3], True, 3)
    last = (await client.get(url, params={"after": 5, "limit": 3}, headers=auth("alice"))).json()
    assert (seqs(last), last["has_more"], last["next_cursor"]) == ([6, 7], False, None)
    window = (
        await client.get(url, params={"after": 1, "before": 6, "limit": 2}, headers=auth("alice"))
    ).json()
    assert (seqs(window), window["has_more"], window["next_cursor"]) == ([2, 3], True, 3)
    beyond = (await client.get(url, params={"before": 2**31 - 1}, headers=auth("alice"))).json()
    assert seqs(beyond) == [1, 2, 3, 4, 5, 6, 7]


async def test_a_long_conversation_is_paged_along_its_seq_index(
    client: httpx.AsyncClient, database: Database, is_postgres: bool
) -> None:
    conversation_id = await seed_conversation(database, "alice", 10_000)
    url = f"/api/alice/conversations/{conversation_id}"
    newest = await client.get(url, headers=auth("alice"))
    assert seqs(newest.json()) == list(range(9951, 10_001))
    assert newest.json()["next_cursor"] == 9951
    biggest = (await client.get(url, params={"limit": 200}, headers=auth("alice"))).json()
    assert len(biggest["messages"]) == 200
    oldest = (await client.get(url, params={"before": 3}, headers=auth("alice"))).json()
    assert (seqs(oldest), oldest["has_more"]) == ([1, 2], False)

    async with database.session_scope() as session:
        if is_postgres:
            await session.execute(text("ANALYZE message"))
        connection = await session.connection()
        for before, after in [(None, None), (5000, None), (None, 5000)]:
            query = chat_service.message_page_query(conversation_id, 50, before, after)
            sql = str(
                query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
            )
            explain = "EXPLAIN " if is_postgres else "EXPLAIN QUERY PLAN "
            plan = "\n".join(str(row) for row in await session.execute(text(explain + sql)))
            # An ordered index walk that stops at the limit: no sort of the whole conversation.
            if is_postgres:
                assert "uq_message_conversation_id_seq" in plan, plan
                assert "Sort" not in plan, plan
            else:
                assert "USING INDEX" in plan, plan
                assert "TEMP B-TREE" not in plan, plan


async def test_another_users_conversation_is_not_found_whatever_the_cursor(
    client: httpx.AsyncClient, database: Database
) -> None:
    conversation_id = await seed_conversation(database, "alice", 3)
    for params in [{}, {"before": 3}, {"after": 0, "limit": 200}]:
        response = await client.get(
            f"/api/bob/conversations/{conversation_id}", params=params, headers=auth("bob")
        )
        assert response.status_code == 404
        assert response.json()["code"] == "conversation_not_found"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=201",
        "limit=9223372036854775808",
        "limit=abc",
        "limit=%00",
        "limit=1.5",
        "limit=",
        "before=-1",
        "before=2147483648",
        "before=9223372036854775808",
        "before=-9223372036854775809",
        "before=x",
        "before=%00",
        "before=1%00",
        "after=-5",
        "after=9223372036854775808",
        "after=%00",
        "after=%F0%9F%98%80",
    ],
)
async def test_bad_paging_parameters_get_422(
    client: httpx.AsyncClient, database: Database, query: str
) -> None:
    conversation_id = await seed_conversation(database, "alice", 3)
    response = await client.get(
        f"/api/alice/conversations/{conversation_id}?{query}", headers=auth("alice")
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["errors"][0]["loc"][0] == "query"


@pytest.mark.parametrize(
    "path",
    [
        "conversations?limit=9223372036854775808",
        "conversations?limit=101",
        "conversations?offset=-1",
        "conversations?offset=9223372036854775808",
        "conversations?limit=%00",
        "conversations/9223372036854775808",
        "conversations/2147483648",
        "conversations/-1",
        "conversations/0",
        "conversations/1%00",
    ],
)
async def test_bad_conversation_ids_and_list_paging_get_422(
    client: httpx.AsyncClient, path: str
) -> None:
    for method in ("GET", "DELETE") if "?" not in path else ("GET",):
        response = await client.request(method, f"/api/alice/{path}", headers=auth("alice"))
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"


# --- The OpenAPI document says what the routes do --------------------------------------------


def test_the_openapi_document_gives_the_chat_routes_bounds_and_error_bodies(app: FastAPI) -> None:
    document = app.openapi()
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    chat = document["paths"]["/api/{user_id}/chat"]["post"]
    for status in ("400", "404", "406", "409", "413", "422"):
        assert chat["responses"][status]["content"]["application/json"]["schema"] == error_body
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    headers = {p["name"].lower(): p["schema"] for p in chat["parameters"] if p["in"] == "header"}
    assert "accept" not in headers  # OpenAPI ignores a declared Accept; negotiation is documented
    assert headers["x-timezone"]["enum"] == sorted(zone_names())
    assert headers["x-timezone"]["default"] == "UTC"

    detail = document["paths"]["/api/{user_id}/conversations/{conversation_id}"]["get"]
    params = {p["name"]: json.dumps(p["schema"]) for p in detail["parameters"]}
    assert '"maximum": 200' in params["limit"]
    assert '"minimum": 1' in params["limit"]
    for cursor in ("before", "after"):
        assert '"maximum": 2147483647' in params[cursor]
        assert '"minimum": 0' in params[cursor]
    assert detail["responses"]["422"]["content"]["application/json"]["schema"] == error_body
    assert detail["responses"]["404"]["content"]["application/json"]["schema"] == error_body


async def test_a_user_id_with_a_nul_character_is_refused_not_a_server_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/a%00b/conversations", headers=auth("a\x00b"))
    assert 400 <= response.status_code < 500
