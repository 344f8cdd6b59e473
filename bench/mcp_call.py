"""What one MCP tool call costs: `uv run python -m bench.mcp_call [--iterations 300]`.

Starts the real MCP server (`python -m mcp_server`, uvicorn) on a free loopback port with
SQLite in a temporary directory, then times, per iteration:

  fresh    a new httpx2 client (new SSL context), connect + initialize + list_tools
           + call_tool(list_tasks): what a caller pays when it opens one connection per request
  reused   the same, but every client shares one SSL context (what the Agents SDK's
           httpx_client_factory can do, since the SDK builds and closes a client per connection)
  warm     call_tool(list_tasks) alone on one open session (for reference)
  healthz  a bare GET /healthz on one kept-alive client: the HTTP round-trip baseline

and prints the median and p95 in milliseconds and each median's ratio to the baseline.
Each measure stops early once it has run `--budget` seconds (and at least 20 times), so the
whole run stays under about a minute; the `n` column says how many runs each figure covers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from backend.agent.tools import TOOLS
from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.cli import migrate
from backend.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
USER = "bench"
SEEDED_TASKS = 20
START_TIMEOUT_SECONDS = 60.0
WARMUP = 5
MIN_SAMPLES = 20


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_env(data_dir: Path, database_url: str, resource_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "APP_ENV": "development",
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "MCP_RESOURCE_URL": resource_url,
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


async def _wait_until_up(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    async with httpx2.AsyncClient(base_url=base_url, timeout=1.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the MCP server exited during start-up ({process.returncode})")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the MCP server did not answer within {START_TIMEOUT_SECONDS:.0f}s")


def _client(token: str, verify: ssl.SSLContext | bool = True) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(30.0, read=60.0),
        verify=verify,
    )


async def _connect_list_call(mcp_url: str, http: httpx2.AsyncClient) -> None:
    async with (
        http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = (await session.list_tools()).tools
        assert len(tools) == len(TOOLS), [tool.name for tool in tools]
        result = await session.call_tool("list_tasks", {"limit": 10})
        assert not result.is_error, result.content


async def _timed(
    iterations: int, step: Callable[[], Awaitable[None]], budget_seconds: float
) -> list[float]:
    """Up to `iterations` timed runs, fewer if the budget runs out (at least MIN_SAMPLES)."""
    for _ in range(WARMUP):
        await step()
    samples: list[float] = []
    deadline = time.monotonic() + budget_seconds
    for _ in range(iterations):
        started = time.perf_counter()
        await step()
        samples.append((time.perf_counter() - started) * 1000)
        if len(samples) >= MIN_SAMPLES and time.monotonic() > deadline:
            break
    return samples


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[94]


async def _measure(
    base_url: str, token: str, iterations: int, budget: float
) -> dict[str, list[float]]:
    mcp_url = f"{base_url}/mcp"
    shared_ssl = httpx2.create_ssl_context()

    async def fresh() -> None:
        await _connect_list_call(mcp_url, _client(token))

    async def reused() -> None:
        await _connect_list_call(mcp_url, _client(token, verify=shared_ssl))

    results = {
        "fresh": await _timed(iterations, fresh, budget),
        "reused": await _timed(iterations, reused, budget),
    }

    async with (
        _client(token, verify=shared_ssl) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()

        async def warm() -> None:
            result = await session.call_tool("list_tasks", {"limit": 10})
            assert not result.is_error

        results["warm"] = await _timed(iterations, warm, budget)

    async with httpx2.AsyncClient(base_url=base_url, timeout=10.0) as http:

        async def healthz() -> None:
            response = await http.get("/healthz")
            assert response.status_code == 200

        results["healthz"] = await _timed(iterations, healthz, budget)
    return results


async def _seed(mcp_url: str, token: str) -> None:
    async with (
        _client(token) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for index in range(SEEDED_TASKS):
            result = await session.call_tool(
                "add_task", {"title": f"Bench task {index}", "tags": ["bench"]}
            )
            assert not result.is_error, result.content


def _report(results: dict[str, list[float]], iterations: int, port: int) -> None:
    baseline = statistics.median(results["healthz"])
    print(f"MCP tool call cost (loopback 127.0.0.1:{port}, SQLite, server in its own process)")
    print(f"{'measure':<10}{'n':>6}{'median ms':>11}{'p95 ms':>10}{'x healthz':>11}")
    for name, samples in results.items():
        median = statistics.median(samples)
        ratio = median / baseline if baseline else float("nan")
        print(f"{name:<10}{len(samples):>6}{median:>11.2f}{_p95(samples):>10.2f}{ratio:>11.1f}")
    print(
        "fresh/reused = connect + initialize + list_tools + call_tool(list_tasks) with a new "
        "httpx2 client each time (reused: one shared SSL context); warm = call_tool alone on "
        "an open session; healthz = bare GET /healthz on a kept-alive client."
    )


async def _bench(
    base_url: str, token: str, iterations: int, budget: float, process: subprocess.Popen[bytes]
) -> dict[str, list[float]]:
    await _wait_until_up(base_url, process)
    await _seed(f"{base_url}/mcp", token)
    return await _measure(base_url, token, iterations, budget)


def _run(iterations: int, budget: float) -> None:
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp:
        data_dir = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{data_dir / 'bench.db'}"
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        mcp_url = f"{base_url}/mcp"
        settings = Settings(
            _env_file=None,
            app_env="development",
            data_dir=data_dir,
            database_url=database_url,
            mcp_resource_url=mcp_url,
        )
        migrate(settings)
        token = mint_mcp_token(mcp_token_config(settings), USER, ttl_seconds=600)
        command = [sys.executable, "-m", "mcp_server", "--transport", "http"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        log_path = data_dir / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=data_dir,
                env=_server_env(data_dir, database_url, mcp_url),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                results = asyncio.run(_bench(base_url, token, iterations, budget, process))
            except BaseException:
                sys.stderr.write(log_path.read_text(errors="replace"))
                raise
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        _report(results, iterations, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp_call", description=__doc__)
    parser.add_argument("--iterations", type=int, default=300, help="timed runs per measure")
    parser.add_argument(
        "--budget",
        type=float,
        default=12.0,
        help="seconds per measure before it stops early (default %(default)s; keeps the run"
        " under a minute on a slow machine)",
    )
    args = parser.parse_args(argv)
    if args.iterations < MIN_SAMPLES:
        parser.error(f"--iterations must be at least {MIN_SAMPLES} (p95 needs a sample)")
    _run(args.iterations, args.budget)


if __name__ == "__main__":
    main()
