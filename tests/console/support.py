"""Runs and conversations written straight to the database, as finished turns leave them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.db import Database
from backend.models import AgentRun, Conversation, Message


@dataclass(frozen=True)
class SeededTurn:
    conversation_id: int
    run_id: int
    user_message_id: int
    assistant_message_id: int


async def seed_turn(
    database: Database,
    user_id: str,
    message: str,
    *,
    started_at: datetime,
    reply: str = "Done.",
    status: str = "succeeded",
    model: str = "local",
    channel: str = "chat",
    latency_ms: int | None = 500,
    error_code: str | None = None,
    error_message: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    conversation_id: int | None = None,
    feedback: str | None = None,
    replaced: bool = False,
) -> SeededTurn:
    """One user message, its answer and the run that wrote it."""
    async with database.session_scope(write=True) as session:
        if conversation_id is None:
            conversation = Conversation(user_id=user_id, title=message[:40])
            session.add(conversation)
            await session.flush()
            conversation_id = conversation.id
        assert conversation_id is not None
        seq = started_at.timestamp()  # increasing with time, unique per turn in these tests
        said = Message(
            conversation_id=conversation_id,
            user_id=user_id,
            seq=int(seq),
            role="user",
            content=message,
            created_at=started_at,
        )
        answer = Message(
            conversation_id=conversation_id,
            user_id=user_id,
            seq=int(seq) + 1,
            role="assistant",
            content=reply,
            tool_calls=tool_calls,
            created_at=started_at + timedelta(milliseconds=latency_ms or 0),
            deleted_at=started_at + timedelta(seconds=5) if replaced else None,
        )
        session.add_all([said, answer])
        await session.flush()
        run = AgentRun(
            conversation_id=conversation_id,
            user_id=user_id,
            user_message_id=said.id,
            assistant_message_id=answer.id if status != "running" else None,
            status=status,
            model=model,
            channel=channel,
            error_code=error_code,
            error_message=error_message,
            started_at=started_at,
            finished_at=None if status == "running" else started_at + timedelta(seconds=1),
            latency_ms=None if status == "running" else latency_ms,
            model_calls=2,
            input_tokens=300,
            output_tokens=40,
            feedback=feedback,
        )
        session.add(run)
        await session.flush()
        assert said.id is not None
        assert answer.id is not None
        assert run.id is not None
        return SeededTurn(conversation_id, run.id, said.id, answer.id)


ADD_MILK_CALL = {
    "name": "add_task",
    "arguments": {"title": "Buy milk"},
    "result": {"id": 1, "title": "Buy milk"},
    "is_error": False,
    "duration_ms": 42,
}
