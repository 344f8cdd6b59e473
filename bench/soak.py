"""API and MCP server memory across many turns: `python -m bench.soak [--turns 5000]`.

Starts `serve` (API + MCP server, the offline `local` model) and runs --turns chat turns
("add buy milk N", one add_task call) from --users clients at once, each starting a new
conversation every --conversation-turns turns. Every --sample-every turns it reads the
resident memory (VmRSS in /proc/<pid>/status) of the API process (with any workers) and of
the MCP server, and prints the samples, then the first sample after --warmup turns against
the last one and the change in percent (target within +-10%).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backend.db import Database
from bench import _harness as h


@dataclass
class Soak:
    processes: h.ServeProcesses
    args: argparse.Namespace
    done: int = 0
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # turns, api, mcp KiB

    def sample(self) -> None:
        self.samples.append(
            (self.done, h.rss_kib(self.processes.api), h.rss_kib(self.processes.mcp))
        )

    def count(self) -> None:
        self.done += 1
        past_warmup = self.done - self.args.warmup
        if past_warmup >= 0 and past_warmup % self.args.sample_every == 0:
            self.sample()


async def _client_loop(
    soak: Soak, client: httpx.AsyncClient, database: Database, user: str, token: str, turns: int
) -> None:
    conversation_id = 0
    for number in range(turns):
        if number % soak.args.conversation_turns == 0:
            conversation_id = await h.new_conversation(database, user)
        await h.post_turn(client, user, token, conversation_id, str(number))
        soak.count()


async def _run_turns(
    soak: Soak, server: h.Server, database_url: str, tokens: dict[str, str]
) -> None:
    database = Database(database_url)
    share = [soak.args.turns // len(tokens)] * len(tokens)
    for index in range(soak.args.turns % len(tokens)):
        share[index] += 1
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            await asyncio.gather(
                *(
                    _client_loop(soak, client, database, user, token, turns)
                    for (user, token), turns in zip(tokens.items(), share, strict=True)
                )
            )
    finally:
        await database.dispose()
    if not soak.samples or soak.samples[-1][0] != soak.done:
        soak.sample()


def _report(soak: Soak, backend: str) -> None:
    print(
        f"RSS over {soak.done} turns ({soak.args.users} clients, {backend}); "
        f"first sample after {soak.args.warmup} warm-up turns"
    )
    print(f"{'turns':>7}{'API MiB':>10}{'MCP MiB':>10}")
    for turns, api, mcp in soak.samples:
        print(f"{turns:>7}{api / 1024:>10.1f}{mcp / 1024:>10.1f}")
    first, last = soak.samples[0], soak.samples[-1]
    for name, column in (("API", 1), ("MCP", 2)):
        before, after = first[column], last[column]
        change = (after - before) / before * 100 if before else float("nan")
        peak = max(sample[column] for sample in soak.samples)
        print(
            f"{name} RSS: {before / 1024:.1f} MiB after warm-up -> {after / 1024:.1f} MiB at the "
            f"end ({change:+.1f}%, peak {peak / 1024:.1f} MiB; target within +-10%)"
        )


def run(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        data_dir = Path(tmp)
        with h.database_for_run(args, data_dir) as database_url:
            port, mcp_port = h.port_or_free(args.port), h.port_or_free(args.mcp_port)
            env = h.base_environment(data_dir, database_url, f"http://127.0.0.1:{mcp_port}/mcp")
            with h.running([]) as servers:
                serve = h.start_serve(env, port, mcp_port, data_dir)
                servers.append(serve)
                users = [f"{run_id}-soak{n}" for n in range(args.users)]
                tokens = h.user_tokens(h.settings_for(env), users)
                soak = Soak(h.serve_processes(serve), args)
                asyncio.run(_run_turns(soak, serve, database_url, tokens))
                _report(soak, "PostgreSQL" if h.is_postgres(database_url) else "SQLite")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--turns", type=int, default=5000, help="turns in all")
    parser.add_argument("--users", type=int, default=4, help="clients at once")
    parser.add_argument("--warmup", type=int, default=500, help="turns before the first sample")
    parser.add_argument("--sample-every", type=int, default=500, help="turns between samples")
    parser.add_argument(
        "--conversation-turns", type=int, default=40, help="turns before a client starts anew"
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--mcp-port", type=int, default=0, help="MCP port (default: free)")
    h.add_database_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.users, args.sample_every, args.conversation_turns) < 1:
        parser.error("--users, --sample-every and --conversation-turns must be at least 1")
    if args.turns <= args.warmup:
        parser.error("--turns must exceed --warmup")
    run(args)


if __name__ == "__main__":
    main()
