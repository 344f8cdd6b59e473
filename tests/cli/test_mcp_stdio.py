"""The MCP server over stdio, chosen without `--transport` (which the MCP Inspector swallows):
`todo-assistant mcp-stdio`, or `todo-assistant mcp` with MCP_TRANSPORT=stdio."""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from backend.db import Database
from tests.cli.support import CLI_TIMEOUT_SECONDS, cli_command, cli_env
from tests.mcp_server.conftest import McpUser, task_rows

SELECTIONS = {
    "mcp-stdio command": (["mcp-stdio"], {}),
    "MCP_TRANSPORT=stdio": (["mcp"], {"MCP_TRANSPORT": "stdio"}),
}


@pytest.mark.parametrize("selection", SELECTIONS)
async def test_stdio_is_selectable_without_the_transport_flag(
    selection: str, tmp_path: Path, database_url: str, database: Database
) -> None:
    args, extra = SELECTIONS[selection]
    command = cli_command(*args)
    env = cli_env(tmp_path, DATABASE_URL=database_url, TODO_USER_ID="alice", **extra)
    parameters = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=tmp_path)
    errors = (tmp_path / "stderr.log").open("w+")
    try:
        with anyio.fail_after(CLI_TIMEOUT_SECONDS):
            async with (
                stdio_client(parameters, errlog=errors) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                alice = McpUser(session)
                created = await alice.ok("add_task", title="From a desktop client")
                listed = await alice.ok("list_tasks")
    finally:
        errors.seek(0)
        stderr = errors.read()
        errors.close()

    assert [task["title"] for task in listed["tasks"]] == ["From a desktop client"], stderr
    rows = await task_rows(database)
    assert [(row["id"], row["user_id"]) for row in rows] == [(created["task_id"], "alice")]
    assert "Traceback" not in stderr


def test_stdio_stdout_carries_only_protocol_even_with_debug_logs_and_a_first_migration(
    tmp_path: Path,
) -> None:
    # The default SQLite file does not exist yet: it is migrated on start, with DEBUG logs on.
    env = cli_env(tmp_path, TODO_USER_ID="alice", LOG_LEVEL="DEBUG", MCP_TRANSPORT="stdio")
    requests: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    # A file, not a pipe: DEBUG logs could fill a pipe and stall the server.
    with (tmp_path / "stderr.log").open("w+") as errors:
        process = subprocess.Popen(
            cli_command("mcp"),
            env=env,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        answers = []
        try:
            for request in requests:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                if "id" in request:
                    # Each answer is read before the next request: the server has time to log.
                    answers.append(json.loads(_line_before(process.stdout, deadline)))
            out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        errors.seek(0)
        err = errors.read()

    assert [answer.get("id") for answer in answers] == [1, 2], err
    assert {tool["name"] for tool in answers[1]["result"]["tools"]} >= {"add_task", "list_tasks"}
    assert out == "", out  # nothing after the answers either
    assert "DEBUG" in err  # the logs went somewhere: to stderr
    assert (tmp_path / "todo.db").exists()


def test_mcp_stdio_without_a_user_says_so_on_stderr_only(tmp_path: Path) -> None:
    finished = subprocess.run(
        cli_command("mcp-stdio"),
        env=cli_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )

    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr.strip().splitlines() == [
        "todo-assistant: TODO_USER_ID must name the user whose tasks the stdio server manages"
    ]


def _line_before(stream: IO[str], deadline: float) -> Any:
    ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        pytest.fail("the stdio server did not answer in time")
    return stream.readline()
