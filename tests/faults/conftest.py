"""Fault fixtures: a private PostgreSQL cluster, a killable MCP subprocess, a cuttable TCP proxy.

    async def test_something(private_postgres, spawn_mcp_server, tcp_proxy, tmp_path):
        mcp = spawn_mcp_server(private_postgres.url)          # started, /healthz answers
        db_proxy = tcp_proxy(*host_port(private_postgres.url))
        settings = make_settings(tmp_path, db_proxy.url_for(private_postgres.url),
                                 **mcp.settings_overrides())
        ...
        await private_postgres.astop("immediate")  # or db_proxy.cut(), mcp.kill()
        ...
        await private_postgres.astart()            # or db_proxy.restore(), await mcp.astart()

Every process is stopped at teardown, whatever the test did; the cluster is running and its
tables empty at the start of every test.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.chat.conftest import TEST_MCP_SECRET, free_port
from tests.conftest import TEST_SECRET
from tests.faults.support import (
    MakeTcpProxy,
    McpServerProcess,
    PostgresCluster,
    SpawnMcpServer,
    TcpProxy,
    find_postgres_bindir,
    migrate_in_thread,
    postgres_unavailable_reason,
    reset_postgres_database,
)


def _reachable_tmp_root() -> str:
    # pytest's own tmp dirs are 0700 root-owned: the postgres OS user could not enter them.
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()


@pytest.fixture(scope="session")
def private_postgres_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PostgresCluster]:
    """One initdb'd, migrated cluster for the session; prefer `private_postgres` in tests.

    Skipped when the server binaries are missing, except in CI (CI set), where that fails.
    """
    bindir = find_postgres_bindir()
    reason = postgres_unavailable_reason(bindir)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a private PostgreSQL cluster for the fault tests: {reason}")
        pytest.skip(reason)
    assert bindir is not None
    base_dir = Path(tempfile.mkdtemp(prefix="todo-faults-pg-", dir=_reachable_tmp_root()))
    cluster = PostgresCluster(bindir, base_dir, free_port())
    log_copy = tmp_path_factory.mktemp("private-postgres") / "postgres.log"
    atexit.register(cluster.destroy)  # should pytest itself be interrupted mid-teardown
    try:
        cluster.init()
        cluster.start()
        cluster.create_database()
        migrate_in_thread(cluster.url)
        yield cluster
    finally:
        cluster.destroy(keep_log_at=log_copy)
        atexit.unregister(cluster.destroy)


@pytest.fixture
async def private_postgres(private_postgres_cluster: PostgresCluster) -> PostgresCluster:
    """The private cluster, running (restarted if a previous test stopped it), tables empty.

    `url`, `stop(mode="fast"|"immediate"|"smart")`, `start()`, `is_running`, and the
    non-blocking `await astop(mode)` / `await astart()`.
    """
    await private_postgres_cluster.astart()
    await reset_postgres_database(private_postgres_cluster.url)
    return private_postgres_cluster


@pytest.fixture
def spawn_mcp_server(tmp_path: Path) -> Iterator[SpawnMcpServer]:
    """`spawn_mcp_server(database_url)` -> a started MCP server subprocess on a free port.

    The database must already be migrated. With start=False it is returned unstarted (then
    `await server.astart()` keeps the test's loop free). All are terminated at teardown.
    """
    servers: list[McpServerProcess] = []

    def spawn(
        database_url: str, *, env: Mapping[str, str] | None = None, start: bool = True
    ) -> McpServerProcess:
        server = McpServerProcess(
            database_url=database_url,
            data_dir=tmp_path / f"mcp-server-{len(servers)}",
            port=free_port(),
            auth_secret=TEST_SECRET,
            mcp_token_secret=TEST_MCP_SECRET,
            env=env,
        )
        servers.append(server)
        if start:
            server.start()
        return server

    try:
        yield spawn
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.terminate(timeout=5)


@pytest.fixture
async def mcp_subprocess(tmp_path: Path, spawn_mcp_server: SpawnMcpServer) -> McpServerProcess:
    """A started MCP server subprocess on its own migrated SQLite file (`database_url`)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'mcp-subprocess.db'}"
    migrate_in_thread(database_url)
    server = spawn_mcp_server(database_url, start=False)
    await server.astart()
    return server


@pytest.fixture
def tcp_proxy() -> Iterator[MakeTcpProxy]:
    """`tcp_proxy(host, port)` -> a started TcpProxy on a free loopback port; closed at teardown."""
    proxies: list[TcpProxy] = []

    def make(target_host: str, target_port: int) -> TcpProxy:
        proxy = TcpProxy(target_host, target_port).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            with contextlib.suppress(Exception):
                proxy.close()
