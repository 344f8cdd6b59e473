"""ChatKit's Store over our tables: threads are conversations, items are their messages.

Every method is scoped to the request's user: another user's thread or item is simply not
found. The store only persists: a user message is stored here, and `respond()` answers it
through the shared turn runner, which writes the reply with its tool calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from chatkit.store import NotFoundError, Store, StoreItemType
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    InferenceOptions,
    Page,
    ThreadItem,
    ThreadMetadata,
    UserMessageContent,
    UserMessageItem,
    UserMessageTextContent,
)
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from backend.chat import service as chat_service
from backend.chat.schemas import ChatRequest
from backend.db import Database
from backend.errors import InvalidInput
from backend.models import Conversation, Message, new_public_id

CHANNEL = "chatkit"
MAX_PAGE_SIZE = 100
# Every thread and item id is ours (`thr_…`, `msg_…`: `new_public_id`). A string outside
# this shape names nothing, and must not reach SQL: PostgreSQL refuses NUL in text.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)


def is_possible_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


@dataclass(frozen=True)
class ChatKitContext:
    """Per request: only the verified user (never one taken from the client) and their zone."""

    user_id: str
    zone: ZoneInfo


def message_text(content: list[UserMessageContent]) -> str:
    """The text a user message stores, under the chat API's rules (1-4,000 characters, no NUL)."""
    text = "".join(part.text for part in content if isinstance(part, UserMessageTextContent))
    try:
        return ChatRequest(message=text).message
    except ValidationError as exc:
        raise InvalidInput(
            "Messages must be 1-4,000 characters of text", code="validation_error"
        ) from exc


def to_thread(conversation: Conversation) -> ThreadMetadata:
    return ThreadMetadata(
        id=conversation.thread_id, created_at=conversation.created_at, title=conversation.title
    )


def to_item(message: Message, thread_id: str) -> ThreadItem:
    if message.role == "user":
        return UserMessageItem(
            id=message.item_id,
            thread_id=thread_id,
            created_at=message.created_at,
            content=[UserMessageTextContent(text=message.content)],
            attachments=[],
            inference_options=InferenceOptions(),
        )
    return AssistantMessageItem(
        id=message.item_id,
        thread_id=thread_id,
        created_at=message.created_at,
        content=[AssistantMessageContent(text=message.content)],
    )


class ConversationStore(Store[ChatKitContext]):
    def __init__(self, database: Database) -> None:
        self.database = database

    def generate_thread_id(self, context: ChatKitContext) -> str:
        return new_public_id("thr")

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: ChatKitContext
    ) -> str:
        return new_public_id("msg" if item_type == "message" else item_type[:4])

    async def conversation(self, thread_id: str, context: ChatKitContext) -> Conversation:
        if not is_possible_id(thread_id):
            raise NotFoundError("Thread not found")
        async with self.database.session_scope() as session:
            found = await chat_service.find_by_thread_id(session, context.user_id, thread_id)
        if found is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return found

    async def load_thread(self, thread_id: str, context: ChatKitContext) -> ThreadMetadata:
        return to_thread(await self.conversation(thread_id, context))

    async def save_thread(self, thread: ThreadMetadata, context: ChatKitContext) -> None:
        async with self.database.session_scope(write=True) as session:
            found = await chat_service.find_by_thread_id(session, context.user_id, thread.id)
            if found is not None:
                if thread.title:
                    await chat_service.rename_conversation(
                        session, context.user_id, found.id or 0, thread.title
                    )
                return
            try:
                async with session.begin_nested():
                    await chat_service.create_conversation(
                        session, context.user_id, thread.title or "", thread_id=thread.id
                    )
            except IntegrityError as exc:  # the id is another user's thread
                raise NotFoundError(f"Thread {thread.id} not found") from exc

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: ChatKitContext
    ) -> Page[ThreadMetadata]:
        limit = min(limit, MAX_PAGE_SIZE)  # a larger page than we serve gets our largest
        async with self.database.session_scope() as session:
            conversations = await chat_service.conversations_after(
                session, context.user_id, after, limit + 1, newest_first=order != "asc"
            )
        page = [to_thread(c) for c in conversations[:limit]]
        more = len(conversations) > limit
        return Page(data=page, has_more=more, after=page[-1].id if page and more else None)

    async def delete_thread(self, thread_id: str, context: ChatKitContext) -> None:
        conversation = await self.conversation(thread_id, context)
        async with self.database.session_scope(write=True) as session:
            await chat_service.delete_conversation(session, context.user_id, conversation.id or 0)

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: ChatKitContext,
    ) -> Page[ThreadItem]:
        limit = min(limit, MAX_PAGE_SIZE)
        conversation = await self.conversation(thread_id, context)
        direction: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
        async with self.database.session_scope() as session:
            messages = await chat_service.messages_after(
                session, conversation.id or 0, after, limit + 1, direction
            )
        # Tool-only assistant messages (a failed turn's calls) carry no text to show.
        shown = [m for m in messages if m.content or m.role == "user"]
        items = [to_item(m, thread_id) for m in shown[:limit]]
        more = len(messages) > limit
        return Page(data=items, has_more=more, after=items[-1].id if items and more else None)

    async def load_item(self, thread_id: str, item_id: str, context: ChatKitContext) -> ThreadItem:
        conversation = await self.conversation(thread_id, context)
        if not is_possible_id(item_id):
            raise NotFoundError("Item not found")
        async with self.database.session_scope() as session:
            statement = chat_service.visible_messages(conversation.id or 0).where(
                col(Message.item_id) == item_id
            )
            message = (await session.scalars(statement)).first()
        if message is None:
            raise NotFoundError(f"Item {item_id} not found")
        return to_item(message, thread_id)

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: ChatKitContext
    ) -> None:
        if not isinstance(item, UserMessageItem):
            # Replies are stored by the turn itself, with their tool calls; ChatKit's
            # hidden bookkeeping items have no place in a conversation.
            return
        text = message_text(item.content)
        async with self.database.session_scope(write=True) as session:
            conversation = await chat_service.find_by_thread_id(session, context.user_id, thread_id)
            if conversation is None:
                raise NotFoundError(f"Thread {thread_id} not found")
            chat_service.ensure_not_answering(conversation)
            await chat_service.store_user_message(
                session, context.user_id, conversation, text, item_id=item.id
            )

    async def save_item(self, thread_id: str, item: ThreadItem, context: ChatKitContext) -> None:
        await self.add_thread_item(thread_id, item, context)

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: ChatKitContext
    ) -> None:
        """ChatKit deletes the items a retry replaces; the retry itself hides them.

        They are hidden only once the retry holds the conversation's lease, in the same
        transaction, so a retry refused as busy changes nothing (see answer_stored_message).
        """
        await self.conversation(thread_id, context)

    async def save_attachment(self, attachment: Attachment, context: ChatKitContext) -> None:
        raise NotFoundError("Attachments are not supported")

    async def load_attachment(self, attachment_id: str, context: ChatKitContext) -> Attachment:
        raise NotFoundError("Attachments are not supported")

    async def delete_attachment(self, attachment_id: str, context: ChatKitContext) -> None:
        raise NotFoundError("Attachments are not supported")
