"""Regressions found in review: retries that would repeat effects, locks left behind,
ChatKit messages stored beside a running turn, lost outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents.testing import ScriptedModel
from chatkit.types import (
    ErrorEvent,
    ThreadAddUserMessageParams,
    ThreadCreateParams,
    ThreadItemDoneEvent,
    ThreadRetryAfterItemParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsRetryAfterItemReq,
    UserMessageItem,
)
from sqlalchemy import select

import backend.chat.chatkit as chatkit_module
import backend.chat.turns as turns_module
from backend.db import Database
from backend.models import AgentRun, Conversation, Message, Task
from tests.chat.conftest import AppFactory, call, echo_model, reply, texts_in, until_a_turn_runs
from tests.chat.test_chatkit import created_thread, rows, stream, user_input
from tests.conftest import auth


async def test_a_chatkit_retry_after_a_failed_turn_does_not_repeat_its_tool_calls(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel(
        [
            call("add_task", {"title": "Milk"}),
            call("list_tasks", {}),
            call("list_tasks", {}),  # max_turns=3 ends the turn here: 502, retryable
            reply("Milk is on your list."),
        ]
    )
    async with chat_client(model, agent_max_turns=3) as client:
        created = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add milk")))
        events = await stream(client, "alice", created)
        [error] = [e for e in events if isinstance(e, ErrorEvent)]
        assert error.allow_retry
        thread_id = created_thread(events)
        user_item = next(
            e.item.id
            for e in events
            if isinstance(e, ThreadItemDoneEvent) and isinstance(e.item, UserMessageItem)
        )
        retry = ThreadRetryAfterItemParams(thread_id=thread_id, item_id=user_item)
        await stream(client, "alice", ThreadsRetryAfterItemReq(params=retry))
    # The replaced answer is hidden, but the retry's model still saw its add_task.
    assert any("add_task" in text for text in texts_in(model.calls[3].input))
    assert [t.title for t in await rows(database, Task)] == ["Milk"]


async def test_an_unexpected_error_before_the_agent_still_closes_the_run(
    chat_client: AppFactory, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(messages: Any) -> Any:
        raise ValueError("an unexpected stored item")

    monkeypatch.setattr(turns_module, "to_input_items", broken)
    async with chat_client(echo_model()) as client:
        failed = await client.post("/api/alice/chat", json={"message": "hi"}, headers=auth("alice"))
        monkeypatch.undo()
        [conversation] = await rows(database, Conversation)
        again = await client.post(
            "/api/alice/chat",
            json={"conversation_id": conversation.id, "message": "again"},
            headers=auth("alice"),
        )
    assert failed.status_code == 500
    assert failed.json()["code"] == "internal_error"
    assert again.status_code == 200, again.text  # the conversation was not left locked
    runs = await rows(database, AgentRun)
    assert [(r.status, r.error_code) for r in runs] == [
        ("failed", "internal_error"),
        ("succeeded", None),
    ]


async def test_a_chatkit_message_while_a_turn_runs_is_refused_and_not_stored(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(echo_model(delay=3.0)) as client:
        created = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("one")))
        thread_id = created_thread(await stream(client, "alice", created))
        [conversation] = await rows(database, Conversation)
        slow = asyncio.create_task(
            client.post(
                "/api/alice/chat",
                json={"conversation_id": conversation.id, "message": "two"},
                headers=auth("alice"),
            )
        )
        await until_a_turn_runs(database)
        added = ThreadAddUserMessageParams(thread_id=thread_id, input=user_input("three"))
        events = await stream(client, "alice", ThreadsAddUserMessageReq(params=added))
        assert (await slow).status_code == 200
    [error] = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.allow_retry
    messages = await rows(database, Message)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
        ("assistant", "echo: two"),
    ]


async def test_a_chatkit_rendering_failure_does_not_hide_a_stored_answer(
    chat_client: AppFactory, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(context: Any, result: Any) -> AsyncIterator[Any]:
        raise RuntimeError("the converter broke")
        yield  # pragma: no cover

    monkeypatch.setattr(chatkit_module, "stream_agent_response", broken)
    model = ScriptedModel([call("add_task", {"title": "Milk"}), reply("Added Milk.")])
    async with chat_client(model) as client:
        created = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add milk")))
        events = await stream(client, "alice", created)
    [error] = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.allow_retry is False  # a retry would only ask for the same thing again
    assert "stored" in (error.message or "")
    [run] = await rows(database, AgentRun)
    assert run.status == "succeeded"
    assert [t.title for t in await rows(database, Task)] == ["Milk"]


async def test_a_failed_message_retried_while_a_later_one_runs_is_outdated(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([RuntimeError("provider down")])
    async with chat_client(model) as client:
        failed = await client.post(
            "/api/alice/chat",
            json={"message": "one", "client_message_id": "o-1"},
            headers=auth("alice"),
        )
        assert failed.status_code == 502
    async with chat_client(echo_model(delay=3.0)) as client:
        [conversation] = await rows(database, Conversation)
        later = asyncio.create_task(
            client.post(
                "/api/alice/chat",
                json={"conversation_id": conversation.id, "message": "two"},
                headers=auth("alice"),
            )
        )
        await until_a_turn_runs(database)
        retried = await client.post(
            "/api/alice/chat",
            json={"message": "one", "client_message_id": "o-1"},
            headers=auth("alice"),
        )
        await later
    assert retried.status_code == 409
    assert retried.json()["code"] == "turn_outdated"


async def test_a_turn_that_loses_its_lease_stops_at_the_next_heartbeat(
    chat_client: AppFactory, database: Database
) -> None:
    model = echo_model(delay=8.0)
    async with chat_client(model, chat_lease_seconds=10) as client:
        turn = asyncio.create_task(
            client.post("/api/alice/chat", json={"message": "hi"}, headers=auth("alice"))
        )
        await until_a_turn_runs(database)
        async with database.session_scope(write=True) as session:  # another turn took over
            [conversation] = (await session.scalars(select(Conversation))).all()
            conversation.lease_owner = "someone-else"
        response = await turn
    assert response.status_code == 409
    assert response.json()["code"] == "turn_superseded"
    [run] = await rows(database, AgentRun)
    assert (run.status, run.error_code) == ("failed", "lease_lost")
    assert run.model_calls == 0  # stopped mid-call by the heartbeat, not at the model's end
    assert [m.role for m in await rows(database, Message)] == ["user"]
