"""The real MCP HTTP app in-process, driven by the SDK's own client over httpx2.

Auth only exists over HTTP, so every tool test goes through the bearer middleware, the
write-scope gate and the Host/Origin checks exactly as a deployed client would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from sqlalchemy import select
from sqlmodel import col
from starlette.applications import Starlette
from starlette.types import ASGIApp

from backend.auth.mcp_tokens import ALL_SCOPES, McpTokenConfig, mcp_token_config, mint_mcp_token
from backend.config import Settings
from backend.db import Database
from backend.models import Task
from mcp_server.server import create_http_app

BASE_URL = "http://127.0.0.1:8001"
MCP_PATH = "/mcp"
RPC_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
TOOL_NAMES = frozenset(
    {
        "add_task",
        "list_tasks",
        "get_task",
        "complete_task",
        "reopen_task",
        "update_task",
        "delete_task",
        "restore_task",
        "task_history",
        "skip_occurrence",
        "list_notifications",
        "snooze_reminder",
    }
)
ID_TOOLS = (
    "get_task",
    "complete_task",
    "reopen_task",
    "update_task",
    "delete_task",
    "restore_task",
    "task_history",
    "skip_occurrence",
    "snooze_reminder",
)
WRITE_TOOLS = (
    "add_task",
    "complete_task",
    "reopen_task",
    "update_task",
    "delete_task",
    "restore_task",
)


def id_tool_arguments(tool: str, task_id: int) -> dict[str, Any]:
    """The smallest valid arguments for a tool that takes a task id."""
    extra: dict[str, dict[str, Any]] = {
        "update_task": {"title": "hijacked"},
        "snooze_reminder": {"minutes": 10},
    }
    return {"task_id": task_id, **extra.get(tool, {})}


def rpc_call(name: str, arguments: dict[str, Any], request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def asgi_client(
    app: ASGIApp,
    token: str | None = None,
    *,
    base_url: str = BASE_URL,
    headers: dict[str, str] | None = None,
    timeout: Any = None,
    auth: Any = None,
) -> httpx2.AsyncClient:
    """An httpx2 client whose requests go straight into the ASGI app."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app),
        base_url=base_url,
        headers=all_headers,
        timeout=timeout if timeout is not None else 30.0,
        auth=auth,
    )


def result_text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


class McpUser:
    """One connected MCP client session with a few assertions a tool test needs."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def call(self, tool: str, **arguments: Any) -> CallToolResult:
        return await self.session.call_tool(tool, arguments)

    async def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured result."""
        result = await self.call(tool, **arguments)
        assert not result.is_error, result_text(result)
        content: dict[str, Any] | None = result.structured_content
        assert content is not None
        # The text block mirrors the structured content (for clients that only read text).
        assert json.loads(result_text(result)) == content
        return content

    async def fail(self, tool: str, **arguments: Any) -> str:
        """Call a tool that must fail; its error text, checked to be actionable."""
        result = await self.call(tool, **arguments)
        text = result_text(result)
        assert result.is_error, f"{tool} unexpectedly succeeded: {text}"
        assert result.structured_content is None
        assert_actionable(tool, text)
        return text


def assert_actionable(tool: str, text: str) -> None:
    """A message a model can act on: never a bare prefix, never a stack trace."""
    generic = f"Error executing tool {tool}"
    assert text.strip() != generic, f"generic error for {tool}"
    assert text.removeprefix(generic).strip(" :"), f"no detail in {text!r}"
    assert "Traceback" not in text
    assert 'File "' not in text


@asynccontextmanager
async def open_session(
    app: ASGIApp, token: str, *, base_url: str = BASE_URL
) -> AsyncIterator[McpUser]:
    async with (
        asgi_client(app, token, base_url=base_url) as http,
        streamable_http_client(f"{base_url}{MCP_PATH}", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield McpUser(session)


Minter = Callable[..., str]
Connector = Callable[..., Any]


@pytest.fixture
def token_config(settings: Settings) -> McpTokenConfig:
    return mcp_token_config(settings)


@pytest.fixture
def mint(token_config: McpTokenConfig) -> Minter:
    """mint("alice", scopes=("tasks:read",)) -> a valid MCP access token."""

    def _mint(user_id: str, scopes: tuple[str, ...] = ALL_SCOPES) -> str:
        return mint_mcp_token(token_config, user_id, scopes=scopes, client_id="tests")

    return _mint


@pytest.fixture
async def mcp_app(settings: Settings, database: Database) -> AsyncIterator[Starlette]:
    """The streamable-HTTP app with its lifespan running, on an emptied database."""
    app = create_http_app(settings)
    async with LifespanManager(app):
        yield app


@pytest.fixture
def connect(mcp_app: Starlette, mint: Minter) -> Connector:
    """`async with connect("alice") as alice:` -> an initialized SDK client session."""

    def _connect(user_id: str, scopes: tuple[str, ...] = ALL_SCOPES) -> Any:
        return open_session(mcp_app, mint(user_id, scopes))

    return _connect


@pytest.fixture
async def rpc(mcp_app: Starlette) -> AsyncIterator[httpx2.AsyncClient]:
    """A raw httpx2 client for hand-written JSON-RPC POSTs (no token set)."""
    async with asgi_client(mcp_app, headers=RPC_HEADERS) as http:
        yield http


async def task_rows(database: Database) -> list[dict[str, Any]]:
    """Every task row, deleted ones included, with its tags: the whole table as data."""
    async with database.session_scope() as session:
        tasks = (await session.scalars(select(Task).order_by(col(Task.id)))).all()
        return [{**task.model_dump(), "tags": task.tags} for task in tasks]


async def task_row(database: Database, task_id: int) -> dict[str, Any]:
    rows = [row for row in await task_rows(database) if row["id"] == task_id]
    assert rows, f"task {task_id} is not in the database"
    return rows[0]
