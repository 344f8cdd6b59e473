"""What the MCP tools return: structured results a model (and a UI) can read."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.models import Task


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
    recurrence: str | None
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
            recurrence=task.recurrence,
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
    status: Literal["completed", "pending", "updated", "deleted", "restored"]
    title: str


class HistoryEntryView(BaseModel):
    version: int = Field(description="The task's version after this change (1 = created).")
    action: Literal["created", "updated", "completed", "reopened", "deleted", "restored"]
    channel: str = Field(description="Where the change came from: rest, mcp, chat, chatkit, cli.")
    at: datetime = Field(description="When the change happened (UTC).")
    changes: dict[str, dict[str, Any]] = Field(
        description='What changed: {field: {"from": old, "to": new}}; empty when created.'
    )


class TaskHistory(BaseModel):
    task_id: int
    title: str = Field(description="The task's current title.")
    entries: list[HistoryEntryView] = Field(description="Oldest first; the latest `limit`.")
