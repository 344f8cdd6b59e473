"""The README's MCP Inspector commands, as written, against a real server process.

The Inspector version is pinned: an unpinned `npx @modelcontextprotocol/inspector` on
Node 20 resolves to 0.15.0 (the newest release whose `engines` admits Node 20), which has no
`--header`. It is installed once into a cache directory; `npx` run from there uses that copy
and needs no network. Without `npx` the tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.config import Settings
from tests.chat.conftest import TEST_MCP_SECRET, free_port
from tests.conftest import TEST_SECRET, make_settings
from tests.faults.support import McpServerProcess, migrate_in_thread
from tests.mcp_server.conftest import TOOL_NAMES

INSPECTOR_VERSION = "0.22.0"
INSPECTOR = f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}"
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
INSPECTOR_DIR = CACHE_ROOT / "todo-assistant" / f"mcp-inspector-{INSPECTOR_VERSION}"
INSTALL_TIMEOUT_SECONDS = 300
RUN_TIMEOUT_SECONDS = 120
# The stdio server the README's desktop config and Inspector line start (`todo-assistant
# mcp-stdio`), run with this interpreter so the test needs neither uv nor the console script.
STDIO_SERVER = [sys.executable, "-m", "backend.cli", "mcp-stdio"]


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the MCP Inspector test: {reason}")
    pytest.skip(reason)


def _installed_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / "@modelcontextprotocol" / "inspector" / "package.json"
    try:
        version = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)


@pytest.fixture(scope="module")
def npx() -> str:
    """`npx`, with the pinned Inspector installed where it will be run from."""
    npx, npm = shutil.which("npx"), shutil.which("npm")
    if npx is None or npm is None:
        _unavailable("npx/npm (Node.js) is not installed")
    INSPECTOR_DIR.mkdir(parents=True, exist_ok=True)
    # Parallel workers (pytest-xdist) may each run some of these tests: one installs, the
    # others wait for it rather than run npm into the same directory at once.
    with (INSPECTOR_DIR.parent / f"{INSPECTOR_DIR.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version(INSPECTOR_DIR) != INSPECTOR_VERSION:
            install = [npm, "install", "--prefix", str(INSPECTOR_DIR), "--no-audit", "--no-fund"]
            finished = subprocess.run(
                [*install, "--loglevel=error", INSPECTOR],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
                check=False,
            )
            if finished.returncode != 0:
                _unavailable(f"npm could not install {INSPECTOR}:\n{finished.stderr[-2000:]}")
    return npx


def _environment(**settings: str) -> dict[str, str]:
    """Ours minus every setting the app reads (a developer's shell must not leak in)."""
    fields = {name.lower() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.lower() not in fields}
    env.update(settings)
    env["npm_config_update_notifier"] = "false"
    return env


def inspect(npx: str, *arguments: str, env: dict[str, str] | None = None) -> Any:
    """Run `npx -y <pinned inspector> <arguments>` and return the JSON it prints."""
    command = [npx, "-y", INSPECTOR, *arguments]
    finished = subprocess.run(
        command,
        cwd=INSPECTOR_DIR,
        env=env or _environment(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert finished.returncode == 0, f"{command}\n{finished.stdout}\n{finished.stderr}"
    return json.loads(finished.stdout)


def task_owners(database_file: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(database_file) as connection:
        rows = connection.execute("SELECT user_id, title, priority FROM task ORDER BY id")
        return [(str(user), str(title), str(priority)) for user, title, priority in rows]


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    path = tmp_path / "inspector.db"
    migrate_in_thread(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def mcp_server(tmp_path: Path, database_file: Path) -> Iterator[McpServerProcess]:
    server = McpServerProcess(
        database_url=f"sqlite+aiosqlite:///{database_file}",
        data_dir=tmp_path / "mcp-server",
        port=free_port(),
        auth_secret=TEST_SECRET,
        mcp_token_secret=TEST_MCP_SECRET,
    )
    server.start()
    try:
        yield server
    finally:
        server.terminate()


def test_the_readme_inspector_line_lists_and_calls_tools_over_http(
    npx: str, mcp_server: McpServerProcess, tmp_path: Path, database_file: Path
) -> None:
    settings = make_settings(tmp_path, mcp_server.database_url, **mcp_server.settings_overrides())
    token = mint_mcp_token(mcp_token_config(settings), "alice")
    header = f"Authorization: Bearer {token}"

    listed = inspect(npx, "--cli", mcp_server.url, "--header", header, "--method", "tools/list")
    called = inspect(
        npx,
        *("--cli", mcp_server.url, "--header", header, "--method", "tools/call"),
        *("--tool-name", "add_task", "--tool-arg", "title=Call mom", "priority=high"),
    )

    assert {tool["name"] for tool in listed["tools"]} == TOOL_NAMES
    assert called["isError"] is False
    assert called["structuredContent"]["status"] == "created"
    assert task_owners(database_file) == [("alice", "Call mom", "high")]


def test_the_readme_inspector_line_lists_the_tools_of_the_stdio_server(
    npx: str, tmp_path: Path, database_file: Path
) -> None:
    server_env = (
        "TODO_USER_ID=alice",
        f"DATABASE_URL=sqlite+aiosqlite:///{database_file}",
        f"DATA_DIR={tmp_path}",
    )
    flags = [part for pair in server_env for part in ("-e", pair)]

    # The server refuses to start without TODO_USER_ID, so an answer shows `-e` reached it.
    listed = inspect(npx, "--cli", *flags, "--", *STDIO_SERVER, "--method", "tools/list")

    assert {tool["name"] for tool in listed["tools"]} == TOOL_NAMES


def test_the_readme_desktop_config_starts_the_stdio_server(
    npx: str, tmp_path: Path, database_file: Path
) -> None:
    # The README's config, with this interpreter in place of `uv run todo-assistant`.
    config = {
        "mcpServers": {
            "todo-assistant": {
                "command": STDIO_SERVER[0],
                "args": STDIO_SERVER[1:],
                "env": {
                    "TODO_USER_ID": "bob",
                    "DATABASE_URL": f"sqlite+aiosqlite:///{database_file}",
                    "DATA_DIR": str(tmp_path),
                },
            }
        }
    }
    config_file = tmp_path / "mcp.json"
    config_file.write_text(json.dumps(config))

    called = inspect(
        npx,
        *("--cli", "--config", str(config_file), "--server", "todo-assistant"),
        *("--method", "tools/call", "--tool-name", "add_task", "--tool-arg", "title=From a client"),
    )

    assert called["structuredContent"]["status"] == "created"
    assert task_owners(database_file) == [("bob", "From a client", "medium")]
