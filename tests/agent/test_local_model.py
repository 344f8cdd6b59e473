"""The offline `local` model: the SDK Model interface, and the utterance table end to end.

The table runs LocalModel inside an `agents.Agent` whose tools are the real MCP server's,
in-process over streamable HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import AsyncIterator, Generator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest
from agents import (
    Agent,
    RawResponsesStreamEvent,
    RunConfig,
    Runner,
    RunResult,
    RunResultStreaming,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ToolCallItem, ToolCallOutputItem, TResponseInputItem
from agents.mcp import MCPServerStreamableHttp
from asgi_lifespan import LifespanManager
from openai.types.responses import ResponseFunctionToolCall
from sqlalchemy import select
from sqlmodel import col
from starlette.applications import Starlette

from backend.agent.instructions import build_instructions
from backend.agent.local.history import as_dict, parse_output, read_conversation
from backend.agent.local_model import LocalModel
from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.clock import Clock
from backend.config import Settings
from backend.db import Database
from backend.events.publishers import NonePublisher
from backend.events.relay import Relay
from backend.models import Task
from backend.tasks import service
from backend.tasks.schemas import TaskCreate, TaskQuery
from mcp_server.server import create_http_app
from tests.agent.scoring import Score, score
from tests.agent.tables import HELDOUT_TABLES, MAIN_TABLE
from tests.agent.utterances import (
    NOW,
    PARIS,
    Case,
    Seed,
    SeenCall,
    StoredTask,
    TurnOutcome,
)
from tests.conftest import make_settings

set_tracing_disabled(True)

BASE_URL = "http://127.0.0.1:8001"
RUN_CONFIG = RunConfig(tracing_disabled=True)


# --- the Model interface, with stand-in tools (no MCP, no database) --------------------------


@function_tool
def add_task(title: str) -> str:
    """Create a task."""
    return json.dumps(
        {"task_id": 7, "id": 7, "title": title, "status": "created", "priority": "medium"}
    )


@function_tool
def list_tasks(status: str = "all") -> str:
    """List tasks."""
    tasks = [{"id": 7, "title": "Buy milk", "completed": False, "priority": "medium", "tags": []}]
    return json.dumps({"tasks": tasks, "total": 1})


def _agent(**overrides: Any) -> Agent[Any]:
    settings: dict[str, Any] = {
        "name": "local",
        "instructions": build_instructions(NOW, ZoneInfo(PARIS)),
        "model": LocalModel(),
        "tools": [add_task, list_tasks],
    }
    settings.update(overrides)
    return Agent(**settings)


async def test_run_makes_the_tool_call_then_confirms() -> None:
    result = await Runner.run(_agent(), "add buy milk", run_config=RUN_CONFIG)
    calls = _function_calls(result.new_items)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("add_task", {"title": "Buy milk"})
    ]
    assert any(isinstance(i, ToolCallOutputItem) for i in result.new_items)
    assert result.final_output == "Added task #7: Buy milk."
    usage = result.context_wrapper.usage
    assert usage.requests == 2
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0


async def test_a_greeting_needs_no_tool() -> None:
    result = await Runner.run(_agent(), "hello", run_config=RUN_CONFIG)
    assert not any(isinstance(i, ToolCallItem) for i in result.new_items)
    assert "Hi!" in str(result.final_output)


async def test_without_task_tools_it_says_so_instead_of_calling() -> None:
    result = await Runner.run(_agent(tools=[]), "add buy milk", run_config=RUN_CONFIG)
    assert "can't reach your task list" in str(result.final_output)


def _check_stream(events: Sequence[Any]) -> list[str]:
    """One response's events are well-formed; returns the item ids it carried."""
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.id == events[0].response.id
    assert final.usage is not None
    ids = []
    for index, item in enumerate(final.output):
        mine = [e for e in events if getattr(e, "output_index", None) == index]
        assert mine[0].type == "response.output_item.added"
        assert mine[-1].type == "response.output_item.done"
        assert mine[-1].item == item
        if item.type == "message":
            deltas = "".join(e.delta for e in mine if e.type == "response.output_text.delta")
            done = next(e for e in mine if e.type == "response.output_text.done")
            assert deltas == done.text == item.content[0].text
            assert [e.type for e in mine[1:2]] == ["response.content_part.added"]
            assert mine[-2].type == "response.content_part.done"
        else:
            arguments = [e for e in mine if e.type.startswith("response.function_call_arguments")]
            assert [e.type for e in arguments] == [
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
            ]
            assert arguments[0].delta == arguments[1].arguments == item.arguments
            ids.append(item.call_id)
        ids.append(item.id)
    return [final.id, *ids]


async def test_streamed_run_emits_well_formed_responses_with_unique_ids() -> None:
    seen_ids: list[str] = []
    for text in ("add milk and eggs", "what's pending?", "hi"):
        streamed = Runner.run_streamed(_agent(), text, run_config=RUN_CONFIG)
        responses: list[list[Any]] = []
        async for event in streamed.stream_events():
            if isinstance(event, RawResponsesStreamEvent):
                if event.data.type == "response.created":
                    responses.append([])
                responses[-1].append(event.data)
        assert streamed.is_complete
        for events in responses:
            seen_ids += _check_stream(events)
        assert isinstance(streamed.final_output, str)
        assert streamed.final_output
    assert len(seen_ids) == len(set(seen_ids)), "ids repeat across responses"


async def test_streamed_parallel_calls_share_one_response() -> None:
    streamed = Runner.run_streamed(_agent(), "add milk and eggs", run_config=RUN_CONFIG)
    firsts = [
        e.data.response
        async for e in streamed.stream_events()
        if isinstance(e, RawResponsesStreamEvent) and e.data.type == "response.completed"
    ]
    assert [[o.type for o in r.output] for r in firsts] == [
        ["function_call", "function_call"],
        ["message"],
    ]
    assert streamed.final_output == "Added task #7: Milk.\nAdded task #7: Eggs."


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the local model touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.usefixtures("no_network")
async def test_never_touches_the_network() -> None:
    result = await Runner.run(
        _agent(), "remind me to call mom tomorrow at 5pm", run_config=RUN_CONFIG
    )
    assert "Call mom" in str(result.final_output)


@pytest.mark.parametrize(
    "output",
    [
        '{"task_id": 3, "title": "Report", "status": "completed"}',
        [
            {
                "type": "input_text",
                "text": '{"task_id": 3, "title": "Report", "status": "completed"}',
            }
        ],
        {"type": "text", "text": '{"task_id": 3, "title": "Report", "status": "completed"}'},
        {"task_id": 3, "title": "Report", "status": "completed"},
        json.dumps({"type": "text", "text": '{"task_id": 3, "title": "Report"}'}),
        json.dumps([{"type": "input_text", "text": '{"task_id": 3, "title": "Report"}'}]),
    ],
)
def test_tool_outputs_are_read_in_every_shape(output: object) -> None:
    result = parse_output("complete_task", {"task_id": 3}, output)
    assert result.ok
    assert result.task_ids() == [3]
    assert result.title() == "Report"


def test_tool_errors_are_read_as_errors() -> None:
    result = parse_output(
        "complete_task", {"task_id": 7}, "Error executing tool complete_task: Task 7 not found"
    )
    assert not result.ok
    assert result.error == "Task 7 not found"


def test_conversation_splits_turns_and_this_turns_calls() -> None:
    items: list[Any] = [
        {"role": "user", "content": "add milk"},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "add_task",
            "arguments": '{"title": "Milk"}',
        },
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": '{"task_id": 1, "title": "Milk"}',
        },
        {"role": "assistant", "content": "Added task #1: Milk."},
        {"role": "user", "content": [{"type": "input_text", "text": "mark it done"}]},
        {
            "type": "function_call",
            "call_id": "c2",
            "name": "complete_task",
            "arguments": '{"task_id": 1}',
        },
    ]
    conversation = read_conversation(items)
    assert conversation.user_text == "mark it done"
    assert [r.name for r in conversation.current] == ["complete_task"]
    assert conversation.earlier[0].reply == "Added task #1: Milk."
    assert conversation.earlier[0].results[0].task_ids() == [1]


# --- the utterance table, end to end through the real MCP server -----------------------------


class _SwitchableBearer(httpx2.Auth):
    """One MCP connection for the whole table; each case's user gets its own token."""

    def __init__(self) -> None:
        self.token = ""

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class McpDriver:
    """Runs turns through LocalModel + Agent + the MCP server; reads the database directly."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        tools: MCPServerStreamableHttp,
        bearer: _SwitchableBearer,
    ) -> None:
        self.settings = settings
        self.database = database
        self.tools = tools
        self.bearer = bearer
        self.model = LocalModel()
        self.history: dict[str, list[TResponseInputItem]] = {}
        self.streamed = False

    async def seed(self, user_id: str, seeds: Sequence[Seed]) -> list[int]:
        ids = []
        for seed in seeds:
            async with self.database.session_scope(write=True) as session:
                fields: dict[str, Any] = {"title": seed.title, "priority": seed.priority}
                fields |= {
                    "tags": list(seed.tags),
                    "due_at": seed.due,
                    "recurrence": seed.recurrence,
                    "remind_at": seed.remind_at,
                }
                task = await service.create_task(
                    session, user_id, TaskCreate.model_validate(fields), channel="rest"
                )
                assert task.id is not None
                if seed.completed:
                    await service.set_completion(session, user_id, task.id, True, channel="rest")
                if seed.deleted:
                    await service.delete_task(session, user_id, task.id, channel="rest")
                ids.append(task.id)
        await self._feed_history()
        return ids

    async def _feed_history(self) -> None:
        """What the relay does in the API: the task history is built from the task events."""
        relay = Relay(self.database, NonePublisher(), self.settings)
        while await relay.run_once():
            pass

    async def say(self, user_id: str, text: str, zone: str) -> TurnOutcome:
        await self._feed_history()  # the changes of earlier turns
        self.bearer.token = mint_mcp_token(mcp_token_config(self.settings), user_id)
        agent = Agent(
            name="Todo Assistant",
            instructions=build_instructions(NOW, ZoneInfo(zone)),
            model=self.model,
            mcp_servers=[self.tools],
        )
        message: TResponseInputItem = {"role": "user", "content": text}
        items = [*self.history.get(user_id, []), message]
        result: RunResult | RunResultStreaming
        if self.streamed:  # the chat pipeline streams: half the table goes that way
            result = Runner.run_streamed(agent, items, run_config=RUN_CONFIG)
            async for _event in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, items, run_config=RUN_CONFIG)
        self.history[user_id] = result.to_input_list()
        return TurnOutcome(str(result.final_output), _seen_calls(result.new_items))

    async def tasks(self, user_id: str) -> list[StoredTask]:
        async with self.database.session_scope() as session:
            live = await service.list_tasks(session, user_id, TaskQuery(status="all", limit=100))
            deleted = await session.scalars(
                select(Task).where(col(Task.user_id) == user_id, col(Task.deleted_at).is_not(None))
            )
            rows = [(t, False) for t in live.items] + [(t, True) for t in deleted]
            return [
                StoredTask(
                    id=t.id or 0,
                    title=t.title,
                    completed=t.completed,
                    deleted=gone,
                    priority=t.priority,
                    tags=t.tags,
                    due_at=t.due_at,
                    recurrence=t.recurrence,
                    remind_at=t.remind_at,
                    description=t.description,
                )
                for t, gone in rows
            ]


def _function_calls(items: Sequence[Any]) -> list[ResponseFunctionToolCall]:
    raw = [i.raw_item for i in items if isinstance(i, ToolCallItem)]
    return [call for call in raw if isinstance(call, ResponseFunctionToolCall)]


def _seen_calls(items: Sequence[Any]) -> list[SeenCall]:
    outputs = {
        as_dict(i.raw_item).get("call_id"): i.output
        for i in items
        if isinstance(i, ToolCallOutputItem)
    }
    return [
        SeenCall(call.name, json.loads(call.arguments), str(outputs.get(call.call_id)))
        for call in _function_calls(items)
    ]


@asynccontextmanager
async def mcp_driver(settings: Settings, database: Database) -> AsyncIterator[McpDriver]:
    app: Starlette = create_http_app(settings)
    bearer = _SwitchableBearer()
    bearer.token = mint_mcp_token(mcp_token_config(settings), "table-setup")

    def client(
        headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url=BASE_URL,
            headers=headers,
            timeout=timeout,
            auth=bearer,
        )

    tools = MCPServerStreamableHttp(
        params={"url": f"{BASE_URL}/mcp", "httpx_client_factory": client, "timeout": 30},
        cache_tools_list=True,
        client_session_timeout_seconds=30,
    )
    async with LifespanManager(app), tools:
        yield McpDriver(settings, database, tools, bearer)


async def test_utterance_table(
    tmp_path: Path, database_url: str, database: Database, clock: Clock
) -> None:
    """The model's own table: every case passes, and no message that adds nothing adds."""
    started = time.monotonic()
    result = await _score_table(MAIN_TABLE, tmp_path, database_url, database, clock)
    print(f"\n{result.report('utterances')} in {time.monotonic() - started:.1f}s")  # noqa: T201
    assert len(MAIN_TABLE) >= 300
    assert not result.failures, f"{len(result.failures)} cases failed:\n{result.details()}"


@pytest.mark.parametrize("table", list(HELDOUT_TABLES))
async def test_heldout_table(
    table: str, tmp_path: Path, database_url: str, database: Database, clock: Clock
) -> None:
    """Phrasings written apart from the model: how well it generalises (the pass rate per
    kind is printed), and never a junk task."""
    cases, required = HELDOUT_TABLES[table]
    result = await _score_table(cases, tmp_path, database_url, database, clock)
    print(f"\n{result.report(table)}\n{result.details()}")  # noqa: T201
    assert len(cases) >= 150
    assert result.junk_cases == 0, result.details()
    assert result.rate >= required, result.details()


async def _score_table(
    cases: Sequence[Case], tmp_path: Path, database_url: str, database: Database, clock: Clock
) -> Score:
    """`TABLE_KIND` / `TABLE_CASE` in the environment narrow a run while working on a kind."""
    kind, case_id = os.environ.get("TABLE_KIND"), os.environ.get("TABLE_CASE")
    chosen = [c for c in cases if (not kind or c.kind == kind) and (not case_id or case_id in c.id)]
    clock.freeze(NOW)  # the tables' dates assume NOW, for the model and the task service alike
    settings = make_settings(tmp_path, database_url)
    async with mcp_driver(settings, database) as driver:
        return await score(chosen, driver, alternate_streaming=True)


def test_table_ids_are_unique() -> None:
    every = [*MAIN_TABLE, *(case for cases, _ in HELDOUT_TABLES.values() for case in cases)]
    ids = [case.id for case in every]
    assert len(ids) == len(set(ids))
