"""Routes of the event consumers (Dapr subscriptions) and the task history they build.

The /dapr and /events routes are for the Dapr sidecar, not for users: no user token, but when
an app API token is configured (required in production) every delivery must carry it in the
`dapr-api-token` header, as the sidecar does when it runs with APP_API_TOKEN.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from backend.config import Settings
from backend.db import Database
from backend.deps import PathUser, ReadSession
from backend.errors import ErrorBody, NotFound, Unauthorized
from backend.events import consumers
from backend.events.consumers import CONSUMERS, TASK_ACTIVITY, PoisonEvent
from backend.events.schemas import (
    MAX_HISTORY_PAGE,
    DaprAppResponse,
    DaprSubscription,
    HistoryEntry,
    TaskHistoryPage,
)
from backend.tasks.router import TaskId
from backend.web import ERROR_RESPONSES

logger = logging.getLogger(__name__)

APP_TOKEN_HEADER = "dapr-api-token"
EVENTS_PATH = "/events"
JSON_TYPES = frozenset({"application/json", "application/cloudevents+json"})
MAX_VERSION = 2**31 - 1

router = APIRouter()


# --- the task history -------------------------------------------------------------------


@router.get(
    "/api/{user_id}/tasks/{task_id}/history",
    response_model=TaskHistoryPage,
    tags=["tasks"],
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorBody, "description": "No such task for this user"},
    },
)
async def task_history(
    user_id: PathUser,
    session: ReadSession,
    task_id: TaskId,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE, description="Entries per page.")] = 50,
    before_version: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_VERSION,
            description="Only entries older than this version (the next page).",
        ),
    ] = None,
) -> TaskHistoryPage:
    """A task's changes, newest first: who changed what, from where, and when.

    Deleted tasks keep their history. The history is built from the task events, so it
    shows a change a moment after it is made (milliseconds while the event relay runs).
    """
    page = await consumers.task_history(
        session, user_id, task_id, limit=limit, before_version=before_version
    )
    return TaskHistoryPage(
        task_id=task_id,
        items=[
            HistoryEntry(
                version=row.version,
                action=row.action,
                channel=row.channel,
                at=row.occurred_at,
                changes=row.changes or {},
            )
            for row in page.entries
        ],
        has_more=page.has_more,
    )


# --- the Dapr sidecar's routes ------------------------------------------------------------


def subscriptions(settings: Settings) -> list[DaprSubscription]:
    """Every topic our consumers read, with the route the sidecar delivers it to."""
    topic = settings.events_topic
    return [
        DaprSubscription(
            pubsubname=settings.dapr_pubsub_name,
            topic=topic,
            route=f"{EVENTS_PATH}/{TASK_ACTIVITY}",
            deadLetterTopic=f"{topic}-dead",
            # We publish whole CloudEvents ourselves: deliver them as they are.
            metadata={"rawPayload": "false"},
        )
    ]


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _require_app_token(request: Request, settings: Settings) -> None:
    """The sidecar proves itself with the app API token (required in production). Without
    one, outside production, only a sidecar on this host may deliver (Dapr reaches its app
    over loopback, self-hosted and in a pod alike): nobody else can write anyone's history."""
    expected = settings.dapr_app_api_token
    if expected is None and settings.app_env != "production":
        peer = request.client.host if request.client else ""
        if peer in LOOPBACK_HOSTS:
            return
        raise Unauthorized("Deliveries from other hosts need DAPR_APP_API_TOKEN", missing=True)
    given = request.headers.get(APP_TOKEN_HEADER, "")
    if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("Missing or invalid dapr-api-token", missing=not given)


@router.get(
    "/dapr/subscribe",
    response_model=list[DaprSubscription],
    tags=["dapr"],
)
async def dapr_subscribe(request: Request) -> list[DaprSubscription]:
    """The topics this app subscribes to; the Dapr sidecar reads it when it starts.

    Served whatever EVENTS_PUBLISHER says: a consumer that receives an event twice, from the
    relay in this process and through Dapr, applies it once.
    """
    settings: Settings = request.app.state.settings
    return subscriptions(settings)


@router.post(
    EVENTS_PATH + "/{consumer}",
    response_model=DaprAppResponse,
    tags=["dapr"],
    responses={
        401: ERROR_RESPONSES[401],
        404: {"model": ErrorBody, "description": "No such consumer (Dapr drops the event)"},
        413: ERROR_RESPONSES[413],
        503: {"model": ErrorBody, "description": "Database unavailable (Dapr retries)"},
    },
)
async def deliver_event(
    request: Request,
    consumer: Annotated[str, Path(description="The consumer, e.g. task-activity.")],
) -> DaprAppResponse:
    """Deliver one task event (a CloudEvent) to one of our consumers; for the Dapr sidecar.

    SUCCESS when applied or already applied; DROP for an event that can never be processed
    (Dapr moves it to the dead-letter topic); 503 while the database is unavailable, which
    Dapr retries.
    """
    settings: Settings = request.app.state.settings
    _require_app_token(request, settings)
    if consumer not in CONSUMERS:
        raise NotFound(f"No consumer named {consumer[:64]!r}", code="consumer_not_found")
    try:
        cloud_event = _read_event(request, await request.body())
        database: Database = request.app.state.database
        async with database.session_scope(write=True) as session:
            outcome = await consumers.deliver(session, consumer, cloud_event)
    except PoisonEvent as exc:
        logger.warning("consumer %s dropped an event: %s", consumer, exc)
        return DaprAppResponse(status="DROP")
    logger.debug("consumer %s: %s", consumer, outcome)
    return DaprAppResponse(status="SUCCESS")


def _read_event(request: Request, body: bytes) -> object:
    """The delivered JSON; a body that is not one can never be processed (never retried)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise PoisonEvent(f"unsupported content type {media_type[:100]!r}")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise PoisonEvent("the body is not JSON") from None
