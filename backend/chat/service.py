"""Conversation rules: ownership, the per-conversation lease, idempotency, turn records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Row,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
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

# The turn path writes through the tables, not the ORM: no identity map, no flush, one
# statement per step (RETURNING hands back what the ORM would re-read).
_CONVERSATION: Table = Conversation.__table__  # type: ignore[attr-defined]
_MESSAGE: Table = Message.__table__  # type: ignore[attr-defined]
_RUN: Table = AgentRun.__table__  # type: ignore[attr-defined]
# A literal, not a bound parameter: only a literal lets either planner match the partial
# index ix_agent_run_running (PostgreSQL's generic plans and SQLite never match a parameter).
_RUN_IS_RUNNING = _RUN.c.status == literal_column("'running'")


class HistoryMessage(NamedTuple):
    """A stored message as the model's history needs it (see history.to_input_items)."""

    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    deleted_at: datetime | None


# The statements of a turn, built once: building and cache-keying a statement costs more
# Python time than the database takes to run it. Bind names start with "p_" so they never
# clash with the column names SET and VALUES use.
_c, _m, _r = _CONVERSATION.c, _MESSAGE.c, _RUN.c

_FIND_BY_KEY = select(_m.id, _m.conversation_id, _m.content, _m.seq, _m.deleted_at).where(
    _m.user_id == bindparam("p_user_id"), _m.client_message_id == bindparam("p_key")
)
_LEASE_FREE = (
    _c.id == bindparam("p_conversation_id"),
    _c.user_id == bindparam("p_user_id"),
    _c.deleted_at.is_(None),
    or_(_c.lease_owner.is_(None), _c.lease_expires_at < bindparam("p_now")),
)
_LEASE_VALUES: dict[Any, Any] = {
    _c.lease_owner: bindparam("p_token"),
    _c.lease_expires_at: bindparam("p_expires"),
    _c.updated_at: bindparam("p_now"),
}
_TAKE_LEASE = update(_CONVERSATION).where(*_LEASE_FREE).values(_LEASE_VALUES).returning(_c.id)
# A conversation still untitled takes its title from the message that takes the lease.
_TAKE_LEASE_TITLED = (
    update(_CONVERSATION)
    .where(*_LEASE_FREE)
    .values(
        {
            **_LEASE_VALUES,
            _c.title: case((_c.title == DEFAULT_TITLE, bindparam("p_title")), else_=_c.title),
        }
    )
    .returning(_c.id)
)
_CREATE_LEASED = (
    insert(_CONVERSATION)
    .values(
        user_id=bindparam("p_user_id"),
        title=bindparam("p_title"),
        lease_owner=bindparam("p_token"),
        lease_expires_at=bindparam("p_expires"),
        created_at=bindparam("p_now"),
        updated_at=bindparam("p_now"),
    )
    .returning(_c.id)
)
_RELEASE = (
    update(_CONVERSATION)
    .where(_c.id == bindparam("p_conversation_id"), _c.lease_owner == bindparam("p_token"))
    .values(lease_owner=None, lease_expires_at=None, updated_at=bindparam("p_now"))
    .returning(_c.id)
)
_MESSAGE_VALUES = {
    "conversation_id": bindparam("p_conversation_id"),
    "user_id": bindparam("p_user_id"),
    # The next seq, picked in the same statement under the conversation's row lock.
    "seq": select(func.coalesce(func.max(_m.seq), 0) + 1)
    .where(_m.conversation_id == bindparam("p_conversation_id"))
    .scalar_subquery(),
    "role": bindparam("p_role"),
    "content": bindparam("p_content"),
    "tool_calls": bindparam("p_tool_calls", type_=_m.tool_calls.type),
    "client_message_id": bindparam("p_key"),
}
_INSERT_MESSAGE = insert(_MESSAGE).values(_MESSAGE_VALUES).returning(_m.id, _m.seq)
_INSERT_MESSAGE_WITH_ITEM_ID = (
    insert(_MESSAGE)
    .values({**_MESSAGE_VALUES, "item_id": bindparam("p_item_id")})
    .returning(_m.id, _m.seq)
)
_INSERT_RUN = (
    insert(_RUN)
    .values(
        conversation_id=bindparam("p_conversation_id"),
        user_id=bindparam("p_user_id"),
        user_message_id=bindparam("p_message_id"),
        model=bindparam("p_model"),
        channel=bindparam("p_channel"),
    )
    .returning(_r.id)
)
_CLOSE_RUN_FIELDS = (
    "status",
    "assistant_message_id",
    "tool_calls",
    "error_code",
    "error_message",
    "finished_at",
    "latency_ms",
    "model_calls",
    "input_tokens",
    "output_tokens",
)
_CLOSE_RUN = (
    update(_RUN)
    .where(_r.id == bindparam("p_run_id"), _RUN_IS_RUNNING)
    .values({name: bindparam(f"p_{name}", type_=_r[name].type) for name in _CLOSE_RUN_FIELDS})
    .returning(_r.id)
)
_JOURNAL = (
    update(_RUN)
    .where(_r.id == bindparam("p_run_id"), _RUN_IS_RUNNING)
    .values(tool_calls=bindparam("p_tool_calls", type_=_r.tool_calls.type))
)
_FAILED = {
    "status": "failed",
    "error_code": bindparam("p_error_code"),
    "finished_at": bindparam("p_now"),
}
_FAILED_RETURNS = (_r.id, _r.conversation_id, _r.user_id, _r.tool_calls, _r.assistant_message_id)
_FAIL_RUNNING_IN = (
    update(_RUN)
    .where(_r.conversation_id == bindparam("p_conversation_id"), _RUN_IS_RUNNING)
    .values(_FAILED)
    .returning(*_FAILED_RETURNS)
)
_VISIBLE_TO_MODEL = or_(_m.deleted_at.is_(None), _m.role == "assistant")
_HISTORY = (
    select(_m.role, _m.content, _m.tool_calls, _m.deleted_at)
    .where(
        _m.conversation_id == bindparam("p_conversation_id"),
        _m.seq <= bindparam("p_newest"),
        _VISIBLE_TO_MODEL,
    )
    .order_by(_m.seq.desc())
    .limit(bindparam("p_limit"))
)
_HISTORY_WINDOW = _HISTORY.where(_m.seq > bindparam("p_lowest"))
_NEWEST_SEQ = select(func.max(_m.seq)).where(_m.conversation_id == bindparam("p_conversation_id"))


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
    # The model's history, read in the transaction that stored the message (oldest first);
    # None when the caller asked for none.
    history: tuple[HistoryMessage, ...] | None = None


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


# The history read looks this many times its length back first: a range bounded on both
# sides of (conversation_id, seq) is an index scan with no sort whatever the planner knows
# (without statistics PostgreSQL otherwise sorts the whole conversation).
HISTORY_WINDOW = 2


async def _read_history(
    session: AsyncSession, conversation_id: int, limit: int | None, newest_seq: int | None = None
) -> tuple[HistoryMessage, ...] | None:
    """recent_messages' answer for the message a turn start just settled, in its transaction.

    Under the conversation's lock that message is the last user message that counts: a
    fresh one is the newest, a retried one has no later visible user message (else the
    turn is outdated) and a ChatKit answer hides the later ones. So there is no "next user
    message" to stop at: the history is the newest messages, up to `newest_seq` (the
    conversation's last, read here unless given).
    """
    if not limit:
        return None
    if newest_seq is None:
        newest = await session.execute(_NEWEST_SEQ, {"p_conversation_id": conversation_id})
        newest_seq = newest.scalar_one() or 0
    lowest = newest_seq - HISTORY_WINDOW * limit
    params = {
        "p_conversation_id": conversation_id,
        "p_newest": newest_seq,
        "p_lowest": lowest,
        "p_limit": limit,
    }
    rows = (await session.execute(_HISTORY_WINDOW, params)).all()
    if len(rows) < limit and lowest > 0:  # many hidden messages: look further back
        rows = (await session.execute(_HISTORY, params)).all()
    return tuple(HistoryMessage._make(row) for row in reversed(rows))


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
    session: AsyncSession,
    user_id: str,
    conversation_id: int,
    lease_seconds: int,
    *,
    title: str | None = None,
) -> str:
    """Own-check the conversation and take its lease (and its row lock) in one statement.

    With `title`, a conversation still untitled takes it (its first message).
    """
    now = utc_now()
    token = uuid.uuid4().hex
    params = {
        "p_conversation_id": conversation_id,
        "p_user_id": user_id,
        "p_now": now,
        "p_token": token,
        "p_expires": now + timedelta(seconds=lease_seconds),
        "p_title": title,
    }
    statement = _TAKE_LEASE if title is None else _TAKE_LEASE_TITLED
    if (await session.execute(statement, params)).first() is None:
        await _ensure_owned(session, user_id, conversation_id)
        raise ConversationBusy("Another turn is running in this conversation; retry shortly")
    # Whatever was still "running" here lost its lease: its process is gone. Usually nothing
    # is, and finding that out is one statement on the partial index of running runs.
    await _fail_runs(session, _FAIL_RUNNING_IN, "abandoned", {"p_conversation_id": conversation_id})
    return token


async def _ensure_owned(session: AsyncSession, user_id: str, conversation_id: int) -> None:
    c = _CONVERSATION.c
    owned = select(c.id).where(
        c.id == conversation_id, c.user_id == user_id, c.deleted_at.is_(None)
    )
    if (await session.execute(owned)).first() is None:
        raise ConversationNotFound(conversation_id)


async def _insert_message(
    session: AsyncSession,
    conversation_id: int,
    user_id: str,
    role: str,
    content: str,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    client_message_id: str | None = None,
    item_id: str | None = None,
) -> Row[Any]:
    """Append a message, its seq picked in the same statement; returns (id, seq).

    The caller holds the conversation's row lock (see _next_seq).
    """
    params = {
        "p_conversation_id": conversation_id,
        "p_user_id": user_id,
        "p_role": role,
        "p_content": content,
        "p_tool_calls": tool_calls,
        "p_key": client_message_id,
        "p_item_id": item_id,
    }
    statement = _INSERT_MESSAGE if item_id is None else _INSERT_MESSAGE_WITH_ITEM_ID
    return (await session.execute(statement, params)).one()


async def _lock_conversation(session: AsyncSession, conversation_id: int) -> None:
    await session.execute(
        select(col(Conversation.id))
        .where(col(Conversation.id) == conversation_id)
        .with_for_update()
    )


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


async def _stored_reply(
    session: AsyncSession, conversation_id: int, user_message_id: int
) -> ChatReplay | None:
    """The answer of the message's last run, if that run succeeded."""
    r, m = _RUN.c, _MESSAGE.c
    statement = (
        select(r.status, m.id, m.content, m.tool_calls)
        .select_from(_RUN.outerjoin(_MESSAGE, m.id == r.assistant_message_id))
        .where(r.user_message_id == user_message_id)
        .order_by(r.id.desc())
        .limit(1)
    )
    last_run = (await session.execute(statement)).first()
    if last_run is None or last_run.status not in REPLAYED_STATUSES or last_run.id is None:
        return None
    return ChatReplay(conversation_id, last_run.content, last_run.tool_calls or [])


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
    history_limit: int | None = None,
) -> TurnStart:
    """Own-check or create the conversation, take its lease, store the message, open a run.

    A known `client_message_id` is a retry: the stored answer if there is one, else a new
    run for the stored message (refused when later turns have happened since). With
    `history_limit`, the model's history comes back too (what recent_messages would say).
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
                history_limit,
            )
    title = title_from(message) or DEFAULT_TITLE
    if conversation_id is None:
        lease, conversation_id = await _create_leased(session, user_id, title, lease_seconds)
    else:
        try:
            lease = await _take_lease(session, user_id, conversation_id, lease_seconds, title=title)
        except ConversationBusy:
            # The same client_message_id may have raced in and now holds the lease.
            if client_message_id is not None and await _by_client_message_id(
                session, user_id, client_message_id
            ):
                raise _in_progress() from None
            raise
    try:
        # No savepoint: a failure here ends the whole transaction anyway.
        stored = await _insert_message(
            session, conversation_id, user_id, "user", message, client_message_id=client_message_id
        )
    except IntegrityError as exc:  # the same client_message_id raced in
        raise _in_progress() from exc
    run_id = await _insert_run(session, conversation_id, user_id, stored.id, model_name, channel)
    return TurnStart(
        conversation_id,
        stored.id,
        run_id,
        lease,
        stored.seq,
        history=await _read_history(session, conversation_id, history_limit, stored.seq),
    )


async def _create_leased(
    session: AsyncSession, user_id: str, title: str, lease_seconds: int
) -> tuple[str, int]:
    """A new conversation, its lease taken as it is born (no run can be left in it)."""
    now = utc_now()
    token = uuid.uuid4().hex
    params = {
        "p_user_id": user_id,
        "p_title": title,
        "p_token": token,
        "p_expires": now + timedelta(seconds=lease_seconds),
        "p_now": now,
    }
    return token, (await session.execute(_CREATE_LEASED, params)).scalar_one()


async def _insert_run(
    session: AsyncSession,
    conversation_id: int,
    user_id: str,
    user_message_id: int,
    model_name: str,
    channel: str,
) -> int:
    params = {
        "p_conversation_id": conversation_id,
        "p_user_id": user_id,
        "p_message_id": user_message_id,
        "p_model": model_name,
        "p_channel": channel,
    }
    run_id: int = (await session.execute(_INSERT_RUN, params)).scalar_one()
    return run_id


def _in_progress() -> ConversationBusy:
    return ConversationBusy(
        "This message is still being answered; retry shortly", code="turn_in_progress"
    )


async def _by_client_message_id(
    session: AsyncSession, user_id: str, client_message_id: str
) -> Row[Any] | None:
    """(id, conversation_id, content, seq, deleted_at) of the message sent with this key."""
    params = {"p_user_id": user_id, "p_key": client_message_id}
    return (await session.execute(_FIND_BY_KEY, params)).first()


async def _retry(
    session: AsyncSession,
    user_id: str,
    existing: Row[Any],
    conversation_id: int | None,
    message: str,
    model_name: str,
    lease_seconds: int,
    channel: str,
    history_limit: int | None,
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
    conversation_id = existing.conversation_id
    await _ensure_owned(session, user_id, conversation_id)
    replay = await _stored_reply(session, conversation_id, existing.id)
    if replay is not None:
        return TurnStart(conversation_id, existing.id, 0, "", existing.seq, replay=replay)
    if existing.deleted_at is not None or await _has_later_user_messages(
        session, conversation_id, existing.seq
    ):
        raise _outdated()
    try:
        lease = await _take_lease(session, user_id, conversation_id, lease_seconds)
    except ConversationBusy as exc:
        raise _in_progress() from exc
    # Again under the lock: a message may have arrived between the check and the lease
    # (PostgreSQL reads committed rows), and the history below must end at this one.
    if await _has_later_user_messages(session, conversation_id, existing.seq):
        raise _outdated()  # the transaction rolls back, lease and all
    run_id = await _insert_run(session, conversation_id, user_id, existing.id, model_name, channel)
    return TurnStart(
        conversation_id,
        existing.id,
        run_id,
        lease,
        existing.seq,
        history=await _read_history(session, conversation_id, history_limit),
    )


def _outdated() -> Conflict:
    return Conflict(
        "Later messages in this conversation were answered since; send this one again "
        "as a new message",
        code="turn_outdated",
    )


async def _has_later_user_messages(session: AsyncSession, conversation_id: int, seq: int) -> bool:
    m = _MESSAGE.c
    statement = (
        select(m.id)
        .where(
            m.conversation_id == conversation_id,
            m.deleted_at.is_(None),
            m.seq > seq,
            m.role == "user",
        )
        .limit(1)
    )
    return (await session.execute(statement)).first() is not None


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


async def answer_stored_message(
    session: AsyncSession,
    user_id: str,
    conversation_id: int,
    user_message_item_id: str,
    *,
    model_name: str,
    lease_seconds: int,
    channel: str,
    history_limit: int | None = None,
) -> TurnStart:
    """Answer a user message already stored (ChatKit: a new message or a retry), under the lease.

    The text answers shown after that message are replaced: they are hidden (the logs keep
    them) in the same transaction, so a retry refused as busy changes nothing. Tool-only
    records stay, so the model still sees what already happened.
    """
    c, m = _CONVERSATION.c, _MESSAGE.c
    # The conversation and the message in one read: an unknown conversation is told apart
    # from an unknown message by the outer join.
    found = (
        await session.execute(
            select(m.id, m.seq)
            .select_from(
                _CONVERSATION.outerjoin(
                    _MESSAGE,
                    (m.conversation_id == c.id)
                    & (m.item_id == user_message_item_id)
                    & (m.role == "user")
                    & m.deleted_at.is_(None),
                )
            )
            .where(c.id == conversation_id, c.user_id == user_id, c.deleted_at.is_(None))
        )
    ).first()
    if found is None:
        raise ConversationNotFound(conversation_id)
    if found.id is None:
        raise NotFound("That message is not in this conversation", code="message_not_found")
    lease = await _take_lease(session, user_id, conversation_id, lease_seconds)
    await session.execute(
        update(_MESSAGE)
        .where(
            m.conversation_id == conversation_id,
            m.seq > found.seq,
            m.deleted_at.is_(None),
            or_(m.role == "user", m.content != ""),
        )
        .values(deleted_at=utc_now())
    )
    run_id = await _insert_run(session, conversation_id, user_id, found.id, model_name, channel)
    return TurnStart(
        conversation_id,
        found.id,
        run_id,
        lease,
        found.seq,
        history=await _read_history(session, conversation_id, history_limit),
    )


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


async def _release(session: AsyncSession, conversation_id: int, lease_token: str) -> bool:
    """Give the lease back; False when this turn no longer held it."""
    params = {"p_conversation_id": conversation_id, "p_token": lease_token, "p_now": utc_now()}
    return (await session.execute(_RELEASE, params)).first() is not None


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
    measured = {
        "latency_ms": record.latency_ms,
        "model_calls": record.model_calls,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
    }
    # Releasing first takes the conversation's row lock, and proves the lease was held: the
    # rest of this transaction either all happens or not at all.
    if not await _release(session, start.conversation_id, start.lease_token):
        await close_abandoned_runs(session, _r.id == start.run_id, "lease_lost")
        # The logs still show what the lost turn cost.
        await session.execute(
            update(_RUN).where(_r.id == start.run_id, _r.latency_ms.is_(None)).values(measured)
        )
        return False
    assistant_id = None
    if record.reply is not None or record.tool_calls:
        stored = await _insert_message(
            session,
            start.conversation_id,
            user_id,
            "assistant",
            record.reply or "",
            tool_calls=record.tool_calls or None,
            item_id=record.reply_item_id,
        )
        assistant_id = stored.id
    closing = {
        "status": record.status,
        "assistant_message_id": assistant_id,
        "tool_calls": record.tool_calls or None,
        "error_code": record.error_code,
        "error_message": (record.error_message or "")[:2000] or None,
        "finished_at": utc_now(),
        **measured,
    }
    params = {"p_run_id": start.run_id, **{f"p_{k}": v for k, v in closing.items()}}
    if (await session.execute(_CLOSE_RUN, params)).first() is None:
        # Someone closed the run meanwhile (a restart found it stale): this turn adds nothing.
        if assistant_id is not None:
            await session.execute(delete(_MESSAGE).where(_m.id == assistant_id))
        return False
    return True


async def journal_tool_calls(
    session: AsyncSession, run_id: int, tool_calls: list[dict[str, Any]]
) -> None:
    """Keep the finished task-changing calls of a running turn, in case its process dies."""
    await session.execute(_JOURNAL, {"p_run_id": run_id, "p_tool_calls": tool_calls})


async def close_abandoned_runs(
    session: AsyncSession, which: ColumnElement[bool], error_code: str = "abandoned"
) -> int:
    """Fail the matching runs still `running`; keep the tool calls they journaled.

    The one place a run that will not finish normally is closed. Its journaled tool calls
    become a tool-only assistant message, so a retry's model sees what already happened.
    """
    statement = (
        update(_RUN).where(which, _RUN_IS_RUNNING).values(_FAILED).returning(*_FAILED_RETURNS)
    )
    return await _fail_runs(session, statement, error_code, {})


async def _fail_runs(
    session: AsyncSession, statement: Any, error_code: str, params: dict[str, Any]
) -> int:
    runs = (
        await session.execute(statement, {"p_error_code": error_code, "p_now": utc_now(), **params})
    ).all()
    for run in runs:
        if run.tool_calls and run.assistant_message_id is None:
            await _lock_conversation(session, run.conversation_id)
            stored = await _insert_message(
                session,
                run.conversation_id,
                run.user_id,
                "assistant",
                "",
                tool_calls=run.tool_calls,
            )
            await session.execute(
                update(_RUN).where(_r.id == run.id).values(assistant_message_id=stored.id)
            )
    return len(runs)


async def close_stale_runs(session: AsyncSession) -> int:
    """At start-up: close the runs whose conversation lease has lapsed (their process died)."""
    lapsed = select(col(Conversation.id)).where(
        or_(
            col(Conversation.lease_owner).is_(None),
            col(Conversation.lease_expires_at) < utc_now(),
        )
    )
    return await close_abandoned_runs(session, _RUN.c.conversation_id.in_(lapsed))


async def abandon_turn(session: AsyncSession, start: TurnStart, code: str) -> None:
    """Fail a still-running run and release its lease, if this turn still holds it."""
    await close_abandoned_runs(session, _RUN.c.id == start.run_id, code)
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
