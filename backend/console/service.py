"""Following runs as they happen, for the console's live view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from backend.chat import logs
from backend.db import Database

WATCH_BATCH = 200
# Runs sent as running whose finish is still awaited; the oldest are let go beyond this.
WATCH_PENDING_MAX = 1000


async def watch_runs(
    database: Database, filters: logs.RunFilter, after: int, poll_seconds: float
) -> AsyncGenerator[logs.RunView, None]:
    """Each matching run with an id above `after`, then each new one, and the finish of each
    one first seen running. Reads the database, so every replica's runs arrive."""
    newest = after
    pending: list[int] = []
    while True:
        async with database.session_scope() as session:
            fresh = await logs.page_runs(
                session, filters, after_id=newest, limit=WATCH_BATCH, newest_first=False
            )
            finished = [
                run
                for run in await logs.page_runs(session, filters, ids=pending, limit=len(pending))
                if run.status != "running"
            ]
            views = await logs.run_views(session, [*finished, *fresh])
        for view in views:
            yield view
        done = {run.id for run in finished}
        pending = [run_id for run_id in pending if run_id not in done]
        pending += [run.id for run in fresh if run.status == "running" and run.id is not None]
        pending = pending[-WATCH_PENDING_MAX:]
        newest = max((run.id or 0 for run in fresh), default=newest)
        if len(fresh) < WATCH_BATCH:
            await asyncio.sleep(poll_seconds)
