"""The console: its page, and the API it reads runs, transcripts and charts from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Collection
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic_core import to_json
from sse_starlette import EventSourceResponse

from backend.auth.tokens import Principal
from backend.chat import logs
from backend.chat.router import UserZone, turn_events
from backend.chat.schemas import MAX_DB_INT, ChatRequest
from backend.chat.turns import TurnRunner
from backend.clock import utc_now
from backend.console.schemas import (
    Me,
    RunChannel,
    RunPage,
    RunPublic,
    RunStatus,
    StatsPublic,
    TranscriptPublic,
    UserActivity,
    UserList,
)
from backend.console.service import watch_runs
from backend.db import Database
from backend.deps import MAX_USER_ID, USER_ID_PATTERN, CurrentPrincipal, ReadSession
from backend.errors import Forbidden, InvalidInput
from backend.reminders import notifications
from backend.reminders.router import NotificationPage, NotificationPublic
from backend.tasks import service as task_service
from backend.tasks.schemas import TaskPage, TaskQuery, UtcDatetime
from backend.web import ERROR_RESPONSES

logger = logging.getLogger(__name__)

STATIC_DIR = Path(str(files("backend.console") / "static"))
STATS_MAX_RANGE = timedelta(days=31)
STATS_DEFAULT_RANGE = timedelta(hours=24)
RUN_PAGE_MAX = 100
USERS_MAX = 200
# A client that stops reading is let go after this long, not held forever.
SEND_TIMEOUT_SECONDS = 30
RUNNING_IDS_MAX = 100
# PostgreSQL text cannot hold NUL.
NO_NUL = r"^[^\x00]+$"

page_router = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/console/api", tags=["console"], responses=ERROR_RESPONSES)

UserIdText = Annotated[str, Query(min_length=1, max_length=MAX_USER_ID, pattern=USER_ID_PATTERN)]


@page_router.get("/console")
async def console_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def _scoped_user(principal: Principal, wanted: str | None) -> str | None:
    """The user whose runs a caller reads: operators any (None: all), others themselves."""
    if principal.operator:
        return wanted
    if wanted is not None and wanted != principal.user_id:
        raise Forbidden("Only operators read other users' runs", code="operator_only")
    return principal.user_id


async def acting_user(
    principal: CurrentPrincipal,
    user_id: Annotated[
        str, PathParam(min_length=1, max_length=MAX_USER_ID, pattern=USER_ID_PATTERN)
    ],
) -> str:
    """The path's user, when the caller is that user or an operator."""
    if user_id != principal.user_id and not principal.operator:
        raise Forbidden("Only operators act for other users", code="operator_only")
    return user_id


ActingUser = Annotated[str, Depends(acting_user)]


def run_filter(
    principal: CurrentPrincipal,
    status: RunStatus | None = None,
    user: UserIdText | None = None,
    model: Annotated[str | None, Query(min_length=1, max_length=100, pattern=NO_NUL)] = None,
    channel: RunChannel | None = None,
    since: Annotated[UtcDatetime | None, Query(description="Runs started at or after.")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Runs started before.")] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=NO_NUL,
            description="In the message, reply or error.",
        ),
    ] = None,
) -> logs.RunFilter:
    return logs.RunFilter(
        user_id=_scoped_user(principal, user),
        status=status,
        model=model,
        channel=channel,
        since=since,
        until=until,
        text=q,
    )


Filters = Annotated[logs.RunFilter, Depends(run_filter)]
RunId = Annotated[int, Query(ge=0, le=MAX_DB_INT)]


@router.get("/me", response_model=Me)
async def me(principal: CurrentPrincipal) -> Me:
    """Who the token is, and whether they are an operator."""
    return Me(user_id=principal.user_id, operator=principal.operator)


@router.get("/runs", response_model=RunPage)
async def list_runs(
    session: ReadSession,
    filters: Filters,
    before: RunId | None = None,
    limit: Annotated[int, Query(ge=1, le=RUN_PAGE_MAX)] = 50,
) -> RunPage:
    """A page of runs, newest first; `next_before` pages to older ones."""
    runs = await logs.page_runs(session, filters, before_id=before, limit=limit + 1)
    views = await logs.run_views(session, runs[:limit])
    more = len(runs) > limit
    return RunPage(
        items=[RunPublic.of(view) for view in views],
        next_before=views[-1].run.id if more and views else None,
    )


@router.get(
    "/runs/stream",
    response_class=EventSourceResponse,
    responses={200: {"description": "Events `run`: new runs and runs that finished."}},
)
async def stream_runs(
    request: Request,
    principal: CurrentPrincipal,
    filters: Filters,
    after: RunId = 0,
    running: Annotated[
        str | None,
        Query(
            max_length=RUNNING_IDS_MAX * 11,
            pattern=r"^[0-9]{1,10}(,[0-9]{1,10})*$",
            description="Ids the client shows as running, comma-separated: their finish is "
            f"sent (at most {RUNNING_IDS_MAX}).",
        ),
    ] = None,
) -> EventSourceResponse:
    """New runs and the finish of running ones as Server-Sent Events, read from the database
    (every replica's). The stream ends when the token expires; reconnect with a fresh one."""
    database: Database = request.app.state.database
    poll = request.app.state.settings.console_poll_seconds
    deadline = None
    if principal.valid_for is not None:
        deadline = asyncio.get_running_loop().time() + principal.valid_for
    shown = [int(run_id) for run_id in running.split(",")] if running else []
    if len(shown) > RUNNING_IDS_MAX:
        raise InvalidInput(f"running names at most {RUNNING_IDS_MAX} runs")
    events = _run_events(database, filters, after, poll, deadline, shown)
    return EventSourceResponse(events, ping=15, send_timeout=SEND_TIMEOUT_SECONDS)


async def _run_events(
    database: Database,
    filters: logs.RunFilter,
    after: int,
    poll_seconds: float,
    deadline: float | None = None,
    running: Collection[int] = (),
) -> AsyncGenerator[dict[str, str], None]:
    views = watch_runs(database, filters, after, poll_seconds, deadline=deadline, running=running)
    async for view in views:
        yield {"event": "run", "data": RunPublic.of(view).model_dump_json()}


@router.get("/stats", response_model=StatsPublic)
async def stats(session: ReadSession, filters: Filters) -> StatsPublic:
    """Runs per hour by status, latency p50/p95 per hour, failures by error code."""
    until = filters.until or utc_now()
    since = max(filters.since or until - STATS_DEFAULT_RANGE, until - STATS_MAX_RANGE)
    if since >= until:
        since = until
    result = await logs.run_stats(session, filters, since, until)
    return StatsPublic.of(result, since, until)


@router.get("/users", response_model=UserList)
async def users(session: ReadSession, principal: CurrentPrincipal) -> UserList:
    """Users with runs, most recently active first (for anyone else: only themselves)."""
    rows = await logs.active_users(session, USERS_MAX, _scoped_user(principal, None))
    return UserList(
        items=[
            UserActivity(user_id=user, runs=count, last_run_at=when) for user, count, when in rows
        ]
    )


ConversationId = Annotated[int, PathParam(ge=1, le=MAX_DB_INT)]


@router.get("/conversations/{conversation_id}", response_model=TranscriptPublic)
async def transcript(
    session: ReadSession, principal: CurrentPrincipal, conversation_id: ConversationId
) -> TranscriptPublic:
    """A conversation's messages (replaced answers included), tool calls and runs."""
    found = await logs.load_transcript(
        session, conversation_id, user_id=_scoped_user(principal, None)
    )
    return TranscriptPublic.of(found, await logs.run_views(session, found.runs))


_EXPORTS = {
    "md": ("text/markdown; charset=utf-8", logs.export_markdown),
    "jsonl": ("application/x-ndjson", logs.export_jsonl),
}


@router.get(
    "/conversations/{conversation_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "The transcript as the CLI exports it.",
            "content": {
                "text/markdown": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def export(
    session: ReadSession,
    principal: CurrentPrincipal,
    conversation_id: ConversationId,
    format: Literal["md", "jsonl"] = "md",
) -> Response:
    """The transcript as Markdown or JSON Lines (`todo-assistant logs export`)."""
    found = await logs.load_transcript(
        session, conversation_id, user_id=_scoped_user(principal, None)
    )
    media_type, render = _EXPORTS[format]
    name = f"conversation-{conversation_id}.{format}"
    return Response(
        render(found),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/users/{user_id}/tasks", response_model=TaskPage)
async def user_tasks(
    user_id: ActingUser, session: ReadSession, query: Annotated[TaskQuery, Query()]
) -> Response:
    """That user's tasks, as `GET /api/{user_id}/tasks` lists them."""
    page = await task_service.list_task_records(session, user_id, query)
    content: dict[str, Any] = {
        "items": page.items,
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
    }
    return Response(content=to_json(content), media_type="application/json")


@router.get("/users/{user_id}/notifications", response_model=NotificationPage)
async def user_notifications(
    user_id: ActingUser,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> NotificationPage:
    """That user's notifications, unread first, newest first."""
    page, total, unread = await notifications.list_notifications(
        session, user_id, unread_only=False, limit=limit, offset=0
    )
    return NotificationPage(
        items=[NotificationPublic.of(row) for row in page],
        total=total,
        unread=unread,
        limit=limit,
        offset=0,
    )


@router.post(
    "/users/{user_id}/chat",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "The chat events: conversation, delta, tool_call_started, "
            "tool_call_finished, then done or error (specs/chat.md).",
        },
        409: {"description": "Another turn is running in this conversation"},
    },
)
async def playground_chat(
    user_id: ActingUser,
    principal: CurrentPrincipal,
    body: ChatRequest,
    request: Request,
    zone: UserZone,
) -> EventSourceResponse:
    """A chat turn as that user, through the same pipeline as `POST /api/{user_id}/chat`."""
    if user_id != principal.user_id:
        logger.info("console: operator %s chats as %s", principal.user_id, user_id)
    runner: TurnRunner = request.app.state.turns
    start = await runner.begin(user_id, body)
    events = turn_events(runner.run(user_id, start, zone))
    return EventSourceResponse(events, ping=15, send_timeout=SEND_TIMEOUT_SECONDS)
