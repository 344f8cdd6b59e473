"""Short answers to the model's own questions: "the first one", "#4", "yes"."""

from __future__ import annotations

import re
from dataclasses import replace

from backend.agent.local.acting import SERIES_QUESTION
from backend.agent.local.actions import parse_target, repeat_or_due
from backend.agent.local.adds import capitalised, parse_add
from backend.agent.local.dates import Clock
from backend.agent.local.history import Conversation, Turn, listed
from backend.agent.local.intents import (
    ActIntent,
    AddIntent,
    Intent,
    ListIntent,
    ReplyIntent,
    ShowIntent,
    SkipIntent,
    SnoozeIntent,
    Target,
    UndoIntent,
)
from backend.agent.local.matching import UNSURE, best_matches, positions, score
from backend.agent.local.parsing import normalise, parse_message, small_talk, strip_politeness
from backend.agent.local.replies import ADD_SUGGESTION, WHICH_ONE, canned

_I = re.IGNORECASE
_YES = re.compile(
    r"(?:yes|yeah|yep|yup|sure|ok|okay|y|please\s+do|do\s+it|go\s+ahead|correct|right|please"
    r"|yes\s+please|sounds\s+good|add\s+it)",
    _I,
)
_NO = re.compile(
    r"(?:(?:no|nope|nah|n|no\s+thanks|do\s+not|never\s*mind|cancel|forget\s+(?:it|that|about\s+it)"
    r"|skip\s+it|not\s+now|leave\s+it|nvm|idk|dunno|huh|whatever|stop|hold\s+on|wait|hmm+"
    r"|um+|no\s+idea|not\s+sure|i\s+do\s+not\s+know|neither|none|eh|good\s+question"
    r"|(?:sorry\s+)?wrong\s+button|sorry|you\s+pick|whatever\s+you\s+think|the\s+other\s+one"
    r"|the\s+one\b.*)[\s,.!?]*)+",
    _I,
)
_NUMBER = re.compile(
    r"(?:the\s+one\s+with\s+)?(?:task|item|number|no\.?|id)?\s*#?\s*(?P<n>\d{1,9})", _I
)
_BOTH = re.compile(r"(?:both(?:\s+of\s+them)?|them\s+both|the\s+two\s+of\s+them)", _I)
_ALL = re.compile(
    r"(?:all(?:\s+of\s+them)?|them\s+all|all\s+(?:two|three|four|five|\d+)(?:\s+of\s+them)?"
    r"|every\s+one(?:\s+of\s+them)?)",
    _I,
)
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
_MEANT = re.compile(r"Did you mean #(?P<id>\d+) '")
_OOPS = r"(?:(?:oh|oops|whoops|sorry|no|wait|hmm|ah|ugh|actually)\b[\s,.!]*)*"
# "sorry, I meant thursday", "bread not milk", "at 3:30pm", "due the 22nd": the request
# just made, again with the thing said now.
_CORRECTION = re.compile(
    rf"{_OOPS}(?:(?:i\s+meant?|make\s+that|or\s+rather)\b[\s,]*)?(?:due\s+)?(?P<a>.+?)"
    r"(?:,?\s+not\s+(?:the\s+)?\w+(?:\s+\w+)?|\s+instead(?:\s+of\s+.+)?)?",
    _I,
)
# "not yet actually", "didn't mean to tick that off": the change just made was a slip.
_SLIP = re.compile(
    rf"{_OOPS}(?:not\s+(?:yet|done(?:\s+yet)?)|(?:i\s+)?did\s+not\s+mean\s+(?:that|it|to"
    r"(?:\s+\w+(?:\s+(?:it|that|this)(?:\s+one)?)?(?:\s+off)?)?)|that\s+was\s+a\s+mistake"
    r"|my\s+(?:mistake|bad))(?:\s+actually)?",
    _I,
)
_NOTE = re.compile(r"(?:add\s+(?:a\s+)?note|note|notes?)\s*(?:that\s+|:\s*|saying\s+)(?P<v>.+)", _I)
# "call sara without the h": how a word is spelt, after the word
_SPELLING = re.compile(r"\s+(?:with|without)\s+(?:the|an?|one|two|double)\s+\w{1,2}$", _I)
# "and the laundry as well": the previous request again, about other tasks
_ALSO = re.compile(
    r"(?:(?:and|also|same\s+(?:for|with))\s+(?P<a>.+?)(?:\s+(?:as\s+well|too|also))?"
    r"|(?P<b>.+?)\s+(?:as\s+well|too))[\s.!?]*",
    _I,
)


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
    if last.reply == canned("empty_add"):  # "What should the task say?"
        if _NO.fullmatch(answer):
            return [ReplyIntent("declined")]
        if small_talk(answer) is None and _not_a_request(answer, clock):  # "oat milk"
            return parse_add(f"add {answer}", clock)
    if SERIES_QUESTION in last.reply:
        scope = _scope(answer)
        task = _SERIES_TASK.search(last.reply)
        if scope and task:
            target = Target(ids=(int(task.group("id")),))
            return [ActIntent("delete", target, {"scope": scope})]
    meant = _MEANT.search(last.reply)
    if meant and _YES.fullmatch(answer):
        return _retarget(last, (int(meant.group("id")),), clock)
    if WHICH_ONE in last.reply:
        chosen = _choice(answer, last.reply)
        if chosen:
            return _retarget(last, chosen, clock)
    said = normalise(conversation.user_text).strip(" .!")
    wrote = {r.name for r in last.results if r.ok}
    note = _NOTE.fullmatch(answer)
    if note and wrote & {"add_task", "update_task"}:  # "oh and note that the viewing is at 2"
        return [ActIntent("update", Target(pronoun="one"), {"description": note.group("v")})]
    if _SLIP.fullmatch(said) and wrote & {"complete_task", "delete_task", "update_task"}:
        return [UndoIntent()]
    return _corrected(said, last, wrote, clock) or _again(conversation, clock)


def _corrected(said: str, last: Turn, wrote: set[str], clock: Clock) -> list[Intent] | None:
    """Just after adding or changing a task, a new day or time alone changes it again ("at
    3:30pm", "actually sunday evening"); just after ticking one off or deleting it, "I meant
    bread not milk" undoes that and does it to the other task."""
    match = _CORRECTION.fullmatch(said)
    if not match or not wrote:
        return None
    meant = match.group("a").strip(" ,.!")
    if wrote & {"add_task", "update_task"}:
        changes = repeat_or_due(meant, clock)
        if changes:
            return [ActIntent("update", Target(pronoun="one"), changes)]
    told = match.group(0) != meant and _not_a_request(meant, clock)  # "bread", not "show all"
    added = [r.title() for r in last.results if r.ok and r.name == "add_task"]
    title = _SPELLING.sub("", meant)
    if told and len(added) == 1 and score(title, added[0] or "") >= UNSURE:  # "I meant sara"
        return [ActIntent("update", Target(pronoun="one"), {"title": capitalised(title)})]
    target = parse_target(meant)
    vague = (target.words or "").casefold() in {"other", "another", "different", "other task"}
    if told and not vague and wrote & {"complete_task", "delete_task"}:  # undo only for a named one
        again = _retarget(last, target, clock)
        return [UndoIntent(), *again] if again else None
    return None


def _again(conversation: Conversation, clock: Clock) -> list[Intent] | None:
    """ "and the laundry as well" after "mark the dishes done": done too; "add bread too"
    after adding milk to a list: added the same way."""
    also = _ALSO.fullmatch(normalise(conversation.user_text).strip())
    words = also and (also.group("a") or also.group("b"))
    if not words or len(words.split()) > 6 or re.fullmatch(r"me|you|us|same", words, _I):
        return None
    adding = re.match(r"(?:add|put)\s+", words, _I)
    words = words[adding.end() :] if adding else words
    if not _not_a_request(words, clock):  # "the laundry" alone means nothing; "add milk" does
        return None
    for turn in reversed(conversation.earlier[-3:]):
        if not _ALSO.fullmatch(turn.user_text.strip()):
            again = _retarget(turn, parse_target(words), clock) or []
            same = not adding or all(isinstance(i, AddIntent) for i in again)
            return again if again and same else None
    return None


def _not_a_request(text: str, clock: Clock) -> bool:
    alone = parse_message(text, clock)
    return len(alone) == 1 and isinstance(alone[0], ReplyIntent) and alone[0].kind == "suggest_add"


def _scope(answer: str) -> str | None:
    cleaned = re.sub(r"^(?:delete|remove)\s+", "", answer, flags=_I).strip()
    if _SERIES.fullmatch(cleaned):
        return "series"
    if _OCCURRENCE.fullmatch(cleaned):
        return "occurrence"
    return None


def _choice(answer: str, reply: str) -> tuple[int, ...]:
    shown = listed(reply)
    ids = [t["id"] for t in shown]
    if not ids:
        return ()
    if _ALL.fullmatch(answer) or (_BOTH.fullmatch(answer) and len(ids) == 2):
        return tuple(ids)
    places = positions(answer)
    if places:
        return tuple(ids[p] for p in places if -len(ids) <= p < len(ids))
    number = _NUMBER.fullmatch(answer)
    if number:
        n = int(number.group("n"))
        if n in ids:
            return (n,)
        return (ids[n - 1],) if 1 <= n <= len(ids) else ()
    titled = best_matches(shown, answer)
    return (titled[0]["id"],) if len(titled) == 1 else ()


def _retarget(turn: Turn, chosen: tuple[int, ...] | Target, clock: Clock) -> list[Intent] | None:
    """The request that asked "which one?", now aimed at the chosen task(s); an add or a list
    said again with other words ("and eggs too", "and home?"): the same kind, same details."""
    target = chosen if isinstance(chosen, Target) else Target(ids=chosen)
    for intent in parse_message(turn.user_text, clock):
        if isinstance(intent, AddIntent) and target.words:
            adds = parse_add(f"add {target.words}", clock) or []
            fields = intent.fields
            return [
                replace(a, fields={**fields, **a.fields}) for a in adds if isinstance(a, AddIntent)
            ]
        if isinstance(intent, ListIntent) and target.words:
            return _listed_again(turn.user_text, intent, target.words, clock)
        if isinstance(intent, ActIntent | ShowIntent | SkipIntent | SnoozeIntent) and (
            isinstance(chosen, Target) or not (intent.target and intent.target.ids)
        ):
            return [replace(intent, target=target)]
    return None


def _listed_again(said: str, intent: ListIntent, words: str, clock: Clock) -> list[Intent] | None:
    """ "and home?" after "show my work tasks": the same list with the other tag."""
    tags = intent.arguments.get("tags") or []
    old = next((t for t in tags if re.search(rf"\b{re.escape(t)}\b", said, _I)), None)
    if old is None:
        return None
    again = re.sub(rf"\b{re.escape(old)}\b", words, said, count=1, flags=_I)
    found = parse_message(again, clock)
    return found if all(isinstance(i, ListIntent) for i in found) else None
