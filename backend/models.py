"""Every table. Alembic reads this module's metadata; it is the only schema writer."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, Relationship, SQLModel

from backend.clock import utc_now
from backend.db import UTCDateTime

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    urgent = "urgent"


# A run still answering: the predicate of the partial index on running runs.
RUN_RUNNING_SQL = "status = 'running'"

# A reminder waits to fire: set, not fired yet, on a live unfinished task.
REMINDER_ARMED_SQL = (
    "remind_at IS NOT NULL AND reminded_at IS NULL AND completed = false AND deleted_at IS NULL"
)


class Task(SQLModel, table=True):
    __tablename__ = "task"
    __table_args__ = (
        CheckConstraint("priority IN ('low', 'medium', 'high', 'urgent')", name="priority"),
        Index("ix_task_user_id_created_at", "user_id", "created_at"),
        Index("ix_task_user_id_updated_at", "user_id", "updated_at"),
        Index("ix_task_user_id_due_at", "user_id", "due_at"),
        Index("ix_task_user_id_completed", "user_id", "completed"),
        # The scheduler's work list: armed reminders only, so it stays as small as they are.
        Index(
            "ix_task_reminder_due",
            "remind_at",
            sqlite_where=text(REMINDER_ARMED_SQL),
            postgresql_where=text(REMINDER_ARMED_SQL),
        ),
        # The link that makes a second spawn of the same occurrence impossible.
        UniqueConstraint("series_id", "occurrence"),
        CheckConstraint("occurrence >= 1", name="occurrence"),
        CheckConstraint(
            "remind_before_minutes IS NULL OR remind_before_minutes >= 0",
            name="remind_before_minutes",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=128, index=True)
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    completed: bool = Field(default=False)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    priority: str = Field(default=Priority.medium.value, max_length=16)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    remind_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    recurrence: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Bumped by every change; the version in the task's events, so consumers can order them.
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # The IANA zone the user was in: repeats keep their wall-clock time in it across DST,
    # and reminders say their time in it.
    time_zone: str | None = Field(default=None, max_length=64)
    # A reminder relative to the due time (minutes before it); remind_at follows due_at.
    remind_before_minutes: int | None = Field(default=None)
    # When the current reminder fired; cleared when it is re-armed (a new remind_at, snooze).
    reminded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Every occurrence of a repeating task shares series_id; occurrence counts from 1.
    series_id: str | None = Field(default=None, max_length=32)
    occurrence: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # The rule's DTSTART: the series' original due time (its creation time without one).
    series_start_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    tag_links: list["TaskTag"] = Relationship(
        sa_relationship_kwargs={
            "lazy": "selectin",
            "cascade": "all, delete-orphan",
            "order_by": "TaskTag.position",
        }
    )

    @property
    def tags(self) -> list[str]:
        return [link.tag for link in self.tag_links]


class TaskTag(SQLModel, table=True):
    """One row per tag: an indexed equality lookup on SQLite and PostgreSQL alike."""

    __tablename__ = "task_tag"

    task_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("task.id", ondelete="CASCADE"), primary_key=True),
    )
    tag: str = Field(sa_column=Column(String(32), primary_key=True, index=True))
    position: int = Field(default=0)


def new_public_id(prefix: str) -> str:
    """Ids ChatKit sees: chosen before the row exists, so not the integer key."""
    return f"{prefix}_{uuid.uuid4().hex}"


class Conversation(SQLModel, table=True):
    """A chat thread (a ChatKit thread too). `lease_*` let one turn run at a time, anywhere."""

    __tablename__ = "conversation"
    __table_args__ = (Index("ix_conversation_user_id_updated_at", "user_id", "updated_at"),)

    id: int | None = Field(default=None, primary_key=True)
    thread_id: str = Field(default_factory=lambda: new_public_id("thr"), max_length=64, unique=True)
    user_id: str = Field(max_length=128)
    title: str = Field(default="New conversation", max_length=200)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Message(SQLModel, table=True):
    """One user or assistant message; an assistant message carries the tool calls it made."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        UniqueConstraint("user_id", "client_message_id"),
        CheckConstraint("role IN ('user', 'assistant')", name="role"),
    )

    id: int | None = Field(default=None, primary_key=True)
    item_id: str = Field(default_factory=lambda: new_public_id("msg"), max_length=64, unique=True)
    conversation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: str = Field(max_length=128)
    seq: int
    role: str = Field(max_length=16)
    content: str = Field(sa_type=Text)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    client_message_id: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    # Set when a retry replaces this message; it stays for the logs.
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AgentRun(SQLModel, table=True):
    """What one chat turn did: model, outcome, timings, tokens. Developers read these."""

    __tablename__ = "agent_run"
    __table_args__ = (
        Index("ix_agent_run_started_at", "started_at"),
        Index("ix_agent_run_user_id_started_at", "user_id", "started_at"),
        Index("ix_agent_run_conversation_id", "conversation_id"),
        # Every turn start looks for runs left running in its conversation: only those are
        # indexed, so the look-up never walks the conversation's finished runs.
        Index(
            "ix_agent_run_running",
            "conversation_id",
            sqlite_where=text(RUN_RUNNING_SQL),
            postgresql_where=text(RUN_RUNNING_SQL),
        ),
        Index("ix_agent_run_user_message_id", "user_message_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: str = Field(max_length=128)
    user_message_id: int | None = Field(default=None)
    assistant_message_id: int | None = Field(default=None)
    status: str = Field(default="running", max_length=16)
    model: str = Field(max_length=100)
    channel: str = Field(default="chat", max_length=16)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=2000)
    started_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    latency_ms: int | None = None
    model_calls: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    feedback: str | None = Field(default=None, max_length=16)
    # The task-changing tool calls finished so far, written as they finish: if the process
    # dies mid-turn, whoever closes the run stores them, so a retry never repeats them.
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    feedback_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OutboxEvent(SQLModel, table=True):
    """A task event, written in the transaction of the change it describes; also the log.

    `payload` is the whole CloudEvent as published. The relay publishes pending rows in id
    order per task, marks them published (or, after too many failures, dead) and never
    deletes them; retention prunes old published rows.
    """

    __tablename__ = "outbox_event"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'published', 'dead')", name="status"),
        # The relay's work list and the "is an earlier event of this task still pending?"
        # check; partial, so it stays as small as the backlog.
        Index(
            "ix_outbox_event_pending",
            "task_id",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_event_task_id_id", "task_id", "id"),
        # A second event with a task's version would mean two changes raced: refuse it.
        UniqueConstraint("task_id", "version"),
        Index("ix_outbox_event_created_at", "created_at"),
        Index("ix_outbox_event_status_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=36, unique=True)
    type: str = Field(max_length=100)
    task_id: int
    user_id: str = Field(max_length=128)
    channel: str = Field(max_length=16)
    version: int
    payload: dict[str, Any] = Field(sa_type=JSON)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0)
    # Not before this time (backoff after a failure).
    available_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=2000)


class Notification(SQLModel, table=True):
    """A reminder that fired, for the user to see: listed, streamed (SSE) and said in chat.

    `seq` numbers a user's notifications in commit order (a firing takes the user's lock
    first), so an SSE stream resumes after a Last-Event-ID without losing or repeating one.
    """

    __tablename__ = "notification"
    __table_args__ = (
        # One notification per task and reminder instant, however many schedulers run.
        UniqueConstraint("task_id", "remind_at"),
        UniqueConstraint("user_id", "seq"),
        Index("ix_notification_user_id_read_at", "user_id", "read_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=128)
    seq: int
    task_id: int
    kind: str = Field(default="reminder", max_length=16)
    title: str = Field(max_length=200)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    remind_at: datetime = Field(sa_type=UTCDateTime)
    time_zone: str | None = Field(default=None, max_length=64)
    fired_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    # Fired well after its time (everything was down): the user is told it is late.
    late: bool = Field(default=False)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The assistant message that said it in the user's latest conversation, if any.
    message_id: int | None = Field(default=None)


class InboxEvent(SQLModel, table=True):
    """Events a consumer has applied, written in the transaction of its effect: a second
    delivery of the same event finds its row and changes nothing."""

    __tablename__ = "inbox_event"

    consumer: str = Field(sa_column=Column(String(64), primary_key=True))
    event_id: str = Field(sa_column=Column(String(64), primary_key=True))
    received_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class TaskActivity(SQLModel, table=True):
    """A task's history, built by the `task-activity` consumer from the task events."""

    __tablename__ = "task_activity"
    __table_args__ = (
        UniqueConstraint("event_id"),
        Index("ix_task_activity_user_id_task_id_version", "user_id", "task_id", "version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64)
    user_id: str = Field(max_length=128)
    task_id: int
    version: int
    action: str = Field(max_length=32)
    channel: str = Field(max_length=16)
    title: str = Field(max_length=200)
    changes: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
