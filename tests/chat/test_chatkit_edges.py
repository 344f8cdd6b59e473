"""POST /chatkit at its edges: every request it cannot take gets a 4xx in our error shape (or,
for what a user typed, an error event in the stream), and changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import httpx
import pytest
from agents.testing import ScriptedModel
from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import ChatKitReq
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlmodel import col

from backend.chat.chatkit import _guarded
from backend.chat.chatkit_store import ChatKitContext, ConversationStore
from backend.db import Database
from backend.models import AgentRun, Conversation, Message
from tests.chat.conftest import AppFactory, echo_model
from tests.conftest import auth

SUPPORTED = {
    "threads.create",
    "threads.add_user_message",
    "threads.retry_after_item",
    "threads.get_by_id",
    "threads.list",
    "threads.update",
    "threads.delete",
    "items.list",
    "items.feedback",
}
PROTOCOL = {cls.model_fields["type"].default for cls in get_args(get_args(ChatKitReq)[0])}
ALICE = ChatKitContext(user_id="alice", zone=ZoneInfo("UTC"))


def message(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
    }


async def send(client: httpx.AsyncClient, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/chatkit", content=content, headers=auth("alice"))


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


def events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [
        json.loads(chunk.removeprefix("data: "))
        for chunk in response.text.split("\n\n")
        if chunk.startswith("data: ")
    ]


@dataclass
class Thread:
    id: str
    question: str  # the user message's item id
    answer: str


async def start_thread(client: httpx.AsyncClient) -> Thread:
    streamed = events(
        await send(client, {"type": "threads.create", "params": {"input": message("hi")}})
    )
    thread_id = next(e["thread"]["id"] for e in streamed if e["type"] == "thread.created")
    done = [e["item"]["id"] for e in streamed if e["type"] == "thread.item.done"]
    return Thread(thread_id, done[0], done[-1])


async def snapshot(database: Database) -> list[Any]:
    """Everything a /chatkit request could change, to compare before and after."""
    async with database.session_scope() as session:
        conversations = (await session.scalars(select(Conversation))).all()
        messages = (await session.scalars(select(Message))).all()
        runs = (await session.scalars(select(AgentRun))).all()
    return [
        sorted((c.thread_id, c.title, c.deleted_at) for c in conversations),
        sorted((m.item_id, m.content, m.deleted_at) for m in messages),
        sorted((r.id, r.status, r.feedback) for r in runs),
    ]


async def count(database: Database, model: Any) -> int:
    async with database.session_scope() as session:
        return int(await session.scalar(select(func.count(col(model.id)))) or 0)


def unsupported_bodies(thread: Thread) -> dict[str, dict[str, Any]]:
    action = {"type": "anything", "payload": {}}
    return {
        "threads.sync_custom_action": {"thread_id": thread.id, "action": action},
        "threads.custom_action": {
            "thread_id": thread.id,
            "item_id": thread.answer,
            "action": action,
        },
        "threads.add_client_tool_output": {"thread_id": thread.id, "result": {"ok": True}},
        "threads.add_structured_input": {
            "thread_id": thread.id,
            "item_id": thread.answer,
            "input": {"status": "answered", "answers": {}},
        },
        "input.transcribe": {"audio_base64": "AAAA", "mime_type": "audio/webm"},
        "attachments.create": {"name": "notes.txt", "size": 3, "mime_type": "text/plain"},
        "attachments.delete": {"attachment_id": "att_1"},
    }


async def test_every_operation_of_the_protocol_we_do_not_serve_is_a_422_that_changes_nothing(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(echo_model()) as client:
        thread = await start_thread(client)
        bodies = unsupported_bodies(thread)
        assert set(bodies) == PROTOCOL - SUPPORTED
        before = await snapshot(database)
        for op, params in bodies.items():
            response = await send(client, {"type": op, "params": params})
            refused(response, 422, "unsupported_operation")
            assert op in response.json()["detail"]
        # Without params too: the operation is refused for what it is, not for its shape.
        refused(await send(client, {"type": "input.transcribe"}), 422, "unsupported_operation")
        refused(await send(client, {"type": "no.such_op"}), 422, "invalid_chatkit_request")
    assert await snapshot(database) == before


@pytest.mark.parametrize("limit", [-5, -1, "10", 1.5, True])
@pytest.mark.parametrize("op", ["threads.list", "items.list"])
async def test_a_page_size_that_is_not_a_count_is_refused(
    chat_client: AppFactory, op: str, limit: object
) -> None:
    async with chat_client(echo_model()) as client:
        thread = await start_thread(client)
        params: dict[str, Any] = {"limit": limit}
        if op == "items.list":
            params["thread_id"] = thread.id
        response = await send(client, {"type": op, "params": params})
    refused(response, 422, "invalid_chatkit_request")
    assert "limit" in response.json()["detail"]


@pytest.mark.parametrize("op", ["threads.list", "items.list"])
async def test_page_sizes_read_as_the_sdk_reads_them(chat_client: AppFactory, op: str) -> None:
    """0 is the default page; anything above our largest page gets the largest (2**63 too)."""
    async with chat_client(echo_model()) as client:
        thread = await start_thread(client)
        for _ in range(2):
            await send(client, {"type": "threads.create", "params": {"input": message("hi")}})
        pages = {}
        for limit in (0, 1, 100, 101, 2**63, 2**64 + 1):
            params: dict[str, Any] = {"limit": limit}
            if op == "items.list":
                params["thread_id"] = thread.id
            response = await send(client, {"type": op, "params": params})
            assert response.status_code == 200, response.text
            pages[limit] = len(response.json()["data"])
    assert pages[1] == 1
    assert pages[0] == pages[100] == pages[101] == pages[2**63] == pages[2**64 + 1] > 1


def nul_bodies(thread: Thread) -> dict[str, dict[str, Any]]:
    nul = "thr_\x00"
    return {
        "thread id": {"type": "threads.get_by_id", "params": {"thread_id": nul}},
        "thread id to delete": {"type": "threads.delete", "params": {"thread_id": nul}},
        "thread id of items": {"type": "items.list", "params": {"thread_id": nul}},
        "items cursor": {
            "type": "items.list",
            "params": {"thread_id": thread.id, "after": "msg_\x00"},
        },
        "threads cursor": {"type": "threads.list", "params": {"after": nul}},
        "feedback item id": {
            "type": "items.feedback",
            "params": {"thread_id": thread.id, "item_ids": ["msg_\x00"], "kind": "positive"},
        },
        "retried item id": {
            "type": "threads.retry_after_item",
            "params": {"thread_id": thread.id, "item_id": "msg_\x00"},
        },
        "thread id of a message": {
            "type": "threads.add_user_message",
            "params": {"thread_id": nul, "input": message("hello")},
        },
        "over-long id": {"type": "threads.get_by_id", "params": {"thread_id": "t" * 65}},
        "non-ASCII id": {"type": "threads.get_by_id", "params": {"thread_id": "thr_é"}},
    }


async def test_nul_and_ids_that_cannot_exist_are_refused_before_the_database(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(echo_model()) as client:
        thread = await start_thread(client)
        before = await snapshot(database)
        responses = {name: await send(client, body) for name, body in nul_bodies(thread).items()}
        # A lone surrogate cannot even be read as JSON text.
        surrogate = b'{"type": "threads.get_by_id", "params": {"thread_id": "thr_\\ud800"}}'
        responses["surrogate"] = await send(client, surrogate)
        titled = await send(
            client, {"type": "threads.update", "params": {"thread_id": thread.id, "title": "a\x00"}}
        )
    for name, response in responses.items():
        assert response.status_code == 422, (name, response.text)
        refused(response, 422, "invalid_chatkit_request")
    refused(titled, 422, "invalid_title")
    assert await snapshot(database) == before


async def test_the_store_finds_no_thread_or_item_behind_an_impossible_id(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(echo_model()) as client:
        thread = await start_thread(client)
    store = ConversationStore(database)
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_\x00", ALICE)
    with pytest.raises(NotFoundError):
        await store.load_item(thread.id, "msg_\x00", ALICE)
    with pytest.raises(NotFoundError):
        await store.delete_thread("x" * 1000, ALICE)


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "input_text", "text": "x" * 4001}],
        [{"type": "input_text", "text": "x" * 2001}, {"type": "input_text", "text": "y" * 2000}],
        [],
        [{"type": "input_text", "text": "   "}],
        [{"type": "input_tag", "id": "t", "text": "tag", "data": {}}],
        [{"type": "input_text", "text": "a\x00b"}],
    ],
    ids=["over-limit", "over-limit-in-parts", "empty", "blank", "tag-only", "nul"],
)
async def test_a_message_that_cannot_be_taken_starts_no_thread(
    chat_client: AppFactory, database: Database, content: list[dict[str, Any]]
) -> None:
    model = ScriptedModel([])
    body = {"content": content, "attachments": [], "inference_options": {}}
    async with chat_client(model) as client:
        streamed = events(await send(client, {"type": "threads.create", "params": {"input": body}}))
    assert [(e["type"], e["allow_retry"]) for e in streamed] == [("error", False)]
    assert "4,000" in streamed[0]["message"]
    assert len(model.calls) == 0
    assert await count(database, Conversation) == 0
    assert await count(database, Message) == 0


async def test_a_thread_with_an_attachment_is_refused_and_starts_nothing(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([])
    async with chat_client(model) as client:
        response = await send(
            client,
            {"type": "threads.create", "params": {"input": message("see file", ["att_1"])}},
        )
    refused(response, 422, "invalid_chatkit_request")
    assert "attachments" in response.json()["detail"]
    assert len(model.calls) == 0
    assert await count(database, Conversation) == 0


async def test_a_message_or_retry_for_a_missing_thread_or_item_is_a_404(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(echo_model()) as client:
        thread = await start_thread(client)
        before = await snapshot(database)
        missing_thread = await send(
            client,
            {
                "type": "threads.add_user_message",
                "params": {"thread_id": "thr_missing", "input": message("hello")},
            },
        )
        missing_item = await send(
            client,
            {
                "type": "threads.retry_after_item",
                "params": {"thread_id": thread.id, "item_id": "msg_missing"},
            },
        )
        an_answer = await send(
            client,
            {
                "type": "threads.retry_after_item",
                "params": {"thread_id": thread.id, "item_id": thread.answer},
            },
        )
    refused(missing_thread, 404, "not_found")
    refused(missing_item, 404, "not_found")
    refused(an_answer, 422, "not_a_user_message")
    assert await snapshot(database) == before


def created_ats(value: Any) -> list[str]:
    if isinstance(value, list):
        return [found for item in value for found in created_ats(item)]
    if not isinstance(value, dict):
        return []
    own = [value["created_at"]] if isinstance(value.get("created_at"), str) else []
    return own + [found for item in value.values() for found in created_ats(item)]


async def test_every_time_sent_is_utc_with_its_zone(chat_client: AppFactory) -> None:
    async with chat_client(echo_model()) as client:
        created = await send(
            client, {"type": "threads.create", "params": {"input": message("hello")}}
        )
        streamed = events(created)
        thread_id = next(e["thread"]["id"] for e in streamed if e["type"] == "thread.created")
        added = events(
            await send(
                client,
                {
                    "type": "threads.add_user_message",
                    "params": {"thread_id": thread_id, "input": message("again")},
                },
            )
        )
        fetched = [
            (await send(client, body)).json()
            for body in [
                {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
                {"type": "threads.list", "params": {}},
                {"type": "items.list", "params": {"thread_id": thread_id}},
                {"type": "threads.update", "params": {"thread_id": thread_id, "title": "T"}},
            ]
        ]
    times = created_ats(streamed) + created_ats(added) + created_ats(fetched)
    kinds = {e["type"] for e in streamed + added if created_ats(e)}
    assert {"thread.created", "thread.item.done"} <= kinds
    assert len(times) >= 8
    for text in times:
        moment = datetime.fromisoformat(text)
        assert moment.utcoffset() == timedelta(0), text


async def test_the_openapi_document_says_what_the_endpoint_takes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    operation = app.openapi()["paths"]["/chatkit"]["post"]
    body = operation["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    branches = {b["properties"]["type"]["const"]: b for b in schema["oneOf"]}
    listed = branches["threads.list"]["properties"]["params"]["properties"]
    limit = next(s for s in listed["limit"]["anyOf"] if s.get("type") == "integer")
    assert body["required"] is True
    assert list(body["content"]) == ["application/json"]
    assert set(branches) == SUPPORTED
    assert all(b["required"][0] == "type" for b in branches.values())
    assert limit["minimum"] == 0
    assert "maximum" not in limit
    assert "$ref" not in json.dumps(schema)
    assert {"200", "401", "404", "413", "422", "503"} <= set(operation["responses"])
    # And what it says is so: a request without a body is refused.
    refused(await send(client, b""), 422, "invalid_chatkit_request")


async def test_a_failure_inside_a_started_stream_ends_it_with_an_error_event() -> None:
    async def failing() -> AsyncGenerator[bytes, None]:
        naive = {"type": "thread.created", "thread": {"created_at": "2026-01-02T03:04:05"}}
        yield b"data: " + json.dumps(naive).encode() + b"\n\n"
        raise RuntimeError("a bug")

    chunks = [chunk async for chunk in _guarded(StreamingResult(failing()))]
    sent = [json.loads(chunk.removeprefix(b"data: ")) for chunk in chunks]
    assert [e["type"] for e in sent] == ["thread.created", "error"]
    assert sent[1]["allow_retry"] is False
    assert datetime.fromisoformat(sent[0]["thread"]["created_at"]).utcoffset() == timedelta(0)
