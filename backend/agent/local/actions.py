"""Requests about existing tasks: complete, reopen, change, delete, restore, show."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from backend.agent.local.adds import capitalised, priority_of
from backend.agent.local.dates import DATE_PHRASE, Clock, find_due, parse_when
from backend.agent.local.intents import ActIntent, Action, ShowIntent, Target
from backend.agent.local.matching import POSITION, fix_verb, positions
from backend.agent.local.repeats import find_repeat, parse_repeat

_I = re.IGNORECASE
_DONE = (
    r"(?:done|complete|completed|finished|ticked\s+off|checked\s+off|crossed\s+off|checked|ticked"
    r"|sorted|handled|taken\s+care\s+of|dealt\s+with|paid|sent|out\s+of\s+the\s+way)"
)
# "booked", "paid", "sorted": the state a finished task is in (not "cancelled" or "moved"),
# never a mood or a state of things ("tired", "closed")
_PARTICIPLE = (
    r"(?!(?:cancell?ed|postponed|delayed|moved|rescheduled|scheduled|planned|needed|required"
    r"|tagged|called|named|added|deleted|removed|closed|locked|tired|bored|excited|worried"
    r"|stressed|scared|interested|confused|annoyed|married|crowded|overdue|expected)\b)"
    r"(?:\w+[a-df-z]ed|paid|sent|bought|made|done"
    r"|got|gone|taken|given|written|sold)"
)
_NOT_DONE = (
    r"(?:not\s+(?:yet\s+)?(?:done|complete|completed|finished)|incomplete|undone|uncompleted"
    r"|unfinished|pending|open|active|to\s*-?\s*do|todo|not\s+done\s+yet)"
)
_PRIORITY = (
    r"(?P<p>urgent|important|critical|asap|high|low|medium|normal|top|not\s+(?:urgent|important)"
    r"|(?:high|low|medium|normal|top)[\s-]priority)"
)
# "it", "that one", "the task I just deleted": the task the conversation was last about
_PRONOUN_ONE = re.compile(
    r"(?:it|that|this|i|we|all|i\s+am|one|the\s+(?:latter|former)"
    r"|(?:that|this|the|the\s+same|the\s+previous|the\s+last)\s+(?:one|task)"
    r"(?:\s+(?:that\s+)?(?:i|you)\s+(?:just\s+)?\w+ed)?)",
    _I,
)
_PRONOUN_MANY = re.compile(
    r"(?:them|those|these|both|the\s+two|all\s+three|(?:both|all|the\s+two)\s+of\s+(?:them|those"
    r"|these)|them\s+(?:all|both)|(?:those|these|both)\s+tasks|all\s+(?:of\s+)?those)",
    _I,
)
_ID = (
    r"(?:(?:the\s+)?(?:tasks?|items?|todos?|to-dos?|numbers?|no\.?|ids?)\s*(?:number\s*|no\.?\s*)?"
    r"(?:#\s*)?|#\s*)?(\d{1,9})"
)
# One way to read each separator: "1, 2 and 3" must not be tried in exponentially many ways.
_IDS = re.compile(rf"{_ID}(?:\s*(?:,\s*and|,|and|&)\s*(?:#\s*)?(\d{{1,9}}))*", _I)
_TARGET_NOISE = re.compile(
    r"\s+(?:from|off|on|in)\s+(?:my|the|that|this)\s+(?:\w+\s+)?(?:list|tasks|todos?|to-dos?)$"
    r"|\s+(?:as\s+well|too|also|for\s+now|for\s+good|permanently|any\s*more|any\s+longer"
    r"|today|tonight|yesterday|earlier(?:\s+today)?|just\s+now|at\s+last|finally"
    r"|(?:this|last|yesterday)\s+(?:morning|afternoon|evening|night|week))$",
    _I,
)
_ARTICLES = re.compile(
    r"^(?:(?:the|my|a|an|our|that|this|task|todo|to-do|item|one|about|called|named)\s+)+", _I
)
# "I went this morning": the verb names no task, so it is the one just spoken of.
_VERB_ALONE = re.compile(
    r"(?:went|got|did|done|paid|sent|made|\w{2,}[a-df-z]ed)(?:\s+(?:it|that|this))?", _I
)
_SUFFIXES = re.compile(r"(?:\s+(?:task|todo|to-do|item|one|thing|reminder|entry))+$", _I)
_FILLER = re.compile(
    r"^(?:(?:like|ok|okay|so|um+|uh+|well|oh|right|anyway|basically)\b[\s,]*)+", _I
)


def parse_target(text: str) -> Target:
    text = _FILLER.sub("", text) or text  # "like, the car service"
    said = text if re.match(r"\s*[\"']", text) else text.split(",")[0]  # "X, I added it by mistake"
    cleaned = _TARGET_NOISE.sub("", said.strip(" ,.!?")).strip().removesuffix("'s")
    unquoted = cleaned.strip("\"'")
    if positions(unquoted):  # "the second one", "number one": a place in the list shown last
        return Target(words=unquoted)
    if _IDS.fullmatch(unquoted):
        ids = tuple(int(n) for n in re.findall(r"\d+", unquoted))
        bare = re.fullmatch(r"\d+(?:\s*(?:,|and|&)\s*\d+)*", unquoted, _I)
        # Numbers said bare ("done with 1 and 3") may be places in the list shown last.
        return Target(ids=ids, words=unquoted if bare else None)
    if _PRONOUN_MANY.fullmatch(unquoted):
        return Target(pronoun="many")
    if _PRONOUN_ONE.fullmatch(unquoted):
        return Target(pronoun="one")
    if cleaned != unquoted:  # quoted: the exact title
        return Target(words=unquoted)
    words = _SUFFIXES.sub("", _ARTICLES.sub("", cleaned)).strip(" \"'")
    if not words or _PRONOUN_ONE.fullmatch(words) or _VERB_ALONE.fullmatch(words):
        return Target(pronoun="one")
    return Target(words=words)


KEEP = "keep"  # not a tool argument: which part of the task's due time a change keeps
SHIFT = "shift"  # not a tool argument: minutes to move the due time by ("an hour later")
OR_ADD = "or_add"
ALL_TAGS = "*"  # not a tool argument: "put the bulbs on the shopping list" may mean a new task
_MOVING = re.compile(
    r"(?:move|resched|postpone|push|shift|defer|delay|bump|put|plan)|.*\bnow\s+due\b", _I
)
Builder = Callable[[re.Match[str], Clock], ActIntent | None]


def _act(action: Action, **changes: Any) -> Builder:
    def build(match: re.Match[str], _clock: Clock) -> ActIntent | None:
        return ActIntent(action, parse_target(match.group("t") or "it"), dict(changes))

    return build


def _priority(fixed: str | None = None) -> Builder:
    def build(match: re.Match[str], _clock: Clock) -> ActIntent | None:
        said = match.groupdict().get("p") or ""
        priority = fixed or ("low" if said.lower() == "less" else priority_of(said))
        return ActIntent("update", parse_target(match.group("t")), {"priority": priority})

    return build


def due_change(text: str, clock: Clock, *, moving: bool = True) -> dict[str, Any] | None:
    """The update for a new due date; a new day alone keeps the task's time of day when
    `moving` it, a new time alone keeps its day ("make it 6pm")."""
    when = re.sub(r"\s+(?:instead|now)$", "", text.strip(" ,.!?"), flags=_I)
    found = parse_when(when, clock)
    if found is None:
        return None
    changes: dict[str, Any] = {"due_at": found.value.isoformat(timespec="seconds")}
    said = DATE_PHRASE.fullmatch(when)
    if said and not (said.group("day") or said.group("day2")):
        changes[KEEP] = "day"
    elif not found.has_time and moving:
        changes[KEEP] = "time"
    return changes


def _due(match: re.Match[str], clock: Clock) -> ActIntent | None:
    changes = due_change(match.group("d"), clock, moving=bool(_MOVING.match(match.group(0))))
    return ActIntent("update", parse_target(match.group("t")), changes) if changes else None


_SPANS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "ten": 10}
_SPANS |= {"fifteen": 15, "twenty": 20, "thirty": 30}  # and "half an" hour: 30 minutes


def _shift(match: re.Match[str], _clock: Clock) -> ActIntent | None:
    """ "make it half an hour earlier": the due time (and reminder) moved by a span."""
    way = (match.group("dir") or match.group("way") or "").lower()
    if not way:
        return None
    amount, unit = match.group("amt").lower(), match.group("unit").lower()
    count = int(amount) if amount.isdigit() else _SPANS.get(amount, 0)
    minutes = count * {"h": 60, "d": 1440, "w": 10080}.get(unit[0], 1) if count else 30
    sign = -1 if way in ("earlier", "sooner", "forward") else 1
    return ActIntent("update", parse_target(match.group("t")), {SHIFT: sign * minutes})


def _rename(match: re.Match[str], _clock: Clock) -> ActIntent | None:
    # The new title is taken as said (no "a"/"to" trimming as for new tasks).
    title = capitalised(re.sub(r"\s+", " ", match.group("v")).strip(" \"'.!?"))
    if not title:
        return None
    return ActIntent("update", parse_target(match.group("t")), {"title": title[:200]})


def _repeat(match: re.Match[str], _clock: Clock) -> ActIntent | None:
    rule = parse_repeat(match.group("r")) if "r" in match.groupdict() else "none"
    if rule is None:
        return None
    return ActIntent("update", parse_target(match.group("t")), {"recurrence": rule})


def _tags(add: bool, **changes: Any) -> Builder:
    def build(match: re.Match[str], _clock: Clock) -> ActIntent | None:
        tags, old = _tag_words(match.group("tags")), match.groupdict().get("old")
        if not tags:
            return None
        added, removed = (tags, _tag_words(old or "")) if add else ((), tags)
        target = parse_target(match.group("t") or "it")
        return ActIntent("update", target, dict(changes), added, removed)

    return build


def _tag_words(said: str) -> tuple[str, ...]:
    if re.fullmatch(r"tags?|labels?", said, _I):  # "remove that tag": whichever it has
        return (ALL_TAGS,)
    skip = {"and", "tag", "tags", "label", "labels", "the", "as", "with"}
    return tuple(
        t.lower() for t in re.findall(r"[a-z][\w-]{0,31}", said, _I) if t.lower() not in skip
    )


def _note(match: re.Match[str], _clock: Clock) -> ActIntent | None:
    text = match.group("v").strip().strip("\"'")
    return ActIntent("update", parse_target(match.group("t") or "it"), {"description": text[:2000]})


def _change(match: re.Match[str], clock: Clock) -> ActIntent | None:
    """Change X to Y, where Y is a priority, a repeat rule, a date, done/not done or a title."""
    value, target = match.group("v").strip(" ,.!?"), parse_target(match.group("t"))
    priority = re.fullmatch(_WORDS["PRIORITY"], value, _I)
    if re.fullmatch(r"\"[^\"]+\"|'[^']+'", value):
        return ActIntent("update", target, {"title": value[1:-1].strip()[:200]})
    if priority:
        return ActIntent("update", target, {"priority": priority_of(priority.group("p"))})
    if re.fullmatch(_DONE, value, _I):
        return ActIntent("complete", target)
    if re.fullmatch(_NOT_DONE, value, _I):
        return ActIntent("reopen", target)
    changes = repeat_or_due(value, clock)
    return ActIntent("update", target, changes) if changes else _rename(match, clock)


def repeat_or_due(value: str, clock: Clock) -> dict[str, Any] | None:
    """A new repeat rule ("every other day") or due date ("friday") for a task; a rule that
    names days ("every sunday") also moves the task to the first of them."""
    repeat = (
        find_repeat(value)
        if re.match(r"every|each|daily|weekly|monthly|yearly", value, _I)
        else None
    )
    rule = parse_repeat(value) if repeat else None
    if repeat is None or rule is None:
        return due_change(value, clock)
    due = find_due(value[repeat.end :], clock, days=repeat.days, part=repeat.part)
    if not (repeat.days or repeat.part) or due is None:
        return {"recurrence": rule}
    changes = {"recurrence": rule, "due_at": due.value.isoformat(timespec="seconds")}
    return changes if due.has_time else {**changes, KEEP: "time"}


_WORDS = {
    "T": r"(?P<t>.+?)",
    "IT": r"(?P<t>it|that|this|them|those|(?:task\s+|#)\d+)",
    # a subject that starts a sentence ("task 3 is done"), never a request to add something
    "S": r"(?P<t>(?!(?:add|create|remind|remember|put|schedule|new|todo|do\s+not\s+forget"
    r"|(?:i|we)\s+(?:need|have|must))\b).+?)",
    "SET": r"(?:set|change|update|make|put|switch)",
    "DUE": r"(?:due\s+date|deadline|due\s+time|due)",
    "LIST": r"(?:my\s+|the\s+|your\s+)?(?P<tags>(?!(?:my|the|your|our|todo|to-do|task)\b)[\w-]+)"
    r"\s+list(?:\s+(?:too|as\s+well|also))?",
    "HASHTAGS": r"(?P<tags>#\S+(?:\s*(?:,|and)?\s*#\S+)*)",
    "DONE": _DONE,
    "PARTICIPLE": _PARTICIPLE,
    "SPAN": r"(?P<amt>half\s+an|an?|\d{1,3}|one|two|three|four|five|ten|fifteen|twenty|thirty)\s*"
    r"(?P<unit>m|mins?|minutes?|h|hrs?|hours?|days?|weeks?)",
    "NOT_SO": r"(?:is|are)\s+not\s+(?:that|so|very|too|really)\s+(?:important|urgent)"
    r"(?:\s+(?:any\s*more|now|actually))*",
    "IS": r"(?:'s|\s+(?:is|are|was|were|has\s+been|have\s+been))",
    "NOT_DONE": _NOT_DONE,
    "PRIORITY": rf"(?:an?\s+)?{_PRIORITY}(?:\s+priority)?",
}
# The forms of a request about existing tasks, one a line: what it does, then its pattern
# (an indented line goes on with the one above; {NAME} is from _WORDS). First match wins:
# reopen before complete ("mark task 3 as not done"); tags, due dates, repeats and notes
# before delete, which shares their verbs; "change X to Y" last, as it would swallow others.
_FORMS = r"""
restore (?:i\s+)?(?:did\s+not|never)\s+(?:mean|want)\s+to\s+(?:delete|remove)\s+{T}
restore (?:i\s+|we\s+)?(?:deleted|removed)\s+{T}\s+(?:by\s+(?:mistake|accident)|accidentally)
restore (?:i\s+|we\s+)?accidentally\s+(?:deleted|removed)\s+{T}
restore (?:(?:can|could|may)\s+(?:i|we)\s+(?:have|get)|(?:i|we)\s+(?:need|want|would\s+like))
    \s+{T}\s+back
reopen (?:i\s+)?(?:did\s+not|never)\s+(?:mean|want)\s+to\s+(?:tick|check|cross|mark|complete
    |finish)\s+{T}(?:\s+off|\s+(?:as\s+)?done)?
reopen (?:i\s+|we\s+)?(?:completed|finished|ticked|checked|crossed|marked)\s+{T}(?:\s+off
    |\s+(?:as\s+)?done)?\s+(?:by\s+(?:mistake|accident)|accidentally)
reopen (?:reopen|re-open|unfinish|uncomplete|un-complete|unmark|uncheck|untick|resume)\s+{T}
reopen (?:mark|set|flag|put)\s+{T}\s+(?:back\s+)?(?:as\s+|to\s+)?{NOT_DONE}(?:\s+again)?
reopen {S}\s+(?:is|are|was|were)\s+(?:still\s+|actually\s+)?(?:not\s+(?:yet\s+)?
    (?:{DONE}|{PARTICIPLE})|incomplete|unfinished)(?:\s+yet|\s+after\s+all)?
reopen (?:undo|revert)\s+(?:the\s+)?(?:completion|complete|done)\s+(?:of|on|for)\s+{T}
reopen (?:i\s+|we\s+)?(?:did\s+not|have\s+not|never)\s+(?:actually\s+|yet\s+)?
    (?:(?:finish|finished|complete|completed|do|done)\s+)?{T}(?:\s+(?:yet|after\s+all))?
tag (?:tag|label)\s+{T}\s+(?:with|as)\s+(?P<tags>.+)
tag (?:tag|label)\s+{T}\s+{HASHTAGS}
tag (?:tag|label)\s+(?P<t>(?:that|this|the\s+[\w\s]+?)\s+(?:one|task|item)|it|that|this|them
    |those|(?:task\s+|#)\d+|number\s+\w+)\s+(?P<tags>.+)
tag (?:file|put|move|place)\s+{T}\s+under\s+(?P<tags>.+)
tag (?:put|add|move|stick|pop)\s+{IT}\s+(?:on|to|onto|in|into)\s+{LIST}
listed (?:put|add|move|stick|pop)\s+(?P<t>the\s+.+?)\s+(?:on|to|onto|in|into)\s+{LIST}
retag {SET}\s+(?:the\s+)?{T}(?:'s)?\s+(?:tag|label)\s+from\s+(?P<old>#?[\w-]+)
    \s+to\s+(?P<tags>#?[\w-]+)
tag add\s+(?:the\s+)?(?:tags?|labels?)\s+(?P<tags>.+?)\s+to\s+{T}
tag add\s+{HASHTAGS}\s+to\s+{T}
untag (?:remove|delete|drop|take\s+off|clear)\s+(?:the\s+)?(?:tags?|labels?)\s+(?P<tags>.+?)
    \s+(?:from|on|off)\s+{T}
untag (?:remove|delete|drop|take\s+off|clear)\s+(?:the\s+)?(?P<tags>#?[\w-]+)\s+(?:tag|label)
    \s+(?:from|on|off)\s+{T}
untag (?:remove|delete|drop|take)\s+{HASHTAGS}\s+(?:from|off)\s+{T}
untag (?:remove|clear|delete|drop)\s+(?:the|that|those|its|all(?:\s+the)?)\s+(?P<tags>tags?|labels?)
    (?:\s+(?:from|on|off)\s+{T})?
untag untag\s+(?P<tags>#?[\w-]+)\s+from\s+{T}
untag untag\s+{T}\s+{HASHTAGS}
untag {S}\s+(?:is|are)\s+not\s+(?:an?\s+)?#?(?P<tags>(?!(?:{PRIORITY}|{DONE}|{PARTICIPLE}|{NOT_DONE}
    |\w+ing)$)[a-z][\w-]*)(?:\s+(?:stuff|related|tasks?|things?))?
undue (?:remove|clear|delete|drop|unset)\s+(?:the\s+)?{DUE}\s+(?:from|of|on|for)\s+{T}
undue {S}\s+(?:has|have)\s+no\s+(?:due\s+date|deadline)(?:\s+anymore)?
repeat (?:stop\s+(?:repeating|recurring)|do\s+not\s+repeat|no\s+longer\s+repeat)\s+{T}
repeat {S}\s+should\s+(?:not|no\s+longer)\s+(?:repeat|recur)
repeat (?:stop|keep)\s+{T}\s+from\s+(?:repeating|recurring)
repeat make\s+{T}\s+(?:not\s+repeat|(?:a\s+)?one-off|one\s+time)
repeat {SET}\s+{T}\s+(?:to\s+)?(?:repeat|recur)\s+(?P<r>.+)
change (?:make|set)\s+{IT}\s+(?P<v>(?:every|each|daily|weekly|monthly|yearly)\b.*)
repeat {S}\s+(?:should\s+)?(?:repeats?|recurs?)\s+(?P<r>.+)
note (?:add|set|put|write)\s+(?:a\s+)?(?:note|description|details)\s+(?:to|on|for)\s+{T}
    \s*(?::|saying|that\s+says)\s*(?P<v>.+)
note (?:add|put|write|append)\s+(?P<v>.+?)\s+(?:to|in|on|into)\s+(?:the\s+)?(?:notes?
    |description|details)\s+(?:of|for|on)\s+{T}
note {SET}\s+(?:the\s+)?(?:notes?|description|details)(?:\s+(?:of|for|on)\s+{T})?\s+to\s+(?P<v>.+)
note (?:for|on|about|re:?)\s+{T},?\s+(?:note|add\s+(?:a\s+)?note|write\s+down)\s*(?:that\s+|:\s*)
    (?P<v>.+)
rename (?:rename|retitle|re-title|re-name)\s+{T}\s+(?:to|as|into)\s+(?P<v>.+)
rename (?:{SET}|edit|modify|fix)\s+(?:the\s+)?(?:title|name|wording|text)\s+(?:of|for|on)\s+{T}
    \s+to\s+(?P<v>.+)
rename (?:{SET}|edit|modify|fix)\s+{T}(?:'s)?\s+(?:title|name)\s+to\s+(?P<v>.+)
rename {S}\s+should\s+(?:be\s+called|say|be\s+named)\s+(?P<v>.+)
priority {SET}\s+(?:the\s+)?priority\s+(?:of|for|on)\s+{T}\s+(?:to|as|at)\s+{PRIORITY}
priority {SET}\s+{T}(?:'s)?\s+priority\s+(?:to|as|at)\s+{PRIORITY}
priority make\s+{T}\s+(?P<p>less|more)\s+(?:important|urgent|of\s+a\s+priority)
priority (?:make|mark|set|flag|label)\s+{T}\s+(?:as\s+|to\s+)?(?:an?\s+)?
    (?:very\s+|really\s+|super\s+)?{PRIORITY}(?:\s+task)?
priority {S}(?:'s|\s+is|\s+are)\s+(?:now\s+|very\s+|really\s+|super\s+|actually\s+)*{PRIORITY}
    (?:\s+any\s*more|\s+any\s+longer)?
priority (?:raise|bump|lower|drop|move|up|upgrade|downgrade|push|change)\s+{T}
    \s+(?:up\s+|down\s+)?to\s+{PRIORITY}
priority {S}\s+{NOT_SO},?\s+{PRIORITY}
low {S}\s+{NOT_SO}
low {S}\s+(?:can|could)\s+wait(?:,?\s+(?:whenever|any\s*time|no\s+rush)
    (?:\s+is\s+(?:fine|ok|okay))?)?
high (?:prioriti[sz]e|bump\s+up|raise\s+the\s+priority\s+(?:of|on|for))\s+{T}
low (?:deprioriti[sz]e|lower\s+the\s+priority\s+(?:of|on|for))\s+{T}
due {S}\s+(?:is|are)\s+(?:now\s+|actually\s+)?due\s+(?P<d>.+)
due (?:{SET}|move|push)\s+(?:the\s+)?{DUE}\s+(?:of|for|on)\s+{T}\s+(?:to|for|as)\s+(?P<d>.+)
due (?:{SET}|move|push)\s+{T}(?:'s)?\s+{DUE}\s+(?:to|for|as)\s+(?P<d>.+)
due (?:move|reschedule|postpone|push|shift|defer|delay|bump|change)\s+{T}
    \s+(?:back\s+|forward\s+)?(?:to|until|till|for|by)\s+(?P<d>.+)
due (?:make|set)\s+{T}\s+due\s+(?P<d>.+)
shift (?:make|move|push|bring|shift|put)\s+{IT}\s+(?:(?P<way>back|forward)\s+)?(?:by\s+)?{SPAN}
    (?:\s+(?P<dir>earlier|later|sooner))?
due (?:make|change)\s+{IT}\s+(?P<d>(?:on\s+|for\s+|at\s+)?.+)
due {IT}\s+is\s+(?P<d>(?:on\s+|for\s+|at\s+).+)
due (?:put|schedule|plan)\s+{T}\s+(?P<d>(?:on|for)\s+.+)
due {S}\s+(?:should|must|needs\s+to)\s+be\s+(?:done|finished)\s+(?:by\s+)?(?P<d>.+)
complete (?:mark|set|flag|tick|check)\s+{T}\s+(?:off\s+)?(?:as\s+|to\s+)?(?:being\s+)?{DONE}
complete (?:mark|set)\s+(?:as\s+|to\s+)?{DONE}\s*:?\s*(?P<t>.+)?
complete (?:cross|tick|check|mark)\s+{T}\s+off(?:\s+(?:my|the)\s+list)?
complete (?:complete|finish|close|tick\s+off|check\s+off|cross\s+off|tick)\s+{T}
complete (?:i\s+|we\s+)?(?:am\s+|are\s+|have\s+|just\s+|already\s+|finally\s+)*(?:finished
    |completed|did|done|accomplished|ticked\s+off|checked\s+off|crossed\s+off|wrapped\s+up)
    (?:\s+with)?\s+(?P<t>(?!i\s).+)
complete (?!(?:i|we|you|he|she|they)\s){S}{IS}\s+(?:now\s+|all\s+|already\s+|finally\s+)*
    (?:{DONE}|{PARTICIPLE})
complete {S}\s+(?:done|completed|finished)
complete (?:i\s+|we\s+|he\s+|she\s+|they\s+|(?:my|our)\s+\w+\s+)?(?:just\s+|already\s+
    |finally\s+)?(?P<t>(?!(?:add|creat|schedul|want
    |need|plann|decid|tri|ask|mov|chang|renam|remov|delet|postpon|delay|miss|forgott?)ed\b)
    (?:(?:\w+[a-df-z]ed|got|went|took|paid|bought|sent|made|did|gave|ran|wrote|met|fed|sold
    |ate)\s+.+?|\w+\s+.+?(?=\s+already)))(?:\s+already|\s+yesterday|\s+today|\s+just\s+now)?
complete (?P<t>){DONE}
delete (?:delete|remove|erase|trash|drop|cancel|discard|scrap|scratch|get\s+rid\s+of
    |forget\s+about|kill|nuke|bin|ditch|axe|strike)\s+{T}
restore (?:restore|undelete|un-delete|recover|bring\s+back|get\s+back|give\s+(?:me\s+)?back
    |resurrect)\s+{T}(?:\s+back)?
restore (?:bring|get|put)\s+{T}\s+back(?:\s+(?:on|in|to|onto)\s+(?:my|the)\s+(?:\w+\s+)?list)?
restore (?:undo|revert)\s+(?:the\s+)?(?:deletion|delete|removal)\s+(?:of\s+)?{T}
change (?:{SET}|edit|modify)\s+{T}\s+to\s+(?P<v>.+)
"""
_BUILDERS: dict[str, Builder] = {
    "restore": _act("restore"),
    "reopen": _act("reopen"),
    "complete": _act("complete"),
    "delete": _act("delete"),
    "undue": _act("update", clear_due_at=True),
    "tag": _tags(True),
    "untag": _tags(False),
    "retag": _tags(True),
    "listed": _tags(True, **{OR_ADD: True}),
    "repeat": _repeat,
    "note": _note,
    "rename": _rename,
    "priority": _priority(),
    "high": _priority("high"),
    "low": _priority("low"),
    "due": _due,
    "shift": _shift,
    "change": _change,
}
_FORM_LINES = re.sub(r"\n\s+", "", _FORMS).strip().splitlines()
_COMPILED = [
    (re.compile(form.format_map(_WORDS), _I), _BUILDERS[kind])
    for kind, form in (line.split(" ", 1) for line in _FORM_LINES)
]


# Asides around a request: "fyi …", "… btw", "… or whatever", "…, finally".
_ASIDES = re.compile(
    r"^(?:(?:fyi|btw|by\s+the\s+way|just\s+so\s+you\s+know|heads\s+up|ps)\b[\s,:]*)+"
    r"|(?:[\s,]+(?:btw|by\s+the\s+way|fyi|lol|haha|finally|at\s+last|actually|or\s+whatever"
    r"|or\s+something|i\s+guess))+$",
    _I,
)


def parse_action(clause: str, clock: Clock) -> ActIntent | None:
    """The change `clause` asks for; a verb with a typo ("delte") is read as meant. A report
    after an aside ("ugh it didn't go through, flights aren't booked") is read alone."""
    said = _ASIDES.sub("", clause) or clause
    last = said.rsplit(", ", 1)[-1]
    own = re.match(r"(?:i|we|you|he|she|they|it)\b", last, _I)  # "…, he didn't pick up"
    tail = _parse_action(last, clock) if ", " in said and not own else None
    if tail and tail.action in ("complete", "reopen") and tail.target.words:
        return tail
    for text in dict.fromkeys((fix_verb(said), said)):
        intent = _parse_action(text, clock)
        if intent is not None:
            return intent
    return None


def _parse_action(clause: str, clock: Clock) -> ActIntent | None:
    for pattern, build in _COMPILED:
        match = pattern.fullmatch(clause)
        if match is None:
            continue
        intent = build(match, clock)
        if intent is not None:
            return intent
    return None


_SHOW = re.compile(
    r"(?:show|get|open|view|display|describe|details\s+(?:of|for|on)|more\s+about|info\s+on"
    r"|tell\s+me\s+about|what\s+is|what\s+about)\s+(?:me\s+)?(?:the\s+)?"
    r"(?:details\s+(?:of|for|on)\s+)?"
    rf"(?P<t>{_ID}|it|that|this|that\s+one|{POSITION.pattern})(?:\s+details|\s+about|\s+again)?",
    _I,
)
_ABOUT = re.compile(
    r"(?:tell\s+me\s+(?:more\s+)?about|details\s+(?:of|for|on)|more\s+about|info\s+on)\s+(?P<t>.+)"
    # "show me the dentist task": one task by its words (not "the urgent task", a list)
    r"|(?:show|open|view|display)\s+(?:me\s+)?the\s+(?P<w>(?!(?:urgent|important|overdue|pending"
    r"|open|completed|done|finished|next|latest|newest|oldest|recent|new|high|low|medium|last"
    r"|first|only)\b)[\w\s'-]+?)\s+(?:task|todo|to-do|item|one)",
    _I,
)


def parse_show(clause: str) -> ShowIntent | None:
    match = _SHOW.fullmatch(clause) or _ABOUT.fullmatch(clause)
    return ShowIntent(parse_target(match.group("t") or match.groupdict()["w"])) if match else None
