"""`--workers`: several server processes on PostgreSQL, each with the pool its settings allow;
SQLite keeps one writer and says so."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from backend.config import Settings
from backend.db import Database
from tests.cli.support import cli_env, free_port, run_cli, running


@pytest.mark.parametrize(
    "command",
    [["serve", "--workers", "2"], ["serve", "--mcp-workers", "3"], ["api", "--workers", "2"]]
    + [["mcp", "--workers", "2"]],
)
def test_more_than_one_worker_on_sqlite_is_refused_with_the_reason(
    command: list[str], tmp_path: Path
) -> None:
    finished = run_cli(cli_env(tmp_path), tmp_path, *command, "--port", str(free_port()))

    assert finished.code == 2, finished
    assert "need PostgreSQL: SQLite takes one writer at a time" in finished.err


def test_workers_from_the_environment_are_checked_like_the_flag(tmp_path: Path) -> None:
    env = cli_env(tmp_path, API_WORKERS="2")
    finished = run_cli(env, tmp_path, "api", "--port", str(free_port()))
    assert finished.code == 2, finished
    assert "API_WORKERS=1" in finished.err


@pytest.mark.parametrize("flag", ["0", "33", "two"])
def test_a_worker_count_out_of_range_is_a_usage_error(flag: str, tmp_path: Path) -> None:
    finished = run_cli(cli_env(tmp_path), tmp_path, "serve", "--workers", flag)
    assert finished.code == 2, finished
    assert "--workers" in finished.err


def test_a_server_pool_takes_its_size_from_the_settings(database_url: str) -> None:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        database_pool_size=3,
        database_max_overflow=2,
    )
    database = Database.for_server(settings)
    pool = database.engine.sync_engine.pool
    if database_url.startswith("postgresql"):
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 2  # type: ignore[attr-defined]


@pytest.mark.postgres_only  # more than one worker needs PostgreSQL
def test_serve_with_workers_on_postgresql_answers_turns_from_several_processes(
    tmp_path: Path, database_url: str
) -> None:
    user = f"workers-{uuid.uuid4().hex[:8]}"  # the database is shared by this session's tests
    api_port, mcp_port = free_port(), free_port()
    env = cli_env(
        tmp_path, DATABASE_URL=database_url, DATABASE_POOL_SIZE="2", DATABASE_MAX_OVERFLOW="1"
    )
    token = run_cli(env, tmp_path, "token", "--user", user).out.strip()
    headers = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{api_port}"
    args = ["--workers", "2", "--mcp-workers", "2", "--mcp-port", str(mcp_port)]

    with running(
        env, tmp_path, "serve", "--port", str(api_port), *args, ready_url=f"{base}/readyz"
    ):
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            replies = [
                http.post(f"/api/{user}/chat", json={"message": f"add water plant {n}"})
                for n in range(6)
            ]
            listed = http.get(f"/api/{user}/tasks", params={"limit": 50})

    assert [reply.status_code for reply in replies] == [200] * 6, replies[-1].text
    titles = sorted(task["title"].lower() for task in listed.json()["items"])
    assert titles == sorted(f"water plant {n}" for n in range(6))
