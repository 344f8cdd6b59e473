"""Conversation rules: ownership, the per-conversation lease, idempotency, turn records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.clock import utc_now
from backend.errors import Conflict, InvalidInput, NotFound
from backend.models import AgentRun, Conversation, Message

TITLE_CHARS = 60
DEFAULT_TITLE = "New conversation"


class ConversationNotFound(NotFound):
    code = "conversation_not_found"

    def __init__(self, conversation_id: int) -> None:
        super().__init__(f"Conversation {conversation_id} not found")


class ConversationBusy(Conflict):
    code = "conversation_busy"


REPLAYED_STATUSES = ("succeeded", "stopped")


@dataclass(frozen=True)
class TurnStart:
    """What the first short transaction of a turn settled."""

    conversation_id: int
    user_message_id: int
    run_id: int
    lease_token: str
    # The turn answers this message: its history ends here, later messages are not its own.
    user_seq: int = 0
    replay: ChatReplay | None = None
    # The front end the turn came through: chat, chatkit or cli.
    channel: str = "chat"


@dataclass(frozen=True)
class ChatReplay:
    """A finished turn found again through its client_message_id."""

    conversation_id: int
    response: str
    tool_calls: list[dict[str, Any]]


def title_from(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _owned(user_id: str) -> Any:
    return select(Conversation).where(
        col(Conversation.user_id) == user_id, col(Conversation.deleted_at).is_(None)
    )


async def get_conversation(
    session: AsyncSession, user_id: str, conversation_id: int
) -> Conversation:
    statement = _owned(user_id).where(col(Conversation.id) == conversation_id)
    conversation: Conversation | None = (await session.scalars(statement)).first()
    if conversation is None:
        raise ConversationNotFound(conversation_id)
    return conversation


async def find_by_thread_id(
    session: AsyncSession, user_id: str, thread_id: str
) -> Conversation | None:
    """The conversation behind a ChatKit thread id, if this user owns it."""
    statement = _owned(user_id).where(col(Conversation.thread_id) == thread_id)
    conversation: Conversation | None = (await session.scalars(statement)).first()
    return conversation


async def list_conversations(
    session: AsyncSession, user_id: str, limit: int, offset: int
) -> tuple[Sequence[Conversation], int]:
    scoped = _owned(user_id)
    total = await session.scalar(select(func.count()).select_from(scoped.subquery()))
    page = scoped.order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc())
    items = (await session.scalars(page.limit(limit).offset(offset))).all()
    return items, total or 0


def visible_messages(conversation_id: int) -> Any:
    """A conversation's messages, minus those a retry replaced."""
    return select(Message).where(
        col(Message.conversation_id) == conversation_id, col(Message.deleted_at).is_(None)
    )


async def conversations_after(
    session: AsyncSession, user_id: str, after_thread_id: str | None, limit: int, newest_first: bool
) -> list[Conversation]:
    """A page of the user's conversations by creation order, after a thread-id cursor."""
    statement = _owned(user_id)
    if after_thread_id is not None:
        cursor = await find_by_thread_id(session, user_id, after_thread_id)
        if cursor is not None:
            statement = statement.where(
                col(Conversation.id) < cursor.id
                if newest_first
                else col(Conversation.id) > cursor.id
            )
    ordering = col(Conversation.id).desc() if newest_first else col(Conversation.id).asc()
    return list((await session.scalars(statement.order_by(ordering).limit(limit))).all())


async def messages_after(
    session: AsyncSession,
    conversation_id: int,
    after_item_id: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> list[Message]:
    """A page of a conversation's messages by `seq`, after an item-id cursor."""
    statement = visible_messages(conversation_id)
    if after_item_id is not None:
        cursor_seq = await session.scalar(
            select(col(Message.seq)).where(
                col(Message.conversation_id) == conversation_id,
                col(Message.item_id) == after_item_id,
            )
        )
        if cursor_seq is not None:
            statement = statement.where(
                col(Message.seq) > cursor_seq if order == "asc" else col(Message.seq) < cursor_seq
            )
    ordering = col(Message.seq).asc() if order == "asc" else col(Message.seq).desc()
    return list((await session.scalars(statement.order_by(ordering).limit(limit))).all())


@dataclass(frozen=True)
class MessagePage:
    messages: list[Message]  # oldest first
    has_more: bool
    next_cursor: int | None


def message_page_query(
    conversation_id: int, limit: int, before: int | None, after: int | None
) -> Any:
    """One page of visible messages by `seq`, read in paging order along (conversation_id, seq).

    One row more than the page tells whether there is more, without a count.
    """
    statement = visible_messages(conversation_id)
    if before is not None:
        statement = statement.where(col(Message.seq) < before)
    if after is not None:
        statement = statement.where(col(Message.seq) > after)
    ordering = col(Message.seq).asc() if after is not None else col(Message.seq).desc()
    return statement.order_by(ordering).limit(limit + 1)


async def page_messages(
    session: AsyncSession,
    conversation_id: int,
    *,
    limit: int,
    before: int | None = None,
    after: int | None = None,
) -> MessagePage:
    """The newest `limit` messages before `before`, or with `after` the oldest ones after it."""
    rows = list(await session.scalars(message_page_query(conversation_id, limit, before, after)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    forward = after is not None
    if not forward:
        rows.reverse()
    cursor = None
    if has_more:
        cursor = rows[-1].seq if forward else rows[0].seq
    return MessagePage(rows, has_more, cursor)


async def list_messages(session: AsyncSession, conversation_id: int) -> Sequence[Message]:
    statement = visible_messages(conversation_id).order_by(col(Message.seq))
    return (await session.scalars(statement)).all()


async def recent_messages(
    session: AsyncSession, conversation_id: int, limit: int, answering_seq: int | None = None
) -> list[Message]:
    """The model's history: the newest `limit` messages, oldest first (never the oldest N).

    With `answering_seq`, the history of the turn answering that user message: it ends
    before the next user message, so a later message is never taken for this one's.
    """
    # Answers a retry replaced are hidden, but what their tools did still happened: the
    # model keeps seeing those calls (to_input_items drops the hidden text).
    statement = select(Message).where(
        col(Message.conversation_id) == conversation_id,
        or_(col(Message.deleted_at).is_(None), col(Message.role) == "assistant"),
    )
    if answering_seq is not None:
        next_user_seq = (
            select(func.min(Message.seq))
            .where(
                col(Message.conversation_id) == conversation_id,
                col(Message.deleted_at).is_(None),
                col(Message.role) == "user",
                col(Message.seq) > answering_seq,
            )
            .scalar_subquery()
        )
        statement = statement.where(or_(next_user_seq.is_(None), col(Message.seq) < next_user_seq))
    statement = statement.order_by(col(Message.seq).desc()).limit(limit)
    return list(reversed((await session.scalars(statement)).all()))


async def create_conversation(
    session: AsyncSession, user_id: str, title: str, thread_id: str | None = None
) -> Conversation:
    conversation = Conversation(user_id=user_id, title=title_from(title) or DEFAULT_TITLE)
    if thread_id is not None:
        conversation.thread_id = thread_id
    session.add(conversation)
    await session.flush()
    return conversation


async def rename_conversation(
    session: AsyncSession, user_id: str, conversation_id: int, title: str
) -> Conversation:
    conversation = await get_conversation(session, user_id, conversation_id)
    if "\x00" in title or len(title) > 200:
        raise InvalidInput("A title has at most 200 characters and no NUL", code="invalid_title")
    conversation.title = title_from(title) or conversation.title
    await session.flush()
    return conversation


async def delete_conversation(session: AsyncSession, user_id: str, conversation_id: int) -> None:
    conversation = await get_conversation(session, user_id, conversation_id)
    conversation.deleted_at = utc_now()
    await session.flush()


async def _take_lease(
    session: AsyncSession, user_id: str, conversation_id: int, lease_seconds: int
) -> str:
    now = utc_now()
    token = uuid.uuid4().hex
    statement = (
        update(Conversation)
        .where(
            col(Conversation.id) == conversation_id,
            col(Conversation.user_id) == user_id,
            or_(col(Conversation.lease_owner).is_(None), col(Conversation.lease_expires_at) < now),
        )
        .values(lease_owner=token, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConversationBusy("Another turn is running in this conversation; retry shortly")
    # Whatever was still "running" here lost its lease: its process is gone.
    await close_abandoned_runs(session, col(AgentRun.conversation_id) == conversation_id)
    return token


async def _next_seq(session: AsyncSession, conversation_id: int) -> int:
    # Writers of one conversation take its row lock first, so two transactions (a reply
    # being stored, a ChatKit message arriving) never pick the same seq. SQLite has one
    # writer at a time anyway.
    await session.execute(
        select(col(Conversation.id))
        .where(col(Conversation.id) == conversation_id)
        .with_for_update()
    )
    statement = select(func.coalesce(func.max(Message.seq), 0)).where(
        col(Message.conversation_id) == conversation_id
    )
    return int(await session.scalar(statement) or 0) + 1


async def add_message(
    session: AsyncSession,
    conversation_id: int,
    user_id: str,
    role: str,
    content: str,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    client_message_id: str | None = None,
    item_id: str | None = None,
) -> Message:
    message = Message(
        conversation_id=conversation_id,
        user_id=user_id,
        seq=await _next_seq(session, conversation_id),
        role=role,
        content=content,
        tool_calls=tool_calls,
        client_message_id=client_message_id,
    )
    if item_id is not None:
        message.item_id = item_id
    session.add(message)
    await session.flush()
    return message


async def add_messages(
    session: AsyncSession, conversation_id: int, user_id: str, role: str, contents: list[str]
) -> list[Message]:
    """Several messages at the end of a conversation, under one lock (reminder notes)."""
    first = await _next_seq(session, conversation_id)
    messages = [
        Message(
            conversation_id=conversation_id,
            user_id=user_id,
            seq=first + offset,
            role=role,
            content=content,
        )
        for offset, content in enumerate(contents)
    ]
    session.add_all(messages)
    await session.flush()
    return messages


async def _stored_reply(session: AsyncSession, user_message: Message) -> ChatReplay | None:
    """The answer of the message's last run, if that run succeeded."""
    runs = select(AgentRun).where(col(AgentRun.user_message_id) == user_message.id)
    last_run = (await session.scalars(runs.order_by(col(AgentRun.id).desc()))).first()
    if (
        last_run is None
        or last_run.status not in REPLAYED_STATUSES
        or not last_run.assistant_message_id
    ):
        return None
    reply = await session.get(Message, last_run.assistant_message_id)
    if reply is None:
        return None
    return ChatReplay(user_message.conversation_id, reply.content, reply.tool_calls or [])


async def begin_turn(
    session: AsyncSession,
    user_id: str,
    *,
    conversation_id: int | None,
    message: str,
    client_message_id: str | None,
    model_name: str,
    lease_seconds: int,
    channel: str = "chat",
) -> TurnStart:
    """Own-check or create the conversation, take its lease, store the message, open a run.

    A known `client_message_id` is a retry: the stored answer if there is one, else a new
    run for the stored message (refused when later turns have happened since).
    """
    if client_message_id is not None:
        existing = await _by_client_message_id(session, user_id, client_message_id)
        if existing is not None:
            return await _retry(
                session,
                user_id,
                existing,
                conversation_id,
                message,
                model_name,
                lease_seconds,
                channel,
            )
    if conversation_id is None:
        conversation = await create_conversation(session, user_id, message)
    else:
        conversation = await get_conversation(session, user_id, conversation_id)
    assert conversation.id is not None
    try:
        lease = await _take_lease(session, user_id, conversation.id, lease_seconds)
    except ConversationBusy:
        # The same client_message_id may have raced in and now holds the lease.
        if client_message_id is not None and await _by_client_message_id(
            session, user_id, client_message_id
        ):
            raise _in_progress() from None
        raise
    try:
        user_message = await store_user_message(
            session, user_id, conversation, message, client_message_id=client_message_id
        )
    except IntegrityError as exc:  # the same client_message_id raced in
        raise _in_progress() from exc
    return await _open_run(session, conversation, user_message, lease, model_name, channel)


def _in_progress() -> ConversationBusy:
    return ConversationBusy(
        "This message is still being answered; retry shortly", code="turn_in_progress"
    )


async def _by_client_message_id(
    session: AsyncSession, user_id: str, client_message_id: str
) -> Message | None:
    statement = select(Message).where(
        col(Message.user_id) == user_id, col(Message.client_message_id) == client_message_id
    )
    found: Message | None = (await session.scalars(statement)).first()
    return found


async def _retry(
    session: AsyncSession,
    user_id: str,
    existing: Message,
    conversation_id: int | None,
    message: str,
    model_name: str,
    lease_seconds: int,
    channel: str,
) -> TurnStart:
    if conversation_id is not None and conversation_id != existing.conversation_id:
        raise Conflict(
            "client_message_id was already used in another conversation",
            code="idempotency_key_reused",
        )
    if existing.content != message:
        raise Conflict(
            "client_message_id was already used for a different message",
            code="idempotency_key_reused",
        )
    conversation = await get_conversation(session, user_id, existing.conversation_id)
    replay = await _stored_reply(session, existing)
    if replay is not None:
        return TurnStart(conversation.id or 0, existing.id or 0, 0, "", existing.seq, replay=replay)
    if existing.deleted_at is not None or await _has_later_user_messages(session, existing):
        raise Conflict(
            "Later messages in this conversation were answered since; send this one again "
            "as a new message",
            code="turn_outdated",
        )
    try:
        lease = await _take_lease(session, user_id, existing.conversation_id, lease_seconds)
    except ConversationBusy as exc:
        raise _in_progress() from exc
    return await _open_run(session, conversation, existing, lease, model_name, channel)


async def _has_later_user_messages(session: AsyncSession, message: Message) -> bool:
    statement = (
        visible_messages(message.conversation_id)
        .where(col(Message.seq) > message.seq, col(Message.role) == "user")
        .limit(1)
    )
    return (await session.scalars(statement)).first() is not None


def ensure_not_answering(conversation: Conversation) -> None:
    """Refuse a new message while a turn is answering (ChatKit stores before it answers)."""
    lease_held = conversation.lease_owner is not None and (
        conversation.lease_expires_at is None or conversation.lease_expires_at > utc_now()
    )
    if lease_held:
        raise ConversationBusy("Another turn is running in this conversation; retry shortly")


async def store_user_message(
    session: AsyncSession,
    user_id: str,
    conversation: Conversation,
    text: str,
    *,
    client_message_id: str | None = None,
    item_id: str | None = None,
) -> Message:
    """Append the user's message (the conversation takes its title from the first one)."""
    assert conversation.id is not None
    if conversation.title == DEFAULT_TITLE:
        conversation.title = title_from(text) or DEFAULT_TITLE
    conversation.updated_at = utc_now()
    async with session.begin_nested():
        return await add_message(
            session,
            conversation.id,
            user_id,
            "user",
            text,
            client_message_id=client_message_id,
            item_id=item_id,
        )


async def _open_run(
    session: AsyncSession,
    conversation: Conversation,
    user_message: Message,
    lease: str,
    model_name: str,
    channel: str,
) -> TurnStart:
    assert conversation.id is not None
    assert user_message.id is not None
    run = AgentRun(
        conversation_id=conversation.id,
        user_id=conversation.user_id,
        user_message_id=user_message.id,
        model=model_name,
        channel=channel,
    )
    session.add(run)
    conversation.updated_at = utc_now()
    await session.flush()
    assert run.id is not None
    return TurnStart(conversation.id, user_message.id, run.id, lease, user_message.seq)


async def answer_stored_message(
    session: AsyncSession,
    user_id: str,
    conversation_id: int,
    user_message_item_id: str,
    *,
    model_name: str,
    lease_seconds: int,
    channel: str,
) -> TurnStart:
    """Answer a user message already stored (ChatKit: a new message or a retry), under the lease.

    The text answers shown after that message are replaced: they are hidden (the logs keep
    them) in the same transaction, so a retry refused as busy changes nothing. Tool-only
    records stay, so the model still sees what already happened.
    """
    conversation = await get_conversation(session, user_id, conversation_id)
    statement = visible_messages(conversation_id).where(
        col(Message.item_id) == user_message_item_id, col(Message.role) == "user"
    )
    user_message = (await session.scalars(statement)).first()
    if user_message is None:
        raise NotFound("That message is not in this conversation", code="message_not_found")
    lease = await _take_lease(session, user_id, conversation_id, lease_seconds)
    await session.execute(
        update(Message)
        .where(
            col(Message.conversation_id) == conversation_id,
            col(Message.seq) > user_message.seq,
            col(Message.deleted_at).is_(None),
            or_(col(Message.role) == "user", col(Message.content) != ""),
        )
        .values(deleted_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    return await _open_run(session, conversation, user_message, lease, model_name, channel)


async def record_feedback(
    session: AsyncSession, user_id: str, conversation_id: int, item_ids: list[str], kind: str
) -> int:
    """Attach 👍/👎 to the runs that wrote these assistant messages; returns how many."""
    await get_conversation(session, user_id, conversation_id)
    statement = (
        select(AgentRun)
        .join(Message, col(Message.id) == col(AgentRun.assistant_message_id))
        .where(
            col(Message.conversation_id) == conversation_id,
            col(Message.item_id).in_(item_ids),
            col(AgentRun.user_id) == user_id,
        )
    )
    runs = (await session.scalars(statement)).all()
    for run in runs:
        run.feedback = kind
        run.feedback_at = utc_now()
    await session.flush()
    return len(runs)


async def _release(session: AsyncSession, conversation_id: int, lease_token: str) -> None:
    await session.execute(
        update(Conversation)
        .where(
            col(Conversation.id) == conversation_id, col(Conversation.lease_owner) == lease_token
        )
        .values(lease_owner=None, lease_expires_at=None, updated_at=utc_now())
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class TurnRecord:
    """How a turn ended, for the second short transaction."""

    status: str
    reply: str | None
    tool_calls: list[dict[str, Any]]
    latency_ms: int
    model_calls: int
    input_tokens: int | None
    output_tokens: int | None
    error_code: str | None = None
    error_message: str | None = None
    reply_item_id: str | None = None


async def finish_turn(
    session: AsyncSession, user_id: str, start: TurnStart, record: TurnRecord
) -> bool:
    """Store the reply (or the tool calls that did happen), close the run, release the lease.

    False when the lease was lost (the turn outlived it and another took over): the run is
    closed as failed and nothing more is added to the conversation.
    """
    if not await _holds_lease(session, start):
        await close_abandoned_runs(session, col(AgentRun.id) == start.run_id, "lease_lost")
        closed = await session.get(AgentRun, start.run_id)
        if closed is not None and closed.latency_ms is None:
            _measure(closed, record)  # the logs still show what the lost turn cost
        return False
    run = await session.get(AgentRun, start.run_id)
    if run is None or run.status != "running":
        return False
    assistant = None
    if record.reply is not None or record.tool_calls:
        assistant = await add_message(
            session,
            start.conversation_id,
            user_id,
            "assistant",
            record.reply or "",
            tool_calls=record.tool_calls or None,
            item_id=record.reply_item_id,
        )
    run.status = record.status
    run.assistant_message_id = assistant.id if assistant is not None else None
    run.tool_calls = record.tool_calls or None
    run.error_code = record.error_code
    run.error_message = (record.error_message or "")[:2000] or None
    run.finished_at = utc_now()
    _measure(run, record)
    await _release(session, start.conversation_id, start.lease_token)
    await session.flush()
    return True


def _measure(run: AgentRun, record: TurnRecord) -> None:
    run.latency_ms = record.latency_ms
    run.model_calls = record.model_calls
    run.input_tokens = record.input_tokens
    run.output_tokens = record.output_tokens


async def _holds_lease(session: AsyncSession, start: TurnStart) -> bool:
    result = await session.execute(
        update(Conversation)
        .where(
            col(Conversation.id) == start.conversation_id,
            col(Conversation.lease_owner) == start.lease_token,
        )
        .values(updated_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def journal_tool_calls(
    session: AsyncSession, run_id: int, tool_calls: list[dict[str, Any]]
) -> None:
    """Keep the finished task-changing calls of a running turn, in case its process dies."""
    await session.execute(
        update(AgentRun)
        .where(col(AgentRun.id) == run_id, col(AgentRun.status) == "running")
        .values(tool_calls=tool_calls)
        .execution_options(synchronize_session=False)
    )


async def close_abandoned_runs(
    session: AsyncSession, which: ColumnElement[bool], error_code: str = "abandoned"
) -> int:
    """Fail the matching runs still `running`; keep the tool calls they journaled.

    The one place a run that will not finish normally is closed. Its journaled tool calls
    become a tool-only assistant message, so a retry's model sees what already happened.
    """
    statement = select(AgentRun).where(which, col(AgentRun.status) == "running")
    runs = (await session.scalars(statement.with_for_update())).all()
    for run in runs:
        if run.tool_calls and run.assistant_message_id is None:
            stored = await add_message(
                session,
                run.conversation_id,
                run.user_id,
                "assistant",
                "",
                tool_calls=run.tool_calls,
            )
            run.assistant_message_id = stored.id
        run.status = "failed"
        run.error_code = error_code
        run.finished_at = utc_now()
    await session.flush()
    return len(runs)


async def close_stale_runs(session: AsyncSession) -> int:
    """At start-up: close the runs whose conversation lease has lapsed (their process died)."""
    lapsed = select(col(Conversation.id)).where(
        or_(
            col(Conversation.lease_owner).is_(None),
            col(Conversation.lease_expires_at) < utc_now(),
        )
    )
    return await close_abandoned_runs(session, col(AgentRun.conversation_id).in_(lapsed))


async def abandon_turn(session: AsyncSession, start: TurnStart, code: str) -> None:
    """Fail a still-running run and release its lease, if this turn still holds it."""
    await close_abandoned_runs(session, col(AgentRun.id) == start.run_id, code)
    await _release(session, start.conversation_id, start.lease_token)


async def renew_lease(session: AsyncSession, start: TurnStart, lease_seconds: int) -> bool:
    """Extend this turn's lease; False when another turn has taken the conversation over."""
    result = await session.execute(
        update(Conversation)
        .where(
            col(Conversation.id) == start.conversation_id,
            col(Conversation.lease_owner) == start.lease_token,
        )
        .values(lease_expires_at=utc_now() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
