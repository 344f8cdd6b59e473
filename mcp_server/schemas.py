"""What the MCP tools return: structured results a model (and a UI) can read."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from backend.models import Notification, Task


class TaskView(BaseModel):
    """One task as the tools show it (times are UTC, ISO 8601)."""

    id: int
    title: str
    description: str | None
    completed: bool
    priority: Literal["low", "medium", "high", "urgent"]
    tags: list[str]
    due_at: datetime | None
    remind_at: datetime | None
    remind_before_minutes: int | None = Field(
        default=None, description="The reminder is this many minutes before due_at."
    )
    reminded: bool = Field(default=False, description="The reminder at remind_at has fired.")
    recurrence: str | None
    time_zone: str | None = Field(default=None, description="Where a repeat keeps its local time.")
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: Task) -> TaskView:
        assert task.id is not None
        return cls(
            id=task.id,
            title=task.title,
            description=task.description,
            completed=task.completed,
            priority=task.priority,
            tags=task.tags,
            due_at=task.due_at,
            remind_at=task.remind_at,
            remind_before_minutes=task.remind_before_minutes,
            reminded=task.reminded_at is not None,
            recurrence=task.recurrence,
            time_zone=task.time_zone,
            completed_at=task.completed_at,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )


class TaskCreated(TaskView):
    task_id: int = Field(description="The new task's id; use it in later tool calls.")
    status: Literal["created"] = "created"


class TaskList(BaseModel):
    tasks: list[TaskView]
    total: int = Field(description="How many tasks match in all (this page may hold fewer).")


class TaskChanged(BaseModel):
    task_id: int
    status: Literal["completed", "pending", "updated", "deleted", "restored", "skipped"]
    title: str
    next_task_id: int | None = Field(
        default=None,
        description="A repeating task: the id of its next occurrence.",
    )
    next_due_at: datetime | None = Field(
        default=None, description="When the next occurrence is due."
    )

    @model_serializer(mode="wrap")
    def _without_absent_next(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Most tasks do not repeat: no two nulls in every answer the model reads.
        data: dict[str, Any] = handler(self)
        for name in ("next_task_id", "next_due_at"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class NotificationView(BaseModel):
    """A reminder that fired."""

    id: int
    task_id: int
    title: str
    due_at: datetime | None
    remind_at: datetime = Field(description="The time the reminder was set for.")
    fired_at: datetime
    late: bool = Field(description="Fired late (the service was down at its time).")
    read: bool

    @classmethod
    def of(cls, row: Notification) -> NotificationView:
        assert row.id is not None
        return cls(
            id=row.id,
            task_id=row.task_id,
            title=row.title,
            due_at=row.due_at,
            remind_at=row.remind_at,
            fired_at=row.fired_at,
            late=row.late,
            read=row.read_at is not None,
        )


class NotificationList(BaseModel):
    notifications: list[NotificationView] = Field(description="Unread first, newest first.")
    unread: int = Field(description="How many are unread in all.")


class HistoryEntryView(BaseModel):
    version: int = Field(description="The task's version after this change (1 = created).")
    action: Literal[
        "created",
        "updated",
        "completed",
        "reopened",
        "deleted",
        "restored",
        "skipped",
        "reminder.due",
    ]
    channel: str = Field(
        description="Where the change came from: rest, mcp, chat, chatkit, cli, scheduler."
    )
    at: datetime = Field(description="When the change happened (UTC).")
    changes: dict[str, dict[str, Any]] = Field(
        description='What changed: {field: {"from": old, "to": new}}; empty when created.'
    )


class TaskHistory(BaseModel):
    task_id: int
    title: str = Field(description="The task's current title.")
    entries: list[HistoryEntryView] = Field(description="Oldest first; the latest `limit`.")
