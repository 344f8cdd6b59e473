"""Task schemas: what callers may send and what they get back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from dateutil.rrule import rrulestr
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from backend.models import Priority

# The one home of the task input limits: REST schemas and MCP tool arguments both use them.
MAX_TITLE = 200
MAX_DESCRIPTION = 2000
MAX_TAGS = 10
MAX_TAG = 32
MAX_RECURRENCE = 500
MAX_SEARCH = 200
MAX_PAGE = 100
MAX_OFFSET = 1_000_000
MAX_TASK_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
SIMPLE_RECURRENCES = ("daily", "weekly", "monthly")


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("date is out of range") from exc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""Any offset is accepted; the value is kept as the same instant in UTC."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _normalise_tags(value: list[str]) -> list[str]:
    seen: list[str] = []
    for raw in value:
        tag = raw.strip().lstrip("#").lower()
        if not 1 <= len(tag) <= MAX_TAG:
            raise ValueError(f"each tag must be 1-{MAX_TAG} characters")
        if any(ch.isspace() or ch in ",\x00" for ch in tag):
            raise ValueError("tags must not contain spaces, commas or NUL")
        if tag not in seen:
            seen.append(tag)
    return seen


def normalise_recurrence(value: str | None) -> str | None:
    """None, one of daily/weekly/monthly, or an RFC 5545 RRULE (checked with dateutil)."""
    if value is None:
        return None
    text = value.strip()
    if not text or text.lower() == "none":
        return None
    if text.lower() in SIMPLE_RECURRENCES:
        return text.lower()
    rule = text.upper().removeprefix("RRULE:")
    try:
        rrulestr(rule, dtstart=datetime(2000, 1, 1))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "recurrence must be daily, weekly, monthly or an RRULE such as FREQ=WEEKLY;BYDAY=MO"
        ) from exc
    return rule


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE),
    AfterValidator(_no_nul),
]
SearchText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=MAX_SEARCH), AfterValidator(_no_nul)
]
Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION), AfterValidator(_no_nul)]
Tags = Annotated[list[str], Field(max_length=MAX_TAGS), AfterValidator(_normalise_tags)]
Recurrence = (
    Annotated[
        str,
        StringConstraints(max_length=MAX_RECURRENCE),
        AfterValidator(_no_nul),
        AfterValidator(normalise_recurrence),
    ]
    | None
)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskCreate(_Input):
    """A new task. Only `title` is required."""

    title: Title
    description: Description | None = None
    priority: Priority = Priority.medium
    tags: Tags = Field(default_factory=list)
    due_at: UtcDatetime | None = None
    remind_at: UtcDatetime | None = None
    recurrence: Recurrence = None


class TaskReplace(TaskCreate):
    """Every editable field; anything omitted goes back to its default."""

    completed: bool = False


class TaskUpdate(_Input):
    """Only the fields sent are changed; `null` clears an optional field."""

    title: Title | None = None
    description: Description | None = None
    priority: Priority | None = None
    tags: Tags | None = None
    due_at: UtcDatetime | None = None
    remind_at: UtcDatetime | None = None
    recurrence: Recurrence = None
    completed: bool | None = None

    @model_validator(mode="after")
    def _required_fields_not_null(self) -> TaskUpdate:
        for name in ("title", "priority", "completed"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class CompletionChange(_Input):
    completed: bool


SortField = Literal["created_at", "updated_at", "due_at", "priority", "title"]


class TaskQuery(_Input):
    """Filters, sort and page for listing tasks."""

    status: Literal["all", "pending", "completed"] = "all"
    priority: Priority | None = None
    tag: Annotated[list[str], Field(max_length=MAX_TAGS), AfterValidator(_normalise_tags)] = Field(
        default_factory=list, description="Repeatable; every tag given must be on the task."
    )
    q: SearchText | None = Field(
        default=None, description="Case-insensitive search in title and description."
    )
    due_before: UtcDatetime | None = None
    due_after: UtcDatetime | None = None
    overdue: bool = False
    sort: SortField = "created_at"
    order: Literal["asc", "desc"] | None = Field(
        default=None, description="Default: desc for created_at/updated_at, asc otherwise."
    )
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class TaskPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    completed_at: datetime | None
    priority: Priority
    tags: list[str]
    due_at: datetime | None
    remind_at: datetime | None
    recurrence: str | None
    created_at: datetime
    updated_at: datetime


class TaskPage(BaseModel):
    items: list[TaskPublic]
    total: int
    limit: int
    offset: int
