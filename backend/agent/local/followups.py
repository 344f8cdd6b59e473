"""Short answers to the model's own questions: "the first one", "#4", "yes"."""

from __future__ import annotations

import re
from dataclasses import replace

from backend.agent.local.acting import SERIES_QUESTION
from backend.agent.local.adds import parse_add
from backend.agent.local.dates import Clock
from backend.agent.local.history import Conversation, Turn
from backend.agent.local.intents import (
    ActIntent,
    Intent,
    ReplyIntent,
    ShowIntent,
    SkipIntent,
    SnoozeIntent,
    Target,
)
from backend.agent.local.matching import best_matches
from backend.agent.local.parsing import normalise, parse_message, strip_politeness
from backend.agent.local.replies import ADD_SUGGESTION, WHICH_ONE

_I = re.IGNORECASE
_YES = re.compile(
    r"(?:yes|yeah|yep|yup|sure|ok|okay|y|please\s+do|do\s+it|go\s+ahead|correct|right|please"
    r"|yes\s+please|sounds\s+good|add\s+it)",
    _I,
)
_NO = re.compile(r"(?:no|nope|nah|n|no\s+thanks|do\s+not|never\s*mind|cancel|forget\s+it)", _I)
_ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2,
    "fourth": 3, "4th": 3, "fifth": 4, "5th": 4, "last": -1,
}  # fmt: skip
_ORDINAL = re.compile(rf"(?:the\s+)?(?P<o>{'|'.join(_ORDINALS)})(?:\s+(?:one|task|item))?", _I)
_NUMBER = re.compile(
    r"(?:the\s+one\s+with\s+)?(?:task|item|number|no\.?|id)?\s*#?\s*(?P<n>\d{1,9})", _I
)
_BOTH = re.compile(r"(?:both(?:\s+of\s+them)?|them\s+both|the\s+two\s+of\s+them)", _I)
_ALL = re.compile(r"(?:all(?:\s+of\s+them)?|them\s+all|all\s+\w+|every\s+one)", _I)
_OCCURRENCE = re.compile(
    r"(?:just\s+|only\s+)?(?:(?:this|that|the\s+(?:current|next|first))"
    r"(?:\s+(?:one|occurrence|time|week|instance))?|one|once|the\s+one|occurrence)(?:\s+only)?",
    _I,
)
_SERIES = re.compile(
    r"(?:it\s+)?(?:all|every|each)(?:\s+of\s+them|\s+one|\s+occurrences?|\s+future\s+ones)?"
    r"|(?:the\s+)?(?:whole|entire|full)(?:\s+(?:series|thing|lot|set))?|(?:the\s+)?series"
    r"|everything|stop\s+it\s+(?:completely|altogether)",
    _I,
)
_SERIES_TASK = re.compile(r"#(?P<id>\d+) '")
_SUGGESTED = re.compile(rf'{ADD_SUGGESTION} "(?P<title>.+?)" as a task\?')
_LISTED = re.compile(r"^- #(?P<id>\d+) (?P<title>.+?)(?: \(done\))?(?: \u00b7 .*)?$", re.MULTILINE)


def followup_intents(conversation: Conversation, clock: Clock) -> list[Intent] | None:
    last = conversation.last_turn
    if last is None:
        return None
    answer = strip_politeness(normalise(conversation.user_text)).strip(" .!?")
    suggested = _SUGGESTED.search(last.reply)
    if suggested:
        if _YES.fullmatch(answer):
            return parse_add(f"add {suggested.group('title')}", clock)
        if _NO.fullmatch(answer):
            return [ReplyIntent("declined")]
    if SERIES_QUESTION in last.reply:
        scope = _scope(answer)
        task = _SERIES_TASK.search(last.reply)
        if scope and task:
            target = Target(ids=(int(task.group("id")),))
            return [ActIntent("delete", target, {"scope": scope})]
    if WHICH_ONE in last.reply:
        chosen = _choice(answer, last.reply)
        if chosen:
            return _retarget(last, chosen, clock)
    return None


def _scope(answer: str) -> str | None:
    cleaned = re.sub(r"^(?:delete|remove)\s+", "", answer, flags=_I).strip()
    if _SERIES.fullmatch(cleaned):
        return "series"
    if _OCCURRENCE.fullmatch(cleaned):
        return "occurrence"
    return None


def _choice(answer: str, reply: str) -> tuple[int, ...]:
    listed = [(int(m.group("id")), m.group("title")) for m in _LISTED.finditer(reply)]
    ids = [task_id for task_id, _ in listed]
    if not ids:
        return ()
    if _ALL.fullmatch(answer) or (_BOTH.fullmatch(answer) and len(ids) == 2):
        return tuple(ids)
    ordinal = _ORDINAL.fullmatch(answer)
    if ordinal:
        index = _ORDINALS[ordinal.group("o").lower()]
        return (ids[index],) if index < len(ids) else ()
    number = _NUMBER.fullmatch(answer)
    if number:
        n = int(number.group("n"))
        if n in ids:
            return (n,)
        return (ids[n - 1],) if 1 <= n <= len(ids) else ()
    titled = best_matches([{"id": i, "title": t} for i, t in listed], answer)
    return (titled[0]["id"],) if len(titled) == 1 else ()


def _retarget(turn: Turn, chosen: tuple[int, ...], clock: Clock) -> list[Intent] | None:
    """The request that asked "which one?", now aimed at the chosen task(s)."""
    for intent in parse_message(turn.user_text, clock):
        if isinstance(intent, ActIntent | ShowIntent | SkipIntent) and not intent.target.ids:
            return [replace(intent, target=Target(ids=chosen))]
        if isinstance(intent, SnoozeIntent):
            return [replace(intent, target=Target(ids=chosen))]
    return None
