"""The local model's words: confirmations, task lists, questions and help."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from backend.agent.local.dates import END_OF_DAY, Clock
from backend.agent.local.history import ToolResult
from backend.agent.local.intents import ListIntent, ReplyKind
from backend.agent.local.repeats import describe_repeat

WHICH_ONE = "Which one do you mean?"
ADD_SUGGESTION = "Should I add"
MAX_LISTED = 20

HELP = """I'm the built-in offline assistant. I can manage your tasks:
- add: "remind me to call mom tomorrow at 5pm", "add milk and eggs #shopping",
  "add an urgent task to pay rent every month"
- list: "what's pending?", "what's due this week?", "tasks tagged work", "find tasks about report"
- change: "mark task 3 done", "rename task 2 to Buy oat milk", "make it high priority",
  "task 4 is due friday"
- reminders and repeats: "remind me an hour before", "what reminders do I have?",
  "snooze that for 10 minutes", "water plants every Monday at 9", "skip this week's watering"
- delete and undo: "delete the meeting task", "undo", "restore task 5"
- history: "when did I finish the report?", "what happened to task 3?"
For open conversation, set OPENAI_API_KEY to use an OpenAI model."""

# Replies that quote what the user said ({text}).
_QUOTING: dict[ReplyKind, str] = {
    "unknown": (
        "I'm the built-in offline assistant, so I only understand task requests, and I didn't "
        'recognise one in "{text}". Try "add call mom tomorrow at 5pm", "what\'s pending?" or '
        '"mark task 3 done" (say "help" for more). For open conversation, set OPENAI_API_KEY.'
    ),
    "statement": (
        "I didn't change anything: \"{text}\" sounds like something you're telling me, not a new "
        'task. To tick one off, say "done" and its name; to add one, start with "add".'
    ),
    "suggest_add": f'{ADD_SUGGESTION} "{{text}}" as a task? Say "yes" or "add {{text}}".',
}

CANNED: dict[ReplyKind, str] = {
    "greeting": (
        "Hi! I'm your todo assistant. Tell me what to add, or ask \"what's pending?\". "
        'Say "help" to see what I can do.'
    ),
    "thanks": "You're welcome! Anything else?",
    "ok": "Okay! Anything else I can do?",
    "bye": "Bye! Your tasks are saved.",
    "help": HELP,
    "empty_add": 'What should the task say? For example: "add call mom tomorrow at 5pm".',
    "refuse_bulk": (
        "I change tasks one at a time, so tell me which ones by number "
        '(for example "delete tasks 3 and 4"). "what\'s pending?" shows the numbers.'
    ),
    "declined": "Okay, I won't add it.",
    "cancelled": "Okay, I've left everything as it was.",
    "too_many": "That's more than 10 tasks in one message. Please send them a few at a time.",
    "unclear_change": (
        'I didn\'t catch all of that. For example: "rename task 2 to Buy oat milk", '
        '"move task 3 to friday", "set task 4 priority to high" or "delete task 5".'
    ),
}


def canned(kind: ReplyKind, text: str = "") -> str:
    if kind not in _QUOTING:
        return CANNED[kind]
    short = text if len(text) <= 80 else text[:79] + "\u2026"
    return _QUOTING[kind].format(text=short)


def when(value: object, clock: Clock) -> str | None:
    """A due time in the user's zone ("Tue Dec 1, 5:00 PM"); end-of-day ones as a date."""
    local = local_moment(value, clock)
    if local is None:
        return None
    if local.time().replace(second=0, microsecond=0) == END_OF_DAY:
        return _day(local, clock)
    return f"{_day(local, clock)}, {_time(local)}"


def remind_time(value: object, clock: Clock) -> str | None:
    """A reminder time in the user's zone: "at 5:00 PM tomorrow", "at 9:00 AM on Mon Dec 7"."""
    local = local_moment(value, clock)
    if local is None:
        return None
    days = (local.date() - clock.today).days
    day = {0: "today", 1: "tomorrow"}.get(days) or (
        f"on {local:%A}" if 1 < days < 7 else f"on {_day(local, clock)}"
    )
    return f"at {_time(local)} {day}"


def _day(local: datetime, clock: Clock) -> str:
    year = f" {local.year}" if local.year != clock.now.year else ""
    return f"{local:%a %b} {local.day}{year}"


def _time(local: datetime) -> str:
    return f"{local.hour % 12 or 12}:{local:%M} {'AM' if local.hour < 12 else 'PM'}"


def next_due(data: dict[str, Any], clock: Clock) -> str:
    """ " The next one is due Mon Dec 7, 9:00 AM." after a repeating task is done or skipped."""
    due = when(data.get("next_due_at"), clock)
    if due:
        return f" The next one is due {due}."
    if data.get("next_task_id"):
        return f" The next one is #{data['next_task_id']}."
    return ""


def duration(minutes: int) -> str:
    """60 -> "an hour", 90 -> "90 minutes", 1440 -> "a day"."""
    for size, one, many in ((1440, "a day", "days"), (60, "an hour", "hours")):
        if minutes % size == 0 and minutes >= size:
            count = minutes // size
            return one if count == 1 else f"{count} {many}"
    return "a minute" if minutes == 1 else f"{minutes} minutes"


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def local_moment(value: object, clock: Clock) -> datetime | None:
    moment = _as_datetime(value)
    return moment.astimezone(clock.zone) if moment else None


def now_text(clock: Clock) -> str:
    return f"It's {clock.now:%A, %B} {clock.now.day}, {_time(clock.now)} ({clock.zone.key})."


def quoted(task_id: object, title: object) -> str:
    return f"#{task_id} '{title}'"


def added(result: ToolResult, clock: Clock) -> str:
    if not result.ok or result.data is None:
        title = result.arguments.get("title", "that task")
        return f"I couldn't add '{title}': {error_text(result)}"
    data = result.data
    details = _details(data, clock)
    line = f"Added task #{data.get('task_id', data.get('id'))}: {data.get('title')}{details}."
    reminder = remind_time(data.get("remind_at"), clock)
    before = data.get("remind_before_minutes")
    if isinstance(before, int) and before > 0:
        at = f", {reminder}" if reminder else ""
        line += f" I'll remind you {duration(before)} before{at}."
    elif reminder:
        line += f" I'll remind you {reminder}."
    return line


def _details(data: dict[str, Any], clock: Clock) -> str:
    parts: list[str] = []
    due = when(data.get("due_at"), clock)
    if due:
        parts.append(f"due {due}")
    if data.get("priority") not in (None, "medium"):
        parts.append("urgent" if data["priority"] == "urgent" else f"{data['priority']} priority")
    tags = data.get("tags") or []
    if tags:
        parts.append(" ".join(f"#{t}" for t in tags))
    repeat = describe_repeat(data.get("recurrence"))
    if repeat:
        parts.append(f"repeats {repeat}")
    return f" \u2014 {', '.join(parts)}" if parts else ""


def error_text(result: ToolResult) -> str:
    return result.error or "the tool gave no result"


def not_found(result: ToolResult) -> str | None:
    match = re.search(r"Task (\d+) not found", result.error or "")
    return f"I couldn't find task {match.group(1)}." if match else None


def task_line(task: dict[str, Any], clock: Clock, *, show_status: bool = True) -> str:
    parts = [f"#{task.get('id')} {task.get('title')}"]
    if show_status and task.get("completed"):
        parts[0] += " (done)"
    due = when(task.get("due_at"), clock)
    if due:
        late = (
            not task.get("completed")
            and (_as_datetime(task.get("due_at")) or clock.now) < clock.now
        )
        parts.append(f"due {due}" + (" (overdue)" if late else ""))
    if task.get("priority") not in (None, "medium"):
        parts.append(str(task["priority"]))
    tags = task.get("tags") or []
    if tags:
        parts.append(" ".join(f"#{t}" for t in tags))
    return "- " + " \u00b7 ".join(parts)


def task_details(task: dict[str, Any], clock: Clock) -> str:
    status = "done" if task.get("completed") else "pending"
    details = _details(task, clock).replace(" \u2014", ",")
    lines = [f"#{task.get('id')} {task.get('title')} \u2014 {status}{details}."]
    if task.get("description"):
        lines.append(f"Notes: {task['description']}")
    return "\n".join(lines)


def listing(intent: ListIntent, result: ToolResult, clock: Clock) -> str:
    if not result.ok or result.data is None:
        return f"I couldn't list your tasks: {error_text(result)}"
    tasks = result.tasks()
    total = result.data.get("total", len(tasks))
    total = total if isinstance(total, int) else len(tasks)
    noun = " ".join([*intent.adjectives, "task" if total == 1 else "tasks", *intent.qualifiers])
    if total == 0:
        return f"You have no {noun}."
    if intent.count_only:
        return f"You have {total} {noun}."
    show_status = intent.arguments.get("status") == "all"
    lines = [f"You have {total} {noun}:"]
    lines += [task_line(t, clock, show_status=show_status) for t in tasks[:MAX_LISTED]]
    if total > min(len(tasks), MAX_LISTED):
        lines.append(f"(showing {min(len(tasks), MAX_LISTED)} of {total})")
    return "\n".join(lines)


def which_one(tasks: list[dict[str, Any]], clock: Clock, lead: str) -> str:
    lines = [f"{lead} {WHICH_ONE}"]
    lines += [task_line(t, clock) for t in tasks[:MAX_LISTED]]
    lines.append('Reply with its number, e.g. "the first one" or "#' + f'{tasks[0].get("id")}".')
    return "\n".join(lines)
