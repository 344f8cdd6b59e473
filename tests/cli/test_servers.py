"""`api`, `serve` and `token --mcp` agree on the database and on where the MCP server is."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import jwt
import pytest

from backend.cli import _parser
from tests.cli.support import cli_env, free_port, run_cli, running
from tests.mcp_server.conftest import RPC_HEADERS

TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


@pytest.mark.parametrize("command", [["api"], ["mcp"], ["logs", "list"]])
def test_a_configured_database_without_the_schema_is_refused_with_the_fix(
    command: list[str], tmp_path: Path
) -> None:
    env = cli_env(tmp_path, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    port = ["--port", str(free_port())] if command[0] != "logs" else []

    finished = run_cli(env, tmp_path, *command, *port)

    assert finished.code == 2, finished
    [line] = finished.err.strip().splitlines()
    assert "has no schema: run `" in line, line
    assert line.endswith("todo-assistant migrate` first"), line


def test_api_on_the_default_sqlite_file_migrates_it_and_serves(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    port = free_port()
    token = run_cli(env, tmp_path, "token", "--user", "alice").out.strip()

    with running(
        env, tmp_path, "api", "--port", str(port), ready_url=f"http://127.0.0.1:{port}/healthz"
    ):
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/alice/tasks",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


def _mcp_status(mcp_url: str, token: str) -> int:
    response = httpx.post(
        mcp_url, json=TOOLS_LIST, headers={**RPC_HEADERS, "Authorization": f"Bearer {token}"}
    )
    return response.status_code


@pytest.mark.parametrize("ports_from", ["flags", "environment"])
def test_token_mcp_mints_for_the_mcp_server_that_serve_started(
    ports_from: str, tmp_path: Path
) -> None:
    api_port, mcp_port = free_port(), free_port()
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    env = cli_env(tmp_path)
    if ports_from == "flags":
        args = ["serve", "--port", str(api_port), "--mcp-port", str(mcp_port)]
    else:  # as `make run PORT=… MCP_PORT=…` passes them
        args = ["serve"]
        env.update(PORT=str(api_port), MCP_PORT=str(mcp_port))
    ready = f"http://127.0.0.1:{api_port}/healthz"

    with running(env, tmp_path, *args, ready_url=ready) as log:
        minted = run_cli(cli_env(tmp_path), tmp_path, "token", "--mcp", "--user", "alice")
        status = _mcp_status(mcp_url, minted.out.strip())
        banner = log.read_text()

    assert minted.code == 0, minted
    assert jwt.decode(minted.out.strip(), options={"verify_signature": False})["aud"] == mcp_url
    assert mcp_url in minted.err, minted  # says whom the token is for
    assert status == 200
    assert f"http://127.0.0.1:{api_port}/docs" in banner
    assert not (tmp_path / "serve.json").exists()  # the record goes with the server


def test_a_standalone_mcp_server_takes_tokens_for_its_own_port(tmp_path: Path) -> None:
    port = free_port()
    mcp_url = f"http://127.0.0.1:{port}/mcp"
    env = cli_env(tmp_path)

    with running(
        env, tmp_path, "mcp", "--port", str(port), ready_url=mcp_url.replace("/mcp", "/healthz")
    ):
        aimed = run_cli(env, tmp_path, "token", "--mcp", "--user", "alice", "--mcp-url", mcp_url)
        aimed_status = _mcp_status(mcp_url, aimed.out.strip())
        default = run_cli(env, tmp_path, "token", "--mcp", "--user", "alice")
        default_status = _mcp_status(mcp_url, default.out.strip())

    assert aimed_status == 200, aimed
    # Without --mcp-url, no MCP_RESOURCE_URL and no `serve`: the default, and it says so.
    assert default_status == 401
    assert "http://127.0.0.1:8001/mcp" in default.err


def test_a_busy_port_is_refused_with_a_command_that_works(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        finished = run_cli(
            cli_env(tmp_path),
            tmp_path,
            "serve",
            "--port",
            str(port),
            "--mcp-port",
            str(free_port()),
        )

    assert finished.code == 2, finished
    [line] = finished.err.strip().splitlines()
    assert f"port {port} on 127.0.0.1 is in use" in line
    make = re.search(r"`make run PORT=(\d+) MCP_PORT=(\d+)`", line)
    direct = re.search(r"`([^`]*?)(serve [^`]+)`", line)
    assert make is not None, line
    assert direct is not None, line
    suggested = [int(make[1]), int(make[2])]
    assert port not in suggested
    assert len(set(suggested)) == 2
    assert direct[1].rstrip().endswith(("todo-assistant", "-m backend.cli")), line
    args = _parser().parse_args(direct[2].split())
    assert [args.port, args.mcp_port] == suggested
    assert not (tmp_path / "todo.db").exists()  # refused before touching anything


def test_serve_record_of_a_dead_server_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "serve.json").write_text(
        json.dumps({"pid": 2**22 + 12345, "mcp_url": "http://127.0.0.1:9/mcp"})
    )

    minted = run_cli(cli_env(tmp_path), tmp_path, "token", "--mcp", "--user", "alice")

    claims = jwt.decode(minted.out.strip(), options={"verify_signature": False})
    assert claims["aud"] == "http://127.0.0.1:8001/mcp"
    assert claims["exp"] - claims["iat"] == 300
