"""Shapes of what the consumers read (task events) and what the history routes return."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from backend.events.outbox import EVENT_TYPE_PREFIX, SPEC_VERSION
from backend.tasks.schemas import MAX_TASK_ID, MAX_TITLE

# Our ids are UUIDs; anything that fits the inbox key and a log line is accepted, no more.
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_HISTORY_PAGE = 100
TYPE_PATTERN = "^" + re.escape(EVENT_TYPE_PREFIX) + "[a-z]+(\\.[a-z]+)?$"
# Text columns refuse NUL on PostgreSQL: such an event is poison, not a failed transaction.
NO_NUL = r"^[^\x00]*$"


class EventTask(BaseModel):
    """The task as it was after the change; only what the consumers read is checked."""

    model_config = ConfigDict(extra="allow")

    id: int = Field(ge=1, le=MAX_TASK_ID)
    title: str = Field(min_length=1, max_length=MAX_TITLE, pattern=NO_NUL)


class TaskEventData(BaseModel):
    model_config = ConfigDict(extra="allow")

    task: EventTask
    changes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    user_id: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    channel: str = Field(min_length=1, max_length=16, pattern=NO_NUL)
    version: int = Field(ge=1, le=2**31 - 1)


class TaskEvent(BaseModel):
    """A task event as delivered: our CloudEvent, plus whatever attributes the broker or the
    sidecar added (Dapr adds pubsubname, topic, traceid, traceparent, tracestate)."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(pattern=EVENT_ID_PATTERN)
    type: str = Field(pattern=TYPE_PATTERN)
    time: AwareDatetime
    data: TaskEventData

    @property
    def action(self) -> str:
        return self.type.removeprefix(EVENT_TYPE_PREFIX)


assert SPEC_VERSION == "1.0", "TaskEvent.specversion follows the envelope's version"


class HistoryEntry(BaseModel):
    version: int = Field(description="The task's version after this change (1 = created).")
    action: str = Field(
        description="created, updated, completed, reopened, deleted, restored, skipped (an "
        "occurrence of a repeating task passed over) or reminder.due (its reminder fired).",
        examples=["completed"],
    )
    channel: str = Field(
        description="Where the change came from: rest, mcp, chat, chatkit, cli or scheduler.",
        examples=["rest"],
    )
    at: datetime = Field(description="When the change happened (UTC).")
    changes: dict[str, dict[str, Any]] = Field(
        description='What changed: `{field: {"from": old, "to": new}}` (empty on create).'
    )


class TaskHistoryPage(BaseModel):
    task_id: int
    items: list[HistoryEntry] = Field(description="Newest first.")
    has_more: bool = Field(
        description="Older entries exist: ask again with `before_version` = the last version."
    )


class DaprSubscription(BaseModel):
    """One programmatic subscription, in the shape the sidecar reads from /dapr/subscribe."""

    pubsubname: str
    topic: str
    route: str
    deadLetterTopic: str  # Dapr's spelling
    metadata: dict[str, str] = Field(default_factory=dict)


class DaprAppResponse(BaseModel):
    """What the sidecar reads from a delivery's answer: SUCCESS acknowledges the event (also
    a duplicate), DROP gives up on it (Dapr moves it to the dead-letter topic). Transient
    failures are a 503 instead of Dapr's RETRY status: Dapr retries any non-2xx but 404, and
    resiliency policies, traces and metrics see the failure by its status code."""

    status: Literal["SUCCESS", "DROP"]
