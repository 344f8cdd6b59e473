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
# action: the verbs that ask about it (any tense), then the verb and the noun that answer.
_ACTIONS = {
    "completed": (
        r"finish|complete|do|done|(?:tick|check|cross)\w*\s+off", "completed", "completing"
    ),
    "created": (r"add|create|make|made|set\s+up|enter", "added", "adding"),
    "deleted": (r"delete|remove", "deleted", "deleting"),
    "reopened": (r"reopen|undo|uncheck", "reopened", "reopening"),
    "restored": (r"restore|undelete", "restored", "restoring"),
    "updated": (r"change|edit|update|rename", "changed", "changing"),
}  # fmt: skip
_VERB = "|".join(rf"(?P<{a}>(?:{verbs})(?:e?d)?)" for a, (verbs, _, _) in _ACTIONS.items())
_ASKED = [  # "when did I finish X", "when was X added", "when did I mark X done"
    re.compile(rf"{_DID}(?:{_VERB})\s+{_TASK}", _I),
    re.compile(rf"when\s+(?:was|were)\s+{_TASK}\s+(?:{_VERB})", _I),
    re.compile(rf"{_DID}mark(?:ed)?\s+{_TASK}\s+(?:as\s+)?(?P<completed>done|completed?)", _I),
]
_STORY = re.compile(
    r"(?:what\s+(?:has\s+)?happened\s+(?:to|with)|(?:(?:show|give|tell)\s+(?:me\s+)?(?:the\s+)?)?"
    r"(?:history|changes|log|activity|timeline)\s+(?:of|for|on)|what\s+(?:changes\s+)?did\s+(?:i|we)"
    rf"\s+(?:make|do)\s+(?:to|on|with))\s+{_TASK}",
    _I,
)


def parse_history(clause: str) -> HistoryIntent | None:
    """A question about a task's past, or None."""
    for pattern in _ASKED:
        match = pattern.fullmatch(clause)
        if match:
            action = next(a for a in _ACTIONS if match.groupdict().get(a))
            return HistoryIntent(parse_target(match.group("t")), action)
    match = _STORY.fullmatch(clause)
    return HistoryIntent(parse_target(match.group("t"))) if match else None


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


def _answer(action: str | None, data: dict[str, Any], clock: Clock) -> str:
    label = quoted(data.get("task_id"), data.get("title"))
    listed = data.get("entries")
    entries = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    if action is None:
        return _story(label, entries, clock)
    matching = [e for e in entries if _is(e, action)]
    if not matching:
        return f"I have no record of {_ACTIONS[action][2]} {label}."
    last = matching[-1]
    answer = f"You {_ACTIONS[action][1]} {label} on {moment(last.get('at'), clock)}"
    # A later change that undid it: reopened after completing, restored after deleting.
    opposite = {"completed": "reopened", "deleted": "restored"}.get(action)
    undone = [e for e in entries[entries.index(last) + 1 :] if opposite and _is(e, opposite)]
    if opposite and undone:
        answer += f"; it was {_ACTIONS[opposite][1]} on {moment(undone[-1].get('at'), clock)}"
    return answer + "."


def _is(entry: dict[str, Any], action: str) -> bool:
    """Whether the entry did `action`; an edit that also ticked the task counts as completing."""
    if entry.get("action") == action:
        return True
    changes = entry.get("changes")
    completed = changes.get("completed") if isinstance(changes, dict) else None
    ticking = entry.get("action") == "updated" and action in ("completed", "reopened")
    return (
        ticking and isinstance(completed, dict) and completed.get("to") is (action == "completed")
    )


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
        return _ACTIONS[action][1] if action in _ACTIONS else action
    changes = entry.get("changes") if isinstance(entry.get("changes"), dict) else {}
    parts = []
    for field, change in (changes or {}).items():
        if field == "completed_at" or not isinstance(change, dict):
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
