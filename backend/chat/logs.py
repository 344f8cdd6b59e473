"""Conversation logs for developers: runs, transcripts and exports, read from the database."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
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


RUN_STATUSES = ("running", "succeeded", "failed", "stopped")
RUN_CHANNELS = ("chat", "chatkit", "cli")
# The most runs a chart reads; a wider range is cut to its newest runs (and says so).
STATS_MAX_RUNS = 200_000
MESSAGE_PREVIEW_CHARS = 200


@dataclass(frozen=True)
class RunFilter:
    """Which runs: every field that is set must hold (the CLI's and the console's filters)."""

    user_id: str | None = None
    status: str | None = None
    model: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        exact = {
            AgentRun.user_id: self.user_id,
            AgentRun.status: self.status,
            AgentRun.model: self.model,
            AgentRun.channel: self.channel,
        }
        conditions = [col(column) == value for column, value in exact.items() if value]
        if self.since:
            conditions.append(col(AgentRun.started_at) >= self.since)
        if self.until:
            conditions.append(col(AgentRun.started_at) < self.until)
        if self.text:
            conditions.append(_mentions(self.text))
        return conditions


def _mentions(text: str) -> ColumnElement[bool]:
    """The run's message, reply or error says `text` (case-insensitive, `%` and `_` literal)."""
    said = exists().where(
        or_(
            col(Message.id) == col(AgentRun.user_message_id),
            col(Message.id) == col(AgentRun.assistant_message_id),
        ),
        col(Message.content).icontains(text, autoescape=True),
    )
    return or_(said, col(AgentRun.error_message).icontains(text, autoescape=True))


def _runs(runs: RunFilter) -> Select[AgentRun]:
    return select(AgentRun).where(and_(True, *runs.conditions()))


async def page_runs(
    session: AsyncSession,
    runs: RunFilter,
    *,
    after_id: int = 0,
    before_id: int | None = None,
    limit: int = 50,
    newest_first: bool = True,
    ids: Collection[int] | None = None,
) -> Sequence[AgentRun]:
    """Runs with ids between the two bounds (exclusive), and among `ids` when given."""
    if ids is not None and not ids:
        return []
    statement = _runs(runs).where(col(AgentRun.id) > after_id)
    if before_id is not None:
        statement = statement.where(col(AgentRun.id) < before_id)
    if ids is not None:
        statement = statement.where(col(AgentRun.id).in_(ids))
    order = col(AgentRun.id).desc() if newest_first else col(AgentRun.id).asc()
    return (await session.scalars(statement.order_by(order).limit(limit))).all()


async def list_runs(
    session: AsyncSession,
    *,
    user_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> Sequence[AgentRun]:
    """The newest `limit` matching runs, oldest first (as a terminal prints them)."""
    runs = RunFilter(user_id=user_id, status=status, since=since)
    return list(reversed(await page_runs(session, runs, after_id=after_id, limit=limit)))


async def active_users(
    session: AsyncSession, limit: int, user_id: str | None = None
) -> list[tuple[str, int, datetime]]:
    """Users with runs, most recently active first: (user id, runs, last run start)."""
    last = func.max(col(AgentRun.started_at))
    statement = (
        select(col(AgentRun.user_id), func.count(), last)
        .where(and_(True, *RunFilter(user_id=user_id).conditions()))
        .group_by(col(AgentRun.user_id))
        .order_by(last.desc())
        .limit(limit)
    )
    return [(user, count, when) for user, count, when in await session.execute(statement)]


@dataclass(frozen=True)
class RunView:
    """A run as the console lists it: the record, its user message and its tool calls."""

    run: AgentRun
    message: str
    tool_call_count: int


async def run_views(session: AsyncSession, runs: Sequence[AgentRun]) -> list[RunView]:
    """Each run with a preview of its user message and how many tools its answer called."""
    ids = {run.user_message_id for run in runs} | {run.assistant_message_id for run in runs}
    ids.discard(None)
    rows = await session.execute(
        select(col(Message.id), col(Message.content), col(Message.tool_calls)).where(
            col(Message.id).in_(ids)
        )
    )
    messages = {row.id: row for row in rows}
    views = []
    for run in runs:
        said = messages.get(run.user_message_id)
        answer = messages.get(run.assistant_message_id)
        calls = answer.tool_calls if answer is not None else run.tool_calls
        text = said.content if said is not None else ""
        views.append(RunView(run, text[:MESSAGE_PREVIEW_CHARS], len(calls or [])))
    return views


@dataclass
class HourOfRuns:
    start: datetime
    counts: Counter[str] = field(default_factory=Counter)
    latencies: list[int] = field(default_factory=list)

    def percentile(self, share: float) -> int | None:
        """Nearest-rank percentile of the finished runs' latencies."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class RunStats:
    hours: list[HourOfRuns]
    failures: list[tuple[str, int]]
    total: int
    truncated: bool


async def run_stats(
    session: AsyncSession, runs: RunFilter, since: datetime, until: datetime
) -> RunStats:
    """Runs per hour by status, latency per hour, and failures by error code, in a range."""
    ranged = replace(runs, since=since, until=until)
    statement = (
        select(
            col(AgentRun.started_at),
            col(AgentRun.status),
            col(AgentRun.latency_ms),
            col(AgentRun.error_code),
        )
        .where(and_(True, *ranged.conditions()))
        .order_by(col(AgentRun.started_at).desc())
        .limit(STATS_MAX_RUNS + 1)
    )
    rows = (await session.execute(statement)).all()
    truncated = len(rows) > STATS_MAX_RUNS
    first = since.replace(minute=0, second=0, microsecond=0)
    count = max(1, math.ceil((until - first) / timedelta(hours=1)))
    hours = [HourOfRuns(first + timedelta(hours=n)) for n in range(count)]
    failures: Counter[str] = Counter()
    for started_at, status, latency_ms, error_code in rows[:STATS_MAX_RUNS]:
        hour = hours[min(count - 1, int((started_at - first) / timedelta(hours=1)))]
        hour.counts[status] += 1
        if latency_ms is not None and status != "running":
            hour.latencies.append(latency_ms)
        if status == "failed":
            failures[error_code or "unknown"] += 1
    total = min(len(rows), STATS_MAX_RUNS)
    return RunStats(hours, failures.most_common(), total, truncated)


@dataclass(frozen=True)
class Transcript:
    conversation: Conversation
    messages: Sequence[Message]
    runs: Sequence[AgentRun]


async def load_transcript(
    session: AsyncSession, conversation_id: int, *, user_id: str | None = None
) -> Transcript:
    """Every message and run of a conversation, deleted ones included (this is a debugging view).

    With `user_id`, another user's conversation is not found, exactly like a missing one.
    """
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or (user_id is not None and conversation.user_id != user_id):
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
