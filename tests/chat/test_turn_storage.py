"""A turn's storage: the history comes back with the turn start, in few lean statements, and
the look-ups a turn makes stay on their indexes however long the conversation grows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.chat import service as chat_service
from backend.chat.history import to_input_items
from backend.chat.service import TurnRecord, TurnStart
from backend.clock import Clock, utc_now
from backend.db import Database
from backend.models import AgentRun, Conversation, Message

LIMIT = 6
CALL = {"call_id": "c1", "name": "add_task", "arguments": {"title": "milk"}, "result": {"id": 1}}


async def _begin(
    session: AsyncSession,
    message: str,
    conversation_id: int | None = None,
    client_message_id: str | None = None,
    history_limit: int | None = LIMIT,
) -> TurnStart:
    return await chat_service.begin_turn(
        session,
        "alice",
        conversation_id=conversation_id,
        message=message,
        client_message_id=client_message_id,
        model_name="scripted",
        lease_seconds=300,
        history_limit=history_limit,
    )


def _record(
    reply: str | None = "Done.", tool_calls: list[dict[str, Any]] | None = None
) -> TurnRecord:
    return TurnRecord(
        status="succeeded",
        reply=reply,
        tool_calls=tool_calls or [],
        latency_ms=7,
        model_calls=1,
        input_tokens=None,
        output_tokens=None,
    )


async def _turn(
    database: Database, message: str, conversation_id: int | None = None, answered: bool = True
) -> int:
    record = _record(tool_calls=[CALL]) if answered else _record(reply=None)
    async with database.session_scope(write=True) as session:
        start = await _begin(session, message, conversation_id)
    async with database.session_scope(write=True) as session:
        assert await chat_service.finish_turn(session, "alice", start, record)
    return start.conversation_id


async def _expected(database: Database, start: TurnStart, limit: int = LIMIT) -> list[Any]:
    """What recent_messages says for this turn, read afterwards in a transaction of its own."""
    async with database.session_scope() as session:
        messages = await chat_service.recent_messages(
            session, start.conversation_id, limit, answering_seq=start.user_seq
        )
    return [(m.role, m.content, m.tool_calls, m.deleted_at) for m in messages]


def _got(start: TurnStart) -> list[Any]:
    assert start.history is not None
    return [tuple(row) for row in start.history]


async def test_a_fresh_turn_gets_recent_messages_answer_with_its_start(database: Database) -> None:
    async with database.session_scope(write=True) as session:
        first = await _begin(session, "hello")
    assert _got(first) == [("user", "hello", None, None)] == await _expected(database, first)
    async with database.session_scope(write=True) as session:
        await chat_service.finish_turn(session, "alice", first, _record(tool_calls=[CALL]))
    conversation_id = first.conversation_id
    for n in range(5):  # past the history length: the newest messages, oldest first
        await _turn(database, f"turn {n}", conversation_id)

    async with database.session_scope(write=True) as session:
        start = await _begin(session, "latest", conversation_id)

    got = _got(start)
    assert len(got) == LIMIT
    assert got[-1] == ("user", "latest", None, None)
    assert got[-2] == ("assistant", "Done.", [CALL], None)
    assert got == await _expected(database, start)
    assert to_input_items(start.history or ()) == to_input_items(
        await _messages(database, start, LIMIT)
    )


async def _messages(database: Database, start: TurnStart, limit: int) -> list[Message]:
    async with database.session_scope() as session:
        return await chat_service.recent_messages(
            session, start.conversation_id, limit, answering_seq=start.user_seq
        )


async def test_a_start_asked_for_no_history_reads_none(database: Database) -> None:
    async with database.session_scope(write=True) as session:
        start = await _begin(session, "hello", history_limit=None)
    assert start.history is None


async def test_a_retry_after_an_abandoned_run_sees_the_calls_it_journaled(
    database: Database, clock: Clock
) -> None:
    conversation_id = await _turn(database, "first")
    async with database.session_scope(write=True) as session:
        dying = await _begin(session, "add milk", conversation_id, client_message_id="k-1")
        await chat_service.journal_tool_calls(session, dying.run_id, [CALL])
    clock.advance(timedelta(seconds=301))  # its process died: the lease lapses

    async with database.session_scope(write=True) as session:
        retry = await _begin(session, "add milk", conversation_id, client_message_id="k-1")

    assert (retry.user_message_id, retry.user_seq) == (dying.user_message_id, dying.user_seq)
    got = _got(retry)
    assert got[-2:] == [("user", "add milk", None, None), ("assistant", "", [CALL], None)]
    assert got == await _expected(database, retry)
    async with database.session_scope() as session:
        run = await session.get(AgentRun, dying.run_id)
    assert run is not None
    assert (run.status, run.error_code) == ("failed", "abandoned")


async def test_answering_a_stored_message_again_hides_later_answers_but_keeps_their_calls(
    database: Database,
) -> None:
    conversation_id = await _turn(database, "one")
    await _turn(database, "two", conversation_id)
    async with database.session_scope() as session:
        one = (
            await session.scalars(
                select(Message).where(col(Message.content) == "one", col(Message.role) == "user")
            )
        ).one()

    async with database.session_scope(write=True) as session:
        start = await chat_service.answer_stored_message(
            session,
            "alice",
            conversation_id,
            one.item_id,
            model_name="scripted",
            lease_seconds=300,
            channel="chatkit",
            history_limit=LIMIT,
        )

    got = _got(start)
    # The answers after "one" are hidden now (to_input_items keeps only their calls), and
    # so is the later user message.
    assert [(role, content, hidden is not None) for role, content, _, hidden in got] == [
        ("user", "one", False),
        ("assistant", "Done.", True),
        ("assistant", "Done.", True),
    ]
    assert got == await _expected(database, start)


async def test_many_hidden_messages_send_the_history_read_further_back(
    database: Database,
) -> None:
    conversation_id = await _turn(database, "kept")
    for n in range(LIMIT // 2):
        await _turn(database, f"kept {n}", conversation_id)
    for n in range(3 * LIMIT):  # replaced user messages, newer than everything kept
        await _turn(database, f"replaced {n}", conversation_id, answered=False)
    async with database.session_scope(write=True) as session:
        await session.execute(
            update(Message)
            .where(col(Message.content).startswith("replaced"))
            .values(deleted_at=utc_now())
        )

    async with database.session_scope(write=True) as session:
        start = await _begin(session, "now", conversation_id)

    got = _got(start)
    assert len(got) == LIMIT
    assert [content for _, content, _, _ in got] == [
        "Done.",
        "kept 1",
        "Done.",
        "kept 2",
        "Done.",
        "now",
    ]
    assert got == await _expected(database, start)


async def test_a_run_closed_meanwhile_gets_no_reply_and_frees_the_conversation(
    database: Database,
) -> None:
    async with database.session_scope(write=True) as session:
        start = await _begin(session, "hello")
    async with database.session_scope(write=True) as session:
        await chat_service.close_abandoned_runs(session, col(AgentRun.id) == start.run_id)

    async with database.session_scope(write=True) as session:
        kept = await chat_service.finish_turn(session, "alice", start, _record())

    assert kept is False
    async with database.session_scope() as session:
        roles = list(await session.scalars(select(col(Message.role))))
        conversation = await session.get(Conversation, start.conversation_id)
    assert roles == ["user"]
    assert conversation is not None
    assert conversation.lease_owner is None


@contextmanager
def _statements(database: Database) -> Iterator[list[str]]:
    """The SQL sent to the database inside the block (transaction control left out)."""
    seen: list[str] = []

    def record(_c: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def test_a_turn_is_stored_in_nine_statements(database: Database) -> None:
    conversation_id = await _turn(database, "first")
    with _statements(database) as begun:
        async with database.session_scope(write=True) as session:
            start = await _begin(session, "again", conversation_id, client_message_id="k-2")
    with _statements(database) as finished:
        async with database.session_scope(write=True) as session:
            await chat_service.finish_turn(session, "alice", start, _record(tool_calls=[CALL]))

    # The key look-up, the lease, the running runs, the message, the run, the history.
    assert len(begun) == 6, begun
    # The lease, the reply, the run.
    assert len(finished) == 3, finished


async def _plan(session: AsyncSession, statement: str, params: Any, postgres: bool) -> str:
    """The plan of a statement as the driver sent it."""
    if postgres:
        # A generic plan is what a prepared statement settles on after a few runs; the
        # test tables are too small for an index to beat a sequential scan otherwise.
        await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await session.execute(text("SET LOCAL enable_seqscan = off"))
    connection = await session.connection()
    explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
    rows = await connection.exec_driver_sql(explain + statement, params)
    return "\n".join(str(row[-1]) for row in rows)


async def test_a_turn_start_finds_running_runs_and_history_on_their_indexes(
    database: Database, is_postgres: bool
) -> None:
    conversation_id = await _turn(database, "first")
    captured: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, statement: str, params: Any, *_args: Any) -> None:
        captured.append((statement, params))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with database.session_scope(write=True) as session:
            await _begin(session, "again", conversation_id)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)
    [(running, running_params)] = [(s, p) for s, p in captured if s.startswith("UPDATE agent_run")]
    [(history, history_params)] = [
        (s, p) for s, p in captured if s.startswith("SELECT message.role")
    ]

    async with database.session_scope(write=True) as session:
        running_plan = await _plan(session, running, running_params, is_postgres)
    async with database.session_scope() as session:
        history_plan = await _plan(session, history, history_params, is_postgres)

    assert "ix_agent_run_running" in running_plan, running_plan
    # A range of the (conversation_id, seq) index read in its order: no sort, whatever the
    # planner knows of the table. (SQLite names the unique constraint's index itself.)
    if is_postgres:
        assert "Index Scan Backward using uq_message_conversation_id_seq" in history_plan
        assert "Sort" not in history_plan, history_plan
    else:
        assert "USING INDEX sqlite_autoindex_message" in history_plan, history_plan
        assert "(conversation_id=? AND seq>? AND seq<?)" in history_plan, history_plan
        assert "TEMP B-TREE" not in history_plan, history_plan
