"""The fault fixtures really break and heal what they claim to: processes and connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.db import Database
from backend.models import Task
from tests.conftest import make_settings
from tests.faults.support import (
    MakeTcpProxy,
    McpServerProcess,
    PostgresCluster,
    SpawnMcpServer,
    host_port,
)
from tests.mcp_server.conftest import RPC_HEADERS, rpc_call

STEP_TIMEOUT = 10.0
# What a dead database looks like through SQLAlchemy + asyncpg: a refused (re)connect comes
# through as the raw ConnectionRefusedError, a broken pooled connection as a DBAPIError.
DATABASE_DOWN = (SQLAlchemyError, OSError)


async def select_one(database: Database) -> int:
    async with asyncio.timeout(STEP_TIMEOUT), database.engine.connect() as connection:
        return int((await connection.execute(text("SELECT 1"))).scalar_one())


async def task_count(database: Database) -> int:
    async with asyncio.timeout(STEP_TIMEOUT), database.session_scope() as session:
        return int((await session.execute(select(func.count()).select_from(Task))).scalar_one())


@pytest.fixture
async def private_db(private_postgres: PostgresCluster) -> AsyncIterator[Database]:
    database = Database(private_postgres.url)
    try:
        yield database
    finally:
        await database.dispose()


# --- the private PostgreSQL cluster ----------------------------------------------------------


async def test_a_stopped_cluster_refuses_queries_until_it_is_started(
    private_postgres: PostgresCluster, private_db: Database
) -> None:
    assert private_postgres.is_running
    assert await select_one(private_db) == 1

    await private_postgres.astop()
    assert not private_postgres.is_running
    with pytest.raises(DATABASE_DOWN):
        await select_one(private_db)

    await private_postgres.astart()
    assert private_postgres.is_running
    assert await select_one(private_db) == 1  # the same pool recovers (pre-ping)


async def test_an_immediate_stop_is_a_crash_that_keeps_committed_rows(
    private_postgres: PostgresCluster, private_db: Database
) -> None:
    async with private_db.session_scope(write=True) as session:
        session.add(Task(user_id="alice", title="survives"))
    async with private_db.engine.connect() as busy:  # a session open across the crash
        await private_postgres.astop("immediate")
        with pytest.raises(DATABASE_DOWN):
            async with asyncio.timeout(STEP_TIMEOUT):
                await busy.execute(text("SELECT 1"))
    await private_postgres.astart()
    assert await task_count(private_db) == 1
    # Left stopped on purpose: the next test must still find the cluster running.
    private_postgres.stop("immediate")


async def test_every_test_starts_with_a_running_cluster_and_empty_tables(
    private_postgres: PostgresCluster, private_db: Database
) -> None:
    assert private_postgres.is_running
    assert await task_count(private_db) == 0


# --- the MCP server subprocess ---------------------------------------------------------------


async def healthz(server: McpServerProcess) -> int:
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        return (await http.get(server.healthz_url)).status_code


async def call_tool(
    server: McpServerProcess,
    tmp_path: Path,
    user: str,
    tool: str,
    *,
    via: str | None = None,
    **arguments: Any,
) -> dict[str, Any]:
    """One tools/call over real HTTP (to `via` if given) with a token as the API mints it."""
    overrides = server.settings_overrides(mcp_url=via)
    settings = make_settings(tmp_path, server.database_url, **overrides)
    token = mint_mcp_token(mcp_token_config(settings), user, client_id="tests")
    headers = {**RPC_HEADERS, "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        response = await http.post(
            settings.mcp_url, json=rpc_call(tool, arguments), headers=headers
        )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    assert not result.get("isError"), result
    structured: dict[str, Any] = result["structuredContent"]
    return structured


async def test_a_killed_mcp_server_refuses_connections_until_it_is_started(
    mcp_subprocess: McpServerProcess,
) -> None:
    assert mcp_subprocess.is_running
    assert await healthz(mcp_subprocess) == 200
    first_pid = mcp_subprocess.pid

    mcp_subprocess.kill()
    assert not mcp_subprocess.is_running
    with pytest.raises(httpx.ConnectError):
        await healthz(mcp_subprocess)

    await mcp_subprocess.astart()
    assert mcp_subprocess.pid != first_pid
    assert await healthz(mcp_subprocess) == 200


async def test_the_mcp_subprocess_serves_tools_from_the_private_cluster(
    private_postgres: PostgresCluster,
    private_db: Database,
    spawn_mcp_server: SpawnMcpServer,
    tcp_proxy: MakeTcpProxy,
    tmp_path: Path,
) -> None:
    server = spawn_mcp_server(private_postgres.url, start=False)
    await server.astart()
    overrides = server.settings_overrides()
    assert overrides["mcp_url"] == overrides["mcp_resource_url"] == server.url

    created = await call_tool(server, tmp_path, "alice", "add_task", title="Buy milk")
    assert await task_count(private_db) == 1

    server.kill()
    await server.astart()
    listed = await call_tool(server, tmp_path, "alice", "list_tasks")
    assert [task["id"] for task in listed["tasks"]] == [created["task_id"]]

    # Through a proxy: the calls go to the proxy, the tokens stay minted for the server.
    proxy = tcp_proxy(*host_port(server.url))
    via = proxy.url_for(server.url)
    assert (await call_tool(server, tmp_path, "alice", "list_tasks", via=via))["total"] == 1
    proxy.cut()
    with pytest.raises(httpx.ConnectError):
        await call_tool(server, tmp_path, "alice", "list_tasks", via=via)
    proxy.restore()
    assert (await call_tool(server, tmp_path, "alice", "list_tasks", via=via))["total"] == 1


# --- the TCP proxy ---------------------------------------------------------------------------


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A line echo server on the test's loop."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes
) -> bytes:
    writer.write(line)
    await writer.drain()
    async with asyncio.timeout(STEP_TIMEOUT):
        return await reader.readline()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(STEP_TIMEOUT):
        return await asyncio.open_connection("127.0.0.1", port)


async def assert_broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The connection is dead: an error, or the end of the stream, never an answer."""
    try:
        assert await round_trip(reader, writer, b"anyone?\n") == b""
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_a_cut_proxy_drops_connections_and_refuses_new_ones_until_restored(
    tcp_proxy: MakeTcpProxy, echo_port: int
) -> None:
    proxy = tcp_proxy("127.0.0.1", echo_port)
    reader, writer = await connect(proxy.port)
    assert await round_trip(reader, writer, b"hello\n") == b"hello\n"
    assert proxy.active_connections == 1

    proxy.cut()
    assert proxy.is_cut
    assert proxy.active_connections == 0
    await assert_broken(reader, writer)
    with pytest.raises(ConnectionRefusedError):
        await connect(proxy.port)

    proxy.restore()
    reader, writer = await connect(proxy.port)  # the same port again
    assert await round_trip(reader, writer, b"back\n") == b"back\n"
    writer.close()


async def test_a_reset_proxy_accepts_new_connections_only_to_reset_them(
    tcp_proxy: MakeTcpProxy, echo_port: int
) -> None:
    proxy = tcp_proxy("127.0.0.1", echo_port)
    proxy.cut("reset")
    for _ in range(3):
        try:
            connection = await connect(proxy.port)
        except ConnectionResetError:
            continue  # the reset can beat the client's own view of the handshake
        await assert_broken(*connection)
    assert proxy.accepted == 3
    proxy.restore()
    reader, writer = await connect(proxy.port)
    assert await round_trip(reader, writer, b"ok\n") == b"ok\n"
    writer.close()


async def test_a_hung_proxy_holds_bytes_until_restored(
    tcp_proxy: MakeTcpProxy, echo_port: int
) -> None:
    proxy = tcp_proxy("127.0.0.1", echo_port)
    reader, writer = await connect(proxy.port)
    assert await round_trip(reader, writer, b"one\n") == b"one\n"

    proxy.cut("hang")
    writer.write(b"two\n")
    await writer.drain()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await reader.readline()

    proxy.restore()
    async with asyncio.timeout(STEP_TIMEOUT):
        assert await reader.readline() == b"two\n"
    writer.close()


async def test_a_cut_proxy_takes_the_database_away_and_restore_brings_it_back(
    private_postgres: PostgresCluster, tcp_proxy: MakeTcpProxy
) -> None:
    proxy = tcp_proxy(*host_port(private_postgres.url))
    database = Database(proxy.url_for(private_postgres.url))
    try:
        assert await select_one(database) == 1
        proxy.cut()
        with pytest.raises(DATABASE_DOWN):
            await select_one(database)
        assert private_postgres.is_running  # only the connection was cut
        proxy.restore()
        assert await select_one(database) == 1
    finally:
        await database.dispose()
