"""A turn never reports a success it did not keep, never repeats an effect, answers its own
message, and stays within its limits on agency — whatever the model does."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from agents.items import TResponseOutputItem
from agents.testing import ModelCall, ModelStep, ScriptedModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.chat import service as chat_service
from backend.chat.service import TurnRecord, TurnStart
from backend.clock import Clock
from backend.db import Database
from backend.models import AgentRun, Conversation, Message, Task
from tests.chat.conftest import AppFactory, call, echo_model, reply, until_a_turn_runs
from tests.conftest import auth


async def _say(client: httpx.AsyncClient, user: str, message: str, **extra: Any) -> httpx.Response:
    return await client.post(
        f"/api/{user}/chat", json={"message": message, **extra}, headers=auth(user)
    )


async def _rows(database: Database, model: Any) -> list[Any]:
    async with database.session_scope() as session:
        return list((await session.scalars(select(model).order_by(col(model.id)))).all())


async def _seed_tasks(database: Database, user_id: str, count: int) -> list[int]:
    async with database.session_scope(write=True) as session:
        tasks = [Task(user_id=user_id, title=f"Task {n}") for n in range(count)]
        session.add_all(tasks)
        await session.flush()
        return [task.id or 0 for task in tasks]


async def _begin(
    session: AsyncSession, message: str, client_message_id: str | None = None
) -> TurnStart:
    """A turn begun straight through the service, as a process that then dies would."""
    return await chat_service.begin_turn(
        session,
        "alice",
        conversation_id=None,
        message=message,
        client_message_id=client_message_id,
        model_name="scripted",
        lease_seconds=300,
    )


def calls_in_one_response(name: str, arguments: list[dict[str, Any]]) -> list[TResponseOutputItem]:
    items: list[TResponseOutputItem] = []
    for each in arguments:
        items += call(name, each)
    return items


# --- idempotency --------------------------------------------------------------------------


async def test_a_client_message_id_reused_for_another_message_is_refused(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([reply("Hi."), reply("never used")])
    async with chat_client(model) as client:
        first = await _say(client, "alice", "hello", client_message_id="k-1")
        reused = await _say(client, "alice", "delete everything", client_message_id="k-1")
    assert first.status_code == 200
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    assert len(model.calls) == 1
    assert [m.content for m in await _rows(database, Message)] == ["hello", "Hi."]


async def test_a_duplicate_of_a_turn_in_flight_on_an_existing_conversation_is_in_progress(
    chat_client: AppFactory, database: Database
) -> None:
    async with chat_client(echo_model(delay=3.0)) as client:
        opened = await _say(client, "alice", "first")
        conversation_id = opened.json()["conversation_id"]
        body = {"conversation_id": conversation_id, "client_message_id": "dup-1"}
        running = asyncio.create_task(_say(client, "alice", "second", **body))
        await until_a_turn_runs(database)
        duplicate = await _say(client, "alice", "second", **body)
        first_answer = await running
    assert first_answer.status_code == 200
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "turn_in_progress"


async def test_retrying_an_older_failed_turn_after_a_later_one_is_refused(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel(
        [
            RuntimeError("provider down"),
            call("add_task", {"title": "Buy eggs"}),
            reply("Added 'Buy eggs'."),
            reply("never used"),
        ]
    )
    async with chat_client(model) as client:
        failed = await _say(client, "alice", "add milk", client_message_id="m1")
        assert failed.status_code == 502
        messages = await _rows(database, Message)
        conversation_id = messages[0].conversation_id
        later = await _say(
            client, "alice", "add eggs", client_message_id="m2", conversation_id=conversation_id
        )
        assert later.status_code == 200, later.text
        retried = await _say(client, "alice", "add milk", client_message_id="m1")
    assert retried.status_code == 409
    assert retried.json()["code"] == "turn_outdated"
    assert len(model.calls) == 3  # the retry ran nothing
    assert [t.title for t in await _rows(database, Task)] == ["Buy eggs"]
    [conversation] = await _rows(database, Conversation)
    assert conversation.lease_owner is None


async def test_a_retry_sees_its_own_message_last_even_when_later_messages_exist(
    database: Database,
) -> None:
    """The history of a turn ends before the next user message (ChatKit stores a message
    before it is answered, so a later one may already be there)."""
    async with database.session_scope(write=True) as session:
        conversation = await chat_service.create_conversation(session, "alice", "t")
        first = await chat_service.store_user_message(session, "alice", conversation, "one")
        await chat_service.add_message(
            session, conversation.id or 0, "alice", "assistant", "", tool_calls=[]
        )
        await chat_service.store_user_message(session, "alice", conversation, "two")
    async with database.session_scope() as session:
        history = await chat_service.recent_messages(
            session, conversation.id or 0, 40, answering_seq=first.seq
        )
    assert [(m.role, m.content) for m in history] == [("user", "one"), ("assistant", "")]


# --- limits on agency ---------------------------------------------------------------------


async def test_one_response_deleting_everything_stops_at_the_destructive_cap(
    chat_client: AppFactory, database: Database
) -> None:
    task_ids = await _seed_tasks(database, "alice", 30)
    deletes = calls_in_one_response("delete_task", [{"task_id": i} for i in task_ids])
    model = ScriptedModel([deletes, reply("Deleted them all.")])
    async with chat_client(model, chat_max_destructive_calls=5) as client:
        response = await _say(client, "alice", "delete all my tasks", client_message_id="d-1")
        again = await _say(client, "alice", "delete all my tasks", client_message_id="d-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "I stopped" in body["response"]
    assert again.json() == body  # the stored answer; nothing runs twice
    deleted = [t for t in await _rows(database, Task) if t.deleted_at is not None]
    assert len(deleted) == 5
    done = [c for c in body["tool_calls"] if not c["is_error"]]
    refused = [c for c in body["tool_calls"] if c["is_error"]]
    assert len(done) == 5
    assert all("destructive_call_limit" in c["result"] for c in refused)
    assert len(model.calls) == 1  # stopped before asking the model again
    [run] = await _rows(database, AgentRun)
    assert (run.status, run.error_code) == ("stopped", "destructive_call_limit")
    assert run.model_calls == 1


async def test_too_many_tool_calls_in_a_turn_stop_at_the_cap(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel(
        [ModelStep.respond(lambda c: calls_in_one_response("list_tasks", [{}] * 3))] * 5
    )
    async with chat_client(model, chat_max_tool_calls=7, agent_max_turns=10) as client:
        response = await _say(client, "alice", "look again and again")
    assert response.status_code == 200, response.text
    ran = [c for c in response.json()["tool_calls"] if not c["is_error"]]
    assert len(ran) == 7
    [run] = await _rows(database, AgentRun)
    assert (run.status, run.error_code) == ("stopped", "tool_call_limit")
    assert run.model_calls == 3


async def test_oversized_tool_arguments_are_a_tool_error_the_model_sees(
    chat_client: AppFactory, database: Database
) -> None:
    seen: list[str] = []

    def answer(model_call: ModelCall) -> Any:
        outputs = [
            i["output"]
            for i in model_call.input
            if isinstance(i, dict) and i.get("type") == "function_call_output"
        ]
        seen.extend(str(o) for o in outputs)
        return reply("That was too long; I added nothing.")

    huge = {"title": "Notes", "description": "x" * 70_000}
    model = ScriptedModel([call("add_task", huge), ModelStep.respond(answer)])
    async with chat_client(model) as client:
        response = await _say(client, "alice", "add a task with my whole diary")
    assert response.status_code == 200, response.text
    [tool_call] = response.json()["tool_calls"]
    assert tool_call["is_error"] is True
    assert "arguments_too_large" in tool_call["result"]
    assert any("arguments_too_large" in text for text in seen)
    assert await _rows(database, Task) == []


# --- what a failed run records --------------------------------------------------------------


async def test_a_run_stopped_at_max_turns_records_its_model_calls_and_tokens(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([ModelStep.respond(lambda c: call("list_tasks", {})) for _ in range(5)])
    async with chat_client(model, agent_max_turns=3) as client:
        response = await _say(client, "alice", "loop forever")
    assert response.json()["code"] == "max_turns_exceeded"
    [run] = await _rows(database, AgentRun)
    assert run.model_calls == 3


async def test_an_empty_model_answer_is_a_model_error_not_a_success(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([reply("")])
    async with chat_client(model) as client:
        response = await _say(client, "alice", "hello")
    assert response.status_code == 502
    assert response.json()["code"] == "model_error"
    [run] = await _rows(database, AgentRun)
    assert (run.status, run.error_code) == ("failed", "model_error")
    assert run.model_calls == 1


# --- runs whose process died ----------------------------------------------------------------


async def test_a_dead_turns_journaled_tool_calls_are_kept_when_its_run_is_closed(
    chat_client: AppFactory, database: Database, clock: Clock
) -> None:
    """A process that dies after a tool call: the next turn closes its run and stores the
    journaled call, so the retry's model sees it and does not repeat it."""
    journaled = [
        {
            "call_id": "call_1",
            "name": "add_task",
            "arguments": {"title": "Water plants"},
            "result": {"task_id": 1, "status": "created"},
            "is_error": False,
            "duration_ms": 3,
        }
    ]
    async with database.session_scope(write=True) as session:
        start = await _begin(session, "add water plants", "w-1")
        await chat_service.journal_tool_calls(session, start.run_id, journaled)
    clock.advance(timedelta(seconds=301))  # the dead process's lease lapses

    def answer(model_call: ModelCall) -> Any:
        done = any(
            isinstance(i, dict) and i.get("type") == "function_call_output"
            for i in model_call.input
        )
        return reply("Added it.") if done else call("add_task", {"title": "Water plants"})

    model = ScriptedModel([ModelStep.respond(answer)])
    async with chat_client(model) as client:
        retried = await _say(client, "alice", "add water plants", client_message_id="w-1")
    assert retried.status_code == 200, retried.text
    assert retried.json()["response"] == "Added it."
    runs = await _rows(database, AgentRun)
    assert [(r.status, r.error_code) for r in runs] == [
        ("failed", "abandoned"),
        ("succeeded", None),
    ]
    messages = await _rows(database, Message)
    assert [m.role for m in messages] == ["user", "assistant", "assistant"]
    assert messages[1].tool_calls == journaled


async def test_start_up_closes_runs_left_running_by_a_dead_process(
    chat_client: AppFactory, database: Database, clock: Clock
) -> None:
    async with database.session_scope(write=True) as session:
        await _begin(session, "hello")
    clock.advance(timedelta(seconds=301))
    async with chat_client(ScriptedModel([])):
        pass
    [run] = await _rows(database, AgentRun)
    assert (run.status, run.error_code) == ("failed", "abandoned")


async def test_a_record_for_a_run_already_closed_stores_nothing(database: Database) -> None:
    async with database.session_scope(write=True) as session:
        start = await _begin(session, "hello")
        await chat_service.abandon_turn(session, start, "cancelled")
    record = TurnRecord("succeeded", "late reply", [], 1, 1, None, None)
    async with database.session_scope(write=True) as session:
        kept = await chat_service.finish_turn(session, "alice", start, record)
    assert kept is False
    assert [m.content for m in await _rows(database, Message)] == ["hello"]
