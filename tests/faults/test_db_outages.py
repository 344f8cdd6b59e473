"""PostgreSQL-only database behaviour: a killed backend is an outage (503), not a bug
(500); two writers of one conversation never clash on `seq`."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from backend.chat import service as chat_service
from backend.db import Database, is_database_unavailable
from backend.models import Conversation
from tests.faults.support import PostgresCluster


async def test_a_terminated_backend_mid_session_is_unavailable(
    private_postgres: PostgresCluster,
) -> None:
    victim, admin = Database(private_postgres.url), Database(private_postgres.url)
    try:
        async with victim.engine.connect() as connection:
            pid: int = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with admin.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(text("SELECT 1"))
    finally:
        await victim.dispose()
        await admin.dispose()

    assert is_database_unavailable(raised.value)


async def test_two_writers_of_one_conversation_never_pick_the_same_seq(
    private_postgres: PostgresCluster,
) -> None:
    """A reply being stored and a ChatKit message arriving at once, on PostgreSQL."""
    database = Database(private_postgres.url)
    try:
        async with database.session_scope(write=True) as session:
            conversation = await chat_service.create_conversation(session, "alice", "t")
            await chat_service.store_user_message(session, "alice", conversation, "one")
        conversation_id = conversation.id or 0
        reply_flushed, let_reply_commit = asyncio.Event(), asyncio.Event()

        async def store_reply() -> None:
            async with database.session_scope(write=True) as session:
                await chat_service.add_message(
                    session, conversation_id, "alice", "assistant", "reply"
                )
                reply_flushed.set()
                await let_reply_commit.wait()

        async def store_other_tab_message() -> None:
            await reply_flushed.wait()
            asyncio.get_running_loop().call_later(0.3, let_reply_commit.set)
            async with database.session_scope(write=True) as session:
                found = await session.get(Conversation, conversation_id)
                assert found is not None
                await chat_service.store_user_message(session, "alice", found, "two")

        await asyncio.gather(store_reply(), store_other_tab_message())
        async with database.session_scope() as session:
            messages = await chat_service.list_messages(session, conversation_id)
        assert [(m.seq, m.content) for m in messages] == [(1, "one"), (2, "reply"), (3, "two")]
    finally:
        await database.dispose()
