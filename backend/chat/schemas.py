"""Chat schemas: a turn's request and response, conversations and their messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from backend.tasks.schemas import SPACE_CLASS

MAX_MESSAGE_CHARS = 4000
# Ids and `seq` are 32-bit INTEGER columns: a larger bound would reach PostgreSQL and fail there.
MAX_DB_INT = 2**31 - 1
MESSAGE_PAGE_DEFAULT = 50
MESSAGE_PAGE_MAX = 200
# Not blank (Python's whitespace) and no NUL: what _not_blank checks, as the document shows it.
MESSAGE_PATTERN = rf"^[^\x00]*[^{SPACE_CLASS}\x00][^\x00]*$"


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DB_INT,
        description="Continue this conversation; omit to start one.",
    )
    message: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)] = Field(
        description="What the user said (1-4,000 characters, not blank, no NUL).",
        json_schema_extra={"pattern": MESSAGE_PATTERN},
    )
    client_message_id: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
        ]
        | None
    ) = Field(
        default=None, description="Idempotency key: a retry with the same id never runs twice."
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        if "\x00" in value:
            raise ValueError("message must not contain NUL characters")
        return value


class ToolCall(BaseModel):
    name: str
    arguments: dict[str, Any]
    result: Any
    is_error: bool


class ChatResponse(BaseModel):
    conversation_id: int
    response: str
    tool_calls: list[ToolCall]


class ConversationSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    created_at: datetime
    updated_at: datetime = Field(description="Last activity.")


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    total: int
    limit: int
    offset: int


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    seq: int
    role: str
    content: str
    tool_calls: list[ToolCall] | None
    created_at: datetime


class ConversationDetail(ConversationSummary):
    """A conversation with one page of its messages, always in `seq` order."""

    messages: list[MessagePublic] = Field(
        description="Oldest first. Without `after`: the newest page (ending before `before`); "
        "with `after`: the page that starts right after it."
    )
    has_more: bool = Field(
        description="More messages lie beyond this page in the direction of paging: older ones "
        "without `after`, newer ones with it."
    )
    next_cursor: int | None = Field(
        description="Pass it as `before` (or, when paging with `after`, as `after`) to get the "
        "next page; null when there is none."
    )
