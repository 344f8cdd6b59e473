"""Chat routes: one turn (JSON or Server-Sent Events) and the user's conversations."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Header, Path, Query, Request, status
from sse_starlette import EventSourceResponse

from backend.chat import service as chat_service
from backend.chat.recorder import (
    ReplyDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnDone,
    TurnError,
)
from backend.chat.schemas import (
    MAX_DB_INT,
    MESSAGE_PAGE_DEFAULT,
    MESSAGE_PAGE_MAX,
    ChatRequest,
    ChatResponse,
    ConversationDetail,
    ConversationPage,
    ConversationSummary,
    MessagePublic,
)
from backend.chat.turns import Turn, TurnRunner
from backend.deps import PathUser, ReadSession, WriteSession
from backend.errors import AppError, ErrorBody, InvalidInput
from backend.tasks.schemas import zone_enum, zone_names
from backend.web import ERROR_RESPONSES, request_id_var

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/{user_id}", tags=["chat"], responses=ERROR_RESPONSES)

ConversationId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]


def _documented(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ErrorBody, "description": description}
        for code, description in descriptions.items()
    }


_NOT_FOUND_TEXT = "No such conversation for this user (conversation_not_found)"
_NOT_FOUND = _documented({404: _NOT_FOUND_TEXT})
_TURN_ERRORS = _documented(
    {
        400: "The body is not JSON (bad_request)",
        404: _NOT_FOUND_TEXT,
        406: "The Accept header allows neither application/json nor text/event-stream "
        "(not_acceptable)",
        409: "Another turn is running in this conversation (conversation_busy / "
        "turn_in_progress), the turn lost its lease (turn_superseded), the client_message_id "
        "was used for another message (idempotency_key_reused), or later turns were answered "
        "since (turn_outdated)",
        502: "The model failed (model_error, max_turns_exceeded)",
        503: "The task tools or the database are unavailable (tools_unavailable, "
        "database_unavailable); the message is kept, retry with the same client_message_id",
        504: "The model timed out (model_timeout)",
    }
)


class NotAcceptable(AppError):
    status_code = 406
    code = "not_acceptable"


def user_zone(x_timezone: str | None) -> ZoneInfo:
    """The zone an X-Timezone header names; absent means UTC.

    Only the zone database's names count, not any file path under it (`posix/...`), so the
    list the OpenAPI document gives is exactly what works.
    """
    if x_timezone is None:
        return ZoneInfo("UTC")
    if x_timezone in zone_names():
        try:
            return ZoneInfo(x_timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidInput(
        f"X-Timezone must be an IANA zone name such as Europe/Paris, not {x_timezone!r}",
        code="invalid_timezone",
    )


def _header_zone(
    x_timezone: Annotated[
        str,
        Header(
            description="How to read times such as 'tomorrow at 5pm': an IANA zone name.",
            json_schema_extra=zone_enum,
        ),
    ] = "UTC",
) -> ZoneInfo:
    return user_zone(x_timezone)


UserZone = Annotated[ZoneInfo, Depends(_header_zone)]

# RFC 9110 media ranges. A quoted parameter value may hold commas and semicolons.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_LIST_ELEMENT = re.compile(rf"(?:[^,\"]|{_QUOTED})+")
_MEDIA_RANGE = re.compile(
    rf"\s*({_TOKEN})/({_TOKEN})((?:\s*;\s*(?:{_TOKEN}\s*=\s*(?:{_TOKEN}|{_QUOTED}))?)*)\s*"
)
_PARAMETER = re.compile(rf";\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_JSON = ("application", "json")
_EVENT_STREAM = ("text", "event-stream")


def _media_ranges(accept: str) -> list[tuple[str, str, int]]:
    """(type, subtype, weight in thousandths) of each well-formed range; others are skipped."""
    ranges = []
    for element in _LIST_ELEMENT.findall(accept):
        match = _MEDIA_RANGE.fullmatch(element)
        if match is None:
            continue
        kind, subtype = match.group(1).lower(), match.group(2).lower()
        weight = _weight(match.group(3))
        if weight is not None and (kind != "*" or subtype == "*"):
            ranges.append((kind, subtype, weight))
    return ranges


def _weight(parameters: str) -> int | None:
    for name, value in _PARAMETER.findall(parameters):
        if name.lower() == "q":
            return round(float(value) * 1000) if _QVALUE.fullmatch(value) else None
    return 1000


def _preference(ranges: list[tuple[str, str, int]], media: tuple[str, str]) -> tuple[int, int]:
    """(quality, specificity) the client gives `media`: its most specific matching range counts."""
    best = (0, -1)
    for kind, subtype, quality in ranges:
        if (kind, subtype) == media:
            specificity = 2
        elif kind == media[0] and subtype == "*":
            specificity = 1
        elif (kind, subtype) == ("*", "*"):
            specificity = 0
        else:
            continue
        if specificity > best[1] or (specificity == best[1] and quality > best[0]):
            best = (quality, specificity)
    return best


def negotiate(accept: str | None) -> Literal["json", "event-stream"]:
    """JSON or Server-Sent Events, by the Accept header (see specs/chat.md)."""
    ranges = _media_ranges(accept or "")
    if not ranges:  # absent, empty or unreadable: anything goes
        return "json"
    json_pref = _preference(ranges, _JSON)
    stream_pref = _preference(ranges, _EVENT_STREAM)
    if json_pref[0] == 0 and stream_pref[0] == 0:
        raise NotAcceptable(
            "This endpoint answers application/json or text/event-stream; "
            "the Accept header allows neither"
        )
    # A tie goes to JSON: a stream only for a client that prefers it.
    return "event-stream" if stream_pref > json_pref else "json"


def _turns(request: Request) -> TurnRunner:
    runner: TurnRunner = request.app.state.turns
    return runner


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        **_TURN_ERRORS,
        200: {
            "description": "The reply as JSON, or, when the Accept header prefers "
            "text/event-stream, a stream of events: conversation, delta, tool_call_started, "
            "tool_call_finished, then done or error.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
async def chat(
    user_id: PathUser, body: ChatRequest, request: Request, zone: UserZone
) -> ChatResponse | EventSourceResponse:
    """Send a message; the assistant answers, using the task tools as needed."""
    # Accept is read here, not declared: OpenAPI ignores an Accept parameter.
    media = negotiate(", ".join(request.headers.getlist("accept")) or None)
    runner = _turns(request)
    start = await runner.begin(user_id, body)
    turn = runner.run(user_id, start, zone)
    if media == "event-stream":
        return EventSourceResponse(turn_events(turn), ping=15)
    return await turn.result()


async def turn_events(turn: Turn) -> AsyncIterator[dict[str, str]]:
    """The turn's events as Server-Sent Events; a client that leaves does not stop the turn."""
    request_id = request_id_var.get()
    yield _event("conversation", {"conversation_id": turn.start.conversation_id})
    async for event in turn.events():
        match event:
            case ReplyDelta(text=text):
                yield _event("delta", {"text": text})
            case ToolCallStarted():
                yield _event("tool_call_started", asdict(event))
            case ToolCallFinished():
                yield _event("tool_call_finished", asdict(event))
            case TurnDone(response=response):
                yield _event("done", response.model_dump(mode="json"))
            case TurnError(error=error):
                yield _event("error", _error_data(error) | {"request_id": request_id})


def _error_data(error: Exception) -> dict[str, str]:
    if isinstance(error, AppError):
        return {"detail": error.message, "code": error.code}
    return {"detail": "Internal server error", "code": "internal_error"}


def _event(kind: str, data: dict[str, Any]) -> dict[str, str]:
    return {"event": kind, "data": json.dumps(data, ensure_ascii=False)}


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    user_id: PathUser,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ConversationPage:
    """The user's conversations, most recently active first."""
    items, total = await chat_service.list_conversations(session, user_id, limit, offset)
    return ConversationPage(
        items=[ConversationSummary.model_validate(c) for c in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/conversations/{conversation_id}", response_model=ConversationDetail, responses=_NOT_FOUND
)
async def get_conversation(
    user_id: PathUser,
    session: ReadSession,
    conversation_id: ConversationId,
    limit: Annotated[
        int, Query(ge=1, le=MESSAGE_PAGE_MAX, description="Messages per page.")
    ] = MESSAGE_PAGE_DEFAULT,
    before: Annotated[
        int | None,
        Query(ge=0, le=MAX_DB_INT, description="Only messages with a smaller `seq` (older)."),
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_DB_INT,
            description="Only messages with a larger `seq` (newer), paging forward from here.",
        ),
    ] = None,
) -> ConversationDetail:
    """One conversation with a page of its messages: the newest, unless `after` is given."""
    conversation = await chat_service.get_conversation(session, user_id, conversation_id)
    page = await chat_service.page_messages(
        session, conversation_id, limit=limit, before=before, after=after
    )
    return ConversationDetail(
        **ConversationSummary.model_validate(conversation).model_dump(),
        messages=[MessagePublic.model_validate(m) for m in page.messages],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.delete(
    "/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_NOT_FOUND,
)
async def delete_conversation(
    user_id: PathUser, session: WriteSession, conversation_id: ConversationId
) -> None:
    """Delete a conversation (soft)."""
    await chat_service.delete_conversation(session, user_id, conversation_id)
