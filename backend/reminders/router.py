"""Notifications: the list (unread first), marking read, and an SSE stream any replica serves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema
from sse_starlette import EventSourceResponse

from backend.config import Settings
from backend.db import Database
from backend.deps import PathUser, ReadSession, WriteSession
from backend.errors import ErrorBody, InvalidInput, NotFound
from backend.models import Notification
from backend.reminders import notifications
from backend.web import ERROR_RESPONSES

MAX_NOTIFICATION_PAGE = 100
MAX_MARK_IDS = 100
STREAM_BATCH = 100
MAX_SEQ = 2**31 - 1

router = APIRouter(
    prefix="/api/{user_id}/notifications", tags=["notifications"], responses=ERROR_RESPONSES
)


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    seq: int = Field(description="The user's notifications in order; the SSE event id.")
    kind: str = Field(description="reminder")
    task_id: int
    title: str
    due_at: datetime | None
    remind_at: datetime = Field(description="The instant the reminder was set for.")
    fired_at: datetime
    late: bool = Field(description="Fired more than a minute after its time (was down).")
    read: bool
    read_at: datetime | None
    time_zone: str | None

    @classmethod
    def of(cls, row: Notification) -> NotificationPublic:
        return cls.model_validate(
            {**row.model_dump(), "read": row.read_at is not None, "id": row.id}
        )


class NotificationPage(BaseModel):
    items: list[NotificationPublic]
    total: int
    unread: int = Field(description="Unread notifications in all.")
    limit: int
    offset: int


class MarkRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=MAX_SEQ)]] | None = Field(
        default=None,
        max_length=MAX_MARK_IDS,
        description="The notifications to mark read; omitted: all of them.",
    )


class MarkedRead(BaseModel):
    marked: int = Field(description="How many were unread and are now read.")


@router.get("", response_model=NotificationPage)
async def list_notifications(
    user_id: PathUser,
    session: ReadSession,
    unread: Annotated[bool, Query(description="Only unread ones.")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_NOTIFICATION_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> NotificationPage:
    """The user's notifications: unread first, newest first."""
    page, total, unread_count = await notifications.list_notifications(
        session, user_id, unread_only=unread, limit=limit, offset=offset
    )
    return NotificationPage(
        items=[NotificationPublic.of(row) for row in page],
        total=total,
        unread=unread_count,
        limit=limit,
        offset=offset,
    )


@router.post("/read", response_model=MarkedRead)
async def mark_read(
    user_id: PathUser, session: WriteSession, body: MarkRead | None = None
) -> MarkedRead:
    """Mark notifications read: the ids given, or all."""
    ids = None if body is None else body.ids
    return MarkedRead(marked=await notifications.mark_read(session, user_id, ids=ids))


@router.post(
    "/{notification_id}/read",
    response_model=NotificationPublic,
    responses={404: {"model": ErrorBody, "description": "No such notification for this user"}},
)
async def mark_one_read(
    user_id: PathUser,
    session: WriteSession,
    notification_id: Annotated[int, Path(ge=1, le=MAX_SEQ)],
) -> NotificationPublic:
    """Mark one notification read."""
    await notifications.mark_read(session, user_id, ids=[notification_id])
    row = await notifications.get_notification(session, user_id, notification_id)
    if row is None:
        raise NotFound(f"Notification {notification_id} not found", code="notification_not_found")
    return NotificationPublic.of(row)


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    text = last_event_id if last_event_id is not None else None
    if text is None:
        return after
    # isascii: str.isdigit() also accepts digits int() refuses, such as "²".
    if not (text.isascii() and text.strip().isdigit()) or int(text) > MAX_SEQ:
        raise InvalidInput(
            "Last-Event-ID must be the id of an event this stream sent", code="invalid_event_id"
        )
    return int(text)


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An SSE stream"}},
)
async def stream_notifications(
    user_id: PathUser,
    request: Request,
    last_event_id: Annotated[
        Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}$")] | SkipJsonSchema[None],
        Header(description="Resume after this event (what the browser's EventSource sends)."),
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_SEQ, description="Resume after this seq (when no header is sent)."),
    ] = None,
) -> EventSourceResponse:
    """New notifications as they fire (`event: notification`, `id:` = seq).

    Without Last-Event-ID or `after`, the stream starts with what fires from now on. A
    reconnect with the last id received loses and repeats nothing."""
    start = _resume_point(last_event_id, after)
    database: Database = request.app.state.database
    settings: Settings = request.app.state.settings
    if start is None:
        async with database.session_scope() as session:
            start = await notifications.last_seq(session, user_id)
    return EventSourceResponse(
        _events(database, settings, user_id, start, request), ping=15, send_timeout=30
    )


async def _events(
    database: Database, settings: Settings, user_id: str, seq: int, request: Request
) -> AsyncIterator[dict[str, str]]:
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_fired() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    notifications.add_fired_listener(on_fired)
    try:
        # With an id, a browser that reconnects before the first notification still resumes
        # from here (EventSource sends the last id it saw).
        yield {"id": str(seq), "event": "ready", "data": f'{{"after": {seq}}}'}
        while not await request.is_disconnected():
            wake.clear()
            async with database.session_scope() as session:
                rows = await notifications.notifications_after(
                    session, user_id, seq, limit=STREAM_BATCH
                )
            for row in rows:
                seq = row.seq
                yield {
                    "id": str(row.seq),
                    "event": "notification",
                    "data": NotificationPublic.of(row).model_dump_json(),
                }
            if len(rows) == STREAM_BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=settings.notifications_poll_seconds)
    finally:
        notifications.remove_fired_listener(on_fired)
