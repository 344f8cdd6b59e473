"""Chat fixtures: a real MCP server on loopback per database, and API apps with a chosen model."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from agents import Model
from agents.items import TResponseOutputItem
from agents.testing import ScriptedModel, assistant_message, function_call
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from backend.config import Settings
from backend.db import Database
from backend.main import create_app
from mcp_server.server import create_http_app
from tests.conftest import make_settings

TEST_MCP_SECRET = "mcp-test-secret-that-is-long-enough-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mcp_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real MCP server over real HTTP, for the whole session (one per database)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    settings = make_settings(
        tmp_path_factory.mktemp("mcp"),
        database_url,
        mcp_token_secret=TEST_MCP_SECRET,
        mcp_url=url,
        mcp_resource_url=url,
    )
    with serving_in_thread(create_http_app(settings), port):
        yield url


@contextmanager
def serving_in_thread(app: Any, port: int) -> Iterator[None]:
    """An ASGI app served by uvicorn on a loopback port, in a thread, until the block ends."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chat_settings(tmp_path: Path, database_url: str, server_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mcp_token_secret": TEST_MCP_SECRET,
        "mcp_url": server_url,
        "mcp_resource_url": server_url,
    }
    values.update(overrides)
    return make_settings(tmp_path, database_url, **values)


AppFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def chat_client(tmp_path: Path, database_url: str, mcp_url: str, database: Database) -> AppFactory:
    """`async with chat_client(model, **settings) as client:` — an API instance on the test DB."""

    @asynccontextmanager
    async def open_client(model: Model, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = chat_settings(tmp_path, database_url, mcp_url, **overrides)
        app: FastAPI = create_app(settings, model=model)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", timeout=30
            ) as client:
                yield client

    return open_client


def reply(text: str) -> list[TResponseOutputItem]:
    return [assistant_message(text, item_id=f"msg_{uuid.uuid4().hex}")]


def call(name: str, arguments: dict[str, Any]) -> list[TResponseOutputItem]:
    call_id = f"call_{uuid.uuid4().hex}"
    return [function_call(name, arguments, call_id=call_id, item_id=f"fc_{call_id}")]


def texts_in(model_input: Any) -> list[str]:
    """Every string the model saw in its input items (content and tool outputs)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(model_input)
    return found


def echo_model(steps: int = 50, delay: float = 0.0) -> ScriptedModel:
    """Answers every call with the last user text it saw (after an optional pause)."""
    from agents.testing import ModelCall, ModelStep

    async def respond(model_call: ModelCall) -> Any:
        if delay:
            await asyncio.sleep(delay)
        users = [
            i["content"]
            for i in model_call.input
            if isinstance(i, dict) and i.get("role") == "user"
        ]
        return reply(f"echo: {users[-1] if users else ''}")

    return ScriptedModel([ModelStep.respond(respond) for _ in range(steps)])


Respond = Callable[[Any], Awaitable[Any]]


async def until_a_turn_runs(database: Database, seconds: float = 20.0) -> None:
    """Wait until some turn has begun (its run is `running`), however loaded the machine."""
    from sqlalchemy import select
    from sqlmodel import col

    from backend.models import AgentRun

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with database.session_scope() as session:
            running = await session.scalar(
                select(col(AgentRun.id)).where(col(AgentRun.status) == "running").limit(1)
            )
        if running is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no turn began")
