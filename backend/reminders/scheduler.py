"""The reminder scheduler: fires due reminders, once, from any number of processes.

It runs inside `serve`/`api` (REMINDERS_SCHEDULER) or alone as `todo-assistant scheduler`.
Each round fires a batch (notifications.fire_due), then sleeps until the earliest armed
reminder or REMINDERS_POLL_SECONDS, whichever is sooner; a commit in this process that arms
a reminder wakes it at once. Reminders that came due while nothing ran fire on the first
round after start, marked late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from backend.clock import utc_now
from backend.config import Settings
from backend.db import Database, is_database_unavailable
from backend.events.relay import (
    OUTAGE_BACKOFF_BASE_SECONDS,
    OUTAGE_BACKOFF_MAX_SECONDS,
    backoff_seconds,
)
from backend.observability import Metrics
from backend.reminders import notifications
from backend.tasks import service as task_service

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self, database: Database, settings: Settings, *, metrics: Metrics | None = None
    ) -> None:
        self.database = database
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._outage = False
        # For logs and tests: rounds done and reminders fired by this scheduler.
        self.rounds = 0
        self.fired = 0

    async def run_once(self) -> int:
        """Fire one batch; how many notifications were written."""
        async with self.database.session_scope(write=True) as session:
            fired = await notifications.fire_due(
                session, batch_size=self.settings.reminders_batch_size
            )
        if fired:
            self.metrics.reminders_batch([item.lag_seconds for item in fired])
            self.fired += len(fired)
            late = sum(1 for item in fired if item.late)
            logger.info("Fired %d reminder(s)%s", len(fired), f", {late} late" if late else "")
            notifications.notify_fired()
        return len(fired)

    async def _delay(self) -> float:
        """Seconds until the earliest armed reminder, at most the poll interval."""
        poll = self.settings.reminders_poll_seconds
        async with self.database.session_scope() as session:
            earliest = await notifications.next_reminder_at(session)
        if earliest is None:
            return poll
        return max(0.0, min(poll, (earliest - utc_now()).total_seconds()))

    async def _round(self) -> float:
        try:
            fired = await self.run_once()
            if fired >= self.settings.reminders_batch_size:
                return 0.0
            # Due reminders a round did not fire are another scheduler's (locked): a short
            # pause, not a spin against its locks.
            delay = max(await self._delay(), min(self.settings.reminders_poll_seconds, 0.05))
        except Exception as exc:
            if not is_database_unavailable(exc):
                logger.exception("The reminder scheduler failed a round; retrying")
            elif not self._outage:
                logger.warning("Reminder scheduler waiting: database unavailable: %s", exc)
            self._outage = True
            self._failures += 1
            return backoff_seconds(
                self._failures, base=OUTAGE_BACKOFF_BASE_SECONDS, cap=OUTAGE_BACKOFF_MAX_SECONDS
            )
        if self._outage:
            logger.warning("Reminder scheduler recovered")
        self._outage, self._failures = False, 0
        return delay

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="reminder-scheduler")
        return self._task

    async def run(self) -> None:
        if self._task is None:
            self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_armed() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._wake.set)

        task_service.add_reminder_listener(on_armed)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                delay = await self._round()
                self.rounds += 1
                if delay <= 0 or self._stop.is_set():
                    continue
                waiter = self._stop if self._outage else self._wake
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), timeout=delay)
        finally:
            task_service.remove_reminder_listener(on_armed)

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        """Stop after the round in progress."""
        self._stop.set()
        self._wake.set()
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
