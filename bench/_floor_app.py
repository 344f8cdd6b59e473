"""The in-process floor for bench.chat_turn: our API with the MCP hop removed.

`uvicorn --factory bench._floor_app:build` builds the product's app (`create_app`) from the
environment and, once its lifespan has started, swaps the turn runner's AgentRuntime for a
subclass whose `tools_for` gives the agent the MCP server's own tool functions, called in
this process: the same TaskTools, argument validation and result conversion as the MCP
server, the same per-turn ToolBudget check, no token, no HTTP, no JSON-RPC. The agent is the
one the product's `agent()` builds, with its tools swapped for these (converted to function
tools once). The relay and reminder scheduler are left to `serve` (bench.chat_turn turns
them off here).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from agents import Agent, Tool
from agents.mcp import MCPServer as AgentsMCPServer
from agents.mcp.util import MCPUtil
from fastapi import FastAPI
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, GetPromptResult, ListPromptsResult, TextContent
from mcp.types import Tool as MCPTool

from backend.agent import runtime as runtime_module
from backend.agent.runtime import AgentRuntime, ToolBudget
from backend.auth.mcp_tokens import ALL_SCOPES
from backend.config import get_settings
from backend.db import Database
from backend.main import create_app
from mcp_server.server import build_server, http_user


def _outcome(context: Any) -> Mapping[str, Any]:
    # Only if the runtime no longer has its own extractor: the run record reads these keys.
    return {
        "is_error": bool(context.is_error),
        "structured": dict(context.structured_content) if context.structured_content else None,
    }


# The product's extractor when it has one, so tool outcomes are recorded the same way.
_EXTRACTOR = getattr(runtime_module, "_tool_outcome", _outcome)


@dataclass
class FloorTurn:
    """What `tools_for` yields for one turn: its budget, its caller and the agent's tools."""

    budget: ToolBudget
    caller: AuthenticatedUser
    function_tools: list[Tool]


# The turn whose agent runs in this task (tasks the Runner starts copy it).
_current: ContextVar[FloorTurn | None] = ContextVar("floor_turn", default=None)


class InProcessTools(AgentsMCPServer):
    """The MCP server's tool functions, called in this process as that server calls them.

    One per process; the tools are converted to the agent's function tools once, and each
    call is made for the turn running it (its user, channel, zone and budget).
    """

    def __init__(self, server: MCPServer, tools: list[MCPTool]) -> None:
        super().__init__(failure_error_function=None, custom_data_extractor=_EXTRACTOR)
        self.server = server
        self.tools = tools
        self.function_tools: list[Tool] = [
            MCPUtil.to_function_tool(tool, self, convert_schemas_to_strict=False) for tool in tools
        ]

    @property
    def name(self) -> str:
        return "todo-tasks"

    async def connect(self) -> None:
        return None

    async def cleanup(self) -> None:
        return None

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[MCPTool]:
        return self.tools

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        turn = _current.get()
        if turn is None:
            raise RuntimeError("a task tool was called outside a turn")
        refusal = turn.budget.refusal(tool_name, arguments)
        if refusal is not None:
            return CallToolResult(content=[TextContent(type="text", text=refusal)], is_error=True)
        # The MCP server finds its caller in the SDK's auth context (http_user, the scope
        # and zone checks): set per call, as its auth middleware would.
        reset = auth_context_var.set(turn.caller)
        try:
            result = await self.server.call_tool(tool_name, arguments or {})
        except ToolError as exc:  # what the MCP server's handler turns a tool error into
            return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        finally:
            auth_context_var.reset(reset)
        return cast(CallToolResult, result)

    async def list_prompts(self) -> ListPromptsResult:
        return ListPromptsResult(prompts=[])

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> GetPromptResult:
        raise NotImplementedError("the task tools have no prompts")


class InProcessRuntime(AgentRuntime):
    """AgentRuntime whose tools are in-process; the agent, model and settings are the
    product's (its `agent()` builds the agent, then the tools are swapped for these)."""

    in_process: InProcessTools

    @asynccontextmanager
    async def tools_for(  # type: ignore[override]
        self,
        user_id: str,
        budget: ToolBudget | None = None,
        channel: str = "chat",
        zone: str | None = None,
        **_: Any,
    ) -> AsyncIterator[FloorTurn]:
        claims: dict[str, Any] = {"channel": channel}
        if zone is not None:
            claims["tz"] = zone
        caller = AccessToken(
            token="in-process",
            client_id="todo-assistant-api",
            scopes=list(ALL_SCOPES),
            subject=user_id,
            claims=claims,
        )
        turn = FloorTurn(
            budget or ToolBudget.from_settings(self.settings),
            AuthenticatedUser(caller),
            self.in_process.function_tools,
        )
        previous = _current.set(turn)
        try:
            yield turn
        finally:
            _current.reset(previous)

    def agent(self, tools: Any, now: datetime, zone: ZoneInfo) -> Agent[Any]:
        agent = super().agent(tools, now, zone)
        return agent.clone(tools=list(self.in_process.function_tools), mcp_servers=[])


async def in_process(runtime: AgentRuntime, database: Database) -> InProcessRuntime:
    floor = copy.copy(runtime)
    floor.__class__ = InProcessRuntime
    assert isinstance(floor, InProcessRuntime)
    server = build_server(runtime.settings, database, http_user)
    floor.in_process = InProcessTools(server, await server.list_tools())
    return floor


def build() -> FastAPI:
    settings = get_settings()
    app = create_app(settings)
    product_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with product_lifespan(application) as state:
            turns = application.state.turns
            turns.runtime = await in_process(turns.runtime, application.state.database)
            yield state

    app.router.lifespan_context = lifespan
    return app
