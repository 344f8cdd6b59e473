"""`todo-assistant`: run the servers, migrate the database, mint tokens."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from backend.config import Settings, get_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_MCP_PORT = 8001
MCP_START_TIMEOUT_SECONDS = 20


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.log_level.upper() != "DEBUG":
        # The SDKs are chatty at INFO; their warnings still come through.
        for name in ("alembic", "mcp", "httpx", "httpx2", "openai.agents"):
            logging.getLogger(name).setLevel(logging.WARNING)


def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def _run_api(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from backend.main import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)


def _welcome(settings: Settings, host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    lines = [
        "",
        "Todo Assistant is running.",
        f"  API       {base}   (docs: {base}/docs)",
        f"  MCP       {settings.mcp_url}   (token: `todo-assistant token --mcp --user NAME`)",
        f"  database  {settings.database_url}",
    ]
    if settings.dev_auth:
        from backend.auth.tokens import mint_user_token, shared_secret_config

        config = shared_secret_config(settings)
        assert config is not None
        token = mint_user_token(config, "alice", ttl_seconds=24 * 3600)
        lines += [
            "",
            "Dev auth mode. A 24-hour token for user 'alice'"
            " (more: `todo-assistant token --user NAME`):",
            f"  export TOKEN={token}",
            "",
            "Try it:",
            f'  curl -s -X POST {base}/api/alice/tasks -H "Authorization: Bearer $TOKEN" \\',
            "       -H 'Content-Type: application/json'"
            ' -d \'{"title": "Buy milk", "tags": ["home"]}\'',
            f'  curl -s {base}/api/alice/tasks -H "Authorization: Bearer $TOKEN"',
        ]
    return "\n".join(lines) + "\n"


def _start_mcp_process(host: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "mcp_server", "--transport", "http"]
    process = subprocess.Popen([*command, "--host", host, "--port", str(port)])
    deadline = time.monotonic() + MCP_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"The MCP server exited during start-up (code {process.returncode}).")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    sys.exit(f"The MCP server did not answer on {host}:{port} within {MCP_START_TIMEOUT_SECONDS}s.")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    migrate(settings)
    # Both processes must agree on where the MCP server lives and whom its tokens are for.
    mcp_url = f"http://{args.host}:{args.mcp_port}/mcp"
    os.environ.setdefault("MCP_URL", mcp_url)
    os.environ.setdefault("MCP_RESOURCE_URL", mcp_url)
    settings = Settings()
    mcp_process = _start_mcp_process(args.host, args.mcp_port)
    try:
        print(_welcome(settings, args.host, args.port), flush=True)
        _run_api(settings, args.host, args.port)
    finally:
        _stop(mcp_process)


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> None:
    from mcp_server.runner import run_http, run_stdio

    if args.transport == "stdio":
        run_stdio(settings)
    else:
        run_http(settings, args.host, args.port)


def cmd_api(args: argparse.Namespace, settings: Settings) -> None:
    _run_api(settings, args.host, args.port)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    migrate(settings)
    print(f"Database at {settings.database_url} is up to date.")


def cmd_token(args: argparse.Namespace, settings: Settings) -> None:
    from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
    from backend.auth.tokens import mint_user_token, shared_secret_config

    if args.mcp:
        mcp_config = mcp_token_config(settings)
        print(mint_mcp_token(mcp_config, args.user, ttl_seconds=args.ttl, client_id="cli"))
        return
    config = shared_secret_config(settings)
    if config is None:
        sys.exit("User tokens come from Better Auth here (AUTH_JWKS_URL is set); nothing to mint.")
    print(mint_user_token(config, args.user, ttl_seconds=args.ttl or 3600))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="todo-assistant", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server(name: str, help_text: str, handler: object) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--host", default=DEFAULT_HOST, help="interface to bind (default %(default)s)"
        )
        sub.add_argument(
            "--port", type=int, default=DEFAULT_API_PORT, help="API port (default %(default)s)"
        )
        sub.set_defaults(handler=handler)
        return sub

    serve = server("serve", "Migrate the database and start the API and MCP servers.", cmd_serve)
    serve.add_argument(
        "--mcp-port", type=int, default=DEFAULT_MCP_PORT, help="MCP port (default %(default)s)"
    )
    server("api", "Start the API server alone (MCP_URL says where the MCP server is).", cmd_api)
    mcp = commands.add_parser(
        "mcp",
        help="Start the MCP server alone.",
        description="Start the MCP server: streamable HTTP at /mcp,"
        " or stdio (the user comes from TODO_USER_ID).",
    )
    mcp.add_argument("--transport", choices=["http", "stdio"], default="http")
    mcp.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default %(default)s)")
    mcp.add_argument(
        "--port", type=int, default=DEFAULT_MCP_PORT, help="port (default %(default)s)"
    )
    mcp.set_defaults(handler=cmd_mcp)
    commands.add_parser(
        "migrate", help="Apply database migrations.", description="Apply database migrations."
    ).set_defaults(handler=cmd_migrate)
    token = commands.add_parser(
        "token",
        help="Print a user token signed with the dev secret or AUTH_SECRET.",
        description="Print a user token signed with the dev secret or AUTH_SECRET.",
    )
    token.add_argument("--user", required=True, help="the user id (token subject)")
    token.add_argument(
        "--ttl", type=int, default=None, help="lifetime in seconds (default 3600; MCP 300, max 600)"
    )
    token.add_argument(
        "--mcp", action="store_true", help="mint an MCP access token (Inspector, desktop clients)"
    )
    token.set_defaults(handler=cmd_token)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValueError as exc:
        sys.exit(f"Configuration error: {exc}")
    configure_logging(settings)
    args.handler(args, settings)


if __name__ == "__main__":
    main()
