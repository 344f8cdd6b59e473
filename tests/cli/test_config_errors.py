"""A setup the user can fix is reported as one line per problem, all at once, exit code 2,
whatever the command, and no secret given in the environment is ever echoed back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.cli.support import Finished, cli_env, free_port, run_cli

DB_PASSWORD = "DB-PASSWORD-q7"
AUTH_SECRET = "AUTH-SECRET-xyz"
MCP_SECRET = "MCP-SECRET-abc"
SECRETS = (DB_PASSWORD, AUTH_SECRET, MCP_SECRET)


def _commands() -> dict[str, list[str]]:
    # Free ports: a busy default port must not be what `serve` reports instead.
    ports = ["--port", str(free_port()), "--mcp-port", str(free_port())]
    return {
        "serve": ["serve", *ports],
        "api": ["api", "--port", str(free_port())],
        "mcp": ["mcp", "--port", str(free_port())],
        "migrate": ["migrate"],
        "token": ["token", "--user", "alice"],
        "chat": ["chat"],
        "logs": ["logs", "list"],
    }


DATABASE_COMMANDS = ["serve", "api", "mcp", "migrate", "chat", "logs"]


def _problems(finished: Finished) -> list[str]:
    assert finished.code == 2, finished
    assert finished.out == "", finished
    assert "Traceback" not in finished.err, finished
    for secret in SECRETS:
        assert secret not in finished.err, finished
    lines = finished.err.strip().splitlines()
    assert all(line.startswith("todo-assistant: ") for line in lines), finished
    return lines


@pytest.mark.parametrize("command", list(_commands()))
def test_every_broken_setting_is_one_line_at_once_without_its_value(
    command: str, tmp_path: Path
) -> None:
    env = cli_env(
        tmp_path,
        APP_ENV="production",
        DATABASE_URL=f"postgres://todo:{DB_PASSWORD}@db.invalid/todo",
        AUTH_SECRET=AUTH_SECRET,
        MCP_TOKEN_SECRET=MCP_SECRET,
        AGENT_MAX_TURNS="many",
    )

    lines = _problems(run_cli(env, tmp_path, *_commands()[command]))

    assert len(lines) == 4, lines
    for name in ("DATABASE_URL", "AUTH_SECRET", "MCP_TOKEN_SECRET", "AGENT_MAX_TURNS"):
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert any("postgresql+asyncpg://" in line for line in lines), lines


@pytest.mark.parametrize("command", list(_commands()))
def test_a_database_url_that_is_not_a_url_is_one_line(command: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, DATABASE_URL=f"not-a-url-{DB_PASSWORD}")

    lines = _problems(run_cli(env, tmp_path, *_commands()[command]))

    assert len(lines) == 1, lines
    assert "DATABASE_URL is not a database URL" in lines[0]


def _unreachable_urls(tmp_path: Path) -> dict[str, str]:
    blocked = tmp_path / "a-directory"
    blocked.mkdir()
    urls = {
        # Nothing listens on port 1.
        "wrong port": f"postgresql+asyncpg://postgres:{DB_PASSWORD}@127.0.0.1:1/todo",
        "sqlite file that cannot be opened": f"sqlite+aiosqlite:///{blocked}",
    }
    server = os.environ.get("TEST_DATABASE_URL", "")
    if server:
        missing = make_url(server).set(database="todo_cli_no_such_database", password=DB_PASSWORD)
        urls["missing database"] = missing.render_as_string(hide_password=False)
    return urls


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_an_unreachable_database_is_one_line_naming_it(command: str, tmp_path: Path) -> None:
    for case, url in _unreachable_urls(tmp_path).items():
        env = cli_env(tmp_path, DATABASE_URL=url)

        lines = _problems(run_cli(env, tmp_path, *_commands()[command]))

        assert len(lines) == 1, (case, lines)
        assert "cannot reach the database" in lines[0] or "cannot migrate" in lines[0], lines
        assert make_url(url).render_as_string(hide_password=True) in lines[0], (case, lines)


def test_token_needs_no_database(tmp_path: Path) -> None:
    env = cli_env(tmp_path, DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/todo")

    finished = run_cli(env, tmp_path, "token", "--user", "alice")

    assert finished.code == 0, finished
    assert finished.out.count(".") == 2, finished  # a JWT
