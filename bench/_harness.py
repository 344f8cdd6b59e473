"""Start-up and measuring helpers shared by the chat benchmarks (chat_turn, history_scaling,
soak): free ports, the database a run uses, `serve` and the bench apps as processes, tokens,
seeded conversations, per-process CPU and RSS from /proc, and the figures they print."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import col

from backend.auth.tokens import mint_user_token, shared_secret_config
from backend.config import Settings
from backend.db import Database
from backend.models import AgentRun, Conversation, Message, new_public_id

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 90.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Per process, on PostgreSQL: the server allows 100 connections and a run has up to four
# processes with pools (API, MCP, peer, floor) besides whoever else shares the server.
PG_POOL_SIZE = 4
PG_MAX_OVERFLOW = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_or_free(port: int | None) -> int:
    return port if port else free_port()


# -- the database a run uses ---------------------------------------------------------------


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="use this database as it is (postgresql+asyncpg://…); default: a new SQLite file",
    )
    parser.add_argument(
        "--admin-url",
        default=None,
        help="a PostgreSQL URL allowed to CREATE DATABASE: the run creates its own database "
        "there and drops it at the end",
    )


@contextlib.contextmanager
def database_for_run(args: argparse.Namespace, data_dir: Path) -> Iterator[str]:
    """The URL the run uses: the given one, a database made for the run, or SQLite."""
    if args.database_url:
        yield args.database_url
        return
    if not args.admin_url:
        yield f"sqlite+aiosqlite:///{data_dir / 'bench.db'}"
        return
    admin = make_url(args.admin_url).set(drivername="postgresql+asyncpg")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    server = admin.render_as_string(hide_password=False)
    asyncio.run(on_server(server, f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def on_server(server_url: str, statement: str) -> None:
    """Run `statement` (CREATE/DROP DATABASE) on the server of `server_url`, outside a
    transaction, from its `postgres` database."""
    engine = create_async_engine(
        make_url(server_url).set(drivername="postgresql+asyncpg", database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def new_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new database `<prefix>_<pid>` on the server of `server_url`, dropped at the end."""
    name = f"{prefix}_{os.getpid()}"
    await on_server(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def pool_environment() -> dict[str, str]:
    """Small pools through whichever pool settings the app reads (none: its own defaults)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        if "pool" not in name and "overflow" not in name:
            continue
        if "overflow" in name:
            env[name.upper()] = str(PG_MAX_OVERFLOW)
        elif name.endswith("size"):
            env[name.upper()] = str(PG_POOL_SIZE)
    return env


# -- processes ------------------------------------------------------------------------------


def base_environment(data_dir: Path, database_url: str, mcp_url: str) -> dict[str, str]:
    """What every process of a run shares: the database, the MCP URL tokens name, the model."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTH_", "MCP_", "OPENAI_", "DATABASE_", "AGENT_", "APP_"))
    }
    return {
        **kept,
        "PYTHONPATH": str(REPO_ROOT),
        "APP_ENV": "development",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "MCP_URL": mcp_url,
        "MCP_RESOURCE_URL": mcp_url,
        "LOG_LEVEL": "WARNING",
        "AGENT_MODEL": "local",
        **(pool_environment() if is_postgres(database_url) else {}),
    }


def settings_for(env: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,
        app_env="development",
        data_dir=Path(env["DATA_DIR"]),
        database_url=env["DATABASE_URL"],
        mcp_url=env["MCP_URL"],
        mcp_resource_url=env["MCP_RESOURCE_URL"],
    )


def serve_supports(option: str) -> bool:
    """Whether `serve` takes `option` (asked, not assumed: it may not exist yet)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "backend.cli", "serve", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return re.search(rf"(?<![\w-]){re.escape(option)}\b", help_text) is not None


@dataclass
class Server:
    """A process this run started, with the log it writes."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_process(
    name: str, command: Sequence[str], env: dict[str, str], port: int, log_dir: Path
) -> Server:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(name, process, f"http://127.0.0.1:{port}", log_path)


def wait_ready(server: Server, path: str = "/readyz") -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(
                f"{server.name} exited during start-up ({server.process.returncode}):\n"
                f"{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.base_url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"{server.name} did not answer within {START_TIMEOUT_SECONDS:.0f}s")


def start_serve(
    env: dict[str, str],
    port: int,
    mcp_port: int,
    log_dir: Path,
    workers: int = 1,
    mcp_workers: int = 1,
) -> Server:
    """The product as it ships: `serve` (migrates, starts the MCP child, then the API)."""
    command = [sys.executable, "-m", "backend.cli", "serve"]
    command += ["--port", str(port), "--mcp-port", str(mcp_port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    if mcp_workers > 1:
        command += ["--mcp-workers", str(mcp_workers)]
    server = start_process("serve", command, env, port, log_dir)
    wait_ready(server)
    return server


def start_uvicorn(name: str, factory: str, env: dict[str, str], port: int, log_dir: Path) -> Server:
    command = [sys.executable, "-m", "uvicorn", "--factory", factory]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    server = start_process(name, command, env, port, log_dir)
    wait_ready(server, "/healthz")
    return server


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Stop every server started into `servers`, last started first, whatever happens."""
    try:
        yield servers
    except BaseException:
        for server in servers:
            tail = server.log_tail()
            if tail:
                sys.stderr.write(f"--- {server.name} log (last lines) ---\n{tail}\n")
        raise
    finally:
        for server in reversed(servers):
            server.stop()


# -- /proc readers ----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(_stat_fields(int(entry.name))[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        for child in children(pending.pop()):
            found.append(child)
            pending.append(child)
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@dataclass
class ServeProcesses:
    """`serve`'s processes: the API (itself and any workers) and the MCP server child."""

    api: list[int]
    mcp: list[int]


def serve_processes(serve: Server) -> ServeProcesses:
    api, mcp = [serve.pid], []
    for pid in descendants(serve.pid):
        line = cmdline(pid)
        if "mcp_server" in line or " mcp " in f" {line} ":
            mcp.append(pid)
            mcp += descendants(pid)
        elif pid not in mcp and "resource_tracker" not in line:
            api.append(pid)
    return ServeProcesses(api=[p for p in api if p not in mcp], mcp=mcp)


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """utime + stime of each live process, in seconds (a process gone is left out)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(cpu_by_pid(pids).values())


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings; a process that started in between counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def postgres_backends(database_url: str) -> list[int]:
    """The local PostgreSQL server processes serving `database_url`'s database (by their
    process titles, `postgres: … user database host(port) state`), to count their CPU too."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql" or url.host not in {None, "127.0.0.1", "localhost"}:
        return []
    needle = f" {url.database} "
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = cmdline(int(entry.name))
            if line.startswith("postgres:") and needle in line:
                found.append(int(entry.name))
    return found


def rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


# -- tokens, turns and stored conversations ------------------------------------------------------


def user_tokens(settings: Settings, users: Sequence[str]) -> dict[str, str]:
    config = shared_secret_config(settings)
    if config is None:
        raise SystemExit("no shared-secret auth configured for the bench run")
    return {user: mint_user_token(config, user, 4 * 3600) for user in users}


_DURATION = re.compile(r"(?:^|,)\s*([\w-]+)[^,]*?;\s*dur=([0-9.]+)")


def server_timing(header: str | None) -> dict[str, float]:
    """Server-Timing metrics by name, in milliseconds."""
    return {name: float(value) for name, value in _DURATION.findall(header or "")}


@dataclass
class TurnTiming:
    client_ms: float
    server: dict[str, float]


async def post_turn(
    client: httpx.AsyncClient, user: str, token: str, conversation_id: int, label: str
) -> TurnTiming:
    """One chat turn that must make exactly one add_task call."""
    body = {"message": f"add buy milk {label}", "conversation_id": conversation_id}
    started = time.perf_counter()
    response = await client.post(
        f"/api/{user}/chat", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"turn failed: {response.status_code} {response.text[:500]}")
    payload = response.json()
    names = [call.get("name") for call in payload.get("tool_calls") or []]
    if names != ["add_task"]:
        raise RuntimeError(f"expected one add_task call, got {payload}")
    return TurnTiming(elapsed, server_timing(response.headers.get("server-timing")))


async def healthz_median(client: httpx.AsyncClient, count: int = 50) -> float:
    for _ in range(5):
        await client.get("/healthz")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await client.get("/healthz")
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def new_conversation(database: Database, user_id: str) -> int:
    async with database.session_scope(write=True) as session:
        conversation = Conversation(user_id=user_id, title="bench")
        session.add(conversation)
        await session.flush()
        assert conversation.id is not None
        return conversation.id


async def template_messages(database: Database, conversation_id: int) -> list[dict[str, Any]]:
    table = Message.__table__  # type: ignore[attr-defined]
    async with database.session_scope() as session:
        rows = await session.execute(
            select(table).where(table.c.conversation_id == conversation_id).order_by(table.c.seq)
        )
        return [dict(row._mapping) for row in rows]


async def seeded_conversation(
    database: Database, user_id: str, template: Sequence[dict[str, Any]], count: int
) -> int:
    """A new conversation of `user_id` holding `count` messages copied (cyclically, in
    order) from `template`, inserted with one Core executemany per chunk."""
    if not template:
        raise ValueError("the template conversation is empty")
    conversation_id = await new_conversation(database, user_id)
    table = Message.__table__  # type: ignore[attr-defined]
    # A whole number of user/assistant pairs, so the conversation ends answered.
    pattern = list(template[: len(template) - len(template) % 2] or template)
    rows = []
    for seq in range(1, count + 1):
        row = dict(pattern[(seq - 1) % len(pattern)])
        row.pop("id", None)
        row.update(
            conversation_id=conversation_id,
            user_id=user_id,
            seq=seq,
            item_id=new_public_id("msg"),
            client_message_id=None,
        )
        rows.append(row)
    for start in range(0, len(rows), 1000):
        async with database.session_scope(write=True) as session:
            await session.execute(insert(table), rows[start : start + 1000])
    return conversation_id


async def message_count(database: Database, conversation_id: int) -> int:
    async with database.session_scope() as session:
        statement = select(func.count()).where(col(Message.conversation_id) == conversation_id)
        return int(await session.scalar(statement) or 0)


async def last_run_id(database: Database) -> int:
    async with database.session_scope() as session:
        return int(await session.scalar(select(func.coalesce(func.max(AgentRun.id), 0))) or 0)


async def agent_latencies(database: Database, after_id: int, users: Sequence[str]) -> list[float]:
    """`agent_run.latency_ms` of the succeeded runs of `users` newer than `after_id`."""
    async with database.session_scope() as session:
        rows = await session.execute(
            select(col(AgentRun.latency_ms)).where(
                col(AgentRun.id) > after_id,
                col(AgentRun.user_id).in_(list(users)),
                col(AgentRun.status) == "succeeded",
            )
        )
        return [float(value or 0) for (value,) in rows]


# -- figures ---------------------------------------------------------------------------------


def p95(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


@dataclass
class Tally:
    """What one variant accumulated over its slices of a run."""

    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    agent_ms: list[float] = field(default_factory=list)
    turns: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    slice_rates: list[float] = field(default_factory=list)  # turns/s of each round's slice

    def add_cpu(self, name: str, seconds: float) -> None:
        self.cpu[name] = self.cpu.get(name, 0.0) + seconds

    @property
    def rate(self) -> float:
        return self.turns / self.seconds if self.seconds else float("nan")


def ratio(numerator: float, denominator: float) -> str:
    if not denominator or denominator != denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}x"
