"""Requests about existing tasks: complete, reopen, change, delete, restore, show."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from backend.agent.local.adds import capitalised, priority_of
from backend.agent.local.dates import Clock, parse_when
from backend.agent.local.intents import ActIntent, Action, ShowIntent, Target
from backend.agent.local.repeats import parse_repeat

_I = re.IGNORECASE
_DONE = (
    r"(?:done|complete|completed|finished|ticked\s+off|checked\s+off|crossed\s+off|checked|ticked)"
)
_NOT_DONE = (
    r"(?:not\s+(?:yet\s+)?(?:done|complete|completed|finished)|incomplete|undone|uncompleted"
    r"|unfinished|pending|open|active|to\s*-?\s*do|todo|not\s+done\s+yet)"
)
_PRIORITY = (
    r"(?P<p>urgent|important|critical|asap|high|low|medium|normal|top|not\s+(?:urgent|important)"
    r"|(?:high|low|medium|normal|top)[\s-]priority)"
)
_PRONOUN_ONE = re.compile(
    r"(?:it|that|this|that\s+one|this\s+one|that\s+task|this\s+task|the\s+task|the\s+last\s+one"
    r"|the\s+last\s+task|the\s+one\s+i\s+just\s+added|the\s+same\s+one|the\s+same\s+task"
    r"|the\s+previous\s+one|the\s+previous\s+task|the\s+latter|the\s+former|i|we|all|i\s+am"
    r"|one)",
    _I,
)
_PRONOUN_MANY = re.compile(
    r"(?:them|those|these|both|both\s+of\s+them|all\s+of\s+them|them\s+all|those\s+tasks"
    r"|them\s+both|both\s+of\s+(?:those|these)|all\s+of\s+(?:these|those)|the\s+two\s+of\s+them"
    r"|these\s+tasks|the\s+two|both\s+tasks|all\s+(?:of\s+)?those|all\s+three)",
    _I,
)
_ID = (
    r"(?:(?:the\s+)?(?:tasks?|items?|todos?|to-dos?|numbers?|no\.?|ids?)\s*(?:number\s*|no\.?\s*)?"
    r"#?\s*|#\s*)?(\d{1,9})"
)
_IDS = re.compile(rf"{_ID}(?:\s*(?:,|and|&|,\s*and)\s*#?\s*(\d{{1,9}}))*", _I)
_TARGET_NOISE = re.compile(
    r"\s+(?:from|off|on|in)\s+(?:my|the)\s+(?:\w+\s+)?(?:list|tasks|todos?|to-dos?)$"
    r"|\s+(?:as\s+well|too|also|for\s+now|for\s+good|permanently|any\s*more|any\s+longer)$",
    _I,
)
_ARTICLES = re.compile(
    r"^(?:(?:the|my|a|an|our|that|this|task|todo|to-do|item|one|about|called|named)\s+)+", _I
)
_SUFFIXES = re.compile(r"(?:\s+(?:task|todo|to-do|item|one|thing|reminder|entry))+$", _I)


def parse_target(text: str) -> Target:
    cleaned = _TARGET_NOISE.sub("", text.strip(" ,.!?")).strip()
    unquoted = cleaned.strip("\"'")
    if _IDS.fullmatch(unquoted):
        return Target(ids=tuple(int(n) for n in re.findall(r"\d+", unquoted)))
    if _PRONOUN_MANY.fullmatch(unquoted):
        return Target(pronoun="many")
    if _PRONOUN_ONE.fullmatch(unquoted):
        return Target(pronoun="one")
    if cleaned != unquoted:  # quoted: the exact title
        return Target(words=unquoted)
    words = _SUFFIXES.sub("", _ARTICLES.sub("", cleaned)).strip(" \"'")
    if not words or _PRONOUN_ONE.fullmatch(words):
        return Target(pronoun="one")
    return Target(words=words)


Builder = Callable[[re.Match[str], Clock], ActIntent | None]


def _act(action: Action, **changes: Any) -> Builder:
    def build(match: re.Match[str], _clock: Clock) -> ActIntent | None:
        return ActIntent(action, parse_target(match.group("t") or "it"), dict(changes))

    return build


def _priority(fixed: str | None = None) -> Builder:
    def build(match: re.Match[str], _clock: Clock) -> ActIntent | None:
        priority = fixed or priority_of(match.group("p"))
        return ActIntent("update", parse_target(match.group("t")), {"priority": priority})

    return build


def _due(match: re.Match[str], clock: Clock) -> ActIntent | None:
    when = re.sub(r"\s+(?:instead|now)$", "", match.group("d").strip(" ,.!?"), flags=_I)
    found = parse_when(when, clock)
    if found is None:
        return None
    due = found.value.isoformat(timespec="seconds")
    return ActIntent("update", parse_target(match.group("t")), {"due_at": due})


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


def _tags(add: bool) -> Builder:
    def build(match: re.Match[str], _clock: Clock) -> ActIntent | None:
        tags = tuple(
            t.lower()
            for t in re.findall(r"[a-z][\w-]{0,31}", match.group("tags"), _I)
            if t.lower() not in {"and", "tag", "tags", "label", "labels", "the", "as", "with"}
        )
        if not tags:
            return None
        target = parse_target(match.group("t"))
        return ActIntent(
            "update", target, add_tags=tags if add else (), remove_tags=() if add else tags
        )

    return build


def _note(match: re.Match[str], _clock: Clock) -> ActIntent | None:
    text = match.group("v").strip().strip("\"'")
    return ActIntent("update", parse_target(match.group("t")), {"description": text[:2000]})


def _change(match: re.Match[str], clock: Clock) -> ActIntent | None:
    """Change X to Y, where Y is a priority, a repeat rule, a date, done/not done or a title."""
    value = match.group("v").strip(" ,.!?")
    target = parse_target(match.group("t"))
    if re.fullmatch(r"\"[^\"]+\"|'[^']+'", value):
        return ActIntent("update", target, {"title": value[1:-1].strip()[:200]})
    priority = re.fullmatch(rf"(?:an?\s+)?{_PRIORITY}(?:\s+priority)?", value, _I)
    if priority:
        return ActIntent("update", target, {"priority": priority_of(priority.group("p"))})
    if re.fullmatch(_DONE, value, _I):
        return ActIntent("complete", target)
    if re.fullmatch(_NOT_DONE, value, _I):
        return ActIntent("reopen", target)
    rule = (
        parse_repeat(value)
        if re.match(r"(?:every|each|daily|weekly|monthly|yearly)", value, _I)
        else None
    )
    if rule is not None:
        return ActIntent("update", target, {"recurrence": rule})
    found = parse_when(value, clock)
    if found is not None:
        return ActIntent("update", target, {"due_at": found.value.isoformat(timespec="seconds")})
    return _rename(match, clock)


_T = r"(?P<t>.+?)"
# A subject that starts a sentence ("task 3 is done"), never a request to add something.
_S = r"(?P<t>(?!(?:add|create|remind|put|schedule|new|todo|i\s+need|i\s+have)\b).+?)"
_SET = r"(?:set|change|update|make|put|switch)"
_DUE_WORDS = r"(?:due\s+date|deadline|due\s+time|due)"
_PATTERNS: tuple[tuple[str, Builder], ...] = (
    # First match wins: reopen before complete ("mark task 3 as not done"), and so on.
    (
        rf"(?:reopen|re-open|unfinish|uncomplete|un-complete|unmark|uncheck|untick|resume)\s+{_T}",
        _act("reopen"),
    ),
    (
        rf"(?:mark|set|flag|put)\s+{_T}\s+(?:back\s+)?(?:as\s+|to\s+)?{_NOT_DONE}(?:\s+again)?",
        _act("reopen"),
    ),
    (
        rf"{_S}\s+(?:is|are)\s+(?:still\s+|actually\s+)?(?:not\s+(?:done|finished|complete|completed)|incomplete|unfinished)(?:\s+yet)?",
        _act("reopen"),
    ),
    (
        rf"(?:undo|revert)\s+(?:the\s+)?(?:completion|complete|done)\s+(?:of|on|for)\s+{_T}",
        _act("reopen"),
    ),
    (
        rf"(?:i\s+)?(?:did\s+not|have\s+not|never)\s+(?:actually\s+)?(?:finish|finished|complete|completed|do|done)\s+{_T}(?:\s+yet)?",
        _act("reopen"),
    ),
    # tags, due date removal, repeat rules, notes: before delete/add, which share their verbs
    (rf"(?:tag|label)\s+{_T}\s+(?:with|as)\s+(?P<tags>.+)", _tags(True)),
    (rf"(?:tag|label)\s+{_T}\s+(?P<tags>#\S+(?:\s*(?:,|and)?\s*#\S+)*)", _tags(True)),
    (rf"add\s+(?:the\s+)?(?:tags?|labels?)\s+(?P<tags>.+?)\s+to\s+{_T}", _tags(True)),
    (rf"add\s+(?P<tags>#\S+(?:\s*(?:,|and)?\s*#\S+)*)\s+to\s+{_T}", _tags(True)),
    (
        rf"(?:remove|delete|drop|take\s+off|clear)\s+(?:the\s+)?(?:tags?|labels?)\s+(?P<tags>.+?)\s+(?:from|on|off)\s+{_T}",
        _tags(False),
    ),
    (
        rf"(?:remove|delete|drop|take)\s+(?P<tags>#\S+(?:\s*(?:,|and)?\s*#\S+)*)\s+(?:from|off)\s+{_T}",
        _tags(False),
    ),
    (rf"untag\s+(?P<tags>#?[\w-]+)\s+from\s+{_T}", _tags(False)),
    (rf"untag\s+{_T}\s+(?P<tags>#\S+(?:\s*(?:,|and)?\s*#\S+)*)", _tags(False)),
    (
        rf"(?:remove|clear|delete|drop|unset)\s+(?:the\s+)?{_DUE_WORDS}\s+(?:from|of|on|for)\s+{_T}",
        _act("update", clear_due_at=True),
    ),
    (
        rf"{_S}\s+(?:has|have)\s+no\s+(?:due\s+date|deadline)(?:\s+anymore)?",
        _act("update", clear_due_at=True),
    ),
    (rf"(?:stop\s+(?:repeating|recurring)|do\s+not\s+repeat|no\s+longer\s+repeat)\s+{_T}", _repeat),
    (rf"{_S}\s+should\s+(?:not|no\s+longer)\s+(?:repeat|recur)", _repeat),
    (rf"(?:stop|keep)\s+{_T}\s+from\s+(?:repeating|recurring)", _repeat),
    (rf"make\s+{_T}\s+(?:not\s+repeat|one-off|a\s+one-off|one\s+time)", _repeat),
    (rf"(?:make|set)\s+{_T}\s+(?:to\s+)?(?:repeat|recur)\s+(?P<r>.+)", _repeat),
    (rf"{_SET}\s+{_T}\s+to\s+(?:repeat|recur)\s+(?P<r>.+)", _repeat),
    (rf"{_S}\s+(?:should\s+)?(?:repeats?|recurs?)\s+(?P<r>.+)", _repeat),
    (
        rf"(?:add|set|put|write)\s+(?:a\s+)?(?:note|description|details)\s+(?:to|on|for)\s+{_T}\s*(?::|saying|that\s+says)\s*(?P<v>.+)",
        _note,
    ),
    (rf"(?:rename|retitle|re-title|re-name)\s+{_T}\s+(?:to|as|into)\s+(?P<v>.+)", _rename),
    (
        rf"(?:{_SET}|edit|modify|fix)\s+(?:the\s+)?(?:title|name|wording|text)\s+(?:of|for|on)\s+{_T}\s+to\s+(?P<v>.+)",
        _rename,
    ),
    (rf"(?:{_SET}|edit|modify|fix)\s+{_T}(?:'s)?\s+(?:title|name)\s+to\s+(?P<v>.+)", _rename),
    (rf"{_S}\s+should\s+(?:be\s+called|say|be\s+named)\s+(?P<v>.+)", _rename),
    (
        rf"{_SET}\s+(?:the\s+)?priority\s+(?:of|for|on)\s+{_T}\s+(?:to|as|at)\s+(?:an?\s+)?{_PRIORITY}(?:\s+priority)?",
        _priority(),
    ),
    (
        rf"{_SET}\s+{_T}(?:'s)?\s+priority\s+(?:to|as|at)\s+(?:an?\s+)?{_PRIORITY}(?:\s+priority)?",
        _priority(),
    ),
    (
        rf"(?:make|mark|set|flag|label)\s+{_T}\s+(?:as\s+|to\s+)?(?:an?\s+)?(?:very\s+|really\s+|super\s+)?{_PRIORITY}(?:\s+priority)?(?:\s+task)?",
        _priority(),
    ),
    (
        rf"{_S}\s+(?:is|are)\s+(?:now\s+|very\s+|really\s+|super\s+|actually\s+)*(?:an?\s+)?{_PRIORITY}(?:\s+priority)?",
        _priority(),
    ),
    (
        rf"(?:prioriti[sz]e|bump\s+up|raise\s+the\s+priority\s+(?:of|on|for))\s+{_T}",
        _priority("high"),
    ),
    (rf"(?:deprioriti[sz]e|lower\s+the\s+priority\s+(?:of|on|for))\s+{_T}", _priority("low")),
    (rf"{_S}\s+(?:is|are)\s+(?:now\s+|actually\s+)?due\s+(?P<d>.+)", _due),
    (
        rf"(?:{_SET}|move|push)\s+(?:the\s+)?{_DUE_WORDS}\s+(?:of|for|on)\s+{_T}\s+(?:to|for|as)\s+(?P<d>.+)",
        _due,
    ),
    (rf"(?:{_SET}|move|push)\s+{_T}(?:'s)?\s+{_DUE_WORDS}\s+(?:to|for|as)\s+(?P<d>.+)", _due),
    (
        rf"(?:move|reschedule|postpone|push|shift|defer|delay|bump|change)\s+{_T}\s+(?:back\s+|forward\s+)?(?:to|until|till|for|by)\s+(?P<d>.+)",
        _due,
    ),
    (rf"(?:make|set)\s+{_T}\s+due\s+(?P<d>.+)", _due),
    (rf"{_S}\s+(?:should|must|needs\s+to)\s+be\s+(?:done|finished)\s+(?:by\s+)?(?P<d>.+)", _due),
    (
        rf"(?:mark|set|flag|tick|check)\s+{_T}\s+(?:off\s+)?(?:as\s+|to\s+)?(?:being\s+)?{_DONE}",
        _act("complete"),
    ),
    (rf"(?:mark|set)\s+(?:as\s+|to\s+)?{_DONE}\s*:?\s*(?P<t>.+)?", _act("complete")),
    (rf"(?:cross|tick|check)\s+{_T}\s+off(?:\s+(?:my|the)\s+list)?", _act("complete")),
    (
        rf"(?:complete|finish|close|tick\s+off|check\s+off|cross\s+off|tick)\s+{_T}",
        _act("complete"),
    ),
    (
        r"(?:i\s+|we\s+)?(?:am\s+|are\s+|have\s+|just\s+|already\s+|finally\s+)*(?:finished|completed|did|done|accomplished|ticked\s+off|checked\s+off|crossed\s+off|wrapped\s+up)(?:\s+with)?\s+(?P<t>(?!i\s).+)",
        _act("complete"),
    ),
    (
        rf"{_S}\s+(?:is|are|was|were|has\s+been|have\s+been)\s+(?:now\s+|all\s+|already\s+|finally\s+)?{_DONE}",
        _act("complete"),
    ),
    (rf"{_S}\s+(?:done|completed|finished)", _act("complete")),
    (rf"(?P<t>){_DONE}", _act("complete")),
    (
        rf"(?:delete|remove|erase|trash|drop|cancel|discard|scrap|scratch|get\s+rid\s+of|forget\s+about|kill|nuke|bin|ditch|axe|strike)\s+{_T}",
        _act("delete"),
    ),
    (
        rf"(?:restore|undelete|un-delete|recover|bring\s+back|get\s+back|resurrect)\s+{_T}(?:\s+back)?",
        _act("restore"),
    ),
    (rf"(?:bring|get|put)\s+{_T}\s+back", _act("restore")),
    (
        rf"(?:undo|revert)\s+(?:the\s+)?(?:deletion|delete|removal)\s+(?:of\s+)?{_T}",
        _act("restore"),
    ),
    # last: "change X to Y" would swallow the more specific forms above
    (rf"(?:{_SET}|edit|modify)\s+{_T}\s+to\s+(?P<v>.+)", _change),
)
_COMPILED = tuple((re.compile(p, _I), build) for p, build in _PATTERNS)


def parse_action(clause: str, clock: Clock) -> ActIntent | None:
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
    r"|tell\s+me\s+about|what\s+is|what\s+about)\s+(?:me\s+)?(?:the\s+)?(?:details\s+(?:of|for|on)\s+)?"
    rf"(?P<t>{_ID}|it|that|this|that\s+one)(?:\s+details|\s+about|\s+again)?",
    _I,
)
_ABOUT = re.compile(
    r"(?:tell\s+me\s+(?:more\s+)?about|details\s+(?:of|for|on)|more\s+about|info\s+on)\s+(?P<t>.+)",
    _I,
)


def parse_show(clause: str) -> ShowIntent | None:
    match = _SHOW.fullmatch(clause) or _ABOUT.fullmatch(clause)
    return ShowIntent(parse_target(match.group("t"))) if match else None
