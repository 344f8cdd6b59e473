"""`todo-assistant`: run the servers and the event relay, migrate the database, mint tokens."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from backend.config import MAX_WORKERS, Settings, describe_problems, get_settings
from backend.db import Database, create_engine
from backend.errors import AppError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_MCP_PORT = 8001
MCP_START_TIMEOUT_SECONDS = 20
USER_TOKEN_TTL_SECONDS = 3600
MCP_TOKEN_MAX_TTL_SECONDS = 600
# Written by `serve` so that `token --mcp` mints for the MCP server actually running.
RUNTIME_FILE = "serve.json"
# Usage and configuration errors share argparse's exit code: the command cannot run as set up.
EXIT_CONFIGURATION = 2
MIGRATIONS = Path(__file__).parent / "migrations"


def fail(*problems: str) -> NoReturn:
    """Stop with one line per problem on stderr; no traceback for a setup the user can fix."""
    for problem in problems:
        print(f"todo-assistant: {problem}", file=sys.stderr)
    sys.exit(EXIT_CONFIGURATION)


def cli_command() -> str:
    """How to run this tool from the user's shell on this machine."""
    if shutil.which("uv"):
        return "uv run todo-assistant"
    script = Path(sys.executable).parent / "todo-assistant"
    if script.exists():
        with contextlib.suppress(ValueError):
            return str(script.relative_to(Path.cwd()))
        return str(script)
    return f"{sys.executable} -m backend.cli"


def safe_url(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def configure_logging(settings: Settings) -> None:
    """LOG_LEVEL and LOG_FORMAT (text, or one JSON object per line) for this process."""
    from backend.observability import QUIET_LOGGERS, log_formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(settings.log_format))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    if settings.log_level.upper() != "DEBUG":
        for name, level in QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(level)


def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def _reason(exc: BaseException, database_url: str) -> str:
    """The driver's own words for a failure, on one line, with any password masked."""
    root: BaseException = exc
    while True:
        inner = getattr(root, "orig", None) or root.__cause__
        if not isinstance(inner, BaseException) or inner is root:
            break
        root = inner
    text = " ".join(str(root).split()) or type(root).__name__
    password = make_url(database_url).password
    return text.replace(password, "***") if password else text


def _schema_revision(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return asyncio.run(_async_schema_revision(database_url))
    # The stdlib driver: aiosqlite's worker thread outlives a failed connect and prints a
    # traceback at exit.
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(url.set(drivername="sqlite"))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


async def _async_schema_revision(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def _reachable_revision(settings: Settings) -> str | None:
    try:
        return _schema_revision(settings.database_url)
    except Exception as exc:
        where = safe_url(settings.database_url)
        fail(f"cannot reach the database {where}: {_reason(exc, settings.database_url)}")


def _migrate_or_fail(settings: Settings) -> None:
    _reachable_revision(settings)
    try:
        migrate(settings)
    except Exception as exc:
        reason = _reason(exc, settings.database_url)
        fail(f"cannot migrate {safe_url(settings.database_url)}: {reason}")


def ready_database(settings: Settings) -> None:
    """Start only against a reachable database at this code's schema.

    The default SQLite file is migrated on the spot, as `serve` does: it is a private dev file.
    Any configured database is left alone: it may be shared by several processes or need
    privileges a server should not hold, so migrating it is a deliberate `migrate`.
    """
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    where = safe_url(settings.database_url)
    revision = _reachable_revision(settings)
    script = ScriptDirectory(str(MIGRATIONS))
    if revision == script.get_current_head():
        return
    try:
        known = revision is None or script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        fail(f"the database {where} is at schema {revision}, unknown to this version")
    if settings.uses_default_database:
        _migrate_or_fail(settings)
        return
    state = "has no schema" if revision is None else "has an older schema"
    fail(f"the database {where} {state}: run `{cli_command()} migrate` first")


def _run_api(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from backend.observability import uvicorn_log_config

    if workers > 1:
        # Each worker process builds its own app (and pools) from the same environment.
        uvicorn.run(
            "backend.main:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            # Workers start fresh: the parent's logging setup never reaches them.
            log_config=uvicorn_log_config(settings.log_format, settings.log_level),
        )
        return
    from backend.main import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # uvicorn's own lines in LOG_FORMAT too, not its default text.
        log_config=uvicorn_log_config(settings.log_format, settings.log_level),
    )


def _workers(settings: Settings, wanted: int | None, name: str) -> int:
    """The worker count asked for (flag, else setting), refused on SQLite above one."""
    workers = wanted if wanted is not None else getattr(settings, name)
    if workers > 1 and make_url(settings.database_url).get_backend_name() == "sqlite":
        fail(
            f"{workers} worker processes need PostgreSQL: SQLite takes one writer at a time,"
            f" so run one process ({name.upper()}=1) or set DATABASE_URL to PostgreSQL"
        )
    return int(workers)


def _welcome(settings: Settings, host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    cli = cli_command()
    lines = [
        "",
        "Todo Assistant is running.",
        f"  API       {base}   (docs: {base}/docs)",
        f"  MCP       {settings.mcp_url}  (token: {cli} token --mcp --user NAME)",
        f"  database  {safe_url(settings.database_url)}",
    ]
    if settings.dev_auth:
        from backend.auth.tokens import mint_user_token, shared_secret_config

        config = shared_secret_config(settings)
        assert config is not None
        token = mint_user_token(config, "alice", ttl_seconds=USER_TOKEN_TTL_SECONDS)
        operator = mint_user_token(config, "admin", ttl_seconds=USER_TOKEN_TTL_SECONDS, admin=True)
        lines += [
            "",
            "Dev auth mode. A token for user 'alice', valid for 1 hour"
            f" (a fresh one, or another user: `{cli} token --user NAME`):",
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
            f"  {cli} chat --user alice   # the same, in the terminal",
            "",
            f"Console: open {base}/console and paste a token: alice's above (her own",
            "conversations), or this operator's (every user's runs, charts, chat as anyone):",
            f"  {operator}",
            f"  (a fresh one: `{cli} token --user NAME --admin`)",
        ]
    else:
        lines += [
            "",
            f"Console: open {base}/console and sign in with a Better Auth JWT (operators:"
            " role admin, or ADMIN_USERS).",
        ]
    return "\n".join(lines) + "\n"


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port left in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _free_port_after(host: str, port: int, taken: set[int]) -> int:
    candidate = max(port, 1023) + 1
    while candidate < 65535 and (candidate in taken or _port_in_use(host, candidate)):
        candidate += 1
    return candidate


def _refuse_busy_ports(host: str, api_port: int, mcp_port: int) -> None:
    busy = [port for port in (api_port, mcp_port) if _port_in_use(host, port)]
    if not busy:
        return
    api = _free_port_after(host, max(api_port, mcp_port, 8009), set())
    mcp = _free_port_after(host, api, {api})
    names = " and ".join(str(port) for port in busy)
    fail(
        f"port {names} on {host} is in use; stop what listens there or choose free ports:"
        f" `make run PORT={api} MCP_PORT={mcp}` or `{cli_command()} serve --port {api}"
        f" --mcp-port {mcp}`"
    )


def _start_mcp_process(host: str, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    if _port_in_use(host, port):
        fail(f"port {port} on {host} is in use; stop what listens there or pass --mcp-port")
    command = [sys.executable, "-m", "mcp_server", "--transport", "http", "--workers", str(workers)]
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


@contextlib.contextmanager
def _runtime_record(settings: Settings, **urls: str) -> Iterator[None]:
    """DATA_DIR/serve.json names the running servers while `serve` lives."""
    path = settings.data_dir / RUNTIME_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{RUNTIME_FILE}.{os.getpid()}")
    staged.write_text(json.dumps({"pid": os.getpid(), **urls}))
    staged.replace(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def _running_mcp_url(settings: Settings) -> str | None:
    """The MCP URL of a `serve` still running on this DATA_DIR, if any."""
    try:
        record = json.loads((settings.data_dir / RUNTIME_FILE).read_text())
        os.kill(int(record["pid"]), 0)  # a record left by a killed server is stale
        return str(record["mcp_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    _refuse_busy_ports(args.host, args.port, args.mcp_port)
    _migrate_or_fail(settings)
    # Both processes must agree on where the MCP server lives and whom its tokens are for.
    mcp_url = f"http://{args.host}:{args.mcp_port}/mcp"
    os.environ.setdefault("MCP_URL", mcp_url)
    os.environ.setdefault("MCP_RESOURCE_URL", mcp_url)
    settings = Settings()
    api_workers = _workers(settings, args.workers, "api_workers")
    mcp_workers = _workers(settings, args.mcp_workers, "mcp_workers")
    # uvicorn re-raises SIGTERM after its shutdown; turn it into an exception so the
    # MCP process below is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    mcp_process = None
    try:
        mcp_process = _start_mcp_process(args.host, args.mcp_port, mcp_workers)
        api_url = f"http://{args.host}:{args.port}"
        with _runtime_record(settings, api_url=api_url, mcp_url=settings.mcp_resource_url):
            print(_welcome(settings, args.host, args.port), flush=True)
            _run_api(settings, args.host, args.port, api_workers)
    finally:
        if mcp_process is not None:
            _stop(mcp_process)


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> None:
    transport = args.transport or settings.mcp_transport
    if transport == "stdio":
        _serve_stdio(settings)
        return
    if not {"mcp_url", "mcp_resource_url"} & settings.model_fields_set:
        # Tokens name the server they are for; unconfigured, this one on the port it binds
        # (by loopback, as `token --mcp` and the API name it by default). Through the
        # environment, so that worker processes read the same.
        url = f"http://127.0.0.1:{args.port}/mcp"
        os.environ["MCP_URL"] = os.environ["MCP_RESOURCE_URL"] = url
        settings = settings.model_copy(update={"mcp_url": url, "mcp_resource_url": url})
    workers = _workers(settings, args.workers, "mcp_workers")
    ready_database(settings)
    from mcp_server.runner import run_http

    run_http(settings, args.host, args.port, workers)


def cmd_mcp_stdio(args: argparse.Namespace, settings: Settings) -> None:
    _serve_stdio(settings)


def _serve_stdio(settings: Settings) -> None:
    from backend.deps import user_id_problem

    # Checked before the SDK loads so the refusal is immediate.
    user_id = os.environ.get("TODO_USER_ID", "")
    if not user_id.strip():
        fail("TODO_USER_ID must name the user whose tasks the stdio server manages")
    if problem := user_id_problem(user_id):
        fail(f"TODO_USER_ID: {problem}")
    # stdout belongs to the protocol: anything printed while starting goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        ready_database(settings)
        from mcp_server.runner import run_stdio
    run_stdio(settings)


def cmd_api(args: argparse.Namespace, settings: Settings) -> None:
    workers = _workers(settings, args.workers, "api_workers")
    ready_database(settings)
    _run_api(settings, args.host, args.port, workers)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    _migrate_or_fail(settings)
    print(f"Database at {safe_url(settings.database_url)} is up to date.")


def cmd_token(args: argparse.Namespace, settings: Settings) -> None:
    from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
    from backend.auth.tokens import mint_user_token, shared_secret_config

    if args.mcp:
        if args.admin:
            fail("--admin is for user tokens: MCP access tokens carry no role")
        ttl = args.ttl or settings.mcp_token_ttl_seconds
        if ttl > MCP_TOKEN_MAX_TTL_SECONDS:
            fail(f"--ttl of an MCP access token is at most {MCP_TOKEN_MAX_TTL_SECONDS} seconds")
        audience = _mcp_audience(args, settings)
        mcp_config = mcp_token_config(settings.model_copy(update={"mcp_resource_url": audience}))
        print(mint_mcp_token(mcp_config, args.user, ttl_seconds=ttl, client_id="cli"))
        print(f"MCP access token for {audience}, valid {ttl} s", file=sys.stderr)
        return
    if settings.auth_jwks_url:
        # The API then verifies users against Better Auth's keys only; a token signed here
        # would be refused.
        fail(
            "user tokens come from Better Auth here (AUTH_JWKS_URL is set): sign in through"
            " your front end and use its JWT; `token --mcp` still works"
        )
    config = shared_secret_config(settings)
    assert config is not None  # neither JWKS nor a secret means dev mode
    ttl = args.ttl or USER_TOKEN_TTL_SECONDS
    print(mint_user_token(config, args.user, ttl_seconds=ttl, admin=args.admin))


def _mcp_audience(args: argparse.Namespace, settings: Settings) -> str:
    """--mcp-url, else MCP_RESOURCE_URL as set, else the running `serve`, else the default."""
    if args.mcp_url:
        return str(args.mcp_url)
    if {"mcp_url", "mcp_resource_url"} & settings.model_fields_set:
        return settings.mcp_resource_url
    return _running_mcp_url(settings) or settings.mcp_resource_url


async def _with_database(settings: Settings, work: Callable[[Database], Awaitable[None]]) -> None:
    database = Database.for_server(settings)
    try:
        await work(database)
    finally:
        await database.dispose()


def cmd_logs(args: argparse.Namespace, settings: Settings) -> None:
    from backend.chat import logs

    ready_database(settings)

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
        # Ctrl-C (or a supervisor's SIGTERM) ends the wait, not whatever query is running:
        # cancelling a database call halfway leaves a connection that cannot close cleanly.
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        async with database.session_scope() as session:
            recent = await logs.list_runs(session, user_id=args.user, limit=10)
        shown: dict[int, str] = {run.id or 0: run.status for run in recent}
        print(logs.RUN_HEADER, flush=True)
        for run in recent:
            print(logs.format_run_line(run), flush=True)
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=args.interval)
            if stopped.is_set():
                break
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


def cmd_relay(args: argparse.Namespace, settings: Settings) -> None:
    """Publish task events until SIGINT or SIGTERM, apart from the API."""
    ready_database(settings)

    async def relay(database: Database) -> None:
        from backend.events.publishers import build_publisher
        from backend.events.relay import Relay

        # A signal ends the wait for the next round, never a round halfway: a publish whose
        # marking was cut off would be published again by the next relay.
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        publisher = build_publisher(settings)
        worker = Relay(database, publisher, settings)
        running = worker.start()
        print(
            f"Relaying task events from {safe_url(settings.database_url)} to"
            f" {_destination(settings)}. Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )
        try:
            waiting = asyncio.create_task(stopped.wait())
            await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            await worker.aclose()
            await running  # a relay that died of a bug says why here
        finally:
            await publisher.aclose()

    asyncio.run(_with_database(settings, relay))


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> None:
    """Fire due reminders until SIGINT or SIGTERM, apart from the API."""
    ready_database(settings)

    async def schedule(database: Database) -> None:
        from backend.reminders.scheduler import Scheduler

        # A signal ends the wait for the next round, never a firing halfway.
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        worker = Scheduler(database, settings)
        running = worker.start()
        print(
            f"Firing reminders from {safe_url(settings.database_url)} (looking every"
            f" {settings.reminders_poll_seconds:g} s at most). Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )
        waiting = asyncio.create_task(stopped.wait())
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        await worker.aclose()
        await running  # a scheduler that died of a bug says why here

    asyncio.run(_with_database(settings, schedule))


def _destination(settings: Settings) -> str:
    if settings.events_publisher == "kafka":
        return f"Kafka {settings.kafka_bootstrap_servers} topic {settings.events_topic}"
    if settings.events_publisher == "dapr":
        where = f"{settings.dapr_host}:{settings.dapr_http_port}"
        return f"Dapr {where} pub/sub {settings.dapr_pubsub_name} topic {settings.events_topic}"
    return "nowhere (EVENTS_PUBLISHER=none: events are only marked published)"


def cmd_events(args: argparse.Namespace, settings: Settings) -> None:
    from backend.events import log

    if args.events_command == "requeue" and bool(args.events) == args.dead:
        fail("events requeue takes event ids or --dead, not both nor neither")
    ready_database(settings)

    async def list_events(database: Database) -> None:
        async with database.session_scope() as session:
            events = await log.list_events(
                session, status=args.status, task_id=args.task, limit=args.limit
            )
        print(log.EVENT_HEADER)
        for event in events:
            print(log.format_event_line(event))

    async def show(database: Database) -> None:
        async with database.session_scope() as session:
            event = await log.find_event(session, args.event)
        print(log.format_event(event))

    async def requeue(database: Database) -> None:
        async with database.session_scope(write=True) as session:
            count = await log.requeue(session, args.events, all_dead=args.dead)
        print(f"Requeued {count} dead event{'' if count == 1 else 's'}.")

    actions = {"list": list_events, "show": show, "requeue": requeue}
    try:
        asyncio.run(_with_database(settings, actions[args.events_command]))
    except AppError as exc:
        fail(exc.message)


def cmd_chat(args: argparse.Namespace, settings: Settings) -> None:
    """A terminal chat through the same pipeline as POST /api/{user}/chat."""
    ready_database(settings)
    # Join the MCP server a running `serve` started (on whatever port it was given) unless
    # MCP_URL names one; otherwise the chat would start a second server on the default port.
    configured = {"mcp_url", "mcp_resource_url"} & settings.model_fields_set
    running = None if configured else _running_mcp_url(settings)
    if running:
        settings = settings.model_copy(update={"mcp_url": running, "mcp_resource_url": running})
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


def _line_editing() -> None:
    """Arrow keys, history and Ctrl-R in input(), where the platform has readline."""
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it is what hooks into input())


def _chat_loop(args: argparse.Namespace, settings: Settings) -> None:
    from backend.agent.runtime import AgentRuntime
    from backend.chat.schemas import ChatRequest
    from backend.chat.turns import TurnRunner

    zone: ZoneInfo = args.timezone or local_zone()
    _line_editing()
    # input() stays on the main thread so Ctrl-C interrupts it; turns run on one loop.
    with asyncio.Runner() as runner:
        database = Database(settings.database_url)
        turns = TurnRunner(database, AgentRuntime.create(settings))
        conversation_id: int | None = args.conversation
        model = turns.runtime.model_name
        print(
            f"Chatting as {args.user} (model: {model}), time zone {zone.key}"
            " (--timezone to change). Ctrl-D to leave."
        )
        try:
            while True:
                text = input("you> ").strip()
                if not text:
                    continue
                try:
                    request = ChatRequest(message=text, conversation_id=conversation_id)
                    result = runner.run(turns.chat(args.user, request, zone, "cli"))
                except (AppError, ValueError) as exc:
                    print(f"[error] {getattr(exc, 'message', exc)}")
                    continue
                conversation_id = result.conversation_id
                for call in result.tool_calls:
                    print(f"  · {call.name}({json.dumps(call.arguments, ensure_ascii=False)})")
                print(f"assistant> {result.response}")
        finally:
            runner.run(database.dispose())


def local_zone() -> ZoneInfo:
    """This machine's IANA zone: TZ, else /etc/localtime's target, else /etc/timezone; UTC."""
    candidates = [os.environ.get("TZ", "").removeprefix(":")]
    with contextlib.suppress(OSError):
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        if name and not name.startswith("/"):
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                return ZoneInfo(name)
    return ZoneInfo("UTC")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    return parsed.hostname or DEFAULT_HOST, parsed.port or DEFAULT_MCP_PORT


# --- argument types: a bad value is an argparse usage error (exit 2), never a traceback ---


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def _worker_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_WORKERS} worker processes")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _user_id(text: str) -> str:
    from backend.deps import user_id_problem

    if problem := user_id_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def _zone(text: str) -> ZoneInfo:
    from backend.chat.router import user_zone

    try:
        return user_zone(text)
    except AppError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IANA time zone (such as Europe/Paris)"
        ) from None


def _mcp_url(text: str) -> str:
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL")
    return text


def _env_default(name: str, fallback: int) -> str:
    # A string default goes through the argument's type, so a bad PORT is reported too.
    return os.environ.get(name) or str(fallback)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="todo-assistant", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description)
        sub.add_argument(
            "--host", default=DEFAULT_HOST, help="interface to bind (default %(default)s)"
        )
        sub.add_argument(
            "--port",
            type=_port,
            default=_env_default("PORT", DEFAULT_API_PORT),
            help=f"API port (default: $PORT or {DEFAULT_API_PORT})",
        )
        sub.add_argument(
            "--workers",
            type=_worker_count,
            default=None,
            help="API worker processes (default: $API_WORKERS or 1; above 1 needs PostgreSQL)",
        )
        return sub

    serve = server(
        "serve",
        "Migrate the database and start the API and MCP servers.",
        "Migrate the database, start the MCP server as a child process, then the API, and"
        " print a dev token with commands to try. Ctrl-C stops both.",
    )
    serve.add_argument(
        "--mcp-port",
        type=_port,
        default=_env_default("MCP_PORT", DEFAULT_MCP_PORT),
        help=f"MCP server port (default: $MCP_PORT or {DEFAULT_MCP_PORT})",
    )
    serve.add_argument(
        "--mcp-workers",
        type=_worker_count,
        default=None,
        help="MCP server worker processes (default: $MCP_WORKERS or 1; above 1 needs PostgreSQL)",
    )
    serve.set_defaults(handler=cmd_serve)
    server(
        "api",
        "Start the API server alone.",
        "Start the API server alone; MCP_URL says where the MCP server is. The default"
        " SQLite file is migrated first; any other database must be migrated already"
        " (`todo-assistant migrate`).",
    ).set_defaults(handler=cmd_api)
    mcp = commands.add_parser(
        "mcp",
        help="Start the MCP server alone (HTTP, or stdio with MCP_TRANSPORT=stdio).",
        description="Start the MCP server: streamable HTTP at /mcp, or stdio (--transport"
        " stdio, MCP_TRANSPORT=stdio or the mcp-stdio command; the user comes from"
        " TODO_USER_ID).",
    )
    mcp.add_argument(
        "--transport",
        choices=["http", "stdio"],
        default=None,
        help="default: $MCP_TRANSPORT or http",
    )
    mcp.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default %(default)s)")
    mcp.add_argument(
        "--port",
        type=_port,
        default=_env_default("MCP_PORT", DEFAULT_MCP_PORT),
        help=f"port (default: $MCP_PORT or {DEFAULT_MCP_PORT})",
    )
    mcp.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help="worker processes (default: $MCP_WORKERS or 1; above 1 needs PostgreSQL)",
    )
    mcp.set_defaults(handler=cmd_mcp)
    commands.add_parser(
        "mcp-stdio",
        help="Run the MCP server over stdio for TODO_USER_ID (desktop clients, Inspector).",
        description="Run the MCP server over stdin/stdout, acting for the user named in"
        " TODO_USER_ID. stdout carries only the protocol; logs go to stderr.",
    ).set_defaults(handler=cmd_mcp_stdio)
    commands.add_parser(
        "migrate",
        help="Apply database migrations.",
        description="Bring the database at DATABASE_URL to the newest schema.",
    ).set_defaults(handler=cmd_migrate)
    token = commands.add_parser(
        "token",
        help="Print a user token (dev secret or AUTH_SECRET) or an MCP access token.",
        description="Print a user token signed with the dev secret or AUTH_SECRET (not with"
        " Better Auth: its tokens come from your front end), or with --mcp an access token"
        " for the MCP server. The token goes to stdout, what it is for to stderr.",
    )
    token.add_argument("--user", required=True, type=_user_id, help="the user id (token subject)")
    token.add_argument(
        "--ttl",
        type=_positive_int,
        default=None,
        metavar="SECONDS",
        help=f"lifetime in seconds (default {USER_TOKEN_TTL_SECONDS};"
        f" MCP: 300, at most {MCP_TOKEN_MAX_TTL_SECONDS})",
    )
    token.add_argument(
        "--mcp", action="store_true", help="mint an MCP access token (Inspector, desktop clients)"
    )
    token.add_argument(
        "--admin",
        action="store_true",
        help="an operator's token (claim role: \"admin\"): the console shows every user's runs",
    )
    token.add_argument(
        "--mcp-url",
        type=_mcp_url,
        default=None,
        metavar="URL",
        help="the MCP server the token is for (default: MCP_RESOURCE_URL if set, else the"
        " server `serve` is running, else http://127.0.0.1:8001/mcp)",
    )
    token.set_defaults(handler=cmd_token)

    chat = commands.add_parser(
        "chat",
        help="Chat in the terminal through the same pipeline as the API.",
        description="Chat in the terminal through the same pipeline as the API "
        "(starts the MCP server if it is not running). Ctrl-D leaves.",
    )
    chat.add_argument(
        "--user", type=_user_id, default="alice", help="who you are (default %(default)s)"
    )
    chat.add_argument(
        "--conversation",
        type=_positive_int,
        default=None,
        metavar="ID",
        help="continue this conversation (ids: `logs list`)",
    )
    chat.add_argument(
        "--timezone",
        type=_zone,
        default=None,
        metavar="ZONE",
        help="your IANA time zone, for dates such as 'tomorrow at 5pm' (default: this"
        " machine's zone)",
    )
    chat.set_defaults(handler=cmd_chat)

    logs = commands.add_parser(
        "logs",
        help="Read conversation logs: runs, transcripts, tool calls.",
        description="Read conversation logs straight from the database (SQLite or PostgreSQL).",
    )
    logs.set_defaults(handler=cmd_logs)
    views = logs.add_subparsers(dest="logs_command", required=True, metavar="VIEW")
    listing = views.add_parser(
        "list",
        help="Recent turns, newest last.",
        description="Recent chat turns, newest last: when, user, conversation, channel, model,"
        " status (with the error of a failed one) and latency.",
    )
    listing.add_argument("--user", help="only this user")
    listing.add_argument(
        "--status",
        choices=["running", "succeeded", "stopped", "failed"],
        help="only turns that ended (or not yet) this way",
    )
    listing.add_argument("--since", help="only this recent: 30m, 1h, 2d")
    listing.add_argument(
        "--limit",
        type=_positive_int,
        default=50,
        metavar="N",
        help="at most this many (default %(default)s)",
    )
    show = views.add_parser(
        "show",
        help="A conversation's transcript with tool calls.",
        description="Print a conversation's transcript: every message, and each turn's tool"
        " calls with arguments, results and timings.",
    )
    show.add_argument(
        "conversation_id", type=_positive_int, help="the conversation (its id in `logs list`)"
    )
    tail = views.add_parser(
        "tail",
        help="Follow new turns as they happen.",
        description="Print the last 10 turns, then each new turn and each status change"
        " (running → succeeded or failed) as it happens, until Ctrl-C.",
    )
    tail.add_argument("--user", help="only this user")
    tail.add_argument(
        "--interval",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between polls of the database (default %(default)s)",
    )
    export = views.add_parser(
        "export",
        help="A conversation as JSON lines or Markdown.",
        description="Write a conversation to stdout with its runs and tool calls: JSON lines"
        " (one record per line, for scripts) or Markdown (to read or attach to a bug report).",
    )
    export.add_argument(
        "conversation_id", type=_positive_int, help="the conversation (its id in `logs list`)"
    )
    export.add_argument(
        "--format", choices=["jsonl", "md"], default="jsonl", help="jsonl (default) or md"
    )
    _event_commands(commands)
    return parser


def _event_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "relay",
        help="Publish task events from the outbox until Ctrl-C (apart from the API).",
        description="Publish pending task events to EVENTS_PUBLISHER (none, dapr or kafka),"
        " in order per task, until SIGINT or SIGTERM. The API runs one itself unless"
        " EVENTS_RELAY=false; on PostgreSQL any number may run side by side, on SQLite run"
        " only one.",
    ).set_defaults(handler=cmd_relay)
    commands.add_parser(
        "scheduler",
        help="Fire due reminders until Ctrl-C (apart from the API).",
        description="Fire reminders as they come due: a notification, a note in the user's"
        " latest conversation and a reminder.due event each, once. The API runs one itself"
        " unless REMINDERS_SCHEDULER=false; on PostgreSQL any number may run side by side,"
        " on SQLite run only one.",
    ).set_defaults(handler=cmd_scheduler)
    events = commands.add_parser(
        "events",
        help="Inspect the task event log: list, show, requeue dead events.",
        description="Read the task event log (the outbox) straight from the database, and"
        " send dead events again.",
    )
    events.set_defaults(handler=cmd_events)
    views = events.add_subparsers(dest="events_command", required=True, metavar="VIEW")
    listing = views.add_parser(
        "list",
        help="Recent events, newest last.",
        description="Recent task events, newest last: log id, when, status, attempts, task,"
        " version and action, with the last error of an event not yet published.",
    )
    listing.add_argument(
        "--status", choices=["pending", "published", "dead"], help="only events in this state"
    )
    listing.add_argument(
        "--task", type=_positive_int, metavar="ID", help="only the events of this task"
    )
    listing.add_argument(
        "--limit",
        type=_positive_int,
        default=50,
        metavar="N",
        help="at most this many (default %(default)s)",
    )
    show = views.add_parser(
        "show",
        help="One event: its delivery state and the CloudEvent.",
        description="Print one event's status, attempts and last error, then the CloudEvent"
        " JSON exactly as it is published.",
    )
    show.add_argument("event", metavar="EVENT", help="its event id (UUID) or log id")
    requeue = views.add_parser(
        "requeue",
        help="Send dead events again.",
        description="Put dead events back in the queue with their attempts reset to 0; the"
        " relay publishes them on its next round.",
    )
    requeue.add_argument(
        "events", nargs="*", metavar="EVENT", help="event ids (UUID) or log ids to requeue"
    )
    requeue.add_argument("--dead", action="store_true", help="requeue every dead event")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        fail(*(f"configuration: {line}" for line in describe_problems(exc)))
    configure_logging(settings)
    try:
        args.handler(args, settings)
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: everything was stopped on the way out


if __name__ == "__main__":
    main()
