"""`todo-assistant`: run the servers, migrate the database, mint tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from backend.config import Settings, get_settings
from backend.db import Database
from backend.errors import AppError

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
        f"  MCP       {settings.mcp_url}  (token: uv run todo-assistant token --mcp --user NAME)",
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
            " (more: `uv run todo-assistant token --user NAME`):",
            f"  export TOKEN={token}",
            "",
            "Try it:",
            f'  curl -s -X POST {base}/api/alice/tasks -H "Authorization: Bearer $TOKEN" \\',
            "       -H 'Content-Type: application/json'"
            ' -d \'{"title": "Buy milk", "tags": ["home"]}\'',
            f'  curl -s {base}/api/alice/tasks -H "Authorization: Bearer $TOKEN"',
            f'  curl -s -X POST {base}/api/alice/chat -H "Authorization: Bearer $TOKEN" \\',
            "       -H 'Content-Type: application/json'"
            ' -d \'{"message": "remind me to call mom tomorrow at 5pm"}\'',
            "  uv run todo-assistant chat --user alice   # the same, in the terminal",
        ]
    return "\n".join(lines) + "\n"


def _start_mcp_process(host: str, port: int) -> subprocess.Popen[bytes]:
    if _answers(f"http://{host}:{port}/healthz"):
        sys.exit(f"Port {port} on {host} is already serving; stop that server or pass --mcp-port.")
    command = [sys.executable, "-m", "mcp_server", "--transport", "http"]
    process = subprocess.Popen([*command, "--host", host, "--port", str(port)])
    try:
        deadline = time.monotonic() + MCP_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"The MCP server exited during start-up (code {process.returncode}).")
            if _answers(f"http://{host}:{port}/healthz") and process.poll() is None:
                return process
            time.sleep(0.2)
        sys.exit(
            f"The MCP server did not answer on {host}:{port} within {MCP_START_TIMEOUT_SECONDS}s."
        )
    except BaseException:
        _stop(process)
        raise


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
    # uvicorn re-raises SIGTERM after its shutdown; turn it into an exception so the
    # MCP process below is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    mcp_process = None
    try:
        mcp_process = _start_mcp_process(args.host, args.mcp_port)
        print(_welcome(settings, args.host, args.port), flush=True)
        _run_api(settings, args.host, args.port)
    finally:
        if mcp_process is not None:
            _stop(mcp_process)


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> None:
    if args.transport == "stdio" and not os.environ.get("TODO_USER_ID", "").strip():
        # Checked before the SDK loads so the refusal is immediate.
        sys.exit("TODO_USER_ID must name the user whose tasks the stdio server manages")
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


async def _with_database(settings: Settings, work: Callable[[Database], Awaitable[None]]) -> None:
    database = Database(settings.database_url)
    try:
        await work(database)
    finally:
        await database.dispose()


def cmd_logs(args: argparse.Namespace, settings: Settings) -> None:
    from backend.chat import logs

    async def list_runs(database: Database) -> None:
        since = logs.parse_since(args.since) if args.since else None
        async with database.session_scope() as session:
            runs = await logs.list_runs(
                session, user_id=args.user, status=args.status, since=since, limit=args.limit
            )
        print(logs.RUN_HEADER)
        for run in runs:
            print(logs.format_run_line(run))

    async def show(database: Database) -> None:
        async with database.session_scope() as session:
            transcript = await logs.load_transcript(session, args.conversation_id)
        if args.logs_command == "show":
            print(logs.format_transcript(transcript))
        elif args.format == "md":
            sys.stdout.write(logs.export_markdown(transcript))
        else:
            sys.stdout.write(logs.export_jsonl(transcript))

    async def tail(database: Database) -> None:
        async with database.session_scope() as session:
            recent = await logs.list_runs(session, user_id=args.user, limit=10)
        shown: dict[int, str] = {run.id or 0: run.status for run in recent}
        print(logs.RUN_HEADER)
        for run in recent:
            print(logs.format_run_line(run))
        while True:
            await asyncio.sleep(args.interval)
            pending = [run_id for run_id, status in shown.items() if status == "running"]
            after = min(pending, default=max(shown, default=0) + 1) - 1
            async with database.session_scope() as session:
                runs = await logs.list_runs(session, user_id=args.user, after_id=after, limit=200)
            for run in runs:
                if run.id is not None and shown.get(run.id) != run.status:
                    shown[run.id] = run.status
                    print(logs.format_run_line(run), flush=True)

    actions = {"list": list_runs, "show": show, "export": show, "tail": tail}
    try:
        asyncio.run(_with_database(settings, actions[args.logs_command]))
    except AppError as exc:
        sys.exit(exc.message)
    except KeyboardInterrupt:
        pass


def cmd_chat(args: argparse.Namespace, settings: Settings) -> None:
    """A terminal chat through the same pipeline as POST /api/{user}/chat."""
    mcp_process = None
    if not _answers(settings.mcp_url.rsplit("/mcp", 1)[0] + "/healthz"):
        host, port = _host_port(settings.mcp_url)
        mcp_process = _start_mcp_process(host, port)
    try:
        _chat_loop(args, settings)
    except (KeyboardInterrupt, EOFError):
        print()
    finally:
        if mcp_process is not None:
            _stop(mcp_process)


def _chat_loop(args: argparse.Namespace, settings: Settings) -> None:
    from zoneinfo import ZoneInfo

    from backend.agent.runtime import AgentRuntime
    from backend.chat.schemas import ChatRequest
    from backend.chat.turns import TurnRunner

    zone = ZoneInfo(args.timezone)
    # input() stays on the main thread so Ctrl-C interrupts it; turns run on one loop.
    with asyncio.Runner() as runner:
        database = Database(settings.database_url)
        turns = TurnRunner(database, AgentRuntime.create(settings))
        conversation_id: int | None = args.conversation
        model = turns.runtime.model_name
        print(f"Chatting as {args.user} (model: {model}). Ctrl-D to leave.")
        try:
            while True:
                text = input("you> ").strip()
                if not text:
                    continue
                try:
                    request = ChatRequest(message=text, conversation_id=conversation_id)
                    result = runner.run(turns.chat(args.user, request, zone))
                except (AppError, ValueError) as exc:
                    print(f"[error] {getattr(exc, 'message', exc)}")
                    continue
                conversation_id = result.conversation_id
                for call in result.tool_calls:
                    print(f"  · {call.name}({json.dumps(call.arguments, ensure_ascii=False)})")
                print(f"assistant> {result.response}")
        finally:
            runner.run(database.dispose())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    return parsed.hostname or DEFAULT_HOST, parsed.port or DEFAULT_MCP_PORT


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

    chat = commands.add_parser(
        "chat",
        help="Chat in the terminal through the same pipeline as the API.",
        description="Chat in the terminal through the same pipeline as the API "
        "(starts the MCP server if it is not running).",
    )
    chat.add_argument("--user", default="alice", help="who you are (default %(default)s)")
    chat.add_argument("--conversation", type=int, default=None, help="continue this conversation")
    chat.add_argument("--timezone", default="UTC", help="your IANA time zone (default %(default)s)")
    chat.set_defaults(handler=cmd_chat)

    logs = commands.add_parser(
        "logs",
        help="Read conversation logs: runs, transcripts, tool calls.",
        description="Read conversation logs straight from the database (SQLite or PostgreSQL).",
    )
    logs.set_defaults(handler=cmd_logs)
    views = logs.add_subparsers(dest="logs_command", required=True, metavar="VIEW")
    listing = views.add_parser(
        "list", help="Recent turns, newest last.", description="Recent turns."
    )
    listing.add_argument("--user", help="only this user")
    listing.add_argument("--status", choices=["running", "succeeded", "stopped", "failed"])
    listing.add_argument("--since", help="only this recent: 30m, 1h, 2d")
    listing.add_argument("--limit", type=int, default=50)
    show = views.add_parser(
        "show", help="A conversation's transcript with tool calls.", description="A transcript."
    )
    show.add_argument("conversation_id", type=int)
    tail = views.add_parser("tail", help="Follow new turns as they happen.", description="Follow.")
    tail.add_argument("--user", help="only this user")
    tail.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    export = views.add_parser(
        "export", help="A conversation as JSON lines or Markdown.", description="Export."
    )
    export.add_argument("conversation_id", type=int)
    export.add_argument("--format", choices=["jsonl", "md"], default="jsonl")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValueError as exc:
        sys.exit(f"Configuration error: {exc}")
    configure_logging(settings)
    try:
        args.handler(args, settings)
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: everything was stopped on the way out


if __name__ == "__main__":
    main()
