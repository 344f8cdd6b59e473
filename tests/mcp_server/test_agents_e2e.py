"""End to end through the Agents SDK: a scripted model drives the real MCP server over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from agents import Agent, RunConfig, Runner, set_tracing_disabled
from agents.mcp import MCPServerStreamableHttp
from agents.testing import ScriptedModel, assistant_message, function_call
from starlette.applications import Starlette

from backend.db import Database
from tests.mcp_server.conftest import BASE_URL, MCP_PATH, TOOL_NAMES, Minter, asgi_client, task_rows


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    set_tracing_disabled(True)


def _mcp_server(app: Starlette, token: str) -> MCPServerStreamableHttp:
    def client_factory(
        headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
    ) -> httpx2.AsyncClient:
        # The SDK builds (and closes) one client per connection; it must be an httpx2 client.
        return asgi_client(app, token, headers=headers, timeout=timeout, auth=auth)

    return MCPServerStreamableHttp(
        params={
            "url": f"{BASE_URL}{MCP_PATH}",
            "timeout": 10,
            "sse_read_timeout": 30,
            "httpx_client_factory": client_factory,
        },
        cache_tools_list=True,
        client_session_timeout_seconds=10,
        name="todo",
    )


def _tool_output(model_input: Any, call_id: str) -> str:
    """The text the model was given for one tool call (a string or a list of text parts)."""
    assert isinstance(model_input, list)
    for item in model_input:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            if item.get("call_id") != call_id:
                continue
            output = item["output"]
            if isinstance(output, str):
                return output
            return "".join(part.get("text", "") for part in output)
    raise AssertionError(f"no output for {call_id} in the model input")


async def test_an_agent_adds_then_lists_a_task_through_the_mcp_server(
    mcp_app: Starlette, mint: Minter, database: Database
) -> None:
    model = ScriptedModel(
        [
            [
                function_call(
                    "add_task",
                    {"title": "Buy oat milk", "tags": ["shopping"], "priority": "high"},
                    call_id="call_add",
                )
            ],
            [function_call("list_tasks", {"search": "oat"}, call_id="call_list")],
            [assistant_message("Added 'Buy oat milk' to your list.")],
        ]
    )
    server = _mcp_server(mcp_app, mint("alice"))
    agent = Agent(name="todo", instructions="Manage tasks.", model=model, mcp_servers=[server])

    async with server:
        result = await Runner.run(
            agent, "Add buy oat milk, it's important", run_config=RunConfig(tracing_disabled=True)
        )

    assert result.final_output == "Added 'Buy oat milk' to your list."
    model.assert_complete()
    assert {tool.name for tool in model.calls[0].tools} == TOOL_NAMES

    rows = await task_rows(database)
    assert [(r["user_id"], r["title"], r["tags"], r["priority"]) for r in rows] == [
        ("alice", "Buy oat milk", ["shopping"], "high")
    ]
    task_id = rows[0]["id"]

    added = json.loads(_tool_output(model.calls[1].input, "call_add"))
    assert added["task_id"] == task_id
    assert added["status"] == "created"
    listed = json.loads(_tool_output(model.calls[2].input, "call_list"))
    assert listed["total"] == 1
    assert [task["id"] for task in listed["tasks"]] == [task_id]
    assert "user_id" not in json.dumps(listed)


async def test_a_tool_error_reaches_the_model_as_text_it_can_act_on(
    mcp_app: Starlette, mint: Minter, database: Database
) -> None:
    model = ScriptedModel(
        [
            [function_call("complete_task", {"task_id": 4242}, call_id="call_done")],
            [function_call("add_task", {"title": "   "}, call_id="call_blank")],
            [assistant_message("I couldn't find that task.")],
        ]
    )
    server = _mcp_server(mcp_app, mint("alice"))
    agent = Agent(name="todo", model=model, mcp_servers=[server])

    async with server:
        result = await Runner.run(agent, "Finish task 4242", max_turns=5)

    assert result.final_output == "I couldn't find that task."
    missing = _tool_output(model.calls[1].input, "call_done")
    assert missing.endswith("Task 4242 not found")
    blank = _tool_output(model.calls[2].input, "call_blank")
    assert "title" in blank
    assert "Traceback" not in missing + blank
    assert await task_rows(database) == []
