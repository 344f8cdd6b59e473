"""Server-Sent Events for a turn, and one-turn-at-a-time per conversation across app instances."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from agents.testing import ScriptedModel
from sqlalchemy import select
from sqlmodel import col

from backend.db import Database
from backend.models import Message
from tests.chat.conftest import AppFactory, call, echo_model, reply
from tests.conftest import auth


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            if name in ("event", "data"):
                fields[name] = fields.get(name, "") + value.removeprefix(" ")
        if "event" in fields:
            events.append((fields["event"], json.loads(fields.get("data") or "{}")))
    return events


def scripted_turn() -> ScriptedModel:
    return ScriptedModel(
        [call("add_task", {"title": "Stream test"}), reply("Added 'Stream test'.")]
    )


async def test_sse_events_arrive_in_order_and_done_equals_the_json_reply(
    chat_client: AppFactory,
) -> None:
    async with chat_client(scripted_turn()) as client:
        streamed = await client.post(
            "/api/alice/chat",
            json={"message": "add stream test"},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
    async with chat_client(scripted_turn()) as client:
        plain = await client.post(
            "/api/alice/chat", json={"message": "add stream test"}, headers=auth("alice")
        )
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "conversation"
    assert kinds[-1] == "done"
    assert (
        kinds.index("tool_call_started") < kinds.index("tool_call_finished") < kinds.index("delta")
    )
    started = dict(events)["tool_call_started"]
    assert started["name"] == "add_task"
    assert (
        "".join(data["text"] for kind, data in events if kind == "delta") == "Added 'Stream test'."
    )
    done = events[-1][1]
    expected = plain.json()
    assert done["conversation_id"] == events[0][1]["conversation_id"]
    assert done["response"] == expected["response"]
    strip = [
        {**c, "result": {**c["result"], "id": 0, "task_id": 0, "created_at": "", "updated_at": ""}}
        for c in done["tool_calls"]
    ]
    strip_plain = [
        {**c, "result": {**c["result"], "id": 0, "task_id": 0, "created_at": "", "updated_at": ""}}
        for c in expected["tool_calls"]
    ]
    assert strip == strip_plain


async def test_sse_error_event_on_model_failure(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(ScriptedModel([RuntimeError("boom")])) as client:
        streamed = await client.post(
            "/api/alice/chat",
            json={"message": "hello"},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
    events = parse_sse(streamed.text)
    assert [kind for kind, _ in events] == ["conversation", "error"]
    error = events[-1][1]
    assert error["code"] == "model_error"
    assert error["request_id"] == streamed.headers["x-request-id"]
    async with database.session_scope() as session:
        stored = (await session.scalars(select(Message))).all()
    assert [m.content for m in stored] == ["hello"]


async def test_concurrent_turns_on_one_conversation_run_one_at_a_time(
    chat_client: AppFactory, database: Database
) -> None:
    """Two app instances share the database; every turn either runs alone or gets 409."""
    async with (
        chat_client(echo_model(delay=0.3)) as first,
        chat_client(echo_model(delay=0.3)) as second,
    ):
        opened = await first.post(
            "/api/alice/chat", json={"message": "start"}, headers=auth("alice")
        )
        conversation_id = opened.json()["conversation_id"]

        async def turn(client: httpx.AsyncClient, number: int) -> httpx.Response:
            return await client.post(
                "/api/alice/chat",
                json={"message": f"turn {number}", "conversation_id": conversation_id},
                headers=auth("alice"),
            )

        responses = await asyncio.gather(*(turn(first if n % 2 else second, n) for n in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}
    assert statuses.count(200) >= 1
    assert statuses.count(409) >= 1
    assert all(r.json()["code"] == "conversation_busy" for r in responses if r.status_code == 409)
    async with database.session_scope() as session:
        statement = select(Message).where(col(Message.conversation_id) == conversation_id)
        messages = (await session.scalars(statement.order_by(col(Message.seq)))).all()
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    assert len(messages) == 2 + 2 * statuses.count(200)
    roles = [m.role for m in messages]
    assert roles == ["user", "assistant"] * (len(messages) // 2)
    winners = {r.json()["response"] for r in responses if r.status_code == 200}
    assert winners == {f"echo: {m.content}" for m in messages[2::2]}
