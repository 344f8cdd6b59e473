"""POST /chatkit: the ChatKit protocol over the same conversations and the same turn pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import suppress
from typing import Annotated, Any, cast

from agents import RunResultStreaming
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageItem,
    ClientEffectEvent,
    ErrorEvent,
    FeedbackKind,
    ProgressUpdateEvent,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from backend.auth.mcp_tokens import WRITE_TOOLS
from backend.chat import service as chat_service
from backend.chat.chatkit_store import CHANNEL, ChatKitContext, ConversationStore
from backend.chat.orchestrator import Orchestrator, TurnFailed, TurnRecorder
from backend.chat.router import user_zone
from backend.chat.schemas import ChatResponse
from backend.deps import CurrentUser
from backend.errors import AppError, ErrorBody, InvalidInput, NotFound
from backend.models import new_public_id
from backend.web import ERROR_RESPONSES

logger = logging.getLogger(__name__)

PROGRESS = {
    "add_task": "Adding '{title}'…",
    "list_tasks": "Looking through your tasks…",
    "get_task": "Opening task {task_id}…",
    "complete_task": "Completing task {task_id}…",
    "reopen_task": "Reopening task {task_id}…",
    "update_task": "Updating task {task_id}…",
    "delete_task": "Deleting task {task_id}…",
    "restore_task": "Restoring task {task_id}…",
}


def progress_text(name: str, arguments: dict[str, Any]) -> str:
    template = PROGRESS.get(name, "Working…")
    try:
        return template.format(**arguments)
    except (KeyError, IndexError, ValueError):
        return template.split(" '")[0].split(" {")[0] + "…"


class _ObservedResult:
    """The run result as ChatKit's helper sees it, with every event also recorded for us."""

    def __init__(self, result: RunResultStreaming, recorder: TurnRecorder) -> None:
        self._result = result
        self._recorder = recorder

    async def stream_events(self) -> AsyncIterator[Any]:
        async for event in self._result.stream_events():
            await self._recorder.observe(event)
            yield event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)


class _ReplyIds:
    """Gives each assistant item our own unique id (models may repeat placeholder ids)."""

    def __init__(self, recorder: TurnRecorder) -> None:
        self._recorder = recorder
        self._current: dict[str, str] = {}

    def apply(self, event: ThreadStreamEvent) -> ThreadStreamEvent:
        if isinstance(event, ThreadItemAddedEvent | ThreadItemDoneEvent) and isinstance(
            event.item, AssistantMessageItem
        ):
            model_id = event.item.id
            ours = self._current.get(model_id) or new_public_id("msg")
            if isinstance(event, ThreadItemDoneEvent):
                self._current.pop(model_id, None)
                self._recorder.reply_item_id = ours
            else:
                self._current[model_id] = ours
            return event.model_copy(update={"item": event.item.model_copy(update={"id": ours})})
        if isinstance(event, ThreadItemUpdatedEvent) and event.item_id in self._current:
            return event.model_copy(update={"item_id": self._current[event.item_id]})
        return event


class TodoChatKitServer(ChatKitServer[ChatKitContext]):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.conversations = ConversationStore(orchestrator)
        super().__init__(self.conversations)
        self.orchestrator = orchestrator

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: ChatKitContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        conversation = await self.conversations._conversation(thread.id, context)
        start = context.turn
        if start is None:
            if input_user_message is None:
                raise CustomStreamError("Nothing to answer here", allow_retry=False)
            start = await self.orchestrator.resume(
                context.user_id,
                conversation.id or 0,
                input_user_message.id,
                CHANNEL,
                context.replaced_item_ids,
            )
        if not thread.title:
            thread.title = conversation.title  # the server then emits thread.updated
        async for event in self._run_turn(thread, start, context):
            yield event

    async def _run_turn(
        self, thread: ThreadMetadata, start: chat_service.TurnStart, context: ChatKitContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        out: asyncio.Queue[ThreadStreamEvent | None] = asyncio.Queue()
        agent_context: AgentContext[ChatKitContext] = AgentContext(
            thread=thread, store=self.store, request_context=context
        )

        async def emit(kind: str, data: dict[str, Any]) -> None:
            if kind == "tool_call_started":
                text = progress_text(data["name"], data["arguments"])
                await out.put(ProgressUpdateEvent(icon="check", text=text))
            elif (
                kind == "tool_call_finished"
                and data["name"] in WRITE_TOOLS
                and not data["is_error"]
            ):
                result = data["result"] if isinstance(data["result"], dict) else {}
                task_id = result.get("task_id", data["arguments"].get("task_id"))
                effect = {"task_ids": [task_id] if task_id else [], "tool": data["name"]}
                await out.put(ClientEffectEvent(name="tasks.changed", data=effect))

        async def consume(result: RunResultStreaming, recorder: TurnRecorder) -> None:
            ids = _ReplyIds(recorder)
            observed = cast(RunResultStreaming, _ObservedResult(result, recorder))
            async for event in stream_agent_response(agent_context, observed):
                await out.put(ids.apply(event))

        context.turn_taken = True
        started = asyncio.Event()

        async def run() -> ChatResponse:
            started.set()
            return await self.orchestrator.complete(
                context.user_id, start, context.zone, emit, consume
            )

        turn = asyncio.create_task(run())
        turn.add_done_callback(lambda _: out.put_nowait(None))
        try:
            while (event := await out.get()) is not None:
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            turn.cancel()  # a started turn records the partial reply and releases the lease
            with suppress(asyncio.CancelledError, Exception):
                await turn
            if not started.is_set():
                await asyncio.shield(self.orchestrator.abandon(start, "cancelled"))
            raise
        try:
            turn.result()
        except TurnFailed as exc:
            raise CustomStreamError(exc.message, allow_retry=True) from exc

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: ChatKitContext
    ) -> None:
        """The cancelled turn already stored the partial reply it had streamed."""

    async def add_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        feedback: FeedbackKind,
        context: ChatKitContext,
    ) -> None:
        conversation = await self.conversations._conversation(thread_id, context)
        async with self.orchestrator.database.session_scope(write=True) as session:
            await chat_service.record_feedback(
                session, context.user_id, conversation.id or 0, item_ids, feedback
            )


router = APIRouter(tags=["chatkit"])


def _error_chunk(message: str, allow_retry: bool) -> bytes:
    event = ErrorEvent(code="custom", message=message, allow_retry=allow_retry)
    return b"data: " + event.model_dump_json().encode() + b"\n\n"


async def _guarded(
    result: StreamingResult, server: TodoChatKitServer, context: ChatKitContext
) -> AsyncGenerator[bytes, None]:
    """Failures before the reply starts arrive mid-stream; send them as ChatKit error events."""
    try:
        async for chunk in result:
            yield chunk
    except AppError as exc:
        yield _error_chunk(exc.message, allow_retry=exc.status_code in (409, 502, 503, 504))
    except (NotFoundError, ValueError) as exc:
        yield _error_chunk(str(exc) or "Not found", allow_retry=False)
    finally:
        if context.turn is not None and not context.turn_taken:
            # The stream ended between storing the message and answering it.
            await asyncio.shield(server.orchestrator.abandon(context.turn, "cancelled"))


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
        return StreamingResponse(_guarded(result, server, context), media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")
