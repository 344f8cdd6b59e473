"""Transports and the HTTP edge: Host/Origin checks, body limits, statelessness, stdio."""

from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from asgi_lifespan import LifespanManager
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp.types.version import LATEST_MODERN_VERSION
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.config import Settings
from backend.db import Database
from mcp_server.auth import McpTokenVerifier
from mcp_server.server import (
    SERVER_VERSION,
    TaskTools,
    create_http_app,
    http_channel,
    http_user,
    versioned,
)
from tests.conftest import make_settings
from tests.mcp_server.conftest import (
    MCP_PATH,
    RPC_HEADERS,
    McpUser,
    Minter,
    asgi_client,
    open_session,
    result_text,
    rpc_call,
    task_rows,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STDIO_TIMEOUT_SECONDS = 30


# --- Host / Origin (DNS-rebinding protection) ----------------------------------------------------


async def test_a_disallowed_host_header_gets_421(
    mcp_app: Starlette, mint: Minter, database: Database, subtests: pytest.Subtests
) -> None:
    async with asgi_client(mcp_app, mint("alice"), headers=RPC_HEADERS) as http:
        for host in ("evil.example:8001", "evil.example", "mcp:8001", "0.0.0.0:8001"):
            with subtests.test(host):
                response = await http.post(
                    MCP_PATH,
                    json=rpc_call("add_task", {"title": "rebound"}),
                    headers={"Host": host},
                )
                assert response.status_code == 421, response.text
    assert await task_rows(database) == []


async def test_a_disallowed_origin_gets_403_and_a_local_one_is_allowed(
    mcp_app: Starlette, mint: Minter, database: Database, subtests: pytest.Subtests
) -> None:
    async with asgi_client(mcp_app, mint("alice"), headers=RPC_HEADERS) as http:
        for origin in ("http://evil.example", "https://127.0.0.1.evil.example", "null"):
            with subtests.test(origin):
                response = await http.post(
                    MCP_PATH,
                    json=rpc_call("add_task", {"title": "cross-site"}),
                    headers={"Origin": origin},
                )
                assert response.status_code == 403, response.text
        assert await task_rows(database) == []
        for origin in ("http://localhost:5173", "http://127.0.0.1:3000"):
            with subtests.test(origin):
                response = await http.post(
                    MCP_PATH, json=rpc_call("list_tasks", {}), headers={"Origin": origin}
                )
                assert response.status_code == 200, response.text


async def test_a_compose_service_host_works_once_it_is_allowed(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        mcp_allowed_hosts=["mcp:8001"],
        mcp_allowed_origins=["http://web:3000"],
        mcp_resource_url="http://mcp:8001/mcp",
    )
    token = mint_mcp_token(mcp_token_config(settings), "alice")
    app = create_http_app(settings)
    async with LifespanManager(app):
        async with asgi_client(app, token, base_url="http://mcp:8001", headers=RPC_HEADERS) as http:
            response = await http.post(MCP_PATH, json=rpc_call("list_tasks", {}))
            assert response.status_code == 200, response.text
            from_web = await http.post(
                MCP_PATH, json=rpc_call("list_tasks", {}), headers={"Origin": "http://web:3000"}
            )
            assert from_web.status_code == 200, from_web.text
            # Only the configured hosts: the loopback default is no longer in the list.
            local = await http.post(
                MCP_PATH, json=rpc_call("list_tasks", {}), headers={"Host": "127.0.0.1:8001"}
            )
            assert local.status_code == 421
            metadata = await http.get("/.well-known/oauth-protected-resource/mcp")
            assert metadata.json()["resource"] == "http://mcp:8001/mcp"
        async with open_session(app, token, base_url="http://mcp:8001") as alice:
            created = await alice.ok("add_task", title="From the orchestrator")
    assert [row["id"] for row in await task_rows(database)] == [created["task_id"]]


async def test_a_token_minted_for_another_resource_url_is_refused(
    tmp_path: Path, database_url: str, mcp_app: Starlette
) -> None:
    elsewhere = make_settings(tmp_path, database_url, mcp_resource_url="http://mcp:8001/mcp")
    token = mint_mcp_token(mcp_token_config(elsewhere), "alice")  # same dev secret, other aud
    async with asgi_client(mcp_app, token, headers=RPC_HEADERS) as http:
        response = await http.post(MCP_PATH, json=rpc_call("list_tasks", {}))
    assert response.status_code == 401


# --- body and argument limits ----------------------------------------------------------------


async def test_a_body_over_64_kib_gets_413_and_nothing_is_stored(
    rpc: httpx2.AsyncClient, mint: Minter, database: Database
) -> None:
    headers = {"Authorization": f"Bearer {mint('alice')}"}
    body = rpc_call("add_task", {"title": "big", "description": "d" * (64 * 1024)})

    response = await rpc.post(MCP_PATH, json=body, headers=headers)

    assert response.status_code == 413, response.text
    assert await task_rows(database) == []


OVER_LIMIT: dict[str, tuple[str, dict[str, Any], str]] = {
    "title-201": ("add_task", {"title": "x" * 201}, "title"),
    "tag-33": ("add_task", {"title": "t", "tags": ["x" * 33]}, "tags.0"),
    "description-3000": ("add_task", {"title": "t", "description": "d" * 3000}, "2000"),
    "recurrence-501": ("add_task", {"title": "t", "recurrence": "R" * 501}, "500"),
    "limit-101": ("list_tasks", {"limit": 101}, "limit"),
    "offset-huge": ("list_tasks", {"offset": 10**9}, "offset"),
}


async def test_over_limit_arguments_under_the_body_limit_are_validation_errors(
    rpc: httpx2.AsyncClient, mint: Minter, database: Database, subtests: pytest.Subtests
) -> None:
    headers = {"Authorization": f"Bearer {mint('alice')}"}
    for case, (tool, arguments, fragment) in OVER_LIMIT.items():
        with subtests.test(case):
            response = await rpc.post(MCP_PATH, json=rpc_call(tool, arguments), headers=headers)

            assert response.status_code == 200, response.text
            result = response.json()["result"]
            assert result["isError"] is True
            text = result["content"][0]["text"]
            assert fragment in text
            assert "Traceback" not in text
    assert await task_rows(database) == []


# --- statelessness -----------------------------------------------------------------------------


class RoundRobin:
    """Two replicas behind one address: each request goes to the next one."""

    def __init__(self, *apps: ASGIApp) -> None:
        self._next = itertools.cycle(range(len(apps)))
        self.apps = apps
        self.served = [0] * len(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        index = next(self._next)
        self.served[index] += 1
        await self.apps[index](scope, receive, send)


async def test_any_replica_can_answer_any_request(
    settings: Settings, mint: Minter, database: Database
) -> None:
    first, second = create_http_app(settings), create_http_app(settings)
    balancer = RoundRobin(first, second)
    async with LifespanManager(first), LifespanManager(second):
        async with open_session(balancer, mint("alice")) as alice:
            created = await alice.ok("add_task", title="Balanced")
            await alice.ok("complete_task", task_id=created["task_id"])
            listed = await alice.ok("list_tasks", status="completed")
            task = await alice.ok("get_task", task_id=created["task_id"])

    assert [t["id"] for t in listed["tasks"]] == [created["task_id"]]
    assert task["completed"] is True
    assert min(balancer.served) >= 2


async def test_the_server_hands_out_no_session_id(mcp_app: Starlette, mint: Minter) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "tests", "version": "1"},
        },
    }
    async with asgi_client(mcp_app, mint("alice"), headers=RPC_HEADERS) as http:
        response = await http.post(MCP_PATH, json=initialize)

    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["result"]["serverInfo"]["name"] == "todo-assistant"


async def test_healthz_answers_without_a_token(mcp_app: Starlette) -> None:
    async with asgi_client(mcp_app) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_building_the_server_leaves_root_logging_alone(settings: Settings) -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    create_http_app(settings)

    assert root.level == level
    assert root.handlers == handlers


# --- stdio -------------------------------------------------------------------------------------


def _stdio_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key in {"PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR"}
    }
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "APP_ENV": "test",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(tmp_path),
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


async def test_stdio_server_acts_for_the_user_named_in_todo_user_id(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "--transport", "stdio"],
        env=_stdio_env(tmp_path, database_url, TODO_USER_ID="alice"),
        cwd=tmp_path,
    )
    errors = (tmp_path / "stderr.log").open("w+")
    try:
        with anyio.fail_after(STDIO_TIMEOUT_SECONDS):
            async with (
                stdio_client(parameters, errlog=errors) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                alice = McpUser(session)
                names = {tool.name for tool in (await session.list_tools()).tools}
                created = await alice.ok("add_task", title="Over stdio", tags=["cli"])
                listed = await alice.ok("list_tasks")
                missing = await session.call_tool("get_task", {"task_id": 999_999})
    finally:
        errors.seek(0)
        stderr = errors.read()
        errors.close()

    assert len(names) == 12, stderr
    assert [task["title"] for task in listed["tasks"]] == ["Over stdio"]
    assert missing.is_error
    assert result_text(missing).endswith("Task 999999 not found")
    rows = await task_rows(database)
    assert [(row["id"], row["user_id"], row["tags"]) for row in rows] == [
        (created["task_id"], "alice", ["cli"])
    ]
    assert "Traceback" not in stderr


async def test_stdio_server_refuses_to_start_without_todo_user_id(
    tmp_path: Path, database_url: str
) -> None:
    env = _stdio_env(tmp_path, database_url)
    assert "TODO_USER_ID" not in env

    with anyio.fail_after(STDIO_TIMEOUT_SECONDS):
        finished = await anyio.run_process(
            [sys.executable, "-m", "mcp_server", "--transport", "stdio"],
            env=env,
            cwd=tmp_path,
            check=False,
        )

    assert finished.returncode != 0
    assert b"TODO_USER_ID" in finished.stderr
    assert finished.stdout == b""  # nothing that a client could mistake for protocol output


# --- the database going away -------------------------------------------------------------------


def _unreachable_database_url(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        blocked = tmp_path / "not-a-database"
        blocked.mkdir()  # a directory where the file should be: SQLite cannot open it
        return f"sqlite+aiosqlite:///{blocked}"
    return "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1


async def test_an_unreachable_database_is_a_tool_error_a_model_can_act_on(
    tmp_path: Path,
    database_url: str,
    subtests: pytest.Subtests,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(tmp_path, _unreachable_database_url(database_url, tmp_path))
    token = mint_mcp_token(mcp_token_config(settings), "alice")
    app = create_http_app(settings)
    caplog.set_level(logging.INFO)
    async with LifespanManager(app), open_session(app, token) as alice:
        for tool, arguments in (("list_tasks", {}), ("add_task", {"title": "Buy milk"})):
            with subtests.test(tool):
                message = await alice.fail(tool, **arguments)
                # The SDK puts its own prefix before the tool's message; the code leads ours.
                ours = message.removeprefix(f"Error executing tool {tool}: ")
                assert ours.startswith("database_unavailable: "), message
                assert "database is unavailable" in ours
    outages = [r for r in caplog.records if "database unavailable in MCP tool" in r.getMessage()]
    assert len(outages) == 2
    assert all(record.exc_info is None for record in caplog.records)  # no tracebacks logged


# --- cost per request ----------------------------------------------------------------------------


async def test_a_tool_call_verifies_its_token_once(
    rpc: httpx2.AsyncClient, mint: Minter, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    original = McpTokenVerifier.verify_token

    async def counting(self: McpTokenVerifier, token: str) -> Any:
        verified.append(token)
        return await original(self, token)

    monkeypatch.setattr(McpTokenVerifier, "verify_token", counting)
    headers = {"Authorization": f"Bearer {mint('alice')}"}
    for tool, arguments in (("add_task", {"title": "once"}), ("list_tasks", {})):
        verified.clear()
        response = await rpc.post(MCP_PATH, json=rpc_call(tool, arguments), headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["result"]["isError"] is False
        assert len(verified) == 1, tool


async def test_every_result_carries_a_version_that_names_the_tool_list(
    rpc: httpx2.AsyncClient, mint: Minter, database: Database
) -> None:
    # The stateless revision: each request names its version; each result is stamped.
    headers = {
        "Authorization": f"Bearer {mint('alice')}",
        "MCP-Protocol-Version": LATEST_MODERN_VERSION,
    }
    meta = {
        PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
        CLIENT_INFO_META_KEY: {"name": "test", "version": "1"},
        CLIENT_CAPABILITIES_META_KEY: {},
    }
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
    call = rpc_call("list_tasks", {})
    call["params"]["_meta"] = meta
    listed = await rpc.post(MCP_PATH, json=listing, headers={**headers, "Mcp-Method": "tools/list"})
    called = await rpc.post(
        MCP_PATH,
        json=call,
        headers={**headers, "Mcp-Method": "tools/call", "Mcp-Name": "list_tasks"},
    )
    stamps = {
        response.json()["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["version"]
        for response in (listed, called)
    }
    assert len(stamps) == 1
    (stamp,) = stamps
    assert stamp == versioned(
        SERVER_VERSION, TaskTools(database, http_user, http_channel).as_tools()
    )
    tools = TaskTools(database, http_user, http_channel).as_tools()
    tools[0].description += " (changed)"
    assert versioned(SERVER_VERSION, tools) != stamp
