"""What a chat turn costs: `uv run python -m bench.chat_turn [--turns 300] [--users 10]`.

Starts the whole system (`todo-assistant serve`: API + MCP server, SQLite in a temporary
directory, the offline `local` model) on free loopback ports, then times chat turns that each
make exactly one tool call ("add buy milk 17" → add_task → reply):

  healthz     GET /healthz on a kept-alive client: the HTTP round-trip baseline
  sequential  one user, --turns turns one after another (new conversation every 20 turns)
  concurrent  --users users at once, each in its own conversation, --turns turns in all

and prints the median and p95 in milliseconds, each median's ratio to the baseline, and the
server-side agent time recorded in the run records (`agent_run.latency_ms`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlmodel import col

from backend.auth.tokens import mint_user_token, shared_secret_config
from backend.config import Settings
from backend.db import Database
from backend.models import AgentRun

REPO_ROOT = Path(__file__).resolve().parents[1]
TURNS_PER_CONVERSATION = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _summary(name: str, samples: list[float], baseline: float | None) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    ratio = f"{median / baseline:8.1f}x" if baseline else "   (base)"
    return f"{name:<28} n={len(samples):<5} median={median:8.2f} ms  p95={p95:8.2f} ms  {ratio}"


async def _turns(
    client: httpx.AsyncClient, user: str, token: str, count: int, label: str
) -> list[float]:
    timings: list[float] = []
    conversation_id: int | None = None
    for number in range(count):
        if number % TURNS_PER_CONVERSATION == 0:
            conversation_id = None
        body: dict[str, object] = {"message": f"add buy milk {label}-{number}"}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        started = time.perf_counter()
        response = await client.post(
            f"/api/{user}/chat", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        payload = response.json()
        if [call["name"] for call in payload["tool_calls"]] != ["add_task"]:
            raise RuntimeError(f"expected one add_task call, got {payload}")
        conversation_id = payload["conversation_id"]
    return timings


async def _agent_latencies(database_url: str, since_id: int) -> tuple[list[float], int]:
    database = Database(database_url)
    try:
        async with database.session_scope() as session:
            runs = (
                await session.scalars(select(AgentRun).where(col(AgentRun.id) > since_id))
            ).all()
    finally:
        await database.dispose()
    latencies = [float(run.latency_ms or 0) for run in runs if run.status == "succeeded"]
    return latencies, max((run.id or 0 for run in runs), default=since_id)


async def _measure(base_url: str, settings: Settings, turns: int, users: int) -> None:
    config = shared_secret_config(settings)
    assert config is not None
    tokens = {f"user{n}": mint_user_token(config, f"user{n}", 3600) for n in range(users)}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for _ in range(20):
            await client.get("/healthz")
        health: list[float] = []
        for _ in range(200):
            started = time.perf_counter()
            await client.get("/healthz")
            health.append((time.perf_counter() - started) * 1000)
        baseline = statistics.median(health)
        await _turns(client, "user0", tokens["user0"], 10, "warmup")
        _, last_run = await _agent_latencies(settings.database_url, 0)

        sequential = await _turns(client, "user0", tokens["user0"], turns, "seq")
        seq_agent, last_run = await _agent_latencies(settings.database_url, last_run)

        per_user = max(1, turns // users)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_turns(client, user, token, per_user, "conc") for user, token in tokens.items())
        )
        wall = time.perf_counter() - started
        concurrent = [t for timings in results for t in timings]
        conc_agent, _ = await _agent_latencies(settings.database_url, last_run)

    print(_summary("healthz (baseline)", health, None))
    print(_summary("turn, 1 user", sequential, baseline))
    print(_summary("  agent part (run record)", seq_agent, baseline))
    print(_summary(f"turn, {users} users at once", concurrent, baseline))
    print(_summary("  agent part (run record)", conc_agent, baseline))
    print(f"{'throughput, concurrent':<28} {len(concurrent) / wall:.1f} turns/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument(
        "--database-url", default=None, help="default: a new SQLite file; or postgresql+asyncpg://…"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        api_port, mcp_port = _free_port(), _free_port()
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("AUTH_", "MCP_", "OPENAI_"))
            },
            "DATA_DIR": data_dir,
            "DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{data_dir}/bench.db",
            "LOG_LEVEL": "WARNING",
            "AGENT_MODEL": "local",
        }
        command = [sys.executable, "-m", "backend.cli", "serve"]
        server = subprocess.Popen(
            [*command, "--port", str(api_port), "--mcp-port", str(mcp_port)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            base_url = f"http://127.0.0.1:{api_port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.3)
            settings = Settings(
                _env_file=None, data_dir=Path(data_dir), database_url=env["DATABASE_URL"]
            )
            asyncio.run(_measure(base_url, settings, args.turns, args.users))
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
