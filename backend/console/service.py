"""Following runs as they happen, for the console's live view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Collection

from sqlalchemy.ext.asyncio import AsyncSession

from backend.chat import logs
from backend.db import Database

WATCH_BATCH = 200
# Runs seen running whose finish is still awaited; the oldest are let go beyond this.
WATCH_PENDING_MAX = 1000
# On PostgreSQL an id is taken at INSERT but seen at COMMIT, so a run can appear below the
# newest id already read: this many ids below it are read again.
WATCH_LOOKBACK_IDS = 50


async def _matching(
    session: AsyncSession, filters: logs.RunFilter, ids: Collection[int]
) -> set[int]:
    runs = await logs.page_runs(session, filters, ids=ids, limit=len(ids))
    return {run.id for run in runs if run.id is not None}


async def watch_runs(
    database: Database,
    filters: logs.RunFilter,
    after: int,
    poll_seconds: float,
    *,
    deadline: float | None = None,
    running: Collection[int] = (),
) -> AsyncGenerator[logs.RunView, None]:
    """Each matching run above `after` as it appears, and the finish of each run that was
    running: those the client shows (`running`, and those sent running), or that match once
    finished. Reads the database, so every replica's runs arrive. Ends at `deadline`
    (event-loop time): when the token does.

    The caller's scope (their user, or the operator's user filter) decides what is followed;
    the other filters decide what is sent, since a run can match only once it has finished.
    """
    scope = logs.RunFilter(user_id=filters.user_id)
    loop = asyncio.get_running_loop()
    # The client's running rows, whether or not they have finished since its page loaded.
    pending = {run_id for run_id in running if run_id <= after}
    shown = set(pending)
    newest, seen = after, set[int]()
    while deadline is None or loop.time() < deadline:
        async with database.session_scope() as session:
            fresh = await logs.page_runs(
                session, scope, after_id=newest, limit=WATCH_BATCH, newest_first=False
            )
            more_behind = len(fresh) == WATCH_BATCH
            late = await logs.page_runs(
                session,
                scope,
                after_id=max(after, newest - WATCH_LOOKBACK_IDS),
                before_id=newest + 1,
                limit=WATCH_LOOKBACK_IDS,
            )
            fresh = [*(run for run in late if run.id not in seen), *fresh]
            finished = [
                run
                for run in await logs.page_runs(session, scope, ids=pending, limit=len(pending))
                if run.status != "running"
            ]
            candidates = [*finished, *fresh]
            wanted = await _matching(session, filters, [run.id or 0 for run in candidates])
            views = await logs.run_views(
                session, [run for run in candidates if run.id in wanted or run.id in shown]
            )
        for view in views:
            yield view
        sent = {view.run.id for view in views}
        for run in finished:
            pending.discard(run.id or 0)
        for run in fresh:
            seen.add(run.id or 0)
            if run.status == "running":
                pending.add(run.id or 0)
        newest = max([newest, *(run.id or 0 for run in fresh)])
        seen = {run_id for run_id in seen if run_id > newest - WATCH_LOOKBACK_IDS}
        pending = set(sorted(pending)[-WATCH_PENDING_MAX:])
        shown = (shown | {run_id for run_id in sent if run_id is not None}) & pending
        if not more_behind:
            pause = poll_seconds if deadline is None else min(poll_seconds, deadline - loop.time())
            await asyncio.sleep(max(0.0, pause))
