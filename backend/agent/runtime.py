"""What a turn needs from the agent side: the model (chosen once), the task tools, the agent."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agents import (
    Agent,
    AgentBase,
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    RunContextWrapper,
    Tool,
    set_tracing_disabled,
)
from agents.mcp import MCPServer
from agents.mcp.util import MCPToolCustomDataContext, MCPUtil
from agents.models import get_default_model

# Not exported by agents; the SDK's own LiteLLM and any-llm models import it from here, and
# tests/agent/test_model_selection.py fails (repeated ids) if a release changes it.
from agents.models.fake_id import FAKE_RESPONSES_ID
from mcp.types import CallToolResult, GetPromptResult, ListPromptsResult, TextContent
from mcp.types import Tool as MCPTool
from openai import AsyncOpenAI

from backend.agent.instructions import build_instructions
from backend.agent.mcp_client import McpToolsClient
from backend.agent.tools import DESTRUCTIVE_TOOLS
from backend.auth.mcp_tokens import McpTokenConfig, mcp_token_config, mint_mcp_token
from backend.config import Settings

LOCAL_MODEL_NAME = "local"
logger = logging.getLogger(__name__)


class ToolsConnectionError(Exception):
    """The MCP server could not be reached for this turn."""


# Room left in the MCP server's body limit for the JSON-RPC envelope around the arguments.
ENVELOPE_BYTES = 2048


@dataclass
class ToolBudget:
    """Per-turn limits on what the model may do, enforced whatever it asks for."""

    max_calls: int
    max_destructive: int
    max_argument_bytes: int
    calls: int = 0
    destructive: int = 0
    # The limit that stopped the turn: "tool_call_limit" or "destructive_call_limit".
    exhausted: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ToolBudget:
        return cls(
            max_calls=settings.chat_max_tool_calls,
            max_destructive=settings.chat_max_destructive_calls,
            max_argument_bytes=settings.max_body_bytes - ENVELOPE_BYTES,
        )

    def refusal(self, name: str, arguments: Mapping[str, Any] | None) -> str | None:
        """Why this call must not run, as the model will read it; None lets it run."""
        size = len(json.dumps(arguments or {}, ensure_ascii=False).encode())
        if size > self.max_argument_bytes:
            return (
                f"arguments_too_large: the arguments are {size} bytes, at most "
                f"{self.max_argument_bytes} are accepted; send shorter values"
            )
        if self.calls >= self.max_calls:
            self.exhausted = self.exhausted or "tool_call_limit"
            return f"tool_call_limit: at most {self.max_calls} tool calls per message; not run"
        if name in DESTRUCTIVE_TOOLS and self.destructive >= self.max_destructive:
            self.exhausted = self.exhausted or "destructive_call_limit"
            return (
                f"destructive_call_limit: at most {self.max_destructive} deleting or "
                "overwriting calls per message; not run"
            )
        self.calls += 1
        self.destructive += name in DESTRUCTIVE_TOOLS
        return None


@dataclass
class TurnTools:
    """The task tools as one turn sees them: its user's token and its budget."""

    server: TaskToolsServer
    token: str
    budget: ToolBudget
    function_tools: list[Tool]
    # Set when the turn's block ends: a run that outlives it (cancelled, or abandoned by an
    # error) must not go on changing tasks beside the next turn.
    closed: bool = False

    async def list_tools(self) -> list[MCPTool]:
        try:
            return await self.server.client.tools(self.token)
        except Exception as exc:
            raise ToolsConnectionError(f"cannot list the MCP tools: {exc}") from exc

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        if self.closed:
            raise ToolsConnectionError("the turn has ended; its tool calls are refused")
        refusal = self.budget.refusal(tool_name, arguments)
        if refusal is not None:
            return CallToolResult(content=[TextContent(type="text", text=refusal)], is_error=True)
        try:
            return await self.server.client.call_tool(self.token, tool_name, arguments, meta)
        except Exception as exc:
            raise ToolsConnectionError(f"the MCP tool call failed: {exc}") from exc


# The turn whose agent is running in this task (and the tasks it starts, which copy it).
_current_turn: ContextVar[TurnTools | None] = ContextVar("current_turn_tools", default=None)


class TaskToolsServer(MCPServer):
    """The MCP task tools of the process, shared by every turn.

    The SDK turns MCP tools into function tools bound to a server object; converting them
    anew for every model call of every turn cost a tenth of a turn. Here they are
    converted once per tool list, bound to this one server, and each call is made for the
    turn running it: its token and budget come from `_current_turn`.
    """

    def __init__(self, client: McpToolsClient) -> None:
        super().__init__(failure_error_function=None, custom_data_extractor=_tool_outcome)
        self.client = client
        self._converted: tuple[list[MCPTool], list[Tool]] | None = None

    @property
    def name(self) -> str:
        return "todo-tasks"

    async def connect(self) -> None:
        """Nothing to open: the client's connections belong to the process."""

    async def cleanup(self) -> None:
        """Nothing to close per turn: the runtime closes the client."""

    async def function_tools(self, token: str) -> list[Tool]:
        """The tools as the agent takes them, converted once per tool list."""
        try:
            listed = await self.client.tools(token)
        except Exception as exc:
            raise ToolsConnectionError(f"cannot list the MCP tools: {exc}") from exc
        converted = self._converted
        if converted is None or converted[0] is not listed:
            tools: list[Tool] = [
                MCPUtil.to_function_tool(tool, self, convert_schemas_to_strict=False)
                for tool in listed
            ]
            converted = self._converted = (listed, tools)
        return converted[1]

    def _turn(self) -> TurnTools:
        turn = _current_turn.get()
        if turn is None:
            raise ToolsConnectionError("a task tool was called outside a turn")
        return turn

    async def list_tools(
        self, run_context: RunContextWrapper[Any] | None = None, agent: AgentBase | None = None
    ) -> list[MCPTool]:
        return await self._turn().list_tools()

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        return await self._turn().call_tool(tool_name, arguments, meta)

    async def list_prompts(self) -> ListPromptsResult:
        return ListPromptsResult(prompts=[])

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> GetPromptResult:
        raise ToolsConnectionError(f"the task tools have no prompt {name!r}")


class UniqueIdChatModel(OpenAIChatCompletionsModel):
    """Chat Completions models report one placeholder id for every item; give each its own.

    Streamed events get the same ids as the final response, position by position, so a
    front end (ChatKit) sees one item from "added" to "done".
    """

    @staticmethod
    def _new_id(item_type: str) -> str:
        return f"{'fc' if item_type == 'function_call' else 'msg'}_{uuid.uuid4().hex}"

    @classmethod
    def _fix_ids(cls, items: list[Any], ids: dict[int, str] | None = None) -> None:
        for index, item in enumerate(items):
            if getattr(item, "id", None) == FAKE_RESPONSES_ID:
                known = ids.get(index) if ids is not None else None
                item.id = known or cls._new_id(item.type)

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        response = await super().get_response(*args, **kwargs)
        self._fix_ids(response.output)
        return response

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        ids: dict[int, str] = {}  # output_index -> the id given to that item
        async for event in super().stream_response(*args, **kwargs):
            index = getattr(event, "output_index", None)
            item = getattr(event, "item", None)
            if index is not None and item is not None and item.id == FAKE_RESPONSES_ID:
                item.id = ids.setdefault(index, self._new_id(item.type))
            if index is not None and getattr(event, "item_id", None) == FAKE_RESPONSES_ID:
                setattr(event, "item_id", ids.setdefault(index, self._new_id("message")))  # noqa: B010
            if event.type == "response.completed":
                self._fix_ids(event.response.output, ids)
            yield event


def select_model(settings: Settings) -> tuple[Model, str]:
    """OpenAI with a key, any compatible server with a base URL, else the offline local model."""
    wanted = settings.agent_model
    if wanted != LOCAL_MODEL_NAME and settings.openai_base_url:
        if not wanted:
            raise ValueError("OPENAI_BASE_URL needs AGENT_MODEL (the model name on that server)")
        client = AsyncOpenAI(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key or "not-needed",
            timeout=settings.agent_model_timeout_seconds,
            max_retries=1,
        )
        return UniqueIdChatModel(model=wanted, openai_client=client), wanted
    if wanted != LOCAL_MODEL_NAME and settings.openai_api_key:
        name = wanted or get_default_model()
        client = AsyncOpenAI(
            api_key=settings.openai_api_key, timeout=settings.agent_model_timeout_seconds
        )
        return OpenAIResponsesModel(model=name, openai_client=client), name
    from backend.agent.local_model import LocalModel

    return LocalModel(), LOCAL_MODEL_NAME


def _tool_outcome(context: MCPToolCustomDataContext) -> Mapping[str, Any]:
    # Keep the MCP result's own error flag and structured result for the run record.
    return {
        "is_error": bool(context.is_error),
        "structured": dict(context.structured_content) if context.structured_content else None,
    }


@dataclass
class AgentRuntime:
    """Built once per process; cheap per-request pieces come from here."""

    settings: Settings
    model: Model
    model_name: str
    token_config: McpTokenConfig
    tools: TaskToolsServer

    @classmethod
    def create(cls, settings: Settings, model: Model | None = None) -> AgentRuntime:
        set_tracing_disabled(settings.agent_tracing != "openai")
        chosen, name = (
            (model, getattr(model, "name", "scripted")) if model else select_model(settings)
        )
        client = McpToolsClient(settings.mcp_url, settings.mcp_timeout_seconds)
        return cls(settings, chosen, name, mcp_token_config(settings), TaskToolsServer(client))

    async def aclose(self) -> None:
        await self.tools.client.aclose()

    @asynccontextmanager
    async def tools_for(
        self,
        user_id: str,
        budget: ToolBudget | None = None,
        channel: str = "chat",
        zone: str | None = None,
    ) -> AsyncIterator[TurnTools]:
        """The task tools for one request, with an access token minted for this user
        (naming the chat front end, so the task events say where changes came from).

        The agent must run inside this block, in this task or tasks it starts."""
        token = mint_mcp_token(self.token_config, user_id, channel=channel, zone=zone)
        turn = TurnTools(
            self.tools,
            token,
            budget or ToolBudget.from_settings(self.settings),
            await self.tools.function_tools(token),
        )
        previous = _current_turn.set(turn)
        try:
            yield turn
        finally:
            turn.closed = True
            _current_turn.reset(previous)

    def agent(self, tools: TurnTools, now: datetime, zone: ZoneInfo) -> Agent[Any]:
        return Agent(
            name="Todo Assistant",
            instructions=build_instructions(now, zone),
            model=self.model,
            tools=list(tools.function_tools),
            model_settings=ModelSettings(timeout=self.settings.agent_model_timeout_seconds),
        )

    def run_config(self) -> RunConfig:
        return RunConfig(tracing_disabled=self.settings.agent_tracing != "openai")
