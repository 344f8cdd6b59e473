"""Questions about the task list: filters for list_tasks and words to describe them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from backend.agent.local.dates import Clock, find_due
from backend.agent.local.intents import ListIntent

_I = re.IGNORECASE
LIST_START = re.compile(
    r"(?:show|list|display|view|see|give\s+me|get\s+me|tell\s+me|what|which|whats|any|anything"
    r"|do\s+i\s+have|have\s+i|did\s+i|how\s+many|find|search|look\s+(?:for|up)|are\s+there"
    r"|is\s+there|is\s+anything|print|read\s+me|pull\s+up|bring\s+up)\b",
    _I,
)
_PENDING = re.compile(
    r"\b(?:pending|open|outstanding|remaining|left|unfinished|incomplete|uncompleted|undone"
    r"|not\s+(?:yet\s+)?(?:done|completed|finished)|to\s*-?\s*do|todo|still|active|next"
    r"|need\s+to\s+do|have\s+to\s+do|should\s+i\s+do|on\s+my\s+plate)\b",
    _I,
)
_COMPLETED = re.compile(
    r"\b(?:completed|complete|done|finished|accomplished|checked\s+off|ticked\s+off"
    r"|crossed\s+off|did\s+i\s+(?:do|finish|complete))\b",
    _I,
)
_ALL = re.compile(r"\b(?:all|every|everything|whole)\b", _I)
_PRIORITIES = (
    (re.compile(r"\b(?:urgent|critical)\b", _I), "urgent"),
    (re.compile(r"\b(?:high[\s-]priority|important|top[\s-]priority)\b", _I), "high"),
    (re.compile(r"\b(?:low[\s-]priority|unimportant|not\s+important)\b", _I), "low"),
    (re.compile(r"\b(?:medium|normal)[\s-]priority\b", _I), "medium"),
)
_TAGS = re.compile(
    r"(?:(?<![\w&#])#|\b(?:tagged|tags?|labell?ed|labels?|with\s+(?:the\s+)?tag|in\s+category"
    r"|category)\s+(?:as\s+|with\s+)?#?)(?P<tag>[a-z][\w-]{0,31})",
    _I,
)
_OVERDUE = re.compile(r"\b(?:overdue|late|past\s+due|missed|behind)\b", _I)
_SEARCH = re.compile(
    r"\b(?:about|containing|contains|mentioning|mention|matching|match|related\s+to|regarding"
    r"|called|named|titled|with\s+the\s+words?|that\s+says?|that\s+mentions?|including)\s+"
    r"(?P<q>.+)$",
    _I,
)
_DID_I = re.compile(
    r"\b(?:did|have)\s+i\s+(?:already\s+)?(?:finish(?:ed)?|complete(?:d)?|do|done|tick(?:ed)?\s+off)"
    r"\s+(?P<q>.+)$",
    _I,
)
_FIND = re.compile(r"^(?:find|search(?:\s+for)?|look\s+(?:for|up))\s+(?P<q>.+)$", _I)
_SORTS = (
    (re.compile(r"\bby\s+priority\b|\bmost\s+important\s+first\b", _I), ("priority", "desc")),
    (re.compile(r"\bby\s+(?:due\s+date|deadline|date|due)\b", _I), ("due_at", "asc")),
    (
        re.compile(r"\b(?:newest|latest|most\s+recent|recently\s+added)\b", _I),
        ("created_at", "desc"),
    ),
    (re.compile(r"\boldest\b", _I), ("created_at", "asc")),
    (re.compile(r"\b(?:alphabetical(?:ly)?|by\s+(?:title|name))\b", _I), ("title", "asc")),
)
_LISTY = re.compile(
    r"\b(?:tasks?|todos?|to-dos?|list|agenda|plate|schedule|to\s+do|do\s+i\s+have"
    r"|what\s+is\s+next|reminders?)\b",
    _I,
)
_COUNT = re.compile(r"\bhow\s+many\b", _I)
_FILLER = set(
    """my all the tasks task todos todo to-dos list items item of me everything stuff things
    thing to do i have what is are on so far yet still now current currently again any anything
    show display view see give get tell which whats there find search look for up with a an did
    due that in at print read pull bring need got should how many you can please just only every
    whole remaining set mine and or this it was were be from by agenda plate""".split()
)
_STOP_TAGS = {"my", "the", "all", "of", "current", "other", "new", "old", "recent", "latest"}
_STOP_TAGS |= {"these", "those", "any", "some", "open", "next", "upcoming", "your", "our", "due"}


@dataclass
class _Query:
    text: str
    arguments: dict[str, Any] = field(default_factory=dict)
    adjectives: list[str] = field(default_factory=list)
    qualifiers: list[str] = field(default_factory=list)

    def take(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        match = pattern.search(self.text)
        if match:
            self.text = f"{self.text[: match.start()]} {self.text[match.end() :]}"
        return match


def parse_list(clause: str, clock: Clock, *, strong: bool) -> ListIntent | None:
    """A list query; `strong` when the clause starts like a question or "show"."""
    query = _Query(clause)
    count_only = bool(query.take(_COUNT))
    _explicit_search(query, clause)
    _tags(query)
    _window(query, clock)
    _overdue(query)
    _priority(query)
    _status(query)
    _sort(query)
    _find_words(query)
    if strong and not (query.arguments or _LISTY.search(clause)):
        return None  # "what is the capital of France?" is not about the list
    if not strong and not _only_filler(query.text, query.arguments):
        return None
    query.arguments.setdefault("status", "all")
    return ListIntent(
        arguments=query.arguments,
        adjectives=tuple(query.adjectives),
        qualifiers=tuple(query.qualifiers),
        count_only=count_only,
    )


def _only_filler(rest: str, arguments: dict[str, Any]) -> bool:
    words = re.findall(r"[a-z'-]+", rest.lower())
    mentions_tasks = re.search(r"\b(?:tasks?|todos?|to-dos?|list|agenda)\b", rest, _I)
    return all(w in _FILLER for w in words) and bool(arguments or mentions_tasks)


def _explicit_search(query: _Query, clause: str) -> None:
    did = query.take(_DID_I)
    if did:
        query.arguments["status"] = "completed"
        _set_search(query, did.group("q"))
        return
    match = query.take(_SEARCH)
    words = match.group("q") if match else None
    if words is None:
        quoted = re.search(r"\"([^\"]+)\"|'([^']+)'", clause)
        words = (quoted.group(1) or quoted.group(2)) if quoted else None
        if quoted:
            query.text = query.text.replace(quoted.group(0), " ")
    _set_search(query, words or "")


def _find_words(query: _Query) -> None:
    """What is left after "find"/"search for" once the filters are taken out."""
    if "search" in query.arguments:
        return
    found = _FIND.match(query.text.strip())
    if found:
        query.text = ""
        _set_search(query, found.group("q"))


def _set_search(query: _Query, words: str) -> None:
    words = _strip_filler(words)
    if words:
        query.arguments["search"] = words
        query.qualifiers.append(f"matching '{words}'")


def _strip_filler(text: str) -> str:
    text = text.strip(" \"'?.!,")
    text = re.sub(
        r"^(?:(?:me|my|all|the|a|an|any|tasks?|todos?|items?|for|with|that|which)\s+)+",
        "",
        text,
        flags=_I,
    )
    text = re.sub(
        r"\s+(?:tasks?|todos?|items?|in\s+(?:the\s+)?titles?|on\s+my\s+list)$", "", text, flags=_I
    )
    return text.strip(" \"'?.!,")


def _tags(query: _Query) -> None:
    tags: list[str] = []
    while match := query.take(_TAGS):
        tags.append(match.group("tag").lower())
    bare = _BARE_TAG.search(query.text)
    if not tags and bare and bare.group("tag").lower() not in _STOP_TAGS | _WORDS_WITH_MEANING:
        tags.append(bare.group("tag").lower())
        query.text = query.text.replace(bare.group("tag"), " ", 1)
    if tags:
        query.arguments["tags"] = list(dict.fromkeys(tags))
        query.qualifiers.append("tagged " + " ".join(f"#{t}" for t in query.arguments["tags"]))


_BARE_TAG = re.compile(
    r"\b(?:my|the|all|any|show|list|see|view)\s+(?P<tag>[a-z][\w-]*)\s+(?:tasks|todos|items|stuff)\b",
    _I,
)
_WORDS_WITH_MEANING = {
    "pending",
    "open",
    "completed",
    "complete",
    "done",
    "finished",
    "overdue",
    "late",
    "urgent",
    "important",
    "priority",
    "remaining",
    "outstanding",
    "unfinished",
    "incomplete",
    "active",
    "upcoming",
    "today's",
    "tomorrow's",
    "recurring",
    "repeating",
    "low",
    "high",
    "medium",
}


def _window(query: _Query, clock: Clock) -> None:
    today = clock.today
    windows: tuple[tuple[str, str, date, date], ...] = (
        (r"\bthis\s+weekend\b", "due this weekend", *_weekend(clock)),
        (r"\bnext\s+week\b", "due next week", *_next_week(clock)),
        (
            r"\b(?:this|the)\s+week\b|\bweek\b",
            "due this week",
            today,
            clock.start_of_week_after(today),
        ),
        (r"\b(?:this|the)\s+month\b", "due this month", today, clock.first_of_next_month(today)),
        (r"\b(?:today|tonight|for\s+the\s+day)\b", "due today", today, today + timedelta(days=1)),
        (r"\btomorrow\b", "due tomorrow", today + timedelta(days=1), today + timedelta(days=2)),
        (
            r"\b(?:soon|upcoming|coming\s+up|next\s+(?:few|couple\s+of|7)\s+days)\b",
            "due in the next 7 days",
            today,
            today + timedelta(days=7),
        ),
    )
    for pattern, label, start, end in windows:
        if query.take(re.compile(pattern, _I)):
            _set_window(query, clock, label, start, end)
            return
    found = find_due(query.text, clock)
    if found is not None:
        day = found.value.date()
        query.text = f"{query.text[: found.start]} {query.text[found.end :]}"
        label = f"due on {found.value:%a %b} {day.day}"
        _set_window(query, clock, label, day, day + timedelta(days=1))


def _weekend(clock: Clock) -> tuple[date, date]:
    monday = clock.start_of_week_after(clock.today)
    return max(clock.today, monday - timedelta(days=2)), monday


def _next_week(clock: Clock) -> tuple[date, date]:
    monday = clock.start_of_week_after(clock.today)
    return monday, monday + timedelta(days=7)


def _set_window(query: _Query, clock: Clock, label: str, start: date, end: date) -> None:
    query.arguments["due_after"] = clock.at(start).isoformat(timespec="seconds")
    query.arguments["due_before"] = clock.at(end).isoformat(timespec="seconds")
    query.arguments.setdefault("sort", "due_at")
    query.qualifiers.append(label)
    if "status" not in query.arguments and not _COMPLETED.search(query.text):
        query.arguments["status"] = "pending"


def _overdue(query: _Query) -> None:
    if query.take(_OVERDUE):
        query.arguments["overdue"] = True
        query.arguments.setdefault("sort", "due_at")
        query.arguments["status"] = "pending"
        query.adjectives.insert(0, "overdue")


def _priority(query: _Query) -> None:
    for pattern, priority in _PRIORITIES:
        if query.take(pattern):
            query.arguments["priority"] = priority
            query.adjectives.append("urgent" if priority == "urgent" else f"{priority}-priority")
            return


def _status(query: _Query) -> None:
    if query.arguments.get("overdue"):
        return
    if query.take(_PENDING):
        query.arguments["status"] = "pending"
    elif query.take(_COMPLETED):
        query.arguments["status"] = "completed"
    elif query.take(_ALL):
        query.arguments["status"] = "all"
    status = query.arguments.get("status")
    if status in ("pending", "completed"):
        query.adjectives.insert(0, status)


def _sort(query: _Query) -> None:
    for pattern, (sort, order) in _SORTS:
        if query.take(pattern):
            query.arguments["sort"] = sort
            query.arguments["order"] = order
            return
