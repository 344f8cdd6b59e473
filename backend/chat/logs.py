"""Conversation logs for developers: runs, transcripts and exports, read from the database."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backend.clock import utc_now
from backend.errors import InvalidInput, NotFound
from backend.models import AgentRun, Conversation, Message

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
RESULT_PREVIEW_CHARS = 300


def parse_since(text: str) -> datetime:
    """`30s`, `15m`, `1h`, `2d`, `1w` → that long ago."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidInput(f"--since takes a duration such as 30m, 1h or 2d, not {text!r}")
    return utc_now() - timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


async def list_runs(
    session: AsyncSession,
    *,
    user_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> Sequence[AgentRun]:
    statement = select(AgentRun).where(col(AgentRun.id) > after_id)
    if user_id:
        statement = statement.where(col(AgentRun.user_id) == user_id)
    if status:
        statement = statement.where(col(AgentRun.status) == status)
    if since:
        statement = statement.where(col(AgentRun.started_at) >= since)
    newest = statement.order_by(col(AgentRun.id).desc()).limit(limit)
    return list(reversed((await session.scalars(newest)).all()))


@dataclass(frozen=True)
class Transcript:
    conversation: Conversation
    messages: Sequence[Message]
    runs: Sequence[AgentRun]


async def load_transcript(session: AsyncSession, conversation_id: int) -> Transcript:
    """Every message and run of a conversation, deleted ones included (this is a debugging view)."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"Conversation {conversation_id} not found", code="conversation_not_found")
    messages = await session.scalars(
        select(Message)
        .where(col(Message.conversation_id) == conversation_id)
        .order_by(col(Message.seq))
    )
    runs = await session.scalars(
        select(AgentRun)
        .where(col(AgentRun.conversation_id) == conversation_id)
        .order_by(col(AgentRun.id))
    )
    return Transcript(conversation, messages.all(), runs.all())


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= RESULT_PREVIEW_CHARS else text[: RESULT_PREVIEW_CHARS - 1] + "…"


def format_run_line(run: AgentRun) -> str:
    tokens = f"{run.input_tokens or 0}/{run.output_tokens or 0}"
    latency = f"{run.latency_ms}ms" if run.latency_ms is not None else "-"
    error = f" {run.error_code}" if run.error_code else ""
    return (
        f"{run.id:>6}  {_when(run.started_at)}  {run.user_id:<16.16} conv={run.conversation_id:<5} "
        f"{run.channel:<7} {run.model:<14.14} {run.status:<9}{error:<20} {latency:>8} "
        f"calls={run.model_calls or 0} tokens={tokens}"
    )


RUN_HEADER = (
    f"{'run':>6}  {'started (UTC)':<19}  {'user':<16} {'conversation':<10} {'channel':<7} "
    f"{'model':<14} {'status':<9}{'':<20} {'latency':>8}"
)


def _run_summary(run: AgentRun) -> str:
    parts = [f"run {run.id}", run.status, run.model, f"{run.latency_ms or 0} ms"]
    parts.append(f"{run.model_calls or 0} model calls")
    if run.input_tokens or run.output_tokens:
        parts.append(f"tokens in/out {run.input_tokens or 0}/{run.output_tokens or 0}")
    if run.error_code:
        parts.append(f"error {run.error_code}: {run.error_message or ''}")
    return " · ".join(parts)


def format_transcript(transcript: Transcript) -> str:
    conversation = transcript.conversation
    deleted = f"  (deleted {_when(conversation.deleted_at)})" if conversation.deleted_at else ""
    lines = [
        f"Conversation {conversation.id} · {conversation.title!r} · user {conversation.user_id}",
        f"created {_when(conversation.created_at)} · last activity "
        f"{_when(conversation.updated_at)} UTC{deleted}",
        "",
    ]
    runs_by_message: dict[int | None, list[AgentRun]] = {}
    for run in transcript.runs:
        runs_by_message.setdefault(run.user_message_id, []).append(run)
    for message in transcript.messages:
        lines.append(f"[{message.seq}] {_when(message.created_at)} {message.role.upper()}")
        for call in message.tool_calls or []:
            flag = "ERROR " if call.get("is_error") else ""
            lines.append(
                f"    → {flag}{call['name']}({json.dumps(call['arguments'], ensure_ascii=False)})"
                f"  {call.get('duration_ms', '?')} ms"
            )
            lines.append(f"      ← {_preview(call.get('result'))}")
        if message.content:
            lines.extend(f"    {line}" for line in message.content.splitlines())
        for run in runs_by_message.get(message.id, []):
            lines.append(f"    ({_run_summary(run)})")
        lines.append("")
    return "\n".join(lines)


def export_jsonl(transcript: Transcript) -> str:
    conversation = transcript.conversation
    rows: list[dict[str, Any]] = [
        {
            "type": "conversation",
            "id": conversation.id,
            "user_id": conversation.user_id,
            "title": conversation.title,
            "created_at": conversation.created_at.isoformat(),
            "updated_at": conversation.updated_at.isoformat(),
        }
    ]
    for message in transcript.messages:
        rows.append(
            {
                "type": "message",
                "id": message.id,
                "seq": message.seq,
                "role": message.role,
                "content": message.content,
                "tool_calls": message.tool_calls or [],
                "created_at": message.created_at.isoformat(),
            }
        )
    for run in transcript.runs:
        row = run.model_dump(mode="json")
        rows.append({"type": "run", **row})
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"


def export_markdown(transcript: Transcript) -> str:
    conversation = transcript.conversation
    lines = [
        f"# {conversation.title}",
        "",
        f"Conversation {conversation.id}, user `{conversation.user_id}`",
        "",
    ]
    for message in transcript.messages:
        lines.append(f"## {message.seq}. {message.role} · {_when(message.created_at)} UTC")
        lines.append("")
        for call in message.tool_calls or []:
            status = "error" if call.get("is_error") else "ok"
            lines.append(f"- tool `{call['name']}` ({status}, {call.get('duration_ms', '?')} ms)")
            lines.append(f"  - arguments: `{json.dumps(call['arguments'], ensure_ascii=False)}`")
            lines.append(f"  - result: `{_preview(call.get('result'))}`")
        if message.content:
            lines.extend(["", message.content, ""])
    lines.append("## Runs")
    lines.append("")
    lines.extend(f"- {_run_summary(run)}" for run in transcript.runs)
    return "\n".join(lines) + "\n"
