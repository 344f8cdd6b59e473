"""REST task list throughput against a naive app: `python -m bench.rest_list [--requests 5000]
[--concurrency 10] [--rounds 3] [--database-url URL] [--port P --naive-port Q]`.

Seeds one user's --tasks tasks (0-3 tags each, some due, repeating or with a reminder) in a
new SQLite file, or in a new database `bench_rest_list_<pid>` on the PostgreSQL server of
--database-url (dropped at the end), then starts

  ours   `todo-assistant serve` (the API as shipped, with its MCP server beside it)
  naive  bench/_naive_app.py: the same list as a typical FastAPI + SQLModel app writes it
         (ORM entities, tags by the relationship, FastAPI validating the response), the same
         tables and data, the same HS256 token verified with PyJWT on every request

and runs alternating rounds of an HTTP load generator (wrk, else hey, else an httpx client
pool) at GET /api/{user}/tasks?limit=20 (and, with --endpoint get, GET /api/{user}/tasks/{id})
on each, printing each round's requests per second, the medians, and ours/naive.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt

from backend.cli import migrate
from backend.config import Settings
from backend.db import Database
from backend.tasks import service
from backend.tasks.schemas import TaskCreate
from bench._harness import new_database

REPO_ROOT = Path(__file__).resolve().parents[1]
USER = "bench-user"
TAG_POOL = ("home", "work", "errands", "urgent-ish", "later", "café", "q3", "reading")
WARMUP_REQUESTS = 300
START_TIMEOUT_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, database_url=database_url)


async def _seed(database_url: str, count: int) -> list[int]:
    """`count` tasks for USER, as the API would create them; their ids."""
    rng = random.Random(12)
    start = datetime(2031, 1, 6, 9, tzinfo=UTC)
    database = Database(database_url)
    ids: list[int] = []
    try:
        async with database.session_scope(write=True) as session:
            for number in range(count):
                due = start + timedelta(hours=7 * number) if number % 3 else None
                data = TaskCreate(
                    title=f"Task {number}: pick up the “parcel” #{number}",
                    description=None if number % 4 else f"Details for task {number}",
                    priority=rng.choice(["low", "medium", "high", "urgent"]),
                    tags=rng.sample(TAG_POOL, rng.randint(0, 3)),
                    due_at=due,
                    remind_before_minutes=30 if due is not None and number % 5 == 0 else None,
                    recurrence="weekly" if due is not None and number % 7 == 0 else None,
                    time_zone="Europe/Paris" if number % 7 == 0 else None,
                )
                task = await service.create_task(session, USER, data, channel="rest")
                assert task.id is not None
                ids.append(task.id)
    finally:
        await database.dispose()
    return ids


# --- databases ------------------------------------------------------------------------------


@asynccontextmanager
async def _postgres(server_url: str) -> AsyncIterator[str]:
    """A new database on the server of `server_url`, dropped at the end."""
    async with new_database(server_url, "bench_rest_list") as url:
        yield url


# --- servers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"the server behind {url} did not start")
        time.sleep(0.2)


@contextmanager
def _servers(
    database_url: str, data_dir: Path, secret: str, args: argparse.Namespace
) -> Iterator[tuple[Target, Target]]:
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "MCP_", "OPENAI_"))
    }
    ours_port = args.port or _free_port()
    naive_port = args.naive_port or _free_port()
    mcp_port = args.mcp_port or _free_port()
    ours_env = {
        **base_env,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "AUTH_SECRET": secret,
        "LOG_LEVEL": "WARNING",
        "AGENT_MODEL": "local",
    }
    naive_env = {**base_env, "NAIVE_DATABASE_URL": database_url, "NAIVE_AUTH_SECRET": secret}
    started: list[subprocess.Popen[bytes]] = []
    try:
        ours = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve"]
            + ["--port", str(ours_port), "--mcp-port", str(mcp_port)],
            env=ours_env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )
        started.append(ours)
        naive = subprocess.Popen(
            [sys.executable, "-m", "bench._naive_app", "--port", str(naive_port)],
            env=naive_env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )
        started.append(naive)
        ours_url, naive_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{naive_port}"
        _wait_ready(ours, f"{ours_url}/readyz")
        _wait_ready(naive, f"{naive_url}/healthz")
        yield Target("ours", ours_url), Target("naive", naive_url)
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


# --- load generators ------------------------------------------------------------------------


def _wrk(url: str, token: str, requests: int, concurrency: int, rate_guess: float) -> float:
    # wrk runs for whole seconds, not for a number of requests: about `requests` of them at
    # the rate this target reached before.
    seconds = max(1, round(requests / rate_guess)) if rate_guess else 1
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s"]
    command += ["-H", f"Authorization: Bearer {token}", url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if failed or "Socket errors" in output:
        raise SystemExit(f"wrk saw failures:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise SystemExit(f"unexpected wrk output:\n{output}")
    return float(found.group(1))


def _hey(url: str, token: str, requests: int, concurrency: int, _: float) -> float:
    command = ["hey", "-n", str(requests), "-c", str(concurrency)]
    command += ["-H", f"Authorization: Bearer {token}", url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)
    if any(code != "200" for code, _count in codes):
        raise SystemExit(f"hey saw failures:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise SystemExit(f"unexpected hey output:\n{output}")
    return float(found.group(1))


async def _pool(url: str, token: str, requests: int, concurrency: int) -> float:
    left = requests
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                (await client.get(url)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def _httpx(url: str, token: str, requests: int, concurrency: int, _: float) -> float:
    return asyncio.run(_pool(url, token, requests, concurrency))


LOAD_GENERATORS = {"wrk": _wrk, "hey": _hey, "httpx": _httpx}


def _generator(choice: str) -> str:
    if choice != "auto":
        return choice
    return next((name for name in ("wrk", "hey") if shutil.which(name)), "httpx")


# --- the run --------------------------------------------------------------------------------


def _same_answers(ours: Target, naive: Target, token: str, paths: list[str]) -> None:
    """Both apps must answer the same tasks, or the comparison means nothing."""
    headers = {"Authorization": f"Bearer {token}"}
    for path in paths:
        a = httpx.get(ours.base_url + path, headers=headers).raise_for_status().json()
        b = httpx.get(naive.base_url + path, headers=headers).raise_for_status().json()
        if a != b:
            raise SystemExit(f"the two apps disagree on {path}:\n{a}\n{b}")


def _run(database_url: str, data_dir: Path, args: argparse.Namespace) -> None:
    ids = asyncio.run(_seed(database_url, args.tasks))
    secret = secrets.token_hex(32)
    token = jwt.encode(
        {"sub": USER, "iat": int(time.time()), "exp": int(time.time()) + 24 * 3600},
        secret,
        algorithm="HS256",
    )
    paths = {
        "list": f"/api/{USER}/tasks?limit={args.limit}",
        "get": f"/api/{USER}/tasks/{ids[len(ids) // 2]}",
    }
    generator = _generator(args.load_generator)
    load = LOAD_GENERATORS[generator]
    kind = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(
        f"database: {kind}; {args.tasks} tasks; load: {generator}, {args.concurrency} connections,"
        f" {args.requests} requests a round, {args.rounds} rounds each"
    )
    with _servers(database_url, data_dir, secret, args) as (ours, naive):
        _same_answers(ours, naive, token, [paths[name] for name in args.endpoint])
        for name in args.endpoint:
            rates: dict[str, list[float]] = {"ours": [], "naive": []}
            warm = {
                target.name: load(
                    target.base_url + paths[name], token, WARMUP_REQUESTS, args.concurrency, 0.0
                )
                for target in (ours, naive)
            }
            for number in range(args.rounds):
                # Alternate who goes first, so drift (caches, turbo, the other's GC) is shared.
                order = (ours, naive) if number % 2 == 0 else (naive, ours)
                for target in order:
                    rate = load(
                        target.base_url + paths[name],
                        token,
                        args.requests,
                        args.concurrency,
                        warm[target.name],
                    )
                    rates[target.name].append(rate)
            print(f"GET {paths[name].replace(USER, '{user}')}")
            for label, values in rates.items():
                rounds = " ".join(f"{value:8.0f}" for value in values)
                median = statistics.median(values)
                print(f"  {label:<6} req/s by round: {rounds}   median {median:8.0f}")
            ratio = statistics.median(rates["ours"]) / statistics.median(rates["naive"])
            print(f"  ours/naive: {ratio:.2f}x")


async def _postgres_run(server_url: str, data_dir: Path, args: argparse.Namespace) -> None:
    async with _postgres(server_url) as url:
        # Alembic and the servers run their own event loops: off this one.
        await asyncio.to_thread(migrate, _settings(url, data_dir))
        await asyncio.to_thread(_run, url, data_dir, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=5000, help="per round and app")
    parser.add_argument("--concurrency", type=int, default=10, help="open connections")
    parser.add_argument("--rounds", type=int, default=3, help="per app, alternating")
    parser.add_argument("--tasks", type=int, default=200, help="tasks seeded for the user")
    parser.add_argument("--limit", type=int, default=20, help="page size asked for")
    parser.add_argument(
        "--endpoint",
        nargs="+",
        choices=["list", "get"],
        default=["list"],
        help="which reads to load (default: list)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: a new SQLite file; or postgresql+asyncpg://… (a server: a database of"
        " its own is created there and dropped)",
    )
    parser.add_argument("--port", type=int, default=0, help="our API's port (default: free)")
    parser.add_argument("--mcp-port", type=int, default=0, help="our MCP port (default: free)")
    parser.add_argument("--naive-port", type=int, default=0, help="the naive app's port")
    parser.add_argument("--load-generator", choices=["auto", *LOAD_GENERATORS], default="auto")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        if args.database_url and args.database_url.startswith("postgresql"):
            asyncio.run(_postgres_run(args.database_url, data_dir, args))
        else:
            url = args.database_url or f"sqlite+aiosqlite:///{data_dir}/bench.db"
            migrate(_settings(url, data_dir))
            _run(url, data_dir, args)


if __name__ == "__main__":
    main()
