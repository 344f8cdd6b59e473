"""Reminders and repeats in chat: "what reminders do I have?", "snooze that for 10 minutes",
"remind me an hour before", "skip this week's watering".

A reminder that fires leaves an assistant message "⏰ Reminder: <title> — due 5:00 PM" in the
conversation; "snooze that" means the task of the latest such message.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from backend.agent.local.acting import resolve
from backend.agent.local.actions import parse_target
from backend.agent.local.dates import Clock, parse_when
from backend.agent.local.history import Conversation, ToolResult
from backend.agent.local.intents import (
    ActIntent,
    Intent,
    RemindersIntent,
    SkipIntent,
    SnoozeIntent,
    Target,
)
from backend.agent.local.replies import error_text, next_due, not_found, quoted, remind_time, when
from backend.agent.local.steps import Call, Env, Finish, Outcome, Script

_I = re.IGNORECASE
DEFAULT_SNOOZE_MINUTES = 10
LATER_MINUTES = 60
MAX_LISTED = 20
_REMINDER_LINE = re.compile(
    r"^\u23f0 Reminder: (?P<title>.+?)(?: \u2014 due .*?)?(?: \(late: .*\))?$", re.MULTILINE
)
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty five": 45, "a couple of": 2, "a few": 3,
}  # fmt: skip
_WORDS = "|".join(sorted((n.replace(" ", r"[\s-]") for n in _NUMBERS), key=len, reverse=True))
_AMOUNT = rf"(?:half\s+an|{_WORDS}|\d{{1,4}})"
_UNIT = r"(?:minutes?|mins?|m|hours?|hrs?|h|days?|weeks?)"
_SPAN = rf"(?P<amt>{_AMOUNT})\s*(?P<unit>{_UNIT})"
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 10080}

# Only question words around "reminders": "what reminders do I have?", "any reminders set?".
_LIST = re.compile(
    r"(?:(?:what|which|show|list|see|view|display|give|tell|check|me|are|is|all|of|my|the|upcoming"
    r"|current|active|pending|do|i|have|got|any|there)\s+)*reminders?(?:\s+(?:do|have|did|i|got"
    r"|set|are|coming|up))*",
    _I,
)
_MISSED = re.compile(
    r"(?:(?:did|have|i|any|show|list|me|my|what|reminders?|anything)\s+)*(?:miss(?:ed)?|fired"
    r"|(?:went|gone)\s+off|notifications?|(?:new|unread|missed)\s+(?:reminders?|notifications?))"
    r"(?:\s+(?:reminders?|notifications?|anything|any|a))*",
    _I,
)
_SNOOZE = re.compile(
    r"snooze(?:\s+(?P<t>.+?))??"
    rf"(?:\s+(?:for\s+|by\s+)?{_SPAN}|\s+(?:until|till|til|to|for)\s+(?P<when>.+))?",
    _I,
)
_AGAIN = re.compile(
    r"(?:remind|ask|ping|tell)\s+me(?:\s+(?:about\s+)?(?P<t>it|that|this|that\s+one|this\s+one))?"
    r"(?:\s+again(?:\s+later)?|\s+later)"
    rf"(?:\s+in\s+{_SPAN}|\s+(?:at\s+|on\s+)?(?P<when>.+))?",
    _I,
)
_IN = re.compile(rf"(?:remind|ask|ping)\s+me\s+(?:again\s+)?in\s+{_SPAN}(?P<t>)(?P<when>)", _I)
_BEFORE = re.compile(
    r"(?:remind\s+me|set\s+(?:a|the)\s+reminder|add\s+a\s+reminder)"
    r"(?:\s+(?:about|of|for)\s+(?P<t1>.+?))?"
    rf"\s+(?:(?:the\s+)?(?P<day>day|night|evening)|{_SPAN})"
    r"\s+(?:before(?:hand)?|earlier|ahead(?:\s+of\s+time)?|in\s+advance|early)"
    r"(?:\s+(?:it\s+is\s+due|the\s+deadline|its\s+due\s+time|(?P<t2>.+)))?",
    _I,
)
_SKIP = re.compile(
    r"skip(?:\s+(?P<t>.+?))?"
    r"(?:\s+(?:this|next)\s+(?:time|week|month|once|one)|\s+(?:today|tonight|tomorrow|once)"
    r"|\s+for\s+(?:now|today|this\s+week))?",
    _I,
)
_REMIND_IT_AT = re.compile(
    r"(?:remind\s+me\s+(?:about\s+|of\s+)?|set\s+a\s+reminder\s+(?:for|on)\s+)"
    r"(?P<t>it|that|this|that\s+one|this\s+one|that\s+task|this\s+task)\s+(?P<when>.+)",
    _I,
)
_DELETE_SERIES = re.compile(
    r"(?:delete|remove|cancel|drop|end)\s+(?:the\s+)?(?:whole\s+|entire\s+)?"
    r"(?:series\s+(?:of|for)\s+(?P<t1>.+)|(?P<t2>.+?)\s+series)",
    _I,
)
_SKIP_LEAD = re.compile(
    r"^(?:(?:this|next|today's|tomorrow's|tonight's|the\s+next)\s+"
    r"(?:(?:week's|month's|time's)\s+)?|(?:this|the\s+next|the\s+current)\s+occurrence\s+of\s+)",
    _I,
)


def parse_reminder(clause: str, clock: Clock) -> Intent | None:
    """A request about reminders or skipping an occurrence, or None."""
    text = clause.strip(" ,.!?")
    if _MISSED.fullmatch(text):
        return RemindersIntent(missed=True)
    if _LIST.fullmatch(text):
        return RemindersIntent()
    remind_it = _REMIND_IT_AT.fullmatch(text)
    found = parse_when(remind_it.group("when"), clock) if remind_it else None
    if remind_it and found is not None:
        remind_at = found.value.isoformat(timespec="seconds")
        return ActIntent("update", parse_target(remind_it.group("t")), {"remind_at": remind_at})
    series = _DELETE_SERIES.fullmatch(text)
    if series:
        words = series.group("t1") or series.group("t2")
        words = re.sub(r"^(?:the\s+)?(?:whole|entire)$", "it", words.strip(), flags=_I)
        return ActIntent("delete", parse_target(words), {"scope": "series"})
    before = _BEFORE.fullmatch(text)
    if before:
        minutes = 1440 if before.group("day") else _minutes(before)
        words = before.group("t1") or before.group("t2") or "it"
        return ActIntent("update", parse_target(words), {"remind_before_minutes": minutes})
    snooze = _SNOOZE.fullmatch(text) or _AGAIN.fullmatch(text) or _IN.fullmatch(text)
    if snooze:
        return _snooze(snooze, clock)
    skip = _SKIP.fullmatch(text)
    if skip:
        words = _SKIP_LEAD.sub("", (skip.group("t") or "").strip())
        if re.fullmatch(r"(?:this|next)\s+(?:time|week|month|once|one)|", words, _I):
            words = "it"
        return SkipIntent(parse_target(words))
    return None


def _minutes(match: re.Match[str]) -> int:
    amount = re.sub(r"\s+", " ", match.group("amt").lower())
    unit = match.group("unit").lower()
    if amount == "half an":
        return 30
    count = int(amount) if amount.isdigit() else _NUMBERS.get(amount.replace("-", " "), 1)
    return count * _UNIT_MINUTES.get(unit[0], 1)


def _snooze(match: re.Match[str], clock: Clock) -> SnoozeIntent | None:
    words = match.group("t")
    target = parse_target(words) if words else None
    if match.group("amt"):
        return SnoozeIntent(target, minutes=_minutes(match))
    said = match.group("when")
    if said:
        if re.fullmatch(r"later(?:\s+on)?|in\s+a\s+bit|in\s+a\s+while", said.strip(), _I):
            return SnoozeIntent(target, minutes=LATER_MINUTES)
        found = parse_when(said, clock)
        if found is None or found.value <= clock.now:
            return None
        return SnoozeIntent(target, until=found.value.isoformat(timespec="seconds"))
    later = re.search(r"\blater\b", match.group(0), _I)
    return SnoozeIntent(target, minutes=LATER_MINUTES if later else DEFAULT_SNOOZE_MINUTES)


def latest_reminder(conversation: Conversation) -> str | None:
    """The task title of the latest "⏰ Reminder" note in the conversation."""
    for turn in reversed(conversation.earlier):
        found = list(_REMINDER_LINE.finditer(turn.reply))
        if found:
            return found[-1].group("title").strip()
    return None


# --- running them -----------------------------------------------------------------------------


def run_reminders(intent: RemindersIntent, script: Script, env: Env) -> Outcome:
    if intent.missed:
        return _missed(script.call("list_notifications", unread_only=True, limit=10), env.clock)
    result = script.call("list_tasks", has_reminder=True, sort="remind_at")
    if not result.ok:
        return Outcome([f"I couldn't look up your reminders: {error_text(result)}"])
    tasks = result.tasks()
    if not tasks:
        return Outcome(
            ['You have no reminders coming up. Say "remind me to ... at 5pm" to set one.']
        )
    noun = "reminder" if len(tasks) == 1 else "reminders"
    lines = [f"You have {len(tasks)} {noun} coming up:"]
    for task in tasks[:MAX_LISTED]:
        moment = remind_time(task.get("remind_at"), env.clock) or "soon"
        lines.append(f"- #{task.get('id')} {task.get('title')} \u00b7 {moment}")
    return Outcome(["\n".join(lines)], tasks)


def _missed(result: ToolResult, clock: Clock) -> Outcome:
    if not result.ok or result.data is None:
        return Outcome([f"I couldn't look up your reminders: {error_text(result)}"])
    rows = result.data.get("notifications")
    fired = [n for n in rows if isinstance(n, dict)] if isinstance(rows, list) else []
    if not fired:
        return Outcome(["No, you haven't missed any reminders."])
    noun = "reminder" if len(fired) == 1 else "reminders"
    lines = [f"You have {len(fired)} {noun} you haven't seen:"]
    for row in fired:
        went = remind_time(row.get("fired_at"), clock) or "earlier"
        due = when(row.get("due_at"), clock)
        lines.append(
            f"- {row.get('title')} \u00b7 went off {went}" + (f" (due {due})" if due else "")
        )
    tasks = [{"id": n.get("task_id"), "title": n.get("title")} for n in fired]
    return Outcome(["\n".join(lines)], tasks)


def run_snooze(intent: SnoozeIntent, script: Script, env: Env) -> Outcome:
    task = _snoozed_task(intent, script, env)
    later = env.clock.now + timedelta(minutes=intent.minutes or DEFAULT_SNOOZE_MINUTES)
    remind_at = intent.until or later.isoformat(timespec="seconds")
    result = script.call("snooze_reminder", task_id=task["id"], until=remind_at)
    if not result.ok or result.data is None:
        return Outcome([not_found(result) or f"I couldn't snooze it: {error_text(result)}"])
    label = quoted(result.data.get("id"), result.data.get("title"))
    moment = remind_time(remind_at, env.clock)
    return Outcome(
        [f"Snoozed {label}: I'll remind you again {moment}."],
        [{"id": task["id"], "title": result.data.get("title")}],
    )


def _snoozed_task(intent: SnoozeIntent, script: Script, env: Env) -> dict[str, Any]:
    target = intent.target
    if target is None or not (target.ids or target.words):
        title = latest_reminder(env.conversation)
        target = Target(words=title) if title else None
    if target is not None:
        return resolve("snooze", target, script, env)[0]
    result = script.call("list_notifications", limit=1)
    rows = (result.data or {}).get("notifications") if result.ok else None
    latest = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
    if latest is None or not isinstance(latest.get("task_id"), int):
        raise Finish(
            "I don't see a reminder to snooze. To set one, say "
            '"remind me to ... at 5pm" or "remind me an hour before".'
        )
    return {"id": latest["task_id"], "title": latest.get("title")}


def run_skip(intent: SkipIntent, script: Script, env: Env) -> Outcome:
    tasks = resolve("skip", intent.target, script, env)
    results = script.batch([Call("skip_occurrence", {"task_id": t["id"]}) for t in tasks])
    lines = []
    for result in results:
        if not result.ok or result.data is None:
            task_id = result.arguments.get("task_id")
            reason = error_text(result)
            lines.append(not_found(result) or f"I couldn't skip #{task_id}: {reason}")
            continue
        label = quoted(result.data.get("task_id"), result.data.get("title"))
        lines.append(f"Skipped {label} this time.{next_due(result.data, env.clock)}")
    touched = [
        {"id": r.data.get("next_task_id") or r.data.get("task_id"), "title": r.data.get("title")}
        for r in results
        if r.ok and r.data is not None
    ]
    return Outcome(lines, touched)
