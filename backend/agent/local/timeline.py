"""Questions about what happened to a task: "when did I finish the report?", "what happened
to the milk task?", "show the history of task 3". Find the task, read its history, answer."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from backend.agent.local.acting import resolve
from backend.agent.local.actions import parse_target
from backend.agent.local.dates import Clock
from backend.agent.local.intents import HistoryIntent
from backend.agent.local.replies import error_text, not_found, quoted
from backend.agent.local.steps import Call, Env, Outcome, Script

_I = re.IGNORECASE
# The longest history the tool gives: enough to reach a task's creation in practice.
HISTORY_LIMIT = 100
MAX_TOLD = 10
_TASK = r"(?P<t>.+?)(?:\s+(?:task|todo|item))?"
_DID = r"when\s+(?:did|was|were|have)\s+(?:i|we|you)\s+(?:last\s+|first\s+)?"
_ASKED_ACTIONS: tuple[tuple[str, str], ...] = (
    ("completed", r"(?:finish|complete|do|tick\s+off|check\s+off|cross\s+off|finished|completed)"),
    ("created", r"(?:add|create|make|set\s+up|enter|added|created)"),
    ("deleted", r"(?:delete|remove|deleted|removed)"),
    ("reopened", r"(?:reopen|reopened|undo|uncheck)"),
    ("restored", r"(?:restore|undelete|restored)"),
    ("updated", r"(?:change|edit|update|rename|changed|edited|updated|renamed)"),
)
_WHEN = [(action, re.compile(rf"{_DID}{verb}\s+{_TASK}", _I)) for action, verb in _ASKED_ACTIONS]
# "when did I mark the report done", "when was the report completed"
_MARKED = re.compile(
    rf"{_DID}(?:mark|marked)\s+{_TASK}\s+(?:as\s+)?(?:done|complete|completed)", _I
)
_WAS_DONE = re.compile(
    r"when\s+(?:was|were)\s+(?P<t>.+?)\s+(?P<a>finished|completed|done|added|created|deleted)",
    _I,
)
_STORY = re.compile(
    r"(?:what\s+(?:has\s+)?happened\s+(?:to|with)\s+"
    r"|(?:show|give|tell)\s+(?:me\s+)?(?:the\s+)?(?:history|changes|log|activity|timeline)"
    r"\s+(?:of|for|on)\s+"
    r"|(?:history|changes|activity|timeline)\s+(?:of|for|on)\s+"
    r"|what\s+(?:changes\s+)?(?:did\s+(?:i|we)\s+(?:make|do)\s+(?:to|on|with)\s+))"
    rf"{_TASK}",
    _I,
)
_PAST_ACTION = {
    "finished": "completed",
    "completed": "completed",
    "done": "completed",
    "added": "created",
    "created": "created",
    "deleted": "deleted",
}
_VERBS = {
    "created": "added",
    "updated": "changed",
    "completed": "completed",
    "reopened": "reopened",
    "deleted": "deleted",
    "restored": "restored",
}
_NOUNS = {
    "created": "adding",
    "updated": "changing",
    "completed": "completing",
    "reopened": "reopening",
    "deleted": "deleting",
    "restored": "restoring",
}


def parse_history(clause: str) -> HistoryIntent | None:
    """A question about a task's past, or None."""
    for action, pattern in _WHEN:
        match = pattern.fullmatch(clause)
        if match:
            return HistoryIntent(parse_target(match.group("t")), action)
    match = _MARKED.fullmatch(clause)
    if match:
        return HistoryIntent(parse_target(match.group("t")), "completed")
    match = _WAS_DONE.fullmatch(clause)
    if match:
        return HistoryIntent(parse_target(match.group("t")), _PAST_ACTION[match.group("a").lower()])
    match = _STORY.fullmatch(clause)
    if match:
        return HistoryIntent(parse_target(match.group("t")))
    return None


def run_history(intent: HistoryIntent, script: Script, env: Env) -> Outcome:
    tasks = resolve("history", intent.target, script, env)
    results = script.batch(
        [Call("task_history", {"task_id": t["id"], "limit": HISTORY_LIMIT}) for t in tasks]
    )
    lines: list[str] = []
    told: list[dict[str, Any]] = []
    for result in results:
        if not result.ok or result.data is None:
            task_id = result.arguments.get("task_id")
            lines.append(
                not_found(result) or f"I couldn't read #{task_id}'s history: {error_text(result)}"
            )
            continue
        data = result.data
        told.append({"id": data.get("task_id"), "title": data.get("title")})
        lines.append(_answer(intent.action, data, env.clock))
    return Outcome(lines, told)


def _entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    entries = data.get("entries")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _answer(action: str | None, data: dict[str, Any], clock: Clock) -> str:
    label = quoted(data.get("task_id"), data.get("title"))
    entries = _entries(data)
    if action is None:
        return _story(label, entries, clock)
    matching = [e for e in entries if _is(e, action)]
    if not matching:
        return f"I have no record of {_NOUNS[action]} {label}."
    last = matching[-1]
    answer = f"You {_VERBS[action]} {label} on {moment(last.get('at'), clock)}"
    undone = _undone_since(action, entries, last)
    if undone is not None:
        answer += f"; it was {_VERBS[undone[0]]} on {moment(undone[1].get('at'), clock)}"
    return answer + "."


def _is(entry: dict[str, Any], action: str) -> bool:
    """Whether the entry did `action`; an edit that also ticked the task counts as completing."""
    if entry.get("action") == action:
        return True
    changes = entry.get("changes") if isinstance(entry.get("changes"), dict) else {}
    completed = (changes or {}).get("completed")
    if entry.get("action") == "updated" and isinstance(completed, dict):
        return completed.get("to") is (action == "completed") and action in (
            "completed",
            "reopened",
        )
    return False


def _undone_since(
    action: str, entries: list[dict[str, Any]], last: dict[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """A later change that undid it: reopened after completing, restored after deleting."""
    opposite = {"completed": "reopened", "deleted": "restored"}.get(action)
    if opposite is None:
        return None
    later = [e for e in entries[entries.index(last) + 1 :] if _is(e, opposite)]
    return (opposite, later[-1]) if later else None


def _story(label: str, entries: list[dict[str, Any]], clock: Clock) -> str:
    if not entries:
        return f"I have no record of changes to {label} yet."
    shown = entries[-MAX_TOLD:]
    lines = [f"What happened to {label}:"]
    lines += [f"- {moment(e.get('at'), clock)}: {_describe(e)}" for e in shown]
    if len(entries) > len(shown):
        lines.append(f"(the latest {len(shown)} of {len(entries)} changes)")
    return "\n".join(lines)


def _describe(entry: dict[str, Any]) -> str:
    action = str(entry.get("action"))
    if action != "updated":
        return _VERBS.get(action, action)
    changes = entry.get("changes") if isinstance(entry.get("changes"), dict) else {}
    parts = []
    for field, change in (changes or {}).items():
        if field in ("completed_at",) or not isinstance(change, dict):
            continue
        if field == "title":
            parts.append(f"renamed from '{change.get('from')}' to '{change.get('to')}'")
        elif field == "completed":
            parts.append("marked done" if change.get("to") else "marked not done")
        elif field == "priority":
            parts.append(f"priority {change.get('from')} \u2192 {change.get('to')}")
        else:
            parts.append(f"{field.replace('_at', '').replace('_', ' ')} changed")
    return "changed: " + ", ".join(parts) if parts else "changed"


def moment(value: object, clock: Clock) -> str:
    """A past time in the user's zone: "Tue 1 Dec at 17:04" (with the year if not this one)."""
    if not isinstance(value, str):
        return "an unknown time"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "an unknown time"
    local = parsed.astimezone(clock.zone)
    day = f"{local:%a} {local.day} {local:%b}"
    if local.year != clock.now.year:
        day += f" {local.year}"
    return f"{day} at {local:%H:%M}"
