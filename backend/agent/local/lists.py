"""Questions about the task list: filters for list_tasks, running them and the answer; and
questions about one task ("is the report done?"), answered by showing it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal

from backend.agent.local.actions import parse_target
from backend.agent.local.dates import Clock, find_due
from backend.agent.local.history import ToolResult
from backend.agent.local.intents import ListIntent, ShowIntent
from backend.agent.local.replies import listing, task_line
from backend.agent.local.steps import Call, Env, Outcome, Script

_I = re.IGNORECASE
LIST_START = re.compile(
    r"(?:show|list|display|view|see|give\s+me|get\s+me|tell\s+me|what|which|whats|any|anything"
    r"|do\s+i\s+have|have\s+i|did\s+i|am\s+i|how\s+many|find|search|look\s+(?:for|up)|is|are|was|has"
    r"|when|print|read\s+me|pull\s+up|bring\s+up)\b",
    _I,
)
_PENDING = re.compile(
    r"\b(?:pending|open|outstanding|remaining|left|unfinished|incomplete|uncompleted|undone|not\s+"
    r"(?:yet\s+)?(?:done|completed|finished)|to\s*-?\s*do|todo|still|active|next|should\s+i\s+do"
    r"|on\s+my\s+plate)\b",
    _I,
)
# Not "what do I need to get done": that asks what is still to do.
_DONE = (
    r"(?<!\bto )(?<!\bget )(?<!\bbe )\b(?:completed?|done|finished|accomplished"
    r"|(?:check|tick|cross)(?:ed)?\s+off|did\s+i\s+(?:do|finish|complete|get(?:\s+\w+)?\s+done))\b"
)
_COMPLETED = re.compile(_DONE, _I)
# "not important" before "important": the first pattern that matches wins.
_PRIORITIES = (
    (r"low[\s-]priority|unimportant|not\s+(?:important|urgent)|whenever", "low"),
    (r"urgent|critical|asap", "urgent"),
    (r"high[\s-]priority|important|top[\s-]priority", "high"),
    (r"(?:medium|normal)[\s-]priority", "medium"),
)
_TAGS = re.compile(
    r"(?:(?<![\w&#])#|\b(?:tagged|tags?|labell?ed|labels?|with\s+(?:the\s+)?tag|in\s+category"
    r"|category)\s+(?:as\s+|with\s+)?#?)(?P<tag>[a-z][\w-]{0,31})",
    _I,
)
# A word that is probably a tag, in what is left once the filters are taken out.
_TAG_WORD = re.compile(
    r"\bon\s+(?:my|the)\s+(?P<t>[a-z][\w-]*)\s+list\b|\b(?:under|for|at)\s+(?:my\s+|the\s+)?"
    r"(?P<t2>[a-z][\w-]*)$|\b(?P<t3>[a-z][\w-]*)\s+(?:tasks|todos|items|stuff|things|ones|list)\b"
    r"|^(?:show|list|see|view)\s+(?:me\s+)?(?:my\s+|the\s+)?(?P<t4>[a-z][\w-]*)$"
    r"|^any\s+(?P<t5>[a-z][\w-]*s)$",  # "any errands?"
    _I,
)
_SEARCH = re.compile(
    r"\b(?:about|contain(?:s|ing)|mention(?:s|ing)?|match(?:es|ing)?|related\s+to|regarding|called"
    r"|named|titled|with\s+the\s+words?|that\s+(?:says?|mentions?)|including)\s+(?P<q>.+)$",
    _I,
)
_DID_I = re.compile(
    r"\b(?:did|have)\s+i\s+(?:already\s+)?(?:finish(?:ed)?|complete(?:d)?|do|done|tick(?:ed)?\s+off)"
    r"\s+(?P<q>.+)$",
    _I,
)
# Questions about one task, answered by showing it: "is the report done?", "did I pay rent?".
_ONE_TASK = re.compile(
    r"(?!.*\b(?:tasks|todos|anything|everything|something|nothing|all|any|you|there)\b)"
    r"(?:(?:is|are|was|has)\s+(?P<t>.+)(?<!\sbeen)(?<!\salready)\s+(?:already\s+|been\s+)*"
    r"(?:\w+ed|done|paid|sent|bought|made|ticked\s+off|overdue|late|due)\b(?:\s.*)?"
    r"|when(?:'s|\s+is|\s+are)\s+(?P<t2>.+?)(?:\s+due)?"
    r"|what\s+is\s+the\s+(?:due\s+date|deadline|status|priority)\s+(?:on|of|for)\s+(?P<t3>.+)"
    r"|did\s+i\s+(?:already\s+|remember\s+to\s+|manage\s+to\s+|add\s+|create\s+|miss\s+)*"
    r"(?P<t4>.+))",
    _I,
)
# Whole questions one list_tasks filter can't ask: answered from a wider list, filtered here.
_NEWEST = re.compile(
    r"\b(?:last|latest|newest|most\s+recent(?:ly)?)\b(?!.*\btasks\b).*\b(?:add|create|made|put)"
    r"|\b(?:add|create)\w*\s+(?:last|most\s+recently)\b|\bdid\s+(?:you|i)\s+just\s+(?:add|create)",
    _I,
)
Keep = Literal["done_today", "added_today", "newest", "undated"]
_UNDATED = re.compile(
    r"\b(?:(?:do|does)\s+not\s+have|without|with\s+no|(?:have|has)\s+no|no)\s+(?:an?\s+)?"
    r"(?:due\s+date|deadline|date|due)\b|\bundated\b",
    _I,
)
# A task completed today was updated today: the newest updates hold every one of them.
_TODAY: tuple[tuple[str, Keep, str], ...] = (
    (r"\b(?:added|created|new|did\s+i\s+(?:add|create))\b.*\btoday", "added_today", "created_at"),
    (rf"{_DONE}.*\btoday\b", "done_today", "updated_at"),
)
_FIND = re.compile(r"^(?:find|search(?:\s+for)?|look\s+(?:for|up))\s+(?P<q>.+)$", _I)
_SORTS = (
    (r"\bby\s+priority\b|\bmost\s+important\s+first\b", "priority", "desc"),
    (r"\bby\s+(?:due\s+date|deadline|date|due)\b", "due_at", "asc"),
    (r"\b(?:newest|latest|most\s+recent|recently\s+added)\b", "created_at", "desc"),
    (r"\boldest\b", "created_at", "asc"),
    (r"\b(?:alphabetical(?:ly)?|by\s+(?:title|name))\b", "title", "asc"),
)
_LISTY = re.compile(
    r"\b(?:tasks?|todos?|to-dos?|list|agenda|plate|schedule|to\s+do|do\s+i\s+have"
    r"|what\s+is\s+next|reminders?)\b",
    _I,
)
_FILLER = set(
    """my all the tasks task todos todo to-dos list items item of me everything stuff things
    thing to do i have what is are on so far yet still now current currently again any anything
    show display view see give get tell which whats there find search look for up with a an did
    due that in at print read pull bring need got should how many you can please just only every
    whole remaining set mine and or this it was were be from by agenda plate some these those other
    new old recent latest open next your our later ones""".split()
)


@dataclass(frozen=True)
class TaskQuestion(ListIntent):
    """What one list_tasks call cannot ask. "high priority" is high AND urgent: urgent ones are
    a second call, listed first (`or_urgent`). A tag word no task carries is searched for in
    titles (`fallback`, one more call). `keep` filters a wider list (see `_TODAY`)."""

    or_urgent: bool = False
    fallback: str | None = None
    keep: Keep | None = None


@dataclass
class _Query:
    text: str
    arguments: dict[str, Any] = field(default_factory=dict)
    adjectives: list[str] = field(default_factory=list)
    qualifiers: list[str] = field(default_factory=list)
    or_urgent: bool = False
    fallback: str | None = None
    keep: Keep | None = None

    def take(self, pattern: re.Pattern[str] | str) -> re.Match[str] | None:
        match = (re.compile(pattern, _I) if isinstance(pattern, str) else pattern).search(self.text)
        if match:
            self.text = f"{self.text[: match.start()]} {self.text[match.end() :]}"
        return match


def parse_list(clause: str, clock: Clock, *, strong: bool) -> ListIntent | ShowIntent | None:
    """A list query; `strong` when the clause starts like a question or "show"."""
    whole = _whole_question(clause)
    if whole is not None:
        return whole
    one = None if _DID_I.search(clause) else _ONE_TASK.fullmatch(clause)
    if one is not None:
        return ShowIntent(parse_target(next(t for t in one.groups() if t)))
    if re.search(r"\badd(?:ing)?\b(?<!did i add)", clause, _I):
        return None  # "could you add a task to ...?" asks for a change, not a list
    query = _Query(clause)
    count_only = bool(query.take(r"\bhow\s+many\b"))
    if query.take(_UNDATED):  # no list_tasks argument: read them all, keep those undated
        query.keep = "undated"
        query.arguments["limit"] = 100
        query.qualifiers.append("without a due date")
    _window(query, clock)  # "what about tomorrow?" is no search for "tomorrow"
    _explicit_search(query, clause)
    _tags(query)
    _overdue(query)
    _priority(query)
    _status(query)
    _sort(query)
    found = None if "search" in query.arguments else _FIND.match(query.text.strip())
    if found:  # what is left after "find"/"search for" once the filters are taken out
        query.text = ""
        _set_search(query, found.group("q"))
    _tag_word(query)
    if strong and not (query.arguments or _LISTY.search(clause)):
        return None  # "what is the capital of France?" is not about the list
    if not strong and not _only_filler(query.text, query.arguments):
        return None
    query.arguments.setdefault("status", "all")
    parts = (tuple(query.adjectives), tuple(query.qualifiers), count_only)
    return TaskQuestion(query.arguments, *parts, query.or_urgent, query.fallback, query.keep)


def _whole_question(clause: str) -> TaskQuestion | None:
    newest = {"status": "all", "sort": "created_at", "order": "desc", "limit": 1}
    if _NEWEST.search(clause):
        return TaskQuestion(newest, keep="newest")
    for pattern, keep, sort in _TODAY:
        if re.search(pattern, clause, _I) and not re.search(r"\bdue\b", clause, _I):
            status = "all" if keep == "added_today" else "completed"
            arguments = newest | {"status": status, "sort": sort, "limit": 100}
            return TaskQuestion(arguments, qualifiers=(keep.replace("_", " "),), keep=keep)
    return None


def run_list(intent: ListIntent, script: Script, env: Env) -> Outcome:
    """List the tasks, then the filters list_tasks has no argument for (see TaskQuestion)."""
    asked = intent if isinstance(intent, TaskQuestion) else TaskQuestion(intent.arguments)
    arguments = intent.arguments
    calls = [Call("list_tasks", arguments)]
    if asked.or_urgent:
        calls.insert(0, Call("list_tasks", {**arguments, "priority": "urgent"}))
    results = script.batch(calls)
    if asked.fallback and all(r.ok and not r.tasks() for r in results):
        words = {k: v for k, v in arguments.items() if k != "tags"} | {"search": asked.fallback}
        results = [script.call("list_tasks", **words)]
        qualifiers = [q for q in intent.qualifiers if not q.startswith("tagged")]
        intent = replace(intent, qualifiers=(*qualifiers, f"matching '{asked.fallback}'"))
    failed = next((r for r in results if not r.ok), None)
    tasks = [t for r in results for t in r.tasks()]
    total = sum(int((r.data or {}).get("total", 0)) for r in results)
    if asked.keep == "newest" and tasks:
        return Outcome([f"The last task you added:\n{task_line(tasks[0], env.clock)}"], tasks)
    if asked.keep == "undated":
        tasks = [t for t in tasks if not t.get("due_at")]
    elif asked.keep in ("added_today", "done_today"):
        field = "created_at" if asked.keep == "added_today" else "completed_at"
        tasks = [t for t in tasks if _on_today(t.get(field), env.clock)]
    total = len(tasks) if asked.keep else total  # the kept ones, not the wider list's total
    data = None if failed else {"tasks": tasks, "total": total}
    result = ToolResult("list_tasks", arguments, data, failed.error if failed else None)
    return Outcome([listing(intent, result, env.clock)], tasks)


def _on_today(value: object, clock: Clock) -> bool:
    moment = (
        datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    )
    return moment is not None and moment.astimezone(clock.zone).date() == clock.today


def _only_filler(rest: str, arguments: dict[str, Any]) -> bool:
    """Only a filter ("pending tasks"); not a bare day ("it's for saturday": a change)."""
    words = re.findall(r"[a-z'-]+", rest.lower())
    mentions_tasks = re.search(r"\b(?:tasks?|todos?|to-dos?|list|agenda|due)\b", rest, _I)
    window = {"due_after", "due_before", "sort", "status"} if "due_after" in arguments else set()
    return all(w in _FILLER for w in words) and bool(set(arguments) - window or mentions_tasks)


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


def _set_search(query: _Query, words: str) -> None:
    lead = r"^(?:(?:me|my|all|the|a|an|any|tasks?|todos?|items?|for|with|that|which)\s+)+"
    tail = r"\s+(?:tasks?|todos?|items?|in\s+(?:the\s+)?titles?|on\s+my\s+list)$"
    words = re.sub(lead, "", words.strip(" \"'?.!,"), flags=_I)
    words = re.sub(tail, "", words, flags=_I).strip(" \"'?.!,")
    if words:
        query.arguments["search"] = words
        query.qualifiers.append(f"matching '{words}'")


def _tags(query: _Query) -> None:
    tags = [match.group("tag").lower() for match in iter(lambda: query.take(_TAGS), None)]
    if tags:
        query.arguments["tags"] = list(dict.fromkeys(tags))
        query.qualifiers.append("tagged " + " ".join(f"#{t}" for t in query.arguments["tags"]))


def _tag_word(query: _Query) -> None:
    """ "my work stuff", "on my shopping list", "anything for work": a tag, if a task has it."""
    if "tags" in query.arguments or "search" in query.arguments:
        return
    match = _TAG_WORD.search(" ".join(query.text.split()))
    word = next((w for w in match.groups() if w), "").lower() if match else ""
    if word and word not in _FILLER:
        query.arguments["tags"] = [word]
        query.qualifiers.append(f"tagged #{word}")
        query.fallback = word


def _window(query: _Query, clock: Clock) -> None:
    today, day = clock.today, timedelta(days=1)
    monday = clock.start_of_week_after(today)
    soon = r"\b(?:soon|upcoming|coming\s+up|next\s+(?:few|couple\s+of|7)\s+days)\b"
    windows: tuple[tuple[str, str, date, date], ...] = (
        (r"\bthis\s+weekend\b", "due this weekend", max(today, monday - 2 * day), monday),
        (r"\bnext\s+week\b", "due next week", monday, monday + 7 * day),
        (r"\b(?:this|the)\s+week\b|\bweek\b", "due this week", today, monday),
        (r"\b(?:this|the)\s+month\b", "due this month", today, clock.first_of_next_month(today)),
        (r"\b(?:today|tonight|for\s+the\s+day)\b", "due today", today, today + day),
        (r"\btomorrow\b", "due tomorrow", today + day, today + 2 * day),
        (soon, "due in the next 7 days", today, today + 7 * day),
    )
    for pattern, label, start, end in windows:
        if query.take(pattern):
            _set_window(query, clock, label, start, end)
            return
    found = find_due(query.text, clock)
    if found is not None:
        when = found.value.date()
        query.text = f"{query.text[: found.start]} {query.text[found.end :]}"
        label = f"due on {found.value:%a %b} {when.day}"
        _set_window(query, clock, label, when, when + day)


def _set_window(query: _Query, clock: Clock, label: str, start: date, end: date) -> None:
    query.arguments["due_after"] = clock.at(start).isoformat(timespec="seconds")
    query.arguments["due_before"] = clock.at(end).isoformat(timespec="seconds")
    query.arguments.setdefault("sort", "due_at")
    query.qualifiers.append(label)
    if "status" not in query.arguments and not _COMPLETED.search(query.text):
        query.arguments["status"] = "pending"


def _overdue(query: _Query) -> None:
    if query.take(r"\b(?:overdue|late|past\s+due|missed|behind)\b"):
        query.arguments |= {"overdue": True, "status": "pending"}
        query.adjectives.insert(0, "overdue")


def _priority(query: _Query) -> None:
    for pattern, priority in _PRIORITIES:
        if query.take(rf"\b(?:{pattern})\b"):
            query.arguments["priority"] = priority
            query.or_urgent = priority == "high"
            adjective = "urgent or high-priority" if priority == "high" else f"{priority}-priority"
            query.adjectives.append("urgent" if priority == "urgent" else adjective)
            return


def _status(query: _Query) -> None:
    if query.arguments.get("overdue"):
        return
    if query.take(_PENDING):
        query.arguments["status"] = "pending"
    elif query.take(_COMPLETED):
        query.arguments["status"] = "completed"
    elif query.take(r"\b(?:all|every|everything|whole)\b"):
        query.arguments["status"] = "all"
    status = query.arguments.get("status")
    if status in ("pending", "completed"):
        query.adjectives.insert(0, status)


def _sort(query: _Query) -> None:
    for pattern, sort, order in _SORTS:
        if query.take(pattern):
            query.arguments |= {"sort": sort, "order": order}
            return
