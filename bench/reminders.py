"""Reminder firing, exactly once, and how late: `python -m bench.reminders`.

Options: --reminders 10000, --users 1000, --conversations 100, --schedulers 1,2, --spread 60,
--modes staggered,instant, --lead 5, --batch-size 200, --poll 1, --pool 2, --database-url
(default $BENCH_DATABASE_URL), --no-sqlite.

--reminders reminders over --users users (each reminder's user drawn at random, seeded, so
users have ~10 each and two schedulers' batches share users, as real ones would), of which
the first --conversations users have a conversation, so their reminders also write the chat
note. The tasks go in with one Core bulk insert, due a --lead of seconds after the insert
starts, in one of two modes:

  staggered  due at evenly spaced instants over the next --spread seconds (one minute): the
             time from due to notification is the firing behaviour (sleep until the earliest
             reminder, poll interval, round trip), as users meet it.
  instant    all due at the same instant: the time from due to notification is the drain
             rate of a backlog of --reminders; also printed as notifications/s.

The schedulers are the product's `Scheduler` loop, each in its own OS process
(`python -m bench.reminders --worker`) with its own Database and a pool of --pool
connections, started before the tasks are inserted; the bench waits until every reminder
has a committed notification, stops them with SIGTERM and checks exactly once: one
notification per (task, remind_at), every task's reminded_at set, one `reminder.due`
outbox event per task, each user's seq 1..n without gaps, one chat note per reminder of a
user with a conversation, and the schedulers' own counts adding up.

Latency is printed twice: `fired_at - remind_at` (the scheduler's view: fired_at is the
instant its batch started) and `committed - remind_at`, where committed is when this process,
reading every 100 ms, first saw the notification (what a notification stream could send).

PostgreSQL (--database-url or $BENCH_DATABASE_URL, any database on the server) runs with
each --schedulers count in a database `bench_reminders_<pid>` created and dropped by the
bench; SQLite (a new file per run) with one scheduler, as a reference. Ratios are against
the first run of the same mode (PostgreSQL with the first --schedulers count, when it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel, col

from backend.cli import migrate
from backend.clock import utc_now
from backend.config import Settings
from backend.db import (
    CONNECT_TIMEOUT_SECONDS,
    POOL_TIMEOUT_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
    Database,
)
from backend.events.outbox import event_type
from backend.models import Conversation, Message, Notification, OutboxEvent, Task, new_public_id
from backend.reminders.scheduler import Scheduler
from bench._harness import new_database

REPO_ROOT = Path(__file__).resolve().parents[1]
URL_ENV = "BENCH_DATABASE_URL"
MODES = ("staggered", "instant")
OBSERVE_SECONDS = 0.1
SEED_CHUNK = 1000
WORKER_START_SECONDS = 60.0
WORKER_STOP_SECONDS = 40.0
# Reminder texts say their time in the task's zone: a few, so formatting is not one path.
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC")
READY = "ready"


def _database(url: str, pool: int) -> Database:
    """A Database with a pool of `pool` connections (the product's is 10 + 10 overflow)."""
    if make_url(url).get_backend_name() != "postgresql":
        return Database(url)
    engine = create_async_engine(
        url,
        pool_size=pool,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args={
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": STATEMENT_TIMEOUT_SECONDS,
        },
    )
    return Database(url, engine=engine)


def _settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "database_url": url,
        "log_level": "WARNING",
        "events_relay": False,
        "reminders_scheduler": False,
    }
    return Settings(_env_file=None, **(values | overrides))


# --- one scheduler process ------------------------------------------------------------------


async def _work(url: str, batch_size: int, poll: float, pool: int) -> None:
    """Run the product's Scheduler until SIGTERM; say `ready` once it reached the database."""
    database = _database(url, pool)
    settings = _settings(url, reminders_batch_size=batch_size, reminders_poll_seconds=poll)
    scheduler = Scheduler(database, settings)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        # One round first: the database answers before the bench is told to go on.
        await scheduler.run_once()
        running = scheduler.start()
        print(READY, flush=True)
        waiting = asyncio.create_task(stopped.wait())
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        await scheduler.aclose()
        await running
    finally:
        await database.dispose()
    print(json.dumps({"fired": scheduler.fired, "rounds": scheduler.rounds}), flush=True)


@dataclass
class Worker:
    process: asyncio.subprocess.Process
    fired: int = 0
    rounds: int = 0


async def _start_workers(
    url: str, count: int, args: argparse.Namespace, workers: list[Worker]
) -> None:
    """Start `count` scheduler processes into `workers` (so a failed start still ends them)."""
    for _ in range(count):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.reminders",
            "--worker",
            "--database-url",
            url,
            "--batch-size",
            str(args.batch_size),
            "--poll",
            str(args.poll),
            "--pool",
            str(args.pool),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        workers.append(Worker(process))
    for worker in workers:
        assert worker.process.stdout is not None
        line = await asyncio.wait_for(worker.process.stdout.readline(), WORKER_START_SECONDS)
        if line.decode().strip() != READY:
            raise SystemExit(
                f"a scheduler process did not start (exit {worker.process.returncode})"
            )


async def _stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.process.stdout is not None
        try:
            output = await asyncio.wait_for(worker.process.stdout.read(), WORKER_STOP_SECONDS)
            await asyncio.wait_for(worker.process.wait(), WORKER_STOP_SECONDS)
        except TimeoutError:
            worker.process.kill()
            await worker.process.wait()
            raise SystemExit("a scheduler process did not stop") from None
        lines = output.decode().strip().splitlines()
        if worker.process.returncode != 0 or not lines:
            raise SystemExit(f"a scheduler process failed (exit {worker.process.returncode})")
        counts = json.loads(lines[-1])
        worker.fired, worker.rounds = int(counts["fired"]), int(counts["rounds"])


@asynccontextmanager
async def _schedulers(
    url: str, count: int, args: argparse.Namespace
) -> AsyncIterator[list[Worker]]:
    workers: list[Worker] = []
    try:
        await _start_workers(url, count, args, workers)
        yield workers
        await _stop_workers(workers)
    finally:
        # Reached with processes still running only when something failed.
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()


# --- one measured run -----------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    first_due: datetime
    last_due: datetime
    chat_notes: int
    inserted_in: float


@dataclass
class Result:
    label: str
    mode: str
    fired_ms: list[float]
    committed_ms: list[float]
    wall_seconds: float
    after_last_due_seconds: float
    batches: int
    late: int
    split: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.fired_ms) / self.wall_seconds if self.wall_seconds > 0 else math.inf


async def _seed(database: Database, args: argparse.Namespace, mode: str) -> Seeded:
    """Users, conversations and tasks in one transaction; due `--lead` s after it starts."""
    rng = random.Random(args.seed)
    users = [f"bench-user-{number:05d}" for number in range(args.users)]
    chatty = set(users[: args.conversations])
    started = time.perf_counter()
    now = utc_now()
    first_due = now + timedelta(seconds=args.lead)
    conversations = [
        {
            "thread_id": new_public_id("thr"),
            "user_id": user,
            "title": "Planning the week",
            "created_at": now,
            "updated_at": now,
        }
        for user in sorted(chatty)
    ]
    tasks: list[dict[str, Any]] = []
    chat_notes = 0
    for number in range(args.reminders):
        offset = args.spread * number / args.reminders if mode == "staggered" else 0.0
        remind_at = first_due + timedelta(seconds=offset)
        user = users[rng.randrange(len(users))]
        chat_notes += user in chatty
        tasks.append(
            {
                "user_id": user,
                "title": f"Call the plumber #{number}",
                "completed": False,
                "priority": "medium",
                "due_at": remind_at + timedelta(hours=1),
                "remind_at": remind_at,
                "time_zone": ZONES[number % len(ZONES)],
                "created_at": now,
                "updated_at": now,
                "version": 1,
                "occurrence": 1,
            }
        )
    async with database.session_scope(write=True) as session:
        if conversations:
            await session.execute(insert(Conversation), conversations)
        for start in range(0, len(tasks), SEED_CHUNK):
            await session.execute(insert(Task), tasks[start : start + SEED_CHUNK])
    if database.engine.dialect.name == "postgresql":
        # Planner statistics as a long-running table would have them, not a truncated one's.
        async with database.engine.connect() as connection:
            await connection.execute(text("ANALYZE task, conversation"))
            await connection.commit()
    if utc_now() >= first_due:
        raise SystemExit(f"inserting took longer than --lead {args.lead:g} s: raise it")
    last_due = max(task["remind_at"] for task in tasks) if tasks else first_due
    return Seeded(first_due, last_due, chat_notes, time.perf_counter() - started)


async def _observe(
    database: Database, workers: list[Worker], expected: int, give_up_after: float
) -> dict[int, datetime]:
    """When each notification was first seen committed, reading every OBSERVE_SECONDS.

    Only ids above the contiguous prefix already seen are read: with two schedulers a lower
    id can commit after a higher one.
    """
    seen: dict[int, datetime] = {}
    floor = 0
    deadline = time.monotonic() + give_up_after
    while len(seen) < expected:
        for worker in workers:
            if worker.process.returncode is not None:
                raise SystemExit(f"a scheduler exited early ({worker.process.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {expected} fired within {give_up_after:.0f} s")
        async with database.session_scope() as session:
            ids = (
                await session.scalars(
                    select(col(Notification.id)).where(col(Notification.id) > floor)
                )
            ).all()
        at = utc_now()
        for notification_id in ids:
            assert notification_id is not None
            seen.setdefault(notification_id, at)
        while floor + 1 in seen:
            floor += 1
        await asyncio.sleep(OBSERVE_SECONDS)
    return seen


async def _verify(
    database: Database, args: argparse.Namespace, seeded: Seeded, workers: list[Worker]
) -> list[Any]:
    """Exactly once, every way it can be checked; the notifications' rows."""
    async with database.session_scope() as session:
        notifications = (
            await session.execute(
                select(
                    col(Notification.id),
                    col(Notification.user_id),
                    col(Notification.seq),
                    col(Notification.task_id),
                    col(Notification.remind_at),
                    col(Notification.fired_at),
                    col(Notification.late),
                    col(Notification.message_id),
                )
            )
        ).all()
        rows = await session.execute(select(col(Task.id), col(Task.remind_at)))
        tasks = dict(rows.all())
        unfired = await session.scalar(select(func.count()).where(col(Task.reminded_at).is_(None)))
        due_type = event_type("reminder.due")
        events, evented_tasks = (
            await session.execute(
                select(func.count(), func.count(func.distinct(col(OutboxEvent.task_id)))).where(
                    col(OutboxEvent.type) == due_type
                )
            )
        ).one()
        message_seqs = (
            await session.execute(
                select(col(Message.conversation_id), col(Message.seq)).order_by(
                    col(Message.conversation_id), col(Message.seq)
                )
            )
        ).all()
    problems: list[str] = []
    expected = args.reminders
    if len(notifications) != expected:
        problems.append(f"{len(notifications)} notifications for {expected} reminders")
    keys = {(row.task_id, row.remind_at) for row in notifications}
    if len(keys) != len(notifications):
        problems.append(f"{len(notifications) - len(keys)} duplicate (task, remind_at)")
    if {row.task_id for row in notifications} != set(tasks):
        problems.append("notifications do not cover exactly the tasks")
    if any(tasks.get(row.task_id) != row.remind_at for row in notifications):
        problems.append("a notification's remind_at differs from its task's")
    if unfired:
        problems.append(f"{unfired} tasks without reminded_at")
    if (events, evented_tasks) != (expected, expected):
        problems.append(f"{events} reminder.due events over {evented_tasks} tasks")
    by_user: dict[str, list[int]] = defaultdict(list)
    for row in notifications:
        by_user[row.user_id].append(row.seq)
    gapped = [
        user for user, seqs in by_user.items() if sorted(seqs) != list(range(1, len(seqs) + 1))
    ]
    if gapped:
        problems.append(f"{len(gapped)} users whose seq is not 1..n")
    notes = sum(1 for row in notifications if row.message_id is not None)
    if notes != seeded.chat_notes or len(message_seqs) != seeded.chat_notes:
        problems.append(
            f"{notes} notifications with a chat note, {len(message_seqs)} messages,"
            f" {seeded.chat_notes} expected"
        )
    by_conversation: dict[int, list[int]] = defaultdict(list)
    for conversation_id, seq in message_seqs:
        by_conversation[conversation_id].append(seq)
    if any(seqs != list(range(1, len(seqs) + 1)) for seqs in by_conversation.values()):
        problems.append("a conversation's message seq has a gap")
    if sum(worker.fired for worker in workers) != expected:
        problems.append(f"the schedulers counted {[w.fired for w in workers]} firings")
    if problems:
        raise SystemExit("NOT exactly once: " + "; ".join(problems))
    return list(notifications)


async def _run(
    url: str, label: str, schedulers: int, mode: str, args: argparse.Namespace
) -> Result:
    database = _database(url, 2)
    try:
        async with _schedulers(url, schedulers, args) as workers:
            seeded = await _seed(database, args, mode)
            give_up_after = args.lead + args.spread + max(120.0, args.reminders / 20)
            seen = await _observe(database, workers, args.reminders, give_up_after)
        notifications = await _verify(database, args, seeded, workers)
    finally:
        await database.dispose()
    fired_ms = [(row.fired_at - row.remind_at).total_seconds() * 1000 for row in notifications]
    committed_ms = [(seen[row.id] - row.remind_at).total_seconds() * 1000 for row in notifications]
    last_seen = max(seen.values())
    result = Result(
        label=label,
        mode=mode,
        fired_ms=fired_ms,
        committed_ms=committed_ms,
        wall_seconds=(last_seen - seeded.first_due).total_seconds(),
        after_last_due_seconds=(last_seen - seeded.last_due).total_seconds(),
        batches=len({row.fired_at for row in notifications}),
        late=sum(1 for row in notifications if row.late),
        split=[worker.fired for worker in workers],
        rounds=[worker.rounds for worker in workers],
    )
    _print_result(result, seeded)
    return result


# --- reporting ------------------------------------------------------------------------------


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _spread(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (
        f"p50 {_percentile(ordered, 0.5):8.0f} ms  p99 {_percentile(ordered, 0.99):8.0f} ms"
        f"  max {ordered[-1]:8.0f} ms"
    )


def _print_result(result: Result, seeded: Seeded) -> None:
    n = len(result.fired_ms)
    print(
        f"{result.label}, {result.mode}: {n} fired exactly once"
        f" ({seeded.chat_notes} with a chat note), {result.late} late;"
        f" seeded in {seeded.inserted_in:.2f} s"
    )
    print(f"  {'due -> fired_at':<26}{_spread(result.fired_ms)}")
    print(f"  {'due -> committed (seen)':<26}{_spread(result.committed_ms)}")
    print(
        f"  {'backlog':<26}first due -> last committed {result.wall_seconds:.2f} s,"
        f" last due -> last committed {result.after_last_due_seconds:.2f} s,"
        f" {result.rate:,.0f} notifications/s"
    )
    print(
        f"  {'batches':<26}{result.batches} (mean {n / max(1, result.batches):.0f}),"
        f" fired per scheduler {result.split} in {result.rounds} rounds (idle ones too)",
        flush=True,
    )


def _print_summary(results: list[Result]) -> None:
    print()
    print("summary: ratios to the first run of the same mode")
    header = (
        f"{'mode':<10} {'run':<28} {'p50 ms':>8} {'p99 ms':>8} {'wall s':>8} "
        f"{'notif/s':>9} {'p99 x':>7} {'rate x':>7}"
    )
    print(header)
    for mode in MODES:
        runs = [result for result in results if result.mode == mode]
        if not runs:
            continue
        base = runs[0]
        base_p99 = _percentile(sorted(base.committed_ms), 0.99)
        for result in runs:
            ordered = sorted(result.committed_ms)
            p99 = _percentile(ordered, 0.99)
            print(
                f"{mode:<10} {result.label:<28} {_percentile(ordered, 0.5):8.0f} {p99:8.0f}"
                f" {result.wall_seconds:8.2f} {result.rate:9,.0f}"
                f" {p99 / base_p99 if base_p99 > 0 else math.nan:6.2f}x"
                f" {result.rate / base.rate:6.2f}x"
            )
    print("(latencies: due -> committed, as a reader polling every 100 ms saw them)")


# --- databases ------------------------------------------------------------------------------


async def _truncate(url: str) -> None:
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@asynccontextmanager
async def _postgres(server_url: str) -> AsyncIterator[str]:
    """A new database `bench_reminders_<pid>` on the server, migrated; dropped at the end."""
    async with new_database(server_url, "bench_reminders") as url:
        # Alembic runs its own event loop: off this one.
        await asyncio.to_thread(migrate, _settings(url))
        yield url


async def _sqlite_run(args: argparse.Namespace, mode: str) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        await asyncio.to_thread(migrate, _settings(url))
        return await _run(url, "SQLite, 1 scheduler", 1, mode, args)


async def _runs(postgres_url: str | None, args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    for mode in args.modes:
        for count in args.schedulers if postgres_url else []:
            assert postgres_url is not None
            await _truncate(postgres_url)
            label = f"PostgreSQL, {count} scheduler{'s' if count > 1 else ''}"
            results.append(await _run(postgres_url, label, count, mode, args))
        if args.sqlite:
            results.append(await _sqlite_run(args, mode))
    return results


async def _measure(args: argparse.Namespace) -> None:
    server_url: str | None = args.database_url or os.environ.get(URL_ENV)
    if not server_url:
        print(f"PostgreSQL: skipped (set {URL_ENV} or --database-url)")
    print(
        f"{args.reminders} reminders over {args.users} users ({args.conversations} with a"
        f" conversation); batch {args.batch_size}, poll {args.poll:g} s, pool {args.pool}"
        f" per scheduler; staggered = due evenly over {args.spread:g} s, instant = all due"
        f" at once; {args.lead:g} s after the insert starts",
        flush=True,
    )
    if server_url:
        async with _postgres(server_url) as url:
            results = await _runs(url, args)
    else:
        results = await _runs(None, args)
    _print_summary(results)


def _counts(value: str) -> list[int]:
    counts = [int(part) for part in value.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive counts")
    return counts


def _modes(value: str) -> list[str]:
    modes = [part.strip() for part in value.split(",") if part.strip()]
    if not modes or set(modes) - set(MODES):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(MODES)}")
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reminders", type=int, default=10_000, help="reminders to fire")
    parser.add_argument("--users", type=int, default=1000, help="users they belong to")
    parser.add_argument(
        "--conversations", type=int, default=100, help="users with a conversation (chat note)"
    )
    parser.add_argument(
        "--schedulers", type=_counts, default=[1, 2], help="PostgreSQL scheduler processes: 1,2"
    )
    parser.add_argument("--modes", type=_modes, default=list(MODES), help="staggered,instant")
    parser.add_argument("--spread", type=float, default=60.0, help="staggered over (seconds)")
    parser.add_argument("--lead", type=float, default=5.0, help="first due after (seconds)")
    parser.add_argument("--batch-size", type=int, default=200, help="REMINDERS_BATCH_SIZE")
    parser.add_argument("--poll", type=float, default=1.0, help="REMINDERS_POLL_SECONDS")
    parser.add_argument("--pool", type=int, default=2, help="connections per scheduler")
    parser.add_argument("--seed", type=int, default=10, help="which user gets which reminder")
    parser.add_argument(
        "--sqlite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run SQLite with one scheduler (default)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"a PostgreSQL server (postgresql+asyncpg://…); default ${URL_ENV}",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(_work(args.database_url, args.batch_size, args.poll, args.pool))
        return
    if min(args.reminders, args.users) < 1 or not 0 <= args.conversations <= args.users:
        parser.error("--reminders and --users >= 1, 0 <= --conversations <= --users")
    asyncio.run(_measure(args))


if __name__ == "__main__":
    main()
