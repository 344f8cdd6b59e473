"""POST /chatkit with the chatkit package's own request and event types, over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message
from asgi_lifespan import LifespanManager
from chatkit.server import StreamingResult
from chatkit.types import (
    ClientEffectEvent,
    ErrorEvent,
    InferenceOptions,
    ItemFeedbackParams,
    ItemsFeedbackReq,
    ItemsListParams,
    ItemsListReq,
    Page,
    ProgressUpdateEvent,
    Thread,
    ThreadAddUserMessageParams,
    ThreadCreatedEvent,
    ThreadCreateParams,
    ThreadDeleteParams,
    ThreadGetByIdParams,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadListParams,
    ThreadRetryAfterItemParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadStreamEvent,
    ThreadsUpdateReq,
    ThreadUpdatedEvent,
    ThreadUpdateParams,
    UserMessageInput,
    UserMessageTextContent,
)
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import select
from sqlmodel import col

from backend.chat.chatkit_store import ChatKitContext
from backend.db import Database
from backend.main import create_app
from backend.models import AgentRun, Conversation, Message, OutboxEvent, Task
from tests.chat.conftest import AppFactory, call, chat_settings, echo_model, reply, texts_in
from tests.conftest import auth

EVENTS: TypeAdapter[ThreadStreamEvent] = TypeAdapter(cast(Any, ThreadStreamEvent))


def user_input(text: str) -> UserMessageInput:
    return UserMessageInput(
        content=[UserMessageTextContent(text=text)],
        attachments=[],
        inference_options=InferenceOptions(),
    )


async def post(client: httpx.AsyncClient, user: str, request: BaseModel) -> httpx.Response:
    return await client.post(
        "/chatkit", content=request.model_dump_json().encode(), headers=auth(user)
    )


async def stream(
    client: httpx.AsyncClient, user: str, request: BaseModel
) -> list[ThreadStreamEvent]:
    response = await post(client, user, request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [
        EVENTS.validate_json(chunk.removeprefix("data: "))
        for chunk in response.text.split("\n\n")
        if chunk.startswith("data: ")
    ]


def created_thread(events: list[ThreadStreamEvent]) -> str:
    return next(e.thread.id for e in events if isinstance(e, ThreadCreatedEvent))


def reply_text(events: list[ThreadStreamEvent]) -> str:
    done = [
        e
        for e in events
        if isinstance(e, ThreadItemDoneEvent) and e.item.type == "assistant_message"
    ]
    return "".join(part.text for part in done[-1].item.content)  # type: ignore[union-attr]


async def rows(database: Database, model: Any) -> list[Any]:
    async with database.session_scope() as session:
        return list((await session.scalars(select(model).order_by(col(model.id)))).all())


async def test_a_new_thread_chats_with_tools_progress_and_a_client_effect(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel(
        [call("add_task", {"title": "Buy milk"}), reply("Added task 'Buy milk'.")]
    )
    async with chat_client(model) as client:
        events = await stream(
            client,
            "alice",
            ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add buy milk"))),
        )
        listed = await client.get("/api/alice/conversations", headers=auth("alice"))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["thread.created", "thread.item.done", "stream_options"]
    progress = [e for e in events if isinstance(e, ProgressUpdateEvent)]
    assert [p.text for p in progress] == ["Adding 'Buy milk'…"]
    [effect] = [e for e in events if isinstance(e, ClientEffectEvent)]
    [task] = await rows(database, Task)
    assert effect.name == "tasks.changed"
    assert effect.data == {"task_ids": [task.id], "tool": "add_task"}
    assert reply_text(events) == "Added task 'Buy milk'."
    assert any(
        isinstance(e, ThreadUpdatedEvent) and e.thread.title == "add buy milk" for e in events
    )

    thread_id = created_thread(events)
    [conversation] = await rows(database, Conversation)
    assert conversation.thread_id == thread_id
    assert listed.json()["items"][0]["title"] == "add buy milk"
    messages = await rows(database, Message)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].tool_calls is not None
    assert messages[1].tool_calls[0]["name"] == "add_task"
    done_ids = [e.item.id for e in events if isinstance(e, ThreadItemDoneEvent)]
    assert done_ids == [messages[0].item_id, messages[1].item_id]
    [run] = await rows(database, AgentRun)
    assert (run.channel, run.status) == ("chatkit", "succeeded")
    [event] = await rows(database, OutboxEvent)
    assert (event.task_id, event.channel) == (task.id, "chatkit")


async def test_chat_api_conversation_continues_in_chatkit_and_back(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([reply("Hello Sam."), reply("You are Sam."), reply("Still Sam.")])
    async with chat_client(model) as client:
        first = await client.post(
            "/api/alice/chat", json={"message": "I am Sam"}, headers=auth("alice")
        )
        conversation_id = first.json()["conversation_id"]
        threads = await post(client, "alice", ThreadsListReq(params=ThreadListParams()))
        thread_id = Page[Thread].model_validate_json(threads.content).data[0].id
        events = await stream(
            client,
            "alice",
            ThreadsAddUserMessageReq(
                params=ThreadAddUserMessageParams(
                    thread_id=thread_id, input=user_input("who am I?")
                )
            ),
        )
        back = await client.post(
            "/api/alice/chat",
            json={"message": "and now?", "conversation_id": conversation_id},
            headers=auth("alice"),
        )
    assert reply_text(events) == "You are Sam."
    assert "I am Sam" in texts_in(model.calls[1].input)
    assert back.json()["response"] == "Still Sam."
    assert "who am I?" in texts_in(model.calls[2].input)
    detail = [m.content for m in await rows(database, Message)]
    assert detail == [
        "I am Sam",
        "Hello Sam.",
        "who am I?",
        "You are Sam.",
        "and now?",
        "Still Sam.",
    ]


async def test_threads_list_get_update_delete_and_items_list(chat_client: AppFactory) -> None:
    async with chat_client(echo_model()) as client:
        ids = []
        for text in ("one", "two", "three"):
            events = await stream(
                client, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=user_input(text)))
            )
            ids.append(created_thread(events))
        first_page = Page[Thread].model_validate_json(
            (await post(client, "alice", ThreadsListReq(params=ThreadListParams(limit=2)))).content
        )
        second_page = Page[Thread].model_validate_json(
            (
                await post(
                    client,
                    "alice",
                    ThreadsListReq(params=ThreadListParams(limit=2, after=first_page.after)),
                )
            ).content
        )
        thread = Thread.model_validate_json(
            (
                await post(
                    client, "alice", ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=ids[0]))
                )
            ).content
        )
        renamed = Thread.model_validate_json(
            (
                await post(
                    client,
                    "alice",
                    ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=ids[0], title="Renamed")),
                )
            ).content
        )
        await stream(
            client,
            "alice",
            ThreadsAddUserMessageReq(
                params=ThreadAddUserMessageParams(thread_id=ids[0], input=user_input("four"))
            ),
        )
        items = (
            await post(
                client,
                "alice",
                ItemsListReq(params=ItemsListParams(thread_id=ids[0], limit=3, order="asc")),
            )
        ).json()
        rest = (
            await post(
                client,
                "alice",
                ItemsListReq(
                    params=ItemsListParams(
                        thread_id=ids[0], limit=3, order="asc", after=items["after"]
                    )
                ),
            )
        ).json()
        deleted = await post(
            client, "alice", ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=ids[1]))
        )
        after_delete = await post(
            client, "alice", ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=ids[1]))
        )
        conversations = (await client.get("/api/alice/conversations", headers=auth("alice"))).json()

    assert [t.id for t in first_page.data] == [ids[2], ids[1]]
    assert first_page.has_more
    assert [t.id for t in second_page.data] == [ids[0]]
    assert not second_page.has_more
    assert thread.title == "one"
    assert [i.type for i in thread.items.data] == ["user_message", "assistant_message"]
    assert renamed.title == "Renamed"
    assert [i["content"][0]["text"] for i in items["data"]] == ["one", "echo: one", "four"]
    assert items["has_more"] is True
    assert [i["content"][0]["text"] for i in rest["data"]] == ["echo: four"]
    assert deleted.status_code == 200
    assert after_delete.status_code == 404
    assert {c["title"] for c in conversations["items"]} == {"Renamed", "three"}


async def test_model_failure_streams_a_retryable_error_and_retry_answers(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([RuntimeError("provider down"), reply("Here I am.")])
    async with chat_client(model) as client:
        events = await stream(
            client, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hello?")))
        )
        thread_id = created_thread(events)
        [error] = [e for e in events if isinstance(e, ErrorEvent)]
        user_item = next(e.item.id for e in events if isinstance(e, ThreadItemDoneEvent))
        retried = await stream(
            client,
            "alice",
            ThreadsRetryAfterItemReq(
                params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=user_item)
            ),
        )
    assert error.allow_retry is True
    assert reply_text(retried) == "Here I am."
    messages = await rows(database, Message)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "hello?"),
        ("assistant", "Here I am."),
    ]
    runs = await rows(database, AgentRun)
    assert [(r.status, r.error_code) for r in runs] == [
        ("failed", "model_error"),
        ("succeeded", None),
    ]


async def test_retry_after_an_answer_replaces_it_and_keeps_it_for_the_logs(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([reply("First answer."), reply("Second answer.")])
    async with chat_client(model) as client:
        events = await stream(
            client, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi")))
        )
        thread_id = created_thread(events)
        user_item = next(e.item.id for e in events if isinstance(e, ThreadItemDoneEvent))
        await stream(
            client,
            "alice",
            ThreadsRetryAfterItemReq(
                params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=user_item)
            ),
        )
        items = (
            await post(
                client,
                "alice",
                ItemsListReq(params=ItemsListParams(thread_id=thread_id, order="asc")),
            )
        ).json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["hi", "Second answer."]
    messages = await rows(database, Message)
    assert [(m.content, m.deleted_at is not None) for m in messages] == [
        ("hi", False),
        ("First answer.", True),
        ("Second answer.", False),
    ]
    assert "First answer." not in texts_in(model.calls[1].input)


async def test_feedback_is_stored_with_the_run(chat_client: AppFactory, database: Database) -> None:
    async with chat_client(ScriptedModel([reply("Meh answer.")])) as client:
        events = await stream(
            client, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi")))
        )
        thread_id = created_thread(events)
        answer = [e.item.id for e in events if isinstance(e, ThreadItemDoneEvent)][-1]
        response = await post(
            client,
            "alice",
            ItemsFeedbackReq(
                params=ItemFeedbackParams(thread_id=thread_id, item_ids=[answer], kind="negative")
            ),
        )
    assert response.status_code == 200
    [run] = await rows(database, AgentRun)
    assert run.feedback == "negative"
    assert run.feedback_at is not None


async def test_another_users_threads_and_items_are_not_found_and_unchanged(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(echo_model()) as client:
        events = await stream(
            client,
            "alice",
            ThreadsCreateReq(params=ThreadCreateParams(input=user_input("private"))),
        )
        thread_id = created_thread(events)
        user_item = next(e.item.id for e in events if isinstance(e, ThreadItemDoneEvent))
        answer = [e.item.id for e in events if isinstance(e, ThreadItemDoneEvent)][-1]
        before = [(m.id, m.content, m.deleted_at) for m in await rows(database, Message)]
        json_ops: list[BaseModel] = [
            ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread_id)),
            ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title="pwned")),
            ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=thread_id)),
            ItemsListReq(params=ItemsListParams(thread_id=thread_id)),
            ItemsFeedbackReq(
                params=ItemFeedbackParams(thread_id=thread_id, item_ids=[answer], kind="negative")
            ),
        ]
        statuses = [(await post(client, "bob", op)).status_code for op in json_ops]
        streamed_ops: list[BaseModel] = [
            ThreadsAddUserMessageReq(
                params=ThreadAddUserMessageParams(thread_id=thread_id, input=user_input("hi"))
            ),
            ThreadsRetryAfterItemReq(
                params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=user_item)
            ),
        ]
        streamed = [await post(client, "bob", op) for op in streamed_ops]
        bobs_threads = Page[Thread].model_validate_json(
            (await post(client, "bob", ThreadsListReq(params=ThreadListParams()))).content
        )
    assert statuses == [404] * len(json_ops)
    for response in streamed:
        assert "private" not in response.text
        assert "echo" not in response.text
        assert not any(
            isinstance(EVENTS.validate_json(c.removeprefix("data: ")), ThreadItemUpdatedEvent)
            for c in response.text.split("\n\n")
            if c.startswith("data: ")
        )
    assert bobs_threads.data == []
    assert [(m.id, m.content, m.deleted_at) for m in await rows(database, Message)] == before
    [conversation] = await rows(database, Conversation)
    assert (conversation.title, conversation.deleted_at) == ("private", None)
    assert all(run.feedback is None for run in await rows(database, AgentRun))


async def test_item_ids_stay_unique_when_the_model_repeats_a_placeholder_id(
    chat_client: AppFactory, database: Database
) -> None:
    def placeholder(model_call: ModelCall) -> Any:
        return [assistant_message("same id again", item_id="__fake_id__")]

    model = ScriptedModel([ModelStep.respond(placeholder) for _ in range(6)])
    async with chat_client(model) as client:
        events = await stream(
            client, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=user_input("1")))
        )
        thread_id = created_thread(events)
        for number in range(2, 7):
            await stream(
                client,
                "alice",
                ThreadsAddUserMessageReq(
                    params=ThreadAddUserMessageParams(
                        thread_id=thread_id, input=user_input(str(number))
                    )
                ),
            )
    item_ids = [m.item_id for m in await rows(database, Message)]
    assert len(item_ids) == 12
    assert len(set(item_ids)) == 12
    assert "__fake_id__" not in item_ids


async def test_over_limit_message_is_refused_before_any_model_call(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([])
    async with chat_client(model) as client:
        events = await stream(
            client,
            "alice",
            ThreadsCreateReq(params=ThreadCreateParams(input=user_input("x" * 4001))),
        )
        unauthenticated = await client.post("/chatkit", content=b"{}")
        garbage = await client.post("/chatkit", content=b"{not json", headers=auth("alice"))
    assert any(isinstance(e, ErrorEvent) for e in events)
    assert len(model.calls) == 0
    assert await rows(database, Message) == []
    assert unauthenticated.status_code == 401
    assert garbage.status_code == 422


async def test_cancelled_stream_keeps_the_partial_reply_and_releases_the_lease(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    async def slow_events(model_call: ModelCall) -> AsyncIterator[Any]:
        from agents.testing.model import _stream_events_for_step

        step = ModelStep(output=[assistant_message("partial reply that is long", item_id="m1")])
        for event in _stream_events_for_step(step, preserve_raw_usage=False):
            yield event
            await asyncio.sleep(0.05)

    model = ScriptedModel([ModelStep.stream(slow_events), reply("after cancel")])
    app = create_app(chat_settings(tmp_path, database_url, mcp_url), model=model)
    async with LifespanManager(app):
        request = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("tell me")))
        context = ChatKitContext(user_id="alice", zone=__import__("zoneinfo").ZoneInfo("UTC"))
        result = await app.state.chatkit.process(request.model_dump_json().encode(), context)
        assert isinstance(result, StreamingResult)
        seen: list[ThreadStreamEvent] = []
        first_delta = asyncio.Event()

        async def read() -> None:
            async for chunk in result:
                event = EVENTS.validate_json(chunk.removeprefix(b"data: "))
                seen.append(event)
                if isinstance(event, ThreadItemUpdatedEvent) and event.update.type == (
                    "assistant_message.content_part.text_delta"
                ):
                    first_delta.set()

        reader = asyncio.create_task(read())
        await asyncio.wait_for(first_delta.wait(), timeout=20)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    [run] = await rows(database, AgentRun)
    assert (run.status, run.error_code) == ("failed", "cancelled")
    messages = await rows(database, Message)
    assert messages[-1].role == "assistant"
    assert messages[-1].content
    assert "partial reply that is long".startswith(messages[-1].content)
    [conversation] = await rows(database, Conversation)
    assert conversation.lease_owner is None
