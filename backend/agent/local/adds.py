"""New tasks: the title and, taken out of it, the priority, #tags, due date and repeat rule."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, time
from typing import Any

from backend.agent.local.dates import DATE_PHRASE, END_OF_DAY, Clock, find_due, parse_when
from backend.agent.local.intents import AddIntent, Intent, ReplyIntent
from backend.agent.local.repeats import REPEAT_PHRASE, find_repeat

_I = re.IGNORECASE
_KIND = r"(?:tasks?|todos?|to-dos?|to\s+dos?|items?|reminders?|entry|entries)"
_ADJ = (
    r"(?:(?:very|really|super)\s+)?"
    r"(?:urgent|important|high[\s-]priority|low[\s-]priority|quick|new)"
)
# "(?P<many>)" marks the patterns where "X and Y" means two tasks.
_PREFIXES = (
    rf"(?:add|create|make|new|put|insert|jot\s+down|write\s+down|note\s+down|log|set\s+up)"
    rf"\s+(?:me\s+)?(?:(?:a|an|the|one|another|some)\s+)?(?P<adj>(?:{_ADJ}\s+)*)"
    rf"(?P<kind>{_KIND})\b\s*[:,-]?\s*"
    r"(?:(?:to|for|called|named|titled|saying|that\s+says|about|of)\s+)?(?P<rest>.*)",
    r"(?:add?|adding|create|put|jot\s+down|write\s+down|note\s+down|log|stick|pop|schedule|plan)"
    r"\s*[:-]?\s+(?P<many>)(?P<rest>.+)",
    r"(?:remind\s+me|set\s+a\s+reminder|reminder|remember)\s*[:,-]?\s*"
    r"(?:to\s+|about\s+|that\s+|of\s+)?(?P<rest>.+)",
    r"(?:i\s+|we\s+)?(?:really\s+|also\s+|still\s+|definitely\s+)?"
    r"(?:need|have|gotta|got|must|should|want|ought)\b\s*(?:to\s+)?"
    r"(?:remember\s+to\s+|not\s+forget\s+to\s+)?(?P<rest>.+)",
    r"(?:do\s+not|dont)\s+(?:let\s+me\s+)?forget\s+(?:to\s+|about\s+)?(?P<rest>.+)",
    r"(?:new\s+)?(?:todo|to-do|to\s+do|task|reminder)\s*:\s*(?P<many>)(?P<rest>.+)",
    r"(?:note\s+to\s+self|memo|reminder\s+to\s+self)\s*[:,-]?\s*(?:to\s+)?(?P<rest>.+)",
)
_QUOTED = re.compile(r"\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)")
_TAGS = tuple(
    re.compile(pattern, _I)
    for pattern in (  # "tag it work", "file it under work", "#work", "on my work list"
        r"\s*(?:,\s*)?(?:\band\s+)?\b(?:tagged(?:\s+(?:as|with))?|with\s+(?:the\s+)?(?:tags?|label)"
        r"|labell?ed(?:\s+as)?|(?:tag|label|file|put)\s+(?:it|this|that)(?:\s+(?:as|with|under|in))?"
        r"|under(?:\s+the\s+tag|(?=\s+\w+$)))\s+#?(?P<tag>[a-z][\w-]{0,31})(?:\s+tag)?\b",
        r"(?<![\w&#])#(?P<tag>[a-z][\w-]{0,31})\b",
        r"\s+(?:to|on|onto|in|into)\s+(?:my|the|our)\s+(?:(?P<tag>[a-z][\w-]{0,31})\s+)?"
        r"(?:list|tasks|todos?|to-dos?|to-do\s+list|todo\s+list)\b",
    )
)
MAX_ADDS = 10  # new tasks in one message; more is more likely a paste than a request
_PRIORITY_WORDS = (
    r"(?P<p>urgent(?:ly)?|asap|as\s+soon\s+as\s+possible|critical|top[\s-]priority|important"
    r"|(?:high|low|medium|normal)[\s-]prio(?:rity)?|not\s+(?:urgent|important)|whenever"
    r"|no\s+(?:rush|hurry))"
)
_PRIORITY = re.compile(
    r"(?:\s*(?:,\s*)?(?:and\s+)?\b(?:it(?:'s|\s+is)|this\s+is|that(?:'s|\s+is)|make\s+it|mark\s+it"
    r"(?:\s+as)?|set\s+as|as|with|at)\s+)?(?:(?<=\s)|^)(?:an?\s+)?"
    r"(?:(?:very|really|super|extremely|quite|pretty|fairly|rather|kind\s+of|sort\s+of|a\s+bit)\s+)?"
    rf"{_PRIORITY_WORDS}(?:\s+priority)?(?:\s+(?:really|honestly|though|is\s+fine|is\s+ok(?:ay)?))?\b"
    r"|\s*(?:,\s*)?(?:with\s+)?priority\s*(?::|=|is|of)?\s*(?P<p2>urgent|high|low|medium|normal)\b",
    _I,
)
_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+(?:and|&|plus)\s+", _I)
_LEADING = re.compile(
    r"^(?:to|that|about|for|and|also|then|please|task\s+to|called|named|titled|a|an)\s+",
    _I,
)
_TRAILING = re.compile(
    r"\s+(?:by|on|at|for|due|before|until|and|to|with|from|please|also|then|is|are|it\s+is"
    r"|this\s+is|too|as\s+well)$",
    _I,
)


def priority_of(word: str) -> str:
    lowered = re.sub(r"[\s-]+", " ", word.lower())
    if lowered.startswith(("urgent", "asap", "as soon", "critical", "top")):
        return "urgent"
    if lowered.startswith(("low", "not ", "no ", "whenever")):
        return "low"
    if lowered.startswith(("medium", "normal")):
        return "medium"
    return "high"


@dataclass
class Draft:
    text: str
    fields: dict[str, Any]


# "URGENT: need to call the bank": a priority said before the request.
_PRIORITY_FIRST = re.compile(rf"{_PRIORITY_WORDS}(?:\s+priority)?\s*[:!,-]+\s*(?P<rest>.+)", _I)
# "shopping list: add coffee beans": the list named first is a tag of what is added.
_LIST_FIRST = re.compile(
    r"(?:(?:the|our)\s+)?(?P<tag>[a-z][\w-]*)\s+list\s*[:,-]\s*(?P<rest>.+)", _I
)
# "remind me at 4pm to leave for the 5pm train": the reminder time comes first.
_REMIND_AT_FIRST = re.compile(
    r"(?:remind\s+me|set\s+a\s+reminder)\s+(?P<when>.+?)\s+(?:to|about|that)\s+(?P<rest>.+)", _I
)
_REMINDING = re.compile(r"(?:remind\s+me|set\s+a\s+reminder|reminder)\b", _I)
# A reminder for a day with no time said goes off that morning.
DAY_REMINDER_TIME = time(9, 0)


def parse_add(clause: str, clock: Clock) -> list[Intent] | None:
    """Tasks to add from a clause such as "remind me to call mom tomorrow at 5pm", or None."""
    said_first = _PRIORITY_FIRST.fullmatch(clause)
    if said_first:
        said = {"priority": priority_of(said_first.group("p"))}
        asked = parse_add(said_first.group("rest"), clock) or []
        return [
            replace(i, fields=said | i.fields) if isinstance(i, AddIntent) else i for i in asked
        ] or None
    listed = _LIST_FIRST.fullmatch(clause)
    if listed:  # read as "add coffee beans on the shopping list"
        return parse_add(f"{listed.group('rest')} on the {listed.group('tag')} list", clock)
    first = _REMIND_AT_FIRST.fullmatch(clause)
    found = parse_when(first.group("when"), clock) if first else None
    if first and found is not None:
        drafted = build_adds(Draft(first.group("rest"), {}), clock, split=False)
        remind_at = found.value.isoformat(timespec="seconds")
        return [_with_reminder(i, clock, remind_at) for i in drafted]
    intents = _parse_add(clause, clock)
    if intents is not None and _REMINDING.match(clause):
        return [_with_reminder(i, clock) for i in intents]
    return intents


def _with_reminder(intent: Intent, clock: Clock, remind_at: str | None = None) -> Intent:
    """ "Remind me to X at 5pm": a reminder at the due time (or at the time said for it)."""
    if not isinstance(intent, AddIntent) or "remind_before_minutes" in intent.fields:
        return intent
    fields = dict(intent.fields)
    if remind_at is not None:
        fields.setdefault("due_at", remind_at)
    said = remind_at or fields.get("due_at")
    if isinstance(said, str):
        moment = datetime.fromisoformat(said)
        if moment.timetz().replace(tzinfo=None) == END_OF_DAY:
            moment = clock.at(moment.date(), DAY_REMINDER_TIME)
        if moment > clock.now:
            fields["remind_at"] = moment.isoformat(timespec="seconds")
    if "remind_at" in fields:
        fields["time_zone"] = clock.zone.key
    return replace(intent, fields=fields)


def _parse_add(clause: str, clock: Clock) -> list[Intent] | None:
    for pattern in _PREFIXES:
        match = re.fullmatch(pattern, clause, _I)
        if match is None:
            continue
        groups = match.groupdict()
        draft = Draft(match.group("rest"), {})
        _priority_from(draft, groups.get("adj") or "")
        split = groups.get("many") is not None or groups.get("kind", "").lower().endswith("s")
        return build_adds(draft, clock, split=split)
    return None


def build_adds(draft: Draft, clock: Clock, *, split: bool) -> list[Intent]:
    quoted = [m.group(1) or m.group(2) for m in _QUOTED.finditer(draft.text)]
    if quoted:  # 'Title' with its details around it: the title is taken as written
        draft.text = re.sub(r"\s+", " ", _QUOTED.sub(" ", draft.text))
        _take_note(draft, clock, titled=True)
        _extract(draft, clock)
        drafts = [Draft(title, dict(draft.fields)) for title in quoted]
    else:
        _take_note(draft, clock)
        _tags_from(draft)  # modifiers are for all the items: "milk, eggs and bread, not urgent"
        if len(_PRIORITY.findall(draft.text)) == 1:  # several: each for its own item
            _priority_from(draft)
        pieces = _split_items(draft.text) if split else [draft.text]
        pieces = [p for p in pieces if not _ASIDE.match(p)] or pieces[:1]
        drafts = [Draft(piece, dict(draft.fields)) for piece in pieces]
        for item in drafts:
            _extract(item, clock)
        for item in drafts[:-1]:  # details after the last item are for all: "milk and eggs friday"
            item.fields = drafts[-1].fields | item.fields
    intents: list[Intent] = []
    for item in drafts:
        title = clean_title(item.text)
        if title:
            if "recurrence" in item.fields:  # a repeat keeps its local time in the user's zone
                item.fields["time_zone"] = clock.zone.key
            intents.append(AddIntent(title=title[:200], fields=item.fields))
    if len(intents) > MAX_ADDS:
        return [ReplyIntent("too_many")]
    return intents or [ReplyIntent("empty_add")]


_NOTE = re.compile(
    r"\s*(?:[,.;]|\s-)?\s*(?:\bwith\s+(?:the\s+|a\s+)?(?:note|description|details)\b\s*:?"
    r"|\b(?:notes?|details|description)\s*:)\s*(?P<note>.+)|\s*\((?P<paren>[^()]+)\)"
    r"|(?:(?<=\w)|^\s*):\s+(?P<colon>.+)|\s+-\s+(?P<dash>.+)",
    _I | re.DOTALL,
)


def _take_note(draft: Draft, clock: Clock, *, titled: bool = False) -> None:
    """ "call the bank: ask about the rate", "(ticket 4471)", "note: …"; "- urgent" is no note.
    A note follows a title: the words before it, or a quoted title (`titled`)."""
    match = _NOTE.search(draft.text)
    if match is None or not (titled or draft.text[: match.start()].strip(" ,.;:-")):
        return
    note = next(group for group in match.groups() if group)
    rest = draft.text[match.end() :] if match.group("paren") else ""
    probe = Draft(note, {})
    _extract(probe, clock)
    if clean_title(probe.text):
        draft.fields["description"] = note.strip(" ,.;:-")[:2000]
    else:
        draft.fields.update(probe.fields)
    draft.text = f"{draft.text[: match.start()]} {rest}"


def join_details(
    pieces: list[tuple[str, list[Intent]]], clock: Clock
) -> list[tuple[str, list[Intent]]]:
    """A sentence made only of details (a priority, #tags, a date, a repeat) is for the tasks
    added just before it: "add register for the conference!! important", "add milk. tomorrow".
    `pieces` are the sentences of a message, each with what it asks for."""
    joined: list[tuple[str, list[Intent]]] = []
    for text, intents in pieces:
        adds = [i for i in joined[-1][1] if isinstance(i, AddIntent)] if joined else []
        draft = Draft(text, {})
        _extract(draft, clock)
        if not adds or not draft.fields or clean_title(draft.text):
            joined.append((text, intents))
            continue
        said, before = joined[-1]
        more = [replace(i, fields=draft.fields | i.fields) if i in adds else i for i in before]
        joined[-1] = (said, more)
    return joined


# After a comma, an aside is no item: "add buy bread, is that ok?", "…, no deadline".
_ASIDE = re.compile(
    r"\s*(?:no|not|nope|do|does|is|are|was|would|can|could|it|that|keep|if|at\s+all)\b", _I
)


def _split_items(text: str) -> list[str]:
    """Items of "milk, eggs and bread", never split inside "every Monday and Friday"."""
    kept = [m.span() for m in DATE_PHRASE.finditer(text)]
    kept += [m.span() for m in REPEAT_PHRASE.finditer(text)]
    pieces, start = [], 0
    for match in _SPLIT.finditer(text):
        if not any(a <= match.start() < b for a, b in kept):
            pieces.append(text[start : match.start()])
            start = match.end()
    pieces.append(text[start:])
    return pieces


def _extract(draft: Draft, clock: Clock) -> None:
    _tags_from(draft)
    _priority_from(draft)
    repeat = find_repeat(draft.text)
    if repeat is not None:
        draft.fields["recurrence"] = repeat.rule
        draft.text = _cut(draft.text, repeat.start, repeat.end)
    days, part = (repeat.days, repeat.part) if repeat else ((), None)
    due = find_due(draft.text, clock, days=days, part=part)
    if due is not None:
        draft.fields["due_at"] = due.value.isoformat(timespec="seconds")
        draft.text = _cut(draft.text, due.start, due.end)


def _cut(text: str, start: int, end: int) -> str:
    # One space where the words were: runs of spaces make the optional-space patterns slow.
    return f"{text[:start].rstrip()} {text[end:].lstrip()}"


def _tags_from(draft: Draft) -> None:
    tags: list[str] = []
    for pattern in _TAGS:
        for match in list(pattern.finditer(draft.text)):
            tag = match.group("tag")
            if tag and tag.lower() not in {"todo", "to-do", "task", "tasks", "my", "the"}:
                tags.append(tag.lower())
        draft.text = pattern.sub(" ", draft.text)
    if tags:
        draft.fields["tags"] = list(dict.fromkeys(tags))[:10]


def _priority_from(draft: Draft, said: str | None = None) -> None:
    """The priority said in the draft's text (taken out of it), or in `said`."""
    match = _PRIORITY.search(draft.text if said is None else said)
    if match:
        draft.fields["priority"] = priority_of(match.group("p") or match.group("p2"))
    if said is None:
        draft.text = _PRIORITY.sub(" ", draft.text)


def clean_title(text: str) -> str:
    title = re.sub(r"\s+", " ", text).strip(" ,.;:!?-\u2013\u2014")
    previous = None
    while title != previous:
        previous = title
        title = _LEADING.sub("", title)
        title = _TRAILING.sub("", title).strip(" ,.;:!?-\u2013\u2014")
    if len(title) >= 2 and title[0] == title[-1] and title[0] in "\"'":
        title = title[1:-1].strip()
    return capitalised(title)


def capitalised(title: str) -> str:
    """First letter up, unless the word is written like "iPhone"."""
    if title[:1].islower() and not title[1:2].isupper():
        return title[0].upper() + title[1:]
    return title
