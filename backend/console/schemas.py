"""What the console's API answers: runs, transcripts, charts (specs/console.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.chat.logs import RunStats, RunView, Transcript
from backend.models import Message

RunStatus = Literal["running", "succeeded", "failed", "stopped"]
RunChannel = Literal["chat", "chatkit", "cli"]


class Me(BaseModel):
    user_id: str
    operator: bool = Field(description="Sees every user's runs and may chat as any user.")


class RunPublic(BaseModel):
    id: int
    conversation_id: int
    user_id: str
    channel: str
    model: str
    status: str
    error_code: str | None
    error_message: str | None
    started_at: datetime
    finished_at: datetime | None
    latency_ms: int | None
    model_calls: int | None
    tool_call_count: int
    input_tokens: int | None
    output_tokens: int | None
    feedback: str | None
    user_message_id: int | None
    assistant_message_id: int | None
    message: str = Field(description="The user's message, cut to 200 characters.")

    @classmethod
    def of(cls, view: RunView) -> RunPublic:
        return cls.model_validate(
            {
                **view.run.model_dump(exclude={"tool_calls"}),
                "tool_call_count": view.tool_call_count,
                "message": view.message,
            }
        )


class RunPage(BaseModel):
    items: list[RunPublic]
    next_before: int | None = Field(description="`before` for the next (older) page; null: none.")


class UserActivity(BaseModel):
    user_id: str
    runs: int
    last_run_at: datetime


class UserList(BaseModel):
    items: list[UserActivity]


class ToolCallRecord(BaseModel):
    name: str
    arguments: dict[str, Any]
    result: Any = None
    is_error: bool = False
    duration_ms: int | None = None


class TranscriptMessage(BaseModel):
    id: int
    seq: int
    role: str
    content: str
    created_at: datetime
    deleted_at: datetime | None = Field(description="Set on an answer a retry replaced.")
    tool_calls: list[ToolCallRecord]
    run_id: int | None = Field(description="The run this message started or answered.")

    @classmethod
    def of(cls, message: Message, run_id: int | None) -> TranscriptMessage:
        calls = [
            ToolCallRecord(
                name=str(call.get("name", "")),
                arguments=call.get("arguments") or {},
                result=call.get("result"),
                is_error=bool(call.get("is_error")),
                duration_ms=call.get("duration_ms"),
            )
            for call in message.tool_calls or []
        ]
        return cls.model_validate({**message.model_dump(), "tool_calls": calls, "run_id": run_id})


class ConversationHeader(BaseModel):
    id: int
    user_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class TranscriptPublic(BaseModel):
    conversation: ConversationHeader
    messages: list[TranscriptMessage]
    runs: list[RunPublic]

    @classmethod
    def of(cls, transcript: Transcript, views: list[RunView]) -> TranscriptPublic:
        runs_by_message = {
            message_id: run.id
            for run in transcript.runs
            for message_id in (run.user_message_id, run.assistant_message_id)
            if message_id is not None
        }
        return cls(
            conversation=ConversationHeader.model_validate(transcript.conversation.model_dump()),
            messages=[
                TranscriptMessage.of(message, runs_by_message.get(message.id or 0))
                for message in transcript.messages
            ],
            runs=[RunPublic.of(view) for view in views],
        )


class HourBucket(BaseModel):
    start: datetime
    counts: dict[str, int] = Field(description="Runs started in this hour, by status.")
    p50_ms: int | None
    p95_ms: int | None


class FailureCount(BaseModel):
    code: str
    count: int


class StatsPublic(BaseModel):
    since: datetime
    until: datetime
    bucket_seconds: int = 3600
    total: int
    truncated: bool = Field(description="More runs matched than a chart reads; the newest count.")
    buckets: list[HourBucket]
    failures: list[FailureCount]

    @classmethod
    def of(cls, stats: RunStats, since: datetime, until: datetime) -> StatsPublic:
        return cls(
            since=since,
            until=until,
            total=stats.total,
            truncated=stats.truncated,
            buckets=[
                HourBucket(
                    start=hour.start,
                    counts=dict(hour.counts),
                    p50_ms=hour.percentile(0.5),
                    p95_ms=hour.percentile(0.95),
                )
                for hour in stats.hours
            ],
            failures=[FailureCount(code=code, count=count) for code, count in stats.failures],
        )
