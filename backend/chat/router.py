"""Chat routes: one turn (JSON or Server-Sent Events) and the user's conversations."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Header, Path, Query, Request, status
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
from backend.web import ERROR_RESPONSES, request_id_var

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/{user_id}", tags=["chat"], responses=ERROR_RESPONSES)

ConversationId = Annotated[int, Path(ge=1, le=2**31 - 1)]
_TURN_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in {
        404: "No such conversation for this user",
        409: "Another turn is running in this conversation (conversation_busy / "
        "turn_in_progress), the turn lost its lease (turn_superseded), the client_message_id "
        "was used for another message (idempotency_key_reused), or later turns were answered "
        "since (turn_outdated)",
        502: "The model failed (model_error, max_turns_exceeded)",
        503: "The task tools or the database are unavailable (tools_unavailable, "
        "database_unavailable); the message is kept, retry with the same client_message_id",
        504: "The model timed out (model_timeout)",
    }.items()
}


def user_zone(x_timezone: Annotated[str | None, Header(max_length=64)] = None) -> ZoneInfo:
    if not x_timezone:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(x_timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"X-Timezone must be an IANA zone name such as Europe/Paris, not {x_timezone!r}",
            code="invalid_timezone",
        ) from exc


def _turns(request: Request) -> TurnRunner:
    runner: TurnRunner = request.app.state.turns
    return runner


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        **_TURN_ERRORS,
        200: {
            "description": "The reply, or with `Accept: text/event-stream` a stream of events: "
            "conversation, delta, tool_call_started, tool_call_finished, then done or error.",
            "content": {"text/event-stream": {}},
        },
    },
)
async def chat(
    user_id: PathUser,
    body: ChatRequest,
    request: Request,
    accept: Annotated[str, Header()] = "application/json",
    x_timezone: Annotated[str | None, Header(max_length=64)] = None,
) -> ChatResponse | EventSourceResponse:
    """Send a message; the assistant answers, using the task tools as needed."""
    zone = user_zone(x_timezone)
    runner = _turns(request)
    start = await runner.begin(user_id, body)
    turn = runner.run(user_id, start, zone)
    if "text/event-stream" in accept:
        return EventSourceResponse(_sse(turn), ping=15)
    return await turn.result()


async def _sse(turn: Turn) -> AsyncIterator[dict[str, str]]:
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
    "/conversations/{conversation_id}",
    response_model=ConversationDetail,
    responses={404: _TURN_ERRORS[404]},
)
async def get_conversation(
    user_id: PathUser, session: ReadSession, conversation_id: ConversationId
) -> ConversationDetail:
    """One conversation with all its messages, in order."""
    conversation = await chat_service.get_conversation(session, user_id, conversation_id)
    messages = await chat_service.list_messages(session, conversation_id)
    return ConversationDetail(
        **ConversationSummary.model_validate(conversation).model_dump(),
        messages=[MessagePublic.model_validate(m) for m in messages],
    )


@router.delete(
    "/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: _TURN_ERRORS[404]},
)
async def delete_conversation(
    user_id: PathUser, session: WriteSession, conversation_id: ConversationId
) -> None:
    """Delete a conversation (soft)."""
    await chat_service.delete_conversation(session, user_id, conversation_id)
