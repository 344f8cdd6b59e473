"""What a turn needs from the agent side: the model (chosen once), MCP connections, the agent."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
from agents import (
    Agent,
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    set_tracing_disabled,
)
from agents.mcp import MCPServerStreamableHttp
from agents.mcp.util import MCPToolCustomDataContext
from agents.models import get_default_model

# Not exported by agents; the SDK's own LiteLLM and any-llm models import it from here, and
# tests/agent/test_model_selection.py fails (repeated ids) if a release changes it.
from agents.models.fake_id import FAKE_RESPONSES_ID
from mcp import ClientSession
from mcp.types import CallToolResult, TextContent
from openai import AsyncOpenAI

from backend.agent.instructions import build_instructions
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


class TaskToolsServer(MCPServerStreamableHttp):
    """The MCP task tools for one turn: calls past the turn's budget are refused here,
    before they reach the server, and transport failures are told apart from the model's."""

    def __init__(self, budget: ToolBudget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget

    async def list_tools(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().list_tools(*args, **kwargs)
        except Exception as exc:
            raise ToolsConnectionError(f"cannot list the MCP tools: {exc}") from exc

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        refusal = self.budget.refusal(tool_name, arguments)
        if refusal is not None:
            return CallToolResult(content=[TextContent(type="text", text=refusal)], is_error=True)
        try:
            return await super().call_tool(tool_name, arguments, meta)
        except Exception as exc:
            raise ToolsConnectionError(f"the MCP tool call failed: {exc}") from exc


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


_COMPILED_OUTPUT_SCHEMAS: dict[str, Any] = {}
_MAX_COMPILED_SCHEMAS = 64


def _share_schema_validators(session: ClientSession) -> None:
    """Reuse compiled output-schema validators across per-request MCP sessions.

    Each new session compiles a tool's output schema on its first result (~20 ms, a fifth
    of a turn). The cache key is the schema itself, so a changed schema compiles anew.
    mcp has no public hook for this: the private method is replaced here only, and
    tests/agent/test_sdk_seams.py fails if an mcp release renames or drops it.
    """
    compile_for_session = getattr(session, "_output_schema_validator", None)
    if compile_for_session is None:
        logger.warning("mcp has no _output_schema_validator; output schemas compile per turn")
        return

    def cached(name: str, output_schema: dict[str, Any]) -> Any:
        key = json.dumps(output_schema, sort_keys=True)
        validator = _COMPILED_OUTPUT_SCHEMAS.get(key)
        if validator is None:
            validator = compile_for_session(name, output_schema)
            if len(_COMPILED_OUTPUT_SCHEMAS) >= _MAX_COMPILED_SCHEMAS:
                _COMPILED_OUTPUT_SCHEMAS.clear()
            _COMPILED_OUTPUT_SCHEMAS[key] = validator
        return validator

    session._output_schema_validator = cached  # type: ignore[method-assign]


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
    ssl_context: Any

    @classmethod
    def create(cls, settings: Settings, model: Model | None = None) -> AgentRuntime:
        set_tracing_disabled(settings.agent_tracing != "openai")
        chosen, name = (
            (model, getattr(model, "name", "scripted")) if model else select_model(settings)
        )
        return cls(settings, chosen, name, mcp_token_config(settings), httpx2.create_ssl_context())

    def _http_client(
        self, headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
    ) -> httpx2.AsyncClient:
        # One SSL context for the process: building it per connection costs ~20 ms.
        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout,
            auth=auth,
            verify=self.ssl_context,
            follow_redirects=False,
        )

    @asynccontextmanager
    async def tools_for(
        self,
        user_id: str,
        budget: ToolBudget | None = None,
        channel: str = "chat",
        zone: str | None = None,
    ) -> AsyncIterator[TaskToolsServer]:
        """An MCP connection for one request, carrying an access token minted for this user
        (and naming the chat front end, so the task events say where changes came from)."""
        token = mint_mcp_token(self.token_config, user_id, channel=channel, zone=zone)
        timeout = self.settings.mcp_timeout_seconds
        server = TaskToolsServer(
            budget or ToolBudget.from_settings(self.settings),
            params={
                "url": self.settings.mcp_url,
                "headers": {"Authorization": f"Bearer {token}"},
                "timeout": timeout,
                "sse_read_timeout": timeout,
                "httpx_client_factory": self._http_client,
            },
            name="todo-tasks",
            cache_tools_list=True,
            client_session_timeout_seconds=timeout,
            failure_error_function=None,
            custom_data_extractor=_tool_outcome,
        )
        try:
            await server.connect()  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ToolsConnectionError(f"cannot reach the MCP server: {exc}") from exc
        if server.session is not None:
            _share_schema_validators(server.session)
        try:
            yield server
        finally:
            await server.cleanup()  # type: ignore[no-untyped-call]

    def agent(self, tools: MCPServerStreamableHttp, now: datetime, zone: ZoneInfo) -> Agent[Any]:
        return Agent(
            name="Todo Assistant",
            instructions=build_instructions(now, zone),
            model=self.model,
            mcp_servers=[tools],
            model_settings=ModelSettings(timeout=self.settings.agent_model_timeout_seconds),
        )

    def run_config(self) -> RunConfig:
        return RunConfig(tracing_disabled=self.settings.agent_tracing != "openai")
