"""The outbox relay: publishes pending task events, in order per task, each exactly once.

One round (`run_once`) takes the oldest available pending events, publishes those that no
earlier pending event of their task holds back, and marks them published (or counts a
refusal) in one transaction, which also feeds our own consumers when configured.

- PostgreSQL: the round claims its rows with FOR UPDATE SKIP LOCKED and keeps the claim
  transaction open while publishing, so any number of relays (one per API replica) share the
  work and each event is published by one of them. An event is published only if no earlier
  event of its task is pending outside the claim: in READ COMMITTED another relay's
  uncommitted claim still reads as pending, so the later event waits for it.
- SQLite: one relay. The round reads its batch, publishes with no transaction open (a write
  transaction would block every writer for as long as the broker takes), then marks the
  events in one short write transaction; with the `none` publisher (no I/O) all of it is
  one short write transaction, taken only after a read found work, so an idle poll never
  competes with the other processes for SQLite's write lock.

A refused event waits (exponential backoff with jitter) and holds back the later events of
its task; after EVENTS_MAX_ATTEMPTS refusals it is dead, and no longer holds anything back.
A publisher outage counts no attempts: the relay backs off and tries the same batch again,
and while it is out, commits and NOTIFYs do not cut the backoff short. A publisher that can
tell an outage from a bad event only by retrying alone does so within its call (Dapr: a bulk
publish failing as a whole is retried one event at a time; see DaprPublisher); a refusal of
the relay's configuration (token, topic scopes) is an outage, never an event's refusal.

One limit: a refusal is known only once the batch is sent, so later events of the same task
in that batch go out ahead of the refused one. Refusals are about one record (too large,
forbidden) and rare; consumers that must not apply an older state over a newer one compare
`data.version`, which every event carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from backend.clock import utc_now
from backend.config import Settings
from backend.db import Database, is_database_unavailable
from backend.events.log import prune_published
from backend.events.outbox import NOTIFY_CHANNEL, add_commit_listener, remove_commit_listener
from backend.events.publishers import Publisher, PublisherUnavailable, PublishResult
from backend.models import OutboxEvent
from backend.observability import Metrics

logger = logging.getLogger("backend.events")

# A refused event waits 1 s, 2 s, 4 s … up to 10 minutes (times a random 0.5–1).
REFUSAL_BACKOFF_BASE_SECONDS = 1.0
REFUSAL_BACKOFF_MAX_SECONDS = 600.0
# While the publisher or the database is out: 0.5 s, 1 s, 2 s … up to 30 s, jittered.
OUTAGE_BACKOFF_BASE_SECONDS = 0.5
OUTAGE_BACKOFF_MAX_SECONDS = 30.0
# Retention runs at most this often, deleting this many rows per transaction, and at most
# this many transactions per run, so it never competes with publishing for long.
PRUNE_INTERVAL_SECONDS = 3600.0
PRUNE_BATCH = 500
PRUNE_MAX_BATCHES = 20
# After a wake-up, the relay waits this long for more commits to join the round: under a
# stream of single-task writes, one round then carries several events instead of each write
# paying for a round of its own.
GATHER_SECONDS = 0.02
# The LISTEN connection is checked this often and re-opened when lost.
LISTEN_CHECK_SECONDS = 5.0
MAX_ERROR_CHARS = 2000


def backoff_seconds(failures: int, *, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": between half and all of base·2^(n-1), capped."""
    ceiling = min(cap, base * 2 ** max(failures - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


class Relay:
    def __init__(
        self,
        database: Database,
        publisher: Publisher,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.database = database
        self.publisher = publisher
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._postgres = database.engine.dialect.name == "postgresql"
        self._wake = asyncio.Event()
        # Set by aclose(): the one thing that cuts an outage backoff short.
        self._stop = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._outage: str | None = None  # what is out, while it is (logged on change only)
        self._failures = 0
        self._pruned_at: float | None = None
        # For operators' logs and tests: rounds done, and whether NOTIFY can reach us now.
        self.rounds = 0
        self.listening = asyncio.Event()

    # --- one round ---

    async def run_once(self) -> int:
        """Claim, publish and mark one batch; how many events were published or refused.

        Raises PublisherUnavailable (nothing marked, nothing counted) when the publisher
        cannot take the batch.
        """
        if self.publisher.local and not self._postgres and not await self._any_available():
            return 0
        if self._postgres or self.publisher.local:
            unavailable: PublisherUnavailable | None = None
            async with self.database.session_scope(write=True) as session:
                batch = await self._publishable(session, claim=self._postgres)
                if not batch:
                    return 0
                try:
                    result = await self.publisher.publish(batch)
                except PublisherUnavailable as exc:
                    # Nothing was written: committing just releases the claim. Raised out
                    # here, the outage is not mistaken for the database's own.
                    unavailable = exc
                else:
                    await self._mark(session, batch, result)
            if unavailable is not None:
                raise unavailable
            self._observe(batch, result)
            return len(batch)
        async with self.database.session_scope() as session:
            batch = await self._publishable(session, claim=False)
        if not batch:
            return 0
        result = await self.publisher.publish(batch)
        async with self.database.session_scope(write=True) as session:
            await self._mark(session, batch, result)
        self._observe(batch, result)
        return len(batch)

    def _observe(self, batch: Sequence[OutboxEvent], result: PublishResult) -> None:
        """Metrics of a committed round: events published and refused, and their ages."""
        now = utc_now()
        ages = {_id(row): (now - row.created_at).total_seconds() for row in batch}
        self.metrics.outbox_round(
            [age for key, age in ages.items() if key not in result.refused],
            [age for key, age in ages.items() if key in result.refused],
        )

    async def _any_available(self) -> bool:
        """Whether a pending event is due, read without taking SQLite's write lock."""
        async with self.database.session_scope() as session:
            statement = (
                select(col(OutboxEvent.id))
                .where(
                    col(OutboxEvent.status) == "pending",
                    col(OutboxEvent.available_at) <= utc_now(),
                )
                .limit(1)
            )
            return (await session.scalar(statement)) is not None

    async def _publishable(self, session: AsyncSession, *, claim: bool) -> list[OutboxEvent]:
        statement = _CLAIM_CANDIDATES if claim else _CANDIDATES
        parameters = {"now": utc_now(), "batch": self.settings.events_batch_size}
        rows = list((await session.scalars(statement, parameters)).all())
        if not rows or not claim:
            # One relay (SQLite): every earlier available event of a task is in this batch.
            return rows
        held_back = await self._first_pending_elsewhere(session, rows)
        return [
            row for row in rows if row.task_id not in held_back or _id(row) < held_back[row.task_id]
        ]

    async def _first_pending_elsewhere(
        self, session: AsyncSession, rows: Sequence[OutboxEvent]
    ) -> dict[int, int]:
        """Per task of `rows`: the first pending event not among them (claimed by another
        relay, or waiting out a refusal); events of the task after it must wait."""
        parameters = {"tasks": list({row.task_id for row in rows}), "ids": [_id(r) for r in rows]}
        found = (await session.execute(_FIRST_PENDING_ELSEWHERE, parameters)).all()
        return {int(task_id): int(first) for task_id, first in found if first is not None}

    async def _mark(
        self, session: AsyncSession, batch: Sequence[OutboxEvent], result: PublishResult
    ) -> None:
        now = utc_now()
        published = [row for row in batch if _id(row) not in result.refused]
        if published:
            await session.execute(
                _MARK_PUBLISHED, {"ids": [_id(row) for row in published], "now": now}
            )
        for row in batch:
            if _id(row) in result.refused:
                await self._count_refusal(session, row, result.refused[_id(row)])
        if published and self.settings.feeds_local_consumers:
            from backend.events.consumers import apply_locally

            await apply_locally(session, [row.payload for row in published])

    async def _count_refusal(self, session: AsyncSession, row: OutboxEvent, reason: str) -> None:
        attempts = row.attempts + 1
        dead = attempts >= self.settings.events_max_attempts
        delay = backoff_seconds(
            attempts, base=REFUSAL_BACKOFF_BASE_SECONDS, cap=REFUSAL_BACKOFF_MAX_SECONDS
        )
        await session.execute(
            update(OutboxEvent)
            .where(col(OutboxEvent.id) == _id(row), col(OutboxEvent.status) == "pending")
            .values(
                attempts=attempts,
                last_error=reason[:MAX_ERROR_CHARS],
                status="dead" if dead else "pending",
                available_at=utc_now() + timedelta(seconds=delay),
            )
            .execution_options(synchronize_session=False)
        )
        if dead:
            self.metrics.outbox_dead.inc()
            logger.error(
                "Task event %s (log id %s, task %s) is dead after %d refusals: %s",
                row.event_id,
                row.id,
                row.task_id,
                attempts,
                reason,
            )
        else:
            logger.warning(
                "Task event %s (log id %s) refused (attempt %d of %d), retrying in %.0f s: %s",
                row.event_id,
                row.id,
                attempts,
                self.settings.events_max_attempts,
                delay,
                reason,
            )

    # --- retention ---

    async def prune(self) -> int:
        """Delete published events past EVENTS_RETENTION_DAYS, a small batch per transaction."""
        days = self.settings.events_retention_days
        if days <= 0:
            return 0
        before = utc_now() - timedelta(days=days)
        total = 0
        for _ in range(PRUNE_MAX_BATCHES):
            async with self.database.session_scope(write=True) as session:
                deleted = await prune_published(session, before=before, limit=PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH or self._stopping:
                break
        if total:
            logger.info("Pruned %d published task events older than %d days", total, days)
        return total

    async def _prune_when_due(self) -> None:
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_INTERVAL_SECONDS:
            return
        self._pruned_at = now
        await self.prune()

    # --- the loop ---

    def wake(self) -> None:
        """Start the next round now (thread-safe through the commit listener)."""
        self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """`run()` in the background; `aclose()` stops it, even before it has begun."""
        self._task = asyncio.create_task(self.run(), name="outbox-relay")
        return self._task

    async def run(self) -> None:
        """Publish until `aclose()`: after each commit that wrote events, on NOTIFY from
        other processes (PostgreSQL), and every EVENTS_POLL_SECONDS in any case."""
        if self._task is None:
            self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_commit() -> None:
            # Called inside a commit, possibly from another thread: only schedule.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._wake.set)

        add_commit_listener(on_commit)
        listener = asyncio.create_task(self._listen()) if self._postgres else None
        try:
            while not self._stopping:
                self._wake.clear()
                delay = await self._round()
                self.rounds += 1
                if delay == 0 or self._stopping:
                    continue
                if self._outage is not None:
                    # Out: each commit would otherwise start a round against the dead broker
                    # or database. Only aclose() ends the wait early.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=delay)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                    await asyncio.sleep(GATHER_SECONDS)
        finally:
            remove_commit_listener(on_commit)
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _round(self) -> float:
        """One round and any due pruning; how long to wait before the next (0: go on)."""
        try:
            handled = await self.run_once()
            await self._prune_when_due()
        except PublisherUnavailable as exc:
            return self._note_outage(f"publisher {self.publisher.name} unavailable: {exc}")
        except Exception as exc:
            if is_database_unavailable(exc):
                return self._note_outage(f"database unavailable: {exc}")
            logger.exception("The task event relay failed a round; retrying")
            return self._note_outage("failed round", log=False)
        if self._outage is not None:
            logger.warning("Task event relay recovered (was: %s)", self._outage)
            self._outage, self._failures = None, 0
            self.metrics.outbox_outage.set(0)
        if handled == 0:
            self.metrics.outbox_oldest_age.set(0)
        # A full batch may have more behind it; otherwise the next commit wakes us.
        full = handled >= self.settings.events_batch_size
        return 0 if full else self.settings.events_poll_seconds

    def _note_outage(self, what: str, *, log: bool = True) -> float:
        state = what.split(":", 1)[0]
        if log and (self._outage or "").split(":", 1)[0] != state:
            logger.warning("Task event relay waiting: %s", what)
        self._outage = what
        self._failures += 1
        self.metrics.outbox_outage.set(1)
        return backoff_seconds(
            self._failures, base=OUTAGE_BACKOFF_BASE_SECONDS, cap=OUTAGE_BACKOFF_MAX_SECONDS
        )

    async def _listen(self) -> None:
        """Wake on NOTIFY from any process; re-open the connection when it is lost."""
        dsn = self.database.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        failures = 0
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(dsn, timeout=5)
                await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self.listening.set()
                if failures:
                    logger.warning("Task event relay listening for NOTIFY again")
                failures = 0
                self._wake.set()  # anything notified while we were not listening
                while not connection.is_closed():
                    await asyncio.sleep(LISTEN_CHECK_SECONDS)
                    await connection.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                if failures == 0:
                    logger.warning(
                        "Task event relay lost its NOTIFY connection (%s); polling meanwhile",
                        type(exc).__name__,
                    )
                failures += 1
            finally:
                self.listening.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(
                backoff_seconds(
                    failures, base=OUTAGE_BACKOFF_BASE_SECONDS, cap=OUTAGE_BACKOFF_MAX_SECONDS
                )
            )

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        """Stop after the round in progress (a round is never cut halfway)."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        grace = self.settings.events_publish_timeout_seconds + 10
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            logger.warning("Task event relay did not stop within %.0f s; cancelling it", grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# Built once: constructing these statements cost a relay round more than running them.
# An earlier event of the task waiting out a refusal holds the later ones back; left in the
# candidates they would fill every batch and starve other tasks.
_earlier = aliased(OutboxEvent, name="earlier")
_CANDIDATES = (
    select(OutboxEvent)
    .where(
        col(OutboxEvent.status) == "pending",
        col(OutboxEvent.available_at) <= bindparam("now"),
        ~select(col(_earlier.id))
        .where(
            col(_earlier.task_id) == col(OutboxEvent.task_id),
            col(_earlier.status) == "pending",
            col(_earlier.id) < col(OutboxEvent.id),
            col(_earlier.available_at) > bindparam("now"),
        )
        .exists(),
    )
    .order_by(col(OutboxEvent.id))
    .limit(bindparam("batch"))
)
_CLAIM_CANDIDATES = _CANDIDATES.with_for_update(skip_locked=True, of=OutboxEvent)
_FIRST_PENDING_ELSEWHERE = (
    select(col(OutboxEvent.task_id), func.min(col(OutboxEvent.id)))
    .where(
        col(OutboxEvent.status) == "pending",
        col(OutboxEvent.task_id).in_(bindparam("tasks", expanding=True)),
        col(OutboxEvent.id).not_in(bindparam("ids", expanding=True)),
    )
    .group_by(col(OutboxEvent.task_id))
)
_MARK_PUBLISHED = (
    update(OutboxEvent)
    .where(
        col(OutboxEvent.id).in_(bindparam("ids", expanding=True)),
        col(OutboxEvent.status) == "pending",
    )
    .values(status="published", published_at=bindparam("now"))
    .execution_options(synchronize_session=False)
)


def _id(row: OutboxEvent) -> int:
    assert row.id is not None
    return row.id
