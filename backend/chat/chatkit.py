"""POST /chatkit: the ChatKit protocol over the same conversations and the same turn pipeline."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, cast, get_args

from agents import RunResultStreaming, StreamEvent
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    ChatKitReq,
    ClientEffectEvent,
    ErrorEvent,
    FeedbackKind,
    InferenceOptions,
    ItemFeedbackParams,
    ItemsFeedbackReq,
    ItemsListParams,
    ItemsListReq,
    ProgressUpdateEvent,
    ThreadAddUserMessageParams,
    ThreadCreateParams,
    ThreadDeleteParams,
    ThreadGetByIdParams,
    ThreadItem,
    ThreadListParams,
    ThreadMetadata,
    ThreadRetryAfterItemParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadStreamEvent,
    ThreadsUpdateReq,
    ThreadUpdateParams,
    UserMessageContent,
    UserMessageInput,
    UserMessageItem,
)
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import (
    BeforeValidator,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from backend.agent.tools import progress_text
from backend.chat import service as chat_service
from backend.chat.chatkit_store import (
    CHANNEL,
    ID_PATTERN,
    MAX_PAGE_SIZE,
    ChatKitContext,
    ConversationStore,
    message_text,
)
from backend.chat.recorder import AgentStreamEvent, ToolCallFinished, ToolCallStarted, TurnError
from backend.chat.router import UserZone
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


# The requests this server takes: the SDK's own models, narrowed to what our store can hold.
# Anything else is refused before the SDK acts on it, so a refused request changes nothing.
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
# As the SDK reads it: 0 means the default page; the store serves at most MAX_PAGE_SIZE.
# JSON Schema counts 2.0 as an integer; strict parsing would not.
Limit = Annotated[
    int,
    Field(ge=0),
    BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v),
]
Title = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")]


class MessageInput(UserMessageInput):
    content: list[UserMessageContent]
    attachments: Annotated[list[str], Field(max_length=0, description="Not supported: empty.")]
    inference_options: InferenceOptions


class CreateThreadParams(ThreadCreateParams):
    input: MessageInput


class AddUserMessageParams(ThreadAddUserMessageParams):
    input: MessageInput
    thread_id: Id


class RetryAfterItemParams(ThreadRetryAfterItemParams):
    thread_id: Id
    item_id: Id


class GetThreadParams(ThreadGetByIdParams):
    thread_id: Id


class ListThreadsParams(ThreadListParams):
    limit: Limit | None = None
    after: Id | None = None


class UpdateThreadParams(ThreadUpdateParams):
    thread_id: Id
    title: Title


class DeleteThreadParams(ThreadDeleteParams):
    thread_id: Id


class ListItemsParams(ItemsListParams):
    thread_id: Id
    limit: Limit | None = None
    after: Id | None = None


class FeedbackParams(ItemFeedbackParams):
    thread_id: Id
    item_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_PAGE_SIZE)]


class CreateThread(ThreadsCreateReq):
    """A new thread from a user message; answered as a stream."""

    params: CreateThreadParams


class AddUserMessage(ThreadsAddUserMessageReq):
    """A user message in an existing thread; answered as a stream."""

    params: AddUserMessageParams


class RetryAfterItem(ThreadsRetryAfterItemReq):
    """Answer a user message again; answered as a stream."""

    params: RetryAfterItemParams


class GetThread(ThreadsGetByIdReq):
    """A thread with its first items."""

    params: GetThreadParams


class ListThreads(ThreadsListReq):
    """A page of the user's threads."""

    params: ListThreadsParams


class UpdateThread(ThreadsUpdateReq):
    """Rename a thread."""

    params: UpdateThreadParams


class DeleteThread(ThreadsDeleteReq):
    """Delete a thread (soft)."""

    params: DeleteThreadParams


class ListItems(ItemsListReq):
    """A page of a thread's items."""

    params: ListItemsParams


class SendFeedback(ItemsFeedbackReq):
    """Thumbs up or down on answers."""

    params: FeedbackParams


SupportedRequest = Annotated[
    CreateThread
    | AddUserMessage
    | RetryAfterItem
    | GetThread
    | ListThreads
    | UpdateThread
    | DeleteThread
    | ListItems
    | SendFeedback,
    Field(discriminator="type"),
]
_SUPPORTED: TypeAdapter[SupportedRequest] = TypeAdapter(cast(Any, SupportedRequest))
_PROTOCOL_OPERATIONS = frozenset(
    cls.model_fields["type"].default for cls in get_args(get_args(ChatKitReq)[0])
)


def parse_request(body: str | bytes | bytearray) -> SupportedRequest:
    """The request, or InvalidInput saying what is wrong with it (never echoing it)."""
    try:
        return _SUPPORTED.validate_json(body, strict=True)  # as the schema says: no coercion
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        tag = (error.get("ctx") or {}).get("tag")
        if error["type"] == "union_tag_invalid" and tag in _PROTOCOL_OPERATIONS:
            raise InvalidInput(
                f"The ChatKit operation {tag} is not supported here",
                code="unsupported_operation",
            ) from None
        if error["loc"][-1:] == ("title",):  # the same answer as the service's own check
            raise InvalidInput(
                "A title has at most 200 characters and no NUL", code="invalid_title"
            ) from None
        if error["type"] == "union_tag_invalid":
            message = "type: not a ChatKit operation"
        else:
            where = ".".join(str(part) for part in error["loc"])
            message = f"{where}: {error['msg']}" if where else str(error["msg"])
        raise InvalidInput(
            f"Not a valid ChatKit request ({message})", code="invalid_chatkit_request"
        ) from None


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its `$defs` written in place: inside an OpenAPI document, `#/$defs/…`
    would resolve against the document, not this schema. (No definition here is recursive.)"""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(value) for value in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            return {**resolve(definitions[node["$ref"].rsplit("/", 1)[1]]), **resolve(siblings)}
        resolved = {key: resolve(value) for key, value in node.items() if key != "discriminator"}
        if isinstance(node.get("discriminator"), dict):
            # Its mapping names `$defs`. What it means instead: each branch needs its tag,
            # which pydantic requires even where the tag has a default.
            tag = node["discriminator"]["propertyName"]
            for branch in resolved["oneOf"]:
                branch["required"] = [tag, *(r for r in branch.get("required", []) if r != tag)]
        return resolved

    return cast(dict[str, Any], resolve(schema))


REQUEST_SCHEMA = _inlined(_SUPPORTED.json_schema())


class TodoChatKitServer(ChatKitServer[ChatKitContext]):
    def __init__(self, turns: TurnRunner) -> None:
        self.conversations = ConversationStore(turns.database)
        super().__init__(self.conversations)
        self.turns = turns

    async def process(
        self, request: str | bytes | bytearray, context: ChatKitContext
    ) -> StreamingResult | NonStreamingResult:
        """Check the request before the SDK acts on it: a refused request changes nothing."""
        refusal = await self._refusal(parse_request(request), context)
        if refusal is not None:
            return StreamingResult(_refused(refusal))
        return await super().process(request, context)

    async def _refusal(self, request: SupportedRequest, context: ChatKitContext) -> str | None:
        """Why a stream cannot start, shown in the thread; a missing thread or item raises."""
        match request:
            case AddUserMessage():
                await self.conversations.conversation(request.params.thread_id, context)
            case RetryAfterItem():
                params = request.params
                item = await self.conversations.load_item(params.thread_id, params.item_id, context)
                if not isinstance(item, UserMessageItem):
                    raise InvalidInput(
                        "Only a user message can be answered again", code="not_a_user_message"
                    )
        if not isinstance(request, CreateThread | AddUserMessage):
            return None
        try:
            message_text(request.params.input.content)
        except InvalidInput as exc:  # what the user typed: said in the thread, as a failed turn is
            return exc.message
        return None

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


async def _refused(message: str) -> AsyncGenerator[bytes, None]:
    yield _error_chunk(message, allow_retry=False)


def _as_utc(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the SDK's naive stamps are its machine's local time
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc_times(chunk: bytes) -> bytes:
    """The SDK stamps the threads and items it makes with a naive `datetime.now()`; every
    time we send says its zone (UTC), as the stored ones do."""
    if b'"created_at"' not in chunk or not chunk.startswith(b"data: "):
        return chunk
    event = json.loads(chunk.removeprefix(b"data: "))
    thread = event.get("thread")
    items = [event.get("item")]
    if isinstance(thread, dict):
        thread["created_at"] = _as_utc(thread.get("created_at"))
        items += thread.get("items", {}).get("data", [])
    for item in items:
        if isinstance(item, dict) and "created_at" in item:
            item["created_at"] = _as_utc(item["created_at"])
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return b"data: " + body.encode() + b"\n\n"


async def _guarded(result: StreamingResult) -> AsyncGenerator[bytes, None]:
    """Failures once the stream has begun can only be told in it: as ChatKit error events."""
    try:
        async for chunk in result:
            yield _utc_times(chunk)
    except AppError as exc:
        yield _error_chunk(exc.message, allow_retry=_retryable(exc))
    except (NotFoundError, ValueError) as exc:
        yield _error_chunk(str(exc) or "Not found", allow_retry=False)
    except Exception:  # a bug: the 200 is already sent, so end the stream with an error event
        logger.exception("ChatKit stream failed")
        yield _error_chunk("The request failed", allow_retry=False)


@router.post(
    "/chatkit",
    responses={
        **{status: answer for status, answer in ERROR_RESPONSES.items() if status != 403},
        200: {
            "description": "ChatKit protocol: JSON, or Server-Sent Events for streaming operations",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        404: {"model": ErrorBody, "description": "No such thread or item for this user"},
        422: {
            "model": ErrorBody,
            "description": "Not a ChatKit request this server takes "
            "(`invalid_chatkit_request`, `unsupported_operation`, `not_a_user_message`, "
            "`invalid_title`, `invalid_timezone`)",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": REQUEST_SCHEMA}},
        }
    },
)
async def chatkit_endpoint(request: Request, user_id: CurrentUser, zone: UserZone) -> Response:
    """The ChatKit server endpoint; threads are this user's conversations."""
    server: TodoChatKitServer = request.app.state.chatkit
    context = ChatKitContext(user_id=user_id, zone=zone)
    try:
        result = await server.process(await request.body(), context)
    except NotFoundError as exc:
        raise NotFound(str(exc) or "Not found") from exc
    if isinstance(result, StreamingResult):
        return StreamingResponse(_guarded(result), media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")
