"""A turn never leaves a conversation locked or a run open, whatever interrupts it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agents.testing import ScriptedModel
from asgi_lifespan import LifespanManager
from chatkit.server import StreamingResult
from chatkit.types import (
    ErrorEvent,
    ItemsListParams,
    ItemsListReq,
    ThreadCreateParams,
    ThreadItemDoneEvent,
    ThreadRetryAfterItemParams,
    ThreadsCreateReq,
    ThreadsRetryAfterItemReq,
    ThreadsUpdateReq,
    ThreadUpdateParams,
)
from sqlalchemy import select, update
from sqlmodel import col

from backend.chat import service as chat_service
from backend.chat.chatkit import _guarded
from backend.chat.chatkit_store import ChatKitContext
from backend.chat.service import TurnRecord
from backend.clock import utc_now
from backend.db import Database
from backend.main import create_app
from backend.models import AgentRun, Conversation, Message
from tests.chat.conftest import AppFactory, chat_settings, echo_model, reply
from tests.chat.test_chatkit import created_thread, post, stream, user_input


async def _begin(
    database: Database, conversation_id: int | None, text: str
) -> chat_service.TurnStart:
    async with database.session_scope(write=True) as session:
        return await chat_service.begin_turn(
            session,
            "alice",
            conversation_id=conversation_id,
            message=text,
            client_message_id=None,
            model_name="test",
            lease_seconds=60,
        )


async def test_a_turn_that_lost_its_lease_stores_nothing_and_fails(database: Database) -> None:
    first = await _begin(database, None, "slow question")
    async with database.session_scope(write=True) as session:  # the lease runs out
        await session.execute(
            update(Conversation)
            .where(col(Conversation.id) == first.conversation_id)
            .values(lease_expires_at=utc_now() - timedelta(seconds=1))
        )
    second = await _begin(database, first.conversation_id, "next question")
    record = TurnRecord("succeeded", "late answer", [], 1, 1, None, None)
    async with database.session_scope(write=True) as session:
        kept = await chat_service.finish_turn(session, "alice", first, record)
    async with database.session_scope() as session:
        runs = {r.id: r for r in (await session.scalars(select(AgentRun))).all()}
        contents = [m.content for m in (await session.scalars(select(Message))).all()]
        conversation = await session.get(Conversation, first.conversation_id)
    assert kept is False
    assert (runs[first.run_id].status, runs[first.run_id].error_code) == ("failed", "abandoned")
    assert runs[second.run_id].status == "running"
    assert "late answer" not in contents
    assert conversation is not None
    assert conversation.lease_owner == second.lease_token


async def test_lease_renewal_extends_only_the_owners_lease(database: Database) -> None:
    start = await _begin(database, None, "hello")
    async with database.session_scope() as session:
        before = (await session.get(Conversation, start.conversation_id)).lease_expires_at  # type: ignore[union-attr]
    async with database.session_scope(write=True) as session:
        await chat_service.renew_lease(session, start, 600)
    async with database.session_scope() as session:
        after = (await session.get(Conversation, start.conversation_id)).lease_expires_at  # type: ignore[union-attr]
    assert before is not None
    assert after is not None
    assert after > before + timedelta(seconds=300)


async def test_chatkit_stream_closed_before_the_answer_frees_the_conversation(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    app = create_app(chat_settings(tmp_path, database_url, mcp_url), model=ScriptedModel([]))
    async with LifespanManager(app):
        server = app.state.chatkit
        context = ChatKitContext(user_id="alice", zone=ZoneInfo("UTC"))
        request = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hello")))
        result = await server.process(request.model_dump_json().encode(), context)
        assert isinstance(result, StreamingResult)
        chunks = _guarded(result)
        async for chunk in chunks:
            if b"thread.item.done" in chunk:  # the user message is stored; leave now
                break
        await chunks.aclose()
    async with database.session_scope() as session:
        runs = (await session.scalars(select(AgentRun))).all()
        [conversation] = (await session.scalars(select(Conversation))).all()
        [message] = (await session.scalars(select(Message))).all()
    # The message is stored and nothing holds the conversation: the next turn can answer it.
    assert message.content == "hello"
    assert all(run.status != "running" for run in runs)
    assert conversation.lease_owner is None


async def test_retry_while_another_turn_runs_hides_nothing(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(ScriptedModel([reply("First answer.")])) as client:
        events = await stream(
            client, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi")))
        )
        thread_id = created_thread(events)
        user_item = next(e.item.id for e in events if isinstance(e, ThreadItemDoneEvent))
        async with database.session_scope() as session:
            [conversation] = (await session.scalars(select(Conversation))).all()
        busy = await _begin(database, conversation.id, "another tab")
        retried = await stream(
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
    assert any(isinstance(e, ErrorEvent) and e.allow_retry for e in retried)
    texts = [i["content"][0]["text"] for i in items["data"]]
    assert texts[:2] == ["hi", "First answer."]
    assert busy.lease_token


async def test_a_title_with_nul_is_refused(chat_client: AppFactory, database: Database) -> None:
    async with chat_client(echo_model()) as client:
        events = await stream(
            client, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi")))
        )
        thread_id = created_thread(events)
        response = await post(
            client,
            "alice",
            ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title="a\x00b")),
        )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_title"
    async with database.session_scope() as session:
        [conversation] = (await session.scalars(select(Conversation))).all()
    assert conversation.title == "hi"
