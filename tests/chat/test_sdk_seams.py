"""The MCP hop at its floor: one pooled client per process, the tool list fetched once.

Against the real MCP server over real HTTP: turns share connections and the list, each call
still carries its own user's token, and a changed server is noticed on the next call.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest
from agents import Runner
from agents.testing import ScriptedModel, assistant_message, function_call

from backend.agent import mcp_client as mcp_client_module
from backend.agent.mcp_client import McpCallError, McpToolsClient
from backend.agent.runtime import AgentRuntime, ToolsConnectionError
from backend.clock import utc_now
from backend.db import Database
from tests.chat.conftest import chat_settings


def _runtime(tmp_path: Path, database_url: str, mcp_url: str) -> AgentRuntime:
    return AgentRuntime.create(chat_settings(tmp_path, database_url, mcp_url), ScriptedModel([]))


def _text(result: Any) -> Any:
    return json.loads(result.content[0].text)


async def test_turns_share_the_tool_list_and_carry_their_own_users_token(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    runtime = _runtime(tmp_path, database_url, mcp_url)
    try:
        for user in ("alice", "bob", "alice"):
            async with runtime.tools_for(user) as tools:
                listed = await tools.list_tools()
                assert {"add_task", "list_tasks"} <= {tool.name for tool in listed}
                added = await tools.call_tool("add_task", {"title": f"{user}'s task"})
                assert not added.is_error
        async with runtime.tools_for("bob") as tools:
            seen = _text(await tools.call_tool("list_tasks", {}))
        assert [task["title"] for task in seen["tasks"]] == ["bob's task"]
        assert runtime.tools.client.lists_fetched == 1
    finally:
        await runtime.aclose()


async def test_a_changed_server_version_refetches_the_list_on_the_next_turn(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    runtime = _runtime(tmp_path, database_url, mcp_url)
    try:
        async with runtime.tools_for("alice") as tools:
            await tools.list_tools()
            known = runtime.tools.client._list
            assert known is not None
            assert known.server_version
            assert "+tools." in known.server_version  # the list's digest is in the version
            known.server_version = "0.0.9+tools.older"  # as if fetched from an older server
            await tools.call_tool("list_tasks", {})
            assert runtime.tools.client._list is None
        async with runtime.tools_for("alice") as tools:
            await tools.list_tools()
        assert runtime.tools.client.lists_fetched == 2
    finally:
        await runtime.aclose()


async def test_an_unknown_tool_drops_the_list_and_tells_the_model(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    runtime = _runtime(tmp_path, database_url, mcp_url)
    try:
        async with runtime.tools_for("alice") as tools:
            await tools.list_tools()
            result = await tools.call_tool("no_such_tool", {})
        assert result.is_error
        assert "no_such_tool" in str(result.content[0])
        assert runtime.tools.client._list is None
    finally:
        await runtime.aclose()


async def test_an_old_list_is_fetched_again(
    tmp_path: Path,
    database_url: str,
    mcp_url: str,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _runtime(tmp_path, database_url, mcp_url)
    try:
        async with runtime.tools_for("alice") as tools:
            await tools.list_tools()
            monkeypatch.setattr(mcp_client_module, "TOOLS_MAX_AGE_SECONDS", 0.0)
            await tools.list_tools()
        assert runtime.tools.client.lists_fetched == 2
    finally:
        await runtime.aclose()


async def test_a_refused_token_is_a_transport_error_not_a_result(
    tmp_path: Path, mcp_url: str, database: Database
) -> None:
    client = McpToolsClient(mcp_url, timeout_seconds=5)
    try:
        with pytest.raises(McpCallError, match="HTTP 401"):
            await client.call_tool("not-a-token", "list_tasks", {})
        with pytest.raises(McpCallError, match="HTTP 401"):
            await client.tools("not-a-token")
    finally:
        await client.aclose()


async def test_an_unreachable_server_is_a_transport_error(database: Database) -> None:
    client = McpToolsClient("http://127.0.0.1:9/mcp", timeout_seconds=2)
    try:
        with pytest.raises(McpCallError, match="tools/call"):
            await client.call_tool("token", "list_tasks", {})
    finally:
        await client.aclose()


def test_a_streamed_answer_is_read_and_a_list_change_noted() -> None:
    client = McpToolsClient("http://mcp.invalid/mcp", timeout_seconds=1)
    client._list = mcp_client_module._ToolList([], "1", 0.0)
    stream = (
        'event: message\ndata: {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}'
        '\n\nevent: message\r\ndata: {"jsonrpc": "2.0", "id": 7, "result": {"ok": true}}\r\n\r\n'
    )
    assert client._from_stream(stream, 7) == {"jsonrpc": "2.0", "id": 7, "result": {"ok": True}}
    assert client._list is None
    with pytest.raises(McpCallError, match="without an answer"):
        client._from_stream('data: {"jsonrpc": "2.0", "id": 8, "result": {}}\n\n', 7)


async def test_tools_are_converted_once_per_list_and_refuse_calls_outside_a_turn(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    runtime = _runtime(tmp_path, database_url, mcp_url)
    try:
        async with runtime.tools_for("alice") as first:
            pass
        async with runtime.tools_for("bob") as second:
            assert second.function_tools is first.function_tools
            assert second.token != first.token
        with pytest.raises(ToolsConnectionError, match="outside a turn"):
            await runtime.tools.call_tool("list_tasks", {})
        runtime.tools.client.invalidate()
        async with runtime.tools_for("alice") as third:
            assert third.function_tools is not first.function_tools
    finally:
        await runtime.aclose()


async def test_concurrent_turns_call_the_tools_through_the_sdk_as_their_own_users(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    runtime = _runtime(tmp_path, database_url, mcp_url)
    users = ["alice", "bob", "carol", "dave"]

    async def turn(user: str) -> None:
        steps = [
            [function_call("add_task", {"title": f"{user}'s task"}, call_id=f"c-{user}")],
            [assistant_message("done")],
        ]
        async with runtime.tools_for(user) as tools:
            agent = runtime.agent(tools, utc_now(), ZoneInfo("UTC")).clone(
                model=ScriptedModel(steps)
            )
            result = Runner.run_streamed(agent, "add it", run_config=runtime.run_config())
            async for _ in result.stream_events():
                await asyncio.sleep(0)  # interleave the turns' steps
            assert result.final_output == "done"

    try:
        await asyncio.gather(*(turn(user) for user in users))
        for user in users:
            async with runtime.tools_for(user) as tools:
                seen = _text(await tools.call_tool("list_tasks", {}))
            assert [task["title"] for task in seen["tasks"]] == [f"{user}'s task"]
    finally:
        await runtime.aclose()


async def test_a_turn_that_has_ended_refuses_calls_its_run_still_makes(
    tmp_path: Path, database_url: str, mcp_url: str, database: Database
) -> None:
    runtime = _runtime(tmp_path, database_url, mcp_url)
    try:
        async with runtime.tools_for("alice") as tools:
            pass
        with pytest.raises(ToolsConnectionError, match="turn has ended"):
            await tools.call_tool("add_task", {"title": "too late"})
        async with runtime.tools_for("alice") as fresh:
            seen = _text(await fresh.call_tool("list_tasks", {}))
        assert seen["tasks"] == []
    finally:
        await runtime.aclose()


async def test_a_closed_client_refuses_instead_of_opening_new_connections(
    mcp_url: str, database: Database
) -> None:
    client = McpToolsClient(mcp_url, timeout_seconds=5)
    await client.aclose()
    with pytest.raises(McpCallError, match="closed"):
        await client.call_tool("token", "list_tasks", {})


async def test_cookies_an_answer_sets_are_never_sent_for_anyone(database: Database) -> None:
    client = McpToolsClient("http://mcp.example/mcp", timeout_seconds=1)
    http = client._client()
    try:
        request = httpx2.Request("POST", "http://mcp.example/mcp")
        answer = httpx2.Response(
            200, headers={"set-cookie": "sticky=alice; Path=/"}, request=request
        )
        http.cookies.extract_cookies(answer)
        assert dict(http.cookies) == {}
    finally:
        await client.aclose()
