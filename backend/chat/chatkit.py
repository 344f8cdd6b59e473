"""POST /chatkit: the ChatKit protocol over the same conversations and the same turn pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, cast

from agents import RunResultStreaming, StreamEvent
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    ClientEffectEvent,
    ErrorEvent,
    FeedbackKind,
    ProgressUpdateEvent,
    ThreadItem,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from backend.agent.tools import progress_text
from backend.chat import service as chat_service
from backend.chat.chatkit_store import CHANNEL, ChatKitContext, ConversationStore
from backend.chat.recorder import AgentStreamEvent, ToolCallFinished, ToolCallStarted, TurnError
from backend.chat.router import user_zone
from backend.chat.turns import Turn, TurnRunner
from backend.deps import CurrentUser
from backend.errors import AppError, ErrorBody, InvalidInput, NotFound
from backend.web import ERROR_RESPONSES

logger = logging.getLogger(__name__)


class _RunEvents:
    """A turn's Agents SDK events, offered to ChatKit's converter as a run result would.

    `stream_agent_response` reads nothing but `stream_events()` from a run result; this
    class offers only that, so a ChatKit release that reads more fails our tests loudly
    (AttributeError) instead of silently reading something else.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()

    def push(self, event: StreamEvent | None) -> None:
        self._queue.put_nowait(event)

    async def stream_events(self) -> AsyncIterator[StreamEvent]:
        while (event := await self._queue.get()) is not None:
            yield event


def _effect(event: ToolCallFinished) -> ClientEffectEvent:
    result = event.result if isinstance(event.result, dict) else {}
    task_id = result.get("task_id", event.arguments.get("task_id"))
    return ClientEffectEvent(
        name="tasks.changed", data={"task_ids": [task_id] if task_id else [], "tool": event.name}
    )


async def _thread_events(
    turn: Turn, agent_context: AgentContext[ChatKitContext]
) -> AsyncIterator[ThreadStreamEvent]:
    """The turn as ChatKit thread events: the reply, tool progress, task-change effects."""
    run_events = _RunEvents()
    out: asyncio.Queue[ThreadStreamEvent | None] = asyncio.Queue()
    ending: list[TurnError] = []
    rendering_failed = False

    async def convert() -> None:
        nonlocal rendering_failed
        try:
            result = cast(RunResultStreaming, run_events)
            async for thread_event in stream_agent_response(agent_context, result):
                out.put_nowait(thread_event)
        except Exception:  # only the rendering broke: the turn goes on and is recorded
            logger.exception("could not render run %s for ChatKit", turn.start.run_id)
            rendering_failed = True

    async def produce() -> None:
        converting = asyncio.create_task(convert())
        try:
            async for event in turn.events():
                if isinstance(event, AgentStreamEvent):
                    run_events.push(event.event)
                elif isinstance(event, ToolCallStarted):
                    text = progress_text(event.name, event.arguments)
                    out.put_nowait(ProgressUpdateEvent(icon="check", text=text))
                elif isinstance(event, ToolCallFinished) and event.changed_tasks:
                    out.put_nowait(_effect(event))
                elif isinstance(event, TurnError):
                    ending.append(event)
            run_events.push(None)
            await converting
        finally:
            converting.cancel()
            out.put_nowait(None)

    producer = asyncio.create_task(produce())
    try:
        while (thread_event := await out.get()) is not None:
            yield thread_event
    except asyncio.CancelledError:
        # The client closed the stream — ChatKit's stop button: an explicit cancel. The
        # turn records the partial reply it had streamed and frees the conversation.
        turn.cancel()
        producer.cancel()
        raise
    except GeneratorExit:
        # ChatKit itself stopped reading (say its own thread save failed): not the user's
        # stop, so the turn finishes and is recorded; a retry gets the stored answer.
        producer.cancel()
        raise
    await producer
    if ending:
        error = ending[0].error
        message = error.message if isinstance(error, AppError) else "The turn failed"
        raise CustomStreamError(message, allow_retry=_retryable(error))
    if rendering_failed:
        raise CustomStreamError(
            "The answer was stored but could not be shown; reload the conversation",
            allow_retry=False,
        )


def _retryable(error: Exception) -> bool:
    return isinstance(error, AppError) and error.status_code in (409, 502, 503, 504)


class TodoChatKitServer(ChatKitServer[ChatKitContext]):
    def __init__(self, turns: TurnRunner) -> None:
        self.conversations = ConversationStore(turns.database)
        super().__init__(self.conversations)
        self.turns = turns

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: ChatKitContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        """Answer the stored user message (new, or retried) through the shared turn runner."""
        if input_user_message is None:
            raise CustomStreamError("Nothing to answer here", allow_retry=False)
        conversation = await self.conversations.conversation(thread.id, context)
        try:
            start = await self.turns.begin_for_stored(
                context.user_id, conversation.id or 0, input_user_message.id, CHANNEL
            )
        except AppError as exc:  # busy, or the database is unavailable (DatabaseOutage)
            raise CustomStreamError(exc.message, allow_retry=_retryable(exc)) from exc
        if not thread.title:
            thread.title = conversation.title  # the server then emits thread.updated
        agent_context: AgentContext[ChatKitContext] = AgentContext(
            thread=thread, store=self.store, request_context=context
        )
        turn = self.turns.run(context.user_id, start, context.zone)
        async for event in _thread_events(turn, agent_context):
            yield event

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: ChatKitContext
    ) -> None:
        """The cancelled turn stores the partial reply it had streamed itself."""

    async def add_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        feedback: FeedbackKind,
        context: ChatKitContext,
    ) -> None:
        conversation = await self.conversations.conversation(thread_id, context)
        async with self.turns.database.session_scope(write=True) as session:
            await chat_service.record_feedback(
                session, context.user_id, conversation.id or 0, item_ids, feedback
            )


router = APIRouter(tags=["chatkit"])


def _error_chunk(message: str, allow_retry: bool) -> bytes:
    event = ErrorEvent(code="custom", message=message, allow_retry=allow_retry)
    return b"data: " + event.model_dump_json().encode() + b"\n\n"


async def _guarded(result: StreamingResult) -> AsyncGenerator[bytes, None]:
    """Failures before the reply starts arrive mid-stream; send them as ChatKit error events."""
    try:
        async for chunk in result:
            yield chunk
    except AppError as exc:
        yield _error_chunk(exc.message, allow_retry=_retryable(exc))
    except (NotFoundError, ValueError) as exc:
        yield _error_chunk(str(exc) or "Not found", allow_retry=False)


@router.post(
    "/chatkit",
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "ChatKit protocol: JSON, or Server-Sent Events for streaming operations",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        404: {"model": ErrorBody, "description": "No such thread or item for this user"},
    },
)
async def chatkit_endpoint(
    request: Request,
    user_id: CurrentUser,
    x_timezone: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    """The ChatKit server endpoint; threads are this user's conversations."""
    server: TodoChatKitServer = request.app.state.chatkit
    context = ChatKitContext(user_id=user_id, zone=user_zone(x_timezone))
    try:
        result = await server.process(await request.body(), context)
    except NotFoundError as exc:
        raise NotFound(str(exc) or "Not found") from exc
    except ValidationError as exc:
        raise InvalidInput("Not a valid ChatKit request", code="invalid_chatkit_request") from exc
    if isinstance(result, StreamingResult):
        return StreamingResponse(_guarded(result), media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")
