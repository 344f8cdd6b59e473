"""Turn time at 10 vs 10,000 stored messages: `python -m bench.history_scaling`.

Starts `serve` (API + MCP server, the offline `local` model), runs 20 real turns in a template
conversation, then copies its messages (Core executemany) into two conversations: one of
--small messages (default 10), one of --large (default 10,000). Turns ("add buy milk N", one
add_task call) then alternate between the two in rounds, and it prints each one's client time
(median, p95) and agent part (`agent_run.latency_ms`), and the large/small ratio of the
medians, overall and as the median of the per-round ratios (target <= 1.1x).

On PostgreSQL it measures twice: right after the rows are inserted, before any ANALYZE (it
says whether autovacuum analysed the table meanwhile), and again after `ANALYZE`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text

from backend.db import Database
from bench import _harness as h

TEMPLATE_TURNS = 20


@dataclass
class Conversation:
    label: str
    user: str
    conversation_id: int = 0
    client_ms: list[float] = field(default_factory=list)


async def _analysed(database: Database) -> str:
    """When PostgreSQL last analysed the message table, by hand or by autovacuum."""
    async with database.session_scope() as session:
        row = (
            await session.execute(
                text(
                    "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables"
                    " WHERE relname = 'message'"
                )
            )
        ).first()
    if row is None or (row[0] is None and row[1] is None):
        return "never"
    return f"last_analyze={row[0]}, last_autoanalyze={row[1]}"


async def _phase(
    name: str,
    client: httpx.AsyncClient,
    database: Database,
    tokens: dict[str, str],
    conversations: list[Conversation],
    args: argparse.Namespace,
) -> None:
    first_run = await h.last_run_id(database)
    for item in conversations:
        item.client_ms = []
    per_round = max(1, args.turns // args.rounds)
    for round_number in range(args.rounds):
        order = conversations if round_number % 2 == 0 else conversations[::-1]
        for item in order:
            for number in range(per_round):
                # No commas in the label: the model would read two tasks.
                label = f"{name.split()[-1]}{round_number}x{number}"
                timing = await h.post_turn(
                    client, item.user, tokens[item.user], item.conversation_id, label
                )
                item.client_ms.append(timing.client_ms)
    print(f"-- {name}")
    print(f"{'conversation':<22}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'agent p50':>11}")
    agent: dict[str, float] = {}
    for item in conversations:
        latencies = await h.agent_latencies(database, first_run, [item.user])
        agent[item.label] = h.median(latencies)
        print(
            f"{item.label:<22}{len(item.client_ms):>5}{h.median(item.client_ms):>9.1f}"
            f"{h.p95(item.client_ms):>9.1f}{agent[item.label]:>11.1f}"
        )
    small, large = conversations
    # Each round ran both back to back: the median of the per-round ratios cancels most of
    # the noise that moves whole rounds.
    by_round = [
        h.median(large.client_ms[i : i + per_round]) / h.median(small.client_ms[i : i + per_round])
        for i in range(0, len(small.client_ms), per_round)
    ]
    print(
        f"large/small turn time ({name}): client p50 "
        f"{h.ratio(h.median(large.client_ms), h.median(small.client_ms))} overall, "
        f"{h.median(by_round):.2f}x by round (median); agent p50 "
        f"{h.ratio(agent[large.label], agent[small.label])} (target <= 1.1x)"
    )


async def _measure(
    server: h.Server,
    database: Database,
    tokens: dict[str, str],
    args: argparse.Namespace,
    run_id: str,
    postgres: bool,
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        template_user = f"{run_id}-template"
        template_id = await h.new_conversation(database, template_user)
        for number in range(TEMPLATE_TURNS):
            await h.post_turn(
                client, template_user, tokens[template_user], template_id, f"t{number}"
            )
        template = await h.template_messages(database, template_id)
        conversations = [
            Conversation(f"{args.small} messages", f"{run_id}-small"),
            Conversation(f"{args.large} messages", f"{run_id}-large"),
        ]
        for item, count in zip(conversations, (args.small, args.large), strict=True):
            item.conversation_id = await h.seeded_conversation(database, item.user, template, count)
        for item in conversations:
            for number in range(args.warmup):
                await h.post_turn(
                    client, item.user, tokens[item.user], item.conversation_id, f"w{number}"
                )
        if not postgres:
            await _phase("SQLite", client, database, tokens, conversations, args)
            return
        await _phase("PostgreSQL, no ANALYZE", client, database, tokens, conversations, args)
        print(f"message table statistics during that phase: {await _analysed(database)}")
        async with database.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("ANALYZE"))
        await _phase("PostgreSQL, after ANALYZE", client, database, tokens, conversations, args)


async def _measure_then_dispose(
    server: h.Server,
    database: Database,
    tokens: dict[str, str],
    args: argparse.Namespace,
    run_id: str,
    postgres: bool,
) -> None:
    try:
        await _measure(server, database, tokens, args, run_id, postgres)
    finally:
        await database.dispose()


def run(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        data_dir = Path(tmp)
        with h.database_for_run(args, data_dir) as database_url:
            port, mcp_port = h.port_or_free(args.port), h.port_or_free(args.mcp_port)
            env = h.base_environment(data_dir, database_url, f"http://127.0.0.1:{mcp_port}/mcp")
            with h.running([]) as servers:
                servers.append(h.start_serve(env, port, mcp_port, data_dir))
                users = [f"{run_id}-{name}" for name in ("template", "small", "large")]
                tokens = h.user_tokens(h.settings_for(env), users)
                postgres = h.is_postgres(database_url)
                print(
                    f"turn time at {args.small} vs {args.large} stored messages, "
                    f"{'PostgreSQL' if postgres else 'SQLite'}, {args.rounds} alternating rounds"
                )
                asyncio.run(
                    _measure_then_dispose(
                        servers[0], Database(database_url), tokens, args, run_id, postgres
                    )
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history_scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--turns", type=int, default=100, help="turns per conversation and phase")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--small", type=int, default=10, help="messages in the small one")
    parser.add_argument("--large", type=int, default=10_000, help="messages in the large one")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted turns in each")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--mcp-port", type=int, default=0, help="MCP port (default: free)")
    h.add_database_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.turns < args.rounds or args.small < 2 or args.large < args.small:
        parser.error("need --turns >= --rounds >= 1 and --large >= --small >= 2")
    run(args)


if __name__ == "__main__":
    main()
