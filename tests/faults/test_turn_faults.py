"""Real faults in the middle of a chat turn: the database stopped, the MCP server killed.

Each leaves no false success, no duplicate effect and no conversation locked once the
failed part is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from agents.testing import ModelCall, ModelStep, ScriptedModel
from asgi_lifespan import LifespanManager
from chatkit.types import ErrorEvent, ThreadCreateParams, ThreadsCreateReq
from sqlalchemy import select
from sqlmodel import col

from backend.db import Database
from backend.main import create_app
from backend.models import AgentRun, Conversation, Message, Task
from tests.chat.conftest import call, reply
from tests.chat.test_chatkit import EVENTS, user_input
from tests.conftest import auth, make_settings
from tests.faults.support import McpServerProcess, PostgresCluster, SpawnMcpServer


@asynccontextmanager
async def api(
    tmp_path: Path, database_url: str, mcp: McpServerProcess, model: ScriptedModel
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, database_url, **mcp.settings_overrides())
    app = create_app(settings, model=model)
    async with LifespanManager(app, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as client:
            yield client


async def say(client: httpx.AsyncClient, message: str, **extra: Any) -> httpx.Response:
    return await client.post(
        "/api/alice/chat", json={"message": message, **extra}, headers=auth("alice")
    )


async def rows(database: Database, model: Any) -> list[Any]:
    async with database.session_scope() as session:
        return list((await session.scalars(select(model).order_by(col(model.id)))).all())


async def eventually(check: Callable[[], Any], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            if await check():
                return
        except Exception:  # noqa: S110 - the database may still be coming back
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.2)


def saw_tool_output(model_call: ModelCall) -> bool:
    return any(
        isinstance(i, dict) and i.get("type") == "function_call_output" for i in model_call.input
    )


async def test_database_stopped_before_the_reply_is_stored_gives_503_then_recovers(
    tmp_path: Path, private_postgres: PostgresCluster, spawn_mcp_server: SpawnMcpServer
) -> None:
    mcp = spawn_mcp_server(private_postgres.url)

    async def stop_database_then_answer(model_call: ModelCall) -> Any:
        await private_postgres.astop("fast")
        return reply("Added 'Call the bank'.")

    model = ScriptedModel(
        [call("add_task", {"title": "Call the bank"}), ModelStep.respond(stop_database_then_answer)]
    )
    database = Database(private_postgres.url)
    try:
        async with api(tmp_path, private_postgres.url, mcp, model) as client:
            failed = await say(client, "remind me to call the bank", client_message_id="b-1")
            assert failed.status_code == 503, failed.text
            assert failed.json()["code"] == "database_unavailable"
            while_down = await say(client, "remind me to call the bank", client_message_id="b-1")
            assert while_down.status_code == 503
            assert while_down.json()["code"] == "database_unavailable"

            await private_postgres.astart()

            async def closed() -> bool:
                [run] = await rows(database, AgentRun)
                [conversation] = await rows(database, Conversation)
                return run.status == "succeeded" and conversation.lease_owner is None

            await eventually(closed)
            retried = await say(client, "remind me to call the bank", client_message_id="b-1")
            assert retried.status_code == 200, retried.text
            assert retried.json()["response"] == "Added 'Call the bank'."
            conversation_id = retried.json()["conversation_id"]
            next_turn_model_calls = len(model.calls)
            assert next_turn_model_calls == 2  # the retry ran nothing
        assert [t.title for t in await rows(database, Task)] == ["Call the bank"]
        messages = await rows(database, Message)
        assert [(m.role, m.content) for m in messages] == [
            ("user", "remind me to call the bank"),
            ("assistant", "Added 'Call the bank'."),
        ]
        assert messages[0].conversation_id == conversation_id
    finally:
        await database.dispose()


async def test_mcp_server_killed_mid_turn_is_503_and_the_retry_does_not_repeat_the_add(
    tmp_path: Path, private_postgres: PostgresCluster, spawn_mcp_server: SpawnMcpServer
) -> None:
    mcp = spawn_mcp_server(private_postgres.url)

    async def kill_tools_then_call_again(model_call: ModelCall) -> Any:
        mcp.kill()
        return call("list_tasks", {})

    def finish_if_already_added(model_call: ModelCall) -> Any:
        if saw_tool_output(model_call):
            return reply("Added 'Water plants'.")
        return call("add_task", {"title": "Water plants"})

    model = ScriptedModel(
        [
            call("add_task", {"title": "Water plants"}),
            ModelStep.respond(kill_tools_then_call_again),
            ModelStep.respond(finish_if_already_added),
        ]
    )
    database = Database(private_postgres.url)
    try:
        async with api(tmp_path, private_postgres.url, mcp, model) as client:
            failed = await say(client, "add water plants", client_message_id="w-1")
            assert failed.status_code == 503, failed.text
            assert failed.json()["code"] == "tools_unavailable"
            [conversation] = await rows(database, Conversation)
            assert conversation.lease_owner is None
            await mcp.astart()
            retried = await say(client, "add water plants", client_message_id="w-1")
        assert retried.status_code == 200, retried.text
        assert retried.json()["response"] == "Added 'Water plants'."
        assert [t.title for t in await rows(database, Task)] == ["Water plants"]
        runs = await rows(database, AgentRun)
        assert [(r.status, r.error_code) for r in runs] == [
            ("failed", "tools_unavailable"),
            ("succeeded", None),
        ]
    finally:
        await database.dispose()


async def test_streamed_turns_report_the_outage_as_an_error_never_as_done(
    tmp_path: Path, private_postgres: PostgresCluster, spawn_mcp_server: SpawnMcpServer
) -> None:
    """SSE and ChatKit: the database stops before the reply is stored → an error event."""
    mcp = spawn_mcp_server(private_postgres.url)

    async def stop_database_then_answer(model_call: ModelCall) -> Any:
        await private_postgres.astop("fast")
        return reply("Done.")

    model = ScriptedModel(
        [
            ModelStep.respond(stop_database_then_answer),
            ModelStep.respond(stop_database_then_answer),
        ]
    )
    database = Database(private_postgres.url)
    try:
        async with api(tmp_path, private_postgres.url, mcp, model) as client:
            sse = await client.post(
                "/api/alice/chat",
                json={"message": "hello"},
                headers={**auth("alice"), "Accept": "text/event-stream"},
            )
            kinds = [
                line.removeprefix("event: ").strip()
                for line in sse.text.splitlines()
                if line.startswith("event: ")
            ]
            assert kinds[-1] == "error", sse.text
            assert "done" not in kinds
            assert '"code": "database_unavailable"' in sse.text

            await private_postgres.astart()
            created = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi there")))
            chatkit = await client.post(
                "/chatkit", content=created.model_dump_json().encode(), headers=auth("alice")
            )
            events = [
                EVENTS.validate_json(chunk.removeprefix("data: "))
                for chunk in chatkit.text.split("\n\n")
                if chunk.startswith("data: ")
            ]
            errors = [e for e in events if isinstance(e, ErrorEvent)]
            assert errors, chatkit.text
            assert errors[-1].allow_retry is True
            await private_postgres.astart()

            async def all_closed() -> bool:
                runs = await rows(database, AgentRun)
                conversations = await rows(database, Conversation)
                # The SSE turn is recorded as it ended; the ChatKit stream is torn down by
                # ChatKit itself (its thread save fails), which cancels the turn: either
                # way every run is closed and no conversation stays locked.
                return (
                    len(runs) == 2
                    and runs[0].status == "succeeded"
                    and runs[1].status != "running"
                    and all(c.lease_owner is None for c in conversations)
                )

            try:
                await eventually(all_closed)
            except AssertionError:
                runs = [(r.status, r.error_code) for r in await rows(database, AgentRun)]
                leases = [c.lease_owner for c in await rows(database, Conversation)]
                raise AssertionError(f"runs={runs} leases={leases}") from None
    finally:
        await database.dispose()


async def test_an_outage_under_load_leaves_no_false_success_duplicate_or_lock(
    tmp_path: Path, private_postgres: PostgresCluster, spawn_mcp_server: SpawnMcpServer
) -> None:
    """Six turns in flight, each past its tool call, when the database stops for ~2 s:
    every one answers 503, none is lost, repeated or left holding its conversation."""
    turns = 6
    mcp = spawn_mcp_server(private_postgres.url)
    all_called = asyncio.Event()
    outage_over = asyncio.Event()
    called = 0

    async def answer(model_call: ModelCall) -> Any:
        nonlocal called
        if not saw_tool_output(model_call):
            user = [i for i in model_call.input if isinstance(i, dict) and i.get("role") == "user"]
            return call("add_task", {"title": str(user[-1]["content"])})
        if outage_over.is_set():
            return reply("Added it.")  # a retry that had to run again
        called += 1
        if called == turns:  # every turn has made its tool call: now the database goes
            await private_postgres.astop("immediate")
            all_called.set()
        await all_called.wait()
        return reply("Added it.")

    model = ScriptedModel([ModelStep.respond(answer) for _ in range(4 * turns)])
    database = Database(private_postgres.url)
    try:
        async with api(tmp_path, private_postgres.url, mcp, model) as client:
            requests = [
                asyncio.create_task(say(client, f"task {n}", client_message_id=f"load-{n}"))
                for n in range(turns)
            ]
            answers = await asyncio.gather(*requests)
            await asyncio.sleep(2)
            await private_postgres.astart()
            outage_over.set()

            assert [r.status_code for r in answers] == [503] * turns
            assert {r.json()["code"] for r in answers} == {"database_unavailable"}

            async def settled() -> bool:
                runs = await rows(database, AgentRun)
                conversations = await rows(database, Conversation)
                return all(r.status != "running" for r in runs) and all(
                    c.lease_owner is None for c in conversations
                )

            await eventually(settled)
            retries = [
                await say(client, f"task {n}", client_message_id=f"load-{n}") for n in range(turns)
            ]
        assert [r.status_code for r in retries] == [200] * turns
        # The retries were answered from the records the outage delayed: nothing ran again.
        assert all(r.json()["response"] == "Added it." for r in retries)
        assert len(model.calls) == 2 * turns
        titles = sorted(t.title for t in await rows(database, Task))
        assert titles == sorted(f"task {n}" for n in range(turns))  # no duplicate effect
    finally:
        await database.dispose()
