"""What a chat turn costs, against a peer and an in-process floor: `python -m bench.chat_turn`.

Three variants of one turn ("add buy milk N" → the offline `local` model calls add_task once
→ reply), each in conversations that already hold 40 messages (copied from 20 real turns):

  ours   the product as it ships: `serve` (API + MCP server child), POST /api/{u}/chat
  peer   bench/_peer_app.py: per request a new MCP client (connect, initialize, list_tools),
         plain SQLModel ORM storage, Runner.run; same MCP server, model, instructions, database
  floor  bench/_floor_app.py: our API with the MCP hop removed (the MCP server's tool
         functions called in the API process)

Measured in alternating rounds (each round runs every variant for a slice of turns, in a
rotating order, so machine noise hits all alike): at 1 client, then at --users clients (one
user and conversation each). Per variant it prints the client latency (median, p95), the
server time (Server-Timing when the server sends it, else client time minus a /healthz round
trip), the agent part (`agent_run.latency_ms`; the peer's own Server-Timing), turns/s and CPU
ms per turn of each process (from /proc; on a local PostgreSQL also its backends serving
the run's database, as pg), then the ratios the targets name, overall and as the median of
the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backend.db import Database
from bench import _harness as h

VARIANTS = ("ours", "peer", "floor")
TEMPLATE_TURNS = 20  # 40 messages: the history every measured conversation starts from


@dataclass
class Variant:
    name: str
    server: h.Server
    processes: dict[str, list[int]]
    healthz_ms: float = 0.0
    database_url: str = ""  # PostgreSQL on this machine: its backends' CPU is counted too
    solo_user: str = ""
    users: list[str] = field(default_factory=list)
    conversations: dict[str, int] = field(default_factory=dict)
    solo: h.Tally = field(default_factory=h.Tally)
    crowd: h.Tally = field(default_factory=h.Tally)


def _cpu(variant: Variant) -> dict[str, dict[int, float]]:
    readings = {name: h.cpu_by_pid(pids) for name, pids in variant.processes.items()}
    if variant.database_url:
        # The server's backends of this database: every variant's queries cost CPU there too.
        readings["pg"] = h.cpu_by_pid(h.postgres_backends(variant.database_url))
    return readings


async def _slice(
    variant: Variant,
    client: httpx.AsyncClient,
    tokens: dict[str, str],
    users: list[str],
    per_user: int,
    tally: h.Tally,
    label: str,
) -> None:
    """`per_user` turns by each of `users` at once, added to `tally`."""

    async def one_user(user: str) -> list[h.TurnTiming]:
        timings = []
        for number in range(per_user):
            timings.append(
                await h.post_turn(
                    client, user, tokens[user], variant.conversations[user], f"{label}-{number}"
                )
            )
        return timings

    before = _cpu(variant)
    started = time.perf_counter()
    results = await asyncio.gather(*(one_user(user) for user in users))
    seconds = time.perf_counter() - started
    tally.seconds += seconds
    tally.slice_rates.append(len(users) * per_user / seconds)
    after = _cpu(variant)
    for name in after:
        tally.add_cpu(name, h.cpu_delta(before.get(name, {}), after[name]))
    for timings in results:
        for timing in timings:
            tally.turns += 1
            tally.client_ms.append(timing.client_ms)
            total = timing.server.get("total", timing.server.get("app"))
            tally.server_ms.append(
                total if total is not None else timing.client_ms - variant.healthz_ms
            )
            if "agent" in timing.server:
                tally.agent_ms.append(timing.server["agent"])


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


async def _measure(
    variants: list[Variant], database: Database, tokens: dict[str, str], args: argparse.Namespace
) -> None:
    clients = {
        v.name: httpx.AsyncClient(
            base_url=v.server.base_url,
            timeout=120,
            limits=httpx.Limits(max_connections=args.users + 5),
        )
        for v in variants
    }
    try:
        ours = next(v for v in variants if v.name == "ours")
        # The template conversation: real turns through the product, so the copied history
        # holds what a turn really stores (tool calls and their results included).
        template_user = ours.solo_user.replace("-solo", "-template")
        template_id = await h.new_conversation(database, template_user)
        ours.conversations[template_user] = template_id
        for number in range(TEMPLATE_TURNS):
            await h.post_turn(
                clients["ours"], template_user, tokens[template_user], template_id, f"t{number}"
            )
        template = await h.template_messages(database, template_id)
        for variant in variants:
            for user in [variant.solo_user, *variant.users]:
                variant.conversations[user] = await h.seeded_conversation(
                    database, user, template, len(template)
                )
            variant.healthz_ms = await h.healthz_median(clients[variant.name])
            # Warm-up: imports, pools, caches; not counted.
            await _slice(
                variant,
                clients[variant.name],
                tokens,
                [variant.solo_user],
                args.warmup,
                h.Tally(),
                "warm",
            )
            await _slice(
                variant, clients[variant.name], tokens, variant.users, 1, h.Tally(), "warm"
            )
        first_run = await h.last_run_id(database)

        solo_slices = _split(args.turns, args.rounds)
        crowd_slices = _split(max(1, args.turns // args.users), args.rounds)
        for round_number in range(args.rounds):
            shift = round_number % len(variants)
            order = variants[shift:] + variants[:shift]
            for variant in order:
                await _slice(
                    variant,
                    clients[variant.name],
                    tokens,
                    [variant.solo_user],
                    solo_slices[round_number],
                    variant.solo,
                    f"s{round_number}",
                )
            for variant in order:
                if crowd_slices[round_number]:
                    await _slice(
                        variant,
                        clients[variant.name],
                        tokens,
                        variant.users,
                        crowd_slices[round_number],
                        variant.crowd,
                        f"c{round_number}",
                    )
        for variant in variants:
            if variant.name == "peer":
                continue  # no run records: its Server-Timing gave the agent part
            variant.solo.agent_ms = await h.agent_latencies(
                database, first_run, [variant.solo_user]
            )
            variant.crowd.agent_ms = await h.agent_latencies(database, first_run, variant.users)
    finally:
        for client in clients.values():
            await client.aclose()


def _row(variant: Variant, clients: int, tally: h.Tally) -> str:
    cpu = (
        "  ".join(
            f"{name}={seconds * 1000 / tally.turns:6.1f}" for name, seconds in tally.cpu.items()
        )
        if tally.turns
        else ""
    )
    return (
        f"{variant.name:<6}{clients:>4}{tally.turns:>6}"
        f"{h.median(tally.client_ms):>9.1f}{h.p95(tally.client_ms) if tally.client_ms else 0:>8.1f}"
        f"{h.median(tally.server_ms):>9.1f}{h.median(tally.agent_ms):>9.1f}"
        f"{tally.rate:>9.1f}   {cpu}"
    )


def _report(variants: list[Variant], args: argparse.Namespace, backend: str) -> None:
    by_name = {v.name: v for v in variants}
    print(
        f"chat turn, 40-message history, {backend}, {args.rounds} alternating rounds"
        f" (healthz baseline: "
        + ", ".join(f"{v.name} {v.healthz_ms:.2f} ms" for v in variants)
        + ")"
    )
    print(
        f"{'var':<6}{'cli':>4}{'n':>6}{'p50 ms':>9}{'p95 ms':>8}{'server':>9}{'agent':>9}"
        f"{'turns/s':>9}   CPU ms/turn per process"
    )
    for clients, pick in ((1, _solo), (args.users, _crowd)):
        for variant in variants:
            print(_row(variant, clients, pick(variant)))
    print(
        "server = Server-Timing total when sent, else client p50 minus /healthz; agent = "
        "agent_run.latency_ms (peer: its Server-Timing agent part)"
    )
    print("turns/s by round (the spread shows the machine's noise):")
    for clients, pick in ((1, _solo), (args.users, _crowd)):
        for variant in variants:
            rates = " ".join(f"{rate:6.1f}" for rate in pick(variant).slice_rates)
            print(f"  {variant.name:<6}{clients:>3} client(s): {rates}")
    ours = by_name.get("ours")
    for clients, pick in ((1, _solo), (args.users, _crowd)):
        if ours is None:
            break
        if "peer" in by_name:
            peer = pick(by_name["peer"])
            print(
                f"ours vs peer, {clients:>2} client(s): turns/s "
                f"{h.ratio(pick(ours).rate, peer.rate)} overall, {_paired(pick(ours), peer)}"
                " (target >= 3x)"
            )
        if "floor" in by_name:
            floor = pick(by_name["floor"])
            print(
                f"floor vs ours, {clients:>2} client(s): turns/s "
                f"{h.ratio(floor.rate, pick(ours).rate)} overall, {_paired(floor, pick(ours))};"
                f" server p50 ours/floor "
                f"{h.ratio(h.median(pick(ours).server_ms), h.median(floor.server_ms))}"
                " (target <= 1.5x)"
            )


def _paired(first: h.Tally, second: h.Tally) -> str:
    """The median of the per-round ratios: each round's slices ran back to back, so this
    cancels most of the noise that moves whole rounds."""
    ratios = [a / b for a, b in zip(first.slice_rates, second.slice_rates, strict=True) if b]
    return f"{h.median(ratios):.2f}x by round (median)" if ratios else "n/a by round"


def _solo(variant: Variant) -> h.Tally:
    return variant.solo


def _crowd(variant: Variant) -> h.Tally:
    return variant.crowd


def run(args: argparse.Namespace) -> None:
    names = [name for name in VARIANTS if name in args.variants.split(",")]
    if "ours" not in names:
        raise SystemExit("--variants must include ours")
    workers, mcp_workers = args.workers, args.mcp_workers
    if workers > 1 and not h.serve_supports("--workers"):
        print(f"note: `serve` has no --workers option; running 1 API worker, not {workers}")
        workers = 1
    if mcp_workers > 1 and not h.serve_supports("--mcp-workers"):
        print(f"note: `serve` has no --mcp-workers; running 1 MCP worker, not {mcp_workers}")
        mcp_workers = 1
    run_id = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        data_dir = Path(tmp)
        with h.database_for_run(args, data_dir) as database_url:
            port, mcp_port = h.port_or_free(args.port), h.port_or_free(args.mcp_port)
            env = h.base_environment(data_dir, database_url, f"http://127.0.0.1:{mcp_port}/mcp")
            with h.running([]) as servers:
                serve = h.start_serve(env, port, mcp_port, data_dir, workers, mcp_workers)
                servers.append(serve)
                processes = h.serve_processes(serve)
                variants = [Variant("ours", serve, {"api": processes.api, "mcp": processes.mcp})]
                if "peer" in names:
                    peer = h.start_uvicorn(
                        "peer",
                        "bench._peer_app:build",
                        env,
                        h.port_or_free(args.peer_port),
                        data_dir,
                    )
                    servers.append(peer)
                    variants.append(
                        Variant("peer", peer, {"peer": [peer.pid], "mcp": processes.mcp})
                    )
                if "floor" in names:
                    # One relay and scheduler for the run (serve's); the floor is a turn path.
                    floor_env = {**env, "EVENTS_RELAY": "false", "REMINDERS_SCHEDULER": "false"}
                    floor = h.start_uvicorn(
                        "floor",
                        "bench._floor_app:build",
                        floor_env,
                        h.port_or_free(args.floor_port),
                        data_dir,
                    )
                    servers.append(floor)
                    variants.append(Variant("floor", floor, {"floor": [floor.pid]}))
                for variant in variants:
                    if h.postgres_backends(database_url):
                        variant.database_url = database_url
                    variant.solo_user = f"{run_id}-{variant.name}-solo"
                    variant.users = [f"{run_id}-{variant.name}-c{n}" for n in range(args.users)]
                everyone = [u for v in variants for u in (v.solo_user, *v.users)]
                everyone.append(f"{run_id}-ours-template")
                settings = h.settings_for(env)
                tokens = h.user_tokens(settings, everyone)
                database = Database(database_url)
                asyncio.run(_measure_then_dispose(variants, database, tokens, args))
                backend = "PostgreSQL" if h.is_postgres(database_url) else "SQLite"
                if workers > 1 or mcp_workers > 1:
                    backend += f", {workers} API + {mcp_workers} MCP workers"
                _report(variants, args, backend)


async def _measure_then_dispose(
    variants: list[Variant], database: Database, tokens: dict[str, str], args: argparse.Namespace
) -> None:
    try:
        await _measure(variants, database, tokens, args)
    finally:
        await database.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chat_turn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--turns",
        type=int,
        default=200,
        help="turns per variant at 1 client, and again at --users clients",
    )
    parser.add_argument("--users", type=int, default=10, help="clients in the concurrent part")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted turns per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="default: %(default)s")
    parser.add_argument(
        "--workers", type=int, default=1, help="API workers for `serve`, if it has --workers"
    )
    parser.add_argument(
        "--mcp-workers",
        type=int,
        default=1,
        help="MCP server workers for `serve`, if it has --mcp-workers",
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--mcp-port", type=int, default=0, help="MCP port (default: free)")
    parser.add_argument("--peer-port", type=int, default=0, help="peer app port (default: free)")
    parser.add_argument("--floor-port", type=int, default=0, help="floor app port (default: free)")
    h.add_database_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.turns < args.rounds or args.users < 1:
        parser.error("need --rounds >= 1, --turns >= --rounds and --users >= 1")
    run(args)


if __name__ == "__main__":
    main()
