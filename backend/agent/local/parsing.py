"""One user message -> the task requests in it (the local model's understanding)."""

from __future__ import annotations

import re

from backend.agent.local.actions import parse_action, parse_show, parse_target
from backend.agent.local.adds import Draft, build_adds, parse_add
from backend.agent.local.dates import Clock, fix_typos
from backend.agent.local.intents import (
    ActIntent,
    AddIntent,
    Intent,
    ReplyIntent,
    ReplyKind,
    ShowIntent,
    Target,
    UndoIntent,
)
from backend.agent.local.lists import LIST_START, parse_list
from backend.agent.local.reminders import parse_reminder
from backend.agent.local.repeats import find_repeat
from backend.agent.local.timeline import parse_history

_I = re.IGNORECASE
_CONTRACTIONS = {
    r"\bwhat'?s\b": "what is",
    r"\bwhat're\b": "what are",
    r"\bit's\b": "it is",
    r"\bthat's\b": "that is",
    r"\bthere's\b": "there is",
    r"\bi'?ve\b": "i have",
    r"\bi'm\b|\bim\b": "i am",
    r"\bi'd\b": "i would",
    r"\bi'll\b": "i will",
    r"\b(is|are|was|were|has|have|had|do|does|did)n'?t\b": r"\1 not",
    r"\bcan'?t\b": "cannot",
    r"\bwon'?t\b": "will not",
    r"\blet'?s\b": "let us",
}
_TYPOS = {
    r"\b(?:taks|tsak|tasl|tak|taskk)\b": "task",
    r"\b(?:taks|tsaks|taskss)\b": "tasks",
    r"\b(?:delet|dlete|deleet|detele)\b": "delete",
    r"\b(?:compelte|complet|comlete|completee|compete)\b": "complete",
    r"\b(?:remmber|remeber|rember|remembr)\b": "remember",
    r"\b(?:remid|remnd|reminde)\b": "remind",
    r"\b(?:shw|sho|shwo)\b": "show",
    r"\b(?:lsit|lst)\b": "list",
    r"\b(?:pedning|pendng|pendin)\b": "pending",
    r"\b(?:overdu|ovredue)\b": "overdue",
    r"\b(?:renmae|rename)\b": "rename",
    r"\b(?:waht|wat|whta|wht)\b": "what",
}
_LEADING = re.compile(
    r"^(?:please|pls|plz|kindly|could\s+you|can\s+you|would\s+you|will\s+you|could\s+u|can\s+u"
    r"|would\s+you\s+mind|i\s+would\s+like\s+you\s+to|i\s+want\s+you\s+to|i\s+need\s+you\s+to"
    r"|go\s+ahead\s+and|help\s+me(?=\s+(?:remember|add|find|delete|mark|complete))|oh|ok|okay"
    r"|so|hey|hi|hello|um+|uh+|well|actually|also|and|now|then|alright|right|wait|sorry|no"
    r"|nope|oops|hmm+|yo|just|btw|assistant|quickly)\b[\s,!:.-]*",
    _I,
)
_TRAILING = re.compile(
    r"[\s,]*\b(?:please|pls|plz|thanks|thank\s+you(?:\s+so\s+much)?|thx|ty|for\s+me"
    r"|if\s+you\s+can|if\s+possible|right\s+now|now|ok|okay|again)[\s,.!?]*$|[\s,.!?]+$",
    _I,
)
_CMD_START = (
    r"(?:add|create|remind\s+me|mark|complete|finish|delete|remove|cancel|rename|change|update"
    r"|set|move|reschedule|postpone|push|show|list|find|search|restore|undelete|reopen|undo"
    r"|tag|what|which|how\s+many|tell\s+me|give\s+me|i\s+need\s+to|i\s+have\s+to|i\s+finished"
    r"|i\s+completed|i\s+did|check\s+off|tick\s+off|cross\s+off|make\s+(?:it|that|this|them|task))\b"
)
_SPLIT = re.compile(
    r"\s*(?:[;\n]|[.!?](?=\s)|,?\s+and\s+then|,?\s+then|,?\s+and\s+also|,?\s+also|,?\s+and|,"
    rf"|\s+plus)\s+(?={_CMD_START})",
    _I,
)
_QUOTES = re.compile(r"\"[^\"]*\"|(?<!\w)'[^']*'(?!\w)")
_GREETING = re.compile(
    r"(?:hi|hello|hey|hiya|howdy|yo|hallo|good\s+(?:morning|afternoon|evening|day)|greetings"
    r"|sup|what\s+is\s+up)(?:\s+there)?(?:\s+(?:assistant|bot|todo\s+assistant|friend))?",
    _I,
)
_THANKS = re.compile(
    r"(?:thanks|thank\s+you|thx|ty|cheers|much\s+appreciated|appreciate\s+it|great\s+thanks"
    r"|thanks\s+a\s+lot|thank\s+you\s+so\s+much|perfect\s+thanks|awesome\s+thanks)(?:\s+\w+)?",
    _I,
)
_OK = re.compile(
    r"(?:ok|okay|k|cool|great|awesome|perfect|nice|good|lovely|got\s+it|alright|sounds\s+good"
    r"|sure|fine|excellent|wonderful|amazing|brilliant|yes|yeah|yep|yup|no|nope|nah|not\s+now"
    r"|no\s+thanks)",
    _I,
)
_NOW = re.compile(
    r"what\s+(?:is\s+)?(?:the\s+)?(?:date|day|time)(?:\s+(?:is\s+it|today|now))?"
    r"|what\s+is\s+today'?s\s+date|what\s+day\s+is\s+(?:it|today)|what\s+time\s+is\s+it(?:\s+now)?",
    _I,
)
_BYE = re.compile(r"(?:bye|goodbye|good\s+bye|see\s+you|see\s+ya|later|good\s+night|ciao)", _I)
_HELP = re.compile(
    r"(?:help|\?|what\s+can\s+you\s+do|what\s+do\s+you\s+do|how\s+does\s+this\s+work"
    r"|how\s+do\s+(?:i|you)\s+use\s+(?:this|you)|what\s+are\s+you|who\s+are\s+you|commands"
    r"|what\s+can\s+i\s+(?:say|ask|do)|examples?|how\s+to\s+use|what\s+are\s+your\s+features"
    r"|menu|options|what\s+should\s+i\s+say|getting\s+started|instructions|help\s+me|help\s+please"
    r"|i\s+need\s+help|(?:can|could|how\s+can)\s+you\s+help(?:\s+me)?|what\s+now)",
    _I,
)
_UNDO = re.compile(
    r"(?:undo|revert|reverse|take\s+(?:that|it)\s+back|undo\s+(?:that|it|this|last|the\s+last"
    r"(?:\s+(?:one|action|change|step|thing))?|my\s+last\s+(?:action|change)|the\s+delete"
    r"|the\s+deletion|delete|deletion))(?:\s+(?:that|it|please))?",
    _I,
)
_BULK = re.compile(
    r"(?:delete|remove|clear|erase|wipe|cancel|drop|complete|finish|mark)\s+(?:all|every|everything"
    r"|each)\b(?!\s+(?:of\s+)?(?:them|those|these)\b).*"
    r"|(?:delete|remove|clear|erase|wipe|purge|archive)\s+(?:all\s+)?(?:(?:my|the)\s+)?"
    r"(?:completed|done|finished|old|overdue)\s+(?:tasks|todos|items|ones)",
    _I,
)
_STATUS_WORD = re.compile(
    r"(?:done|completed|finished|complete|pending|open|overdue|late)(?:\s+(?:ones|tasks|items))?",
    _I,
)
_CHATTY = re.compile(
    r"(?:tell|say|sing|explain|who|why|how|what|where|when|can|could|would|will|do|does|is|are"
    r"|you|your|i\s+am|i\s+feel|i\s+think|i\s+like|i\s+love|i\s+hate|my\s+name|let\s+us"
    r"|lol|haha|wow|hmm|nice|cool|great|yes|no|maybe|please|sorry|test|testing)\b",
    _I,
)
_ONLY_IDS = re.compile(r"(?:task|item|number)?\s*#?\s*\d{1,9}", _I)
_PAST = re.compile(
    r"(?:i|we)\s+(?:just\s+|already\s+|finally\s+)?(?P<t>(?P<verb>[a-z]+ed|bought|paid|sent"
    r"|wrote|took|made|got|went|ran|met|gave|brought|fed|found|sold|told|ate|read|did)\s+.+)",
    _I,
)
_NOT_DONE_VERBS = set(
    """wanted needed forgot tried decided planned hoped started liked loved hated used asked
    wondered added created deleted removed renamed changed moved noticed realized realised
    mentioned guessed missed ignored postponed delayed""".split()
)
_COMMAND = re.compile(
    r"(?:rename|retitle|change|update|edit|modify|move|reschedule|postpone|push|set|make|mark"
    r"|complete|finish|delete|remove|cancel|restore|undelete|reopen|tag|untag|show|list|find"
    r"|search)\b",
    _I,
)
_QUESTION_START = re.compile(
    r"(?:what|which|who|when|where|why|how|is|are|can|could|do|does|did|should|will|would)\b", _I
)


def normalise(text: str) -> str:
    text = text.translate({0x2019: "'", 0x2018: "'", 0x201C: '"', 0x201D: '"', 0x2014: "-"})
    text = re.sub(r"\s+", " ", text).strip()
    text = fix_typos(text)
    for patterns in (_TYPOS, _CONTRACTIONS):
        for pattern, replacement in patterns.items():
            text = re.sub(pattern, replacement, text, flags=_I)
    return text


def strip_politeness(text: str) -> str:
    previous = None
    while text != previous:
        previous = text
        text = _LEADING.sub("", text)
        text = _TRAILING.sub("", text)
    return re.sub(r"\s*\bplease\b,?\s*", " ", text, flags=_I).strip()


def is_question(text: str) -> bool:
    stripped = text.strip()
    return stripped.endswith("?") or bool(_QUESTION_START.match(stripped))


def small_talk(text: str) -> ReplyIntent | None:
    """Greetings, thanks, help and goodbyes, recognised on the whole message."""
    said = re.sub(r"[\s,.!?:;)(-]+$", "", normalise(text)).strip(" ,.!")
    core = re.sub(r"^(?:please|hey|hi|so|ok|okay)[\s,]+(?=\w)", "", said, flags=_I)
    kinds: tuple[tuple[re.Pattern[str], ReplyKind], ...] = (
        (_HELP, "help"),
        (_NOW, "now"),
        (_GREETING, "greeting"),
        (_THANKS, "thanks"),
        (_BYE, "bye"),
        (_OK, "ok"),
    )
    for pattern, kind in kinds:
        if pattern.fullmatch(said) or pattern.fullmatch(core):
            return ReplyIntent(kind)
    if re.search(r"\bwhat\s+can\s+you\s+do\b|\bhow\s+do\s+(?:i|you)\s+use\b", core, _I):
        return ReplyIntent("help")
    return None


def split_clauses(text: str) -> list[str]:
    quoted = [m.span() for m in _QUOTES.finditer(text)]
    clauses, start = [], 0
    for match in _SPLIT.finditer(text):
        if any(a <= match.start() < b for a, b in quoted):
            continue
        clauses.append(text[start : match.start()])
        start = match.end()
    clauses.append(text[start:])
    return [c.strip() for c in clauses if c.strip(" ,.!?")]


def parse_message(text: str, clock: Clock) -> list[Intent]:
    """Everything asked for in one message, in order."""
    chatter = small_talk(text)
    if chatter is not None:
        return [chatter]
    question = is_question(text)
    clean = strip_politeness(normalise(text))
    if not clean:
        return [ReplyIntent("help")]
    clauses = split_clauses(clean)
    if len(clauses) == 1:
        found = parse_clause(strip_politeness(clauses[0]), clock, question=question)
        return found or [_not_understood(clean, text.strip(), question=question)]
    intents: list[Intent] = []
    for clause in clauses:
        found = parse_clause(strip_politeness(clause), clock, question=question)
        intents.extend(found or [ReplyIntent("unknown", clause)])
    return _merge_reminders(intents, clock)


def _merge_reminders(intents: list[Intent], clock: Clock) -> list[Intent]:
    """ "add dentist friday 3pm, remind me an hour before": one add with its reminder."""
    merged: list[Intent] = []
    for intent in intents:
        previous = merged[-1] if merged else None
        if (
            isinstance(previous, AddIntent)
            and isinstance(intent, ActIntent)
            and intent.action == "update"
            and intent.target.pronoun == "one"
            and set(intent.changes) == {"remind_before_minutes"}
            and "due_at" in previous.fields
        ):
            fields = {k: v for k, v in previous.fields.items() if k != "remind_at"}
            fields["remind_before_minutes"] = intent.changes["remind_before_minutes"]
            fields["time_zone"] = clock.zone.key
            merged[-1] = AddIntent(previous.title, fields)
            continue
        merged.append(intent)
    return merged


def parse_clause(clause: str, clock: Clock, *, question: bool = False) -> list[Intent] | None:
    if not clause:
        return []
    if _BULK.fullmatch(clause):
        return [ReplyIntent("refuse_bulk")]
    if _UNDO.fullmatch(clause):
        return [UndoIntent()]
    reminder = parse_reminder(clause, clock)
    if reminder is not None:
        return [reminder]
    history = parse_history(clause)
    if history is not None:
        return [history]
    if question and _STATUS_WORD.fullmatch(clause):  # "completed?" asks for the list
        return [parse_list(f"show {clause} tasks", clock, strong=True) or ReplyIntent("help")]
    show = parse_show(clause)
    if show is not None:
        return [show]
    if _ONLY_IDS.fullmatch(clause):  # "task 3", "#3": show it
        return [ShowIntent(parse_target(clause))]
    if LIST_START.match(clause) and not _wants_action_after(clause):
        listed = parse_list(clause, clock, strong=True)
        if listed is not None:
            return [listed]
    action = parse_action(clause, clock)
    if action is not None:
        return [action]
    adds = parse_add(clause, clock)
    if adds is not None:
        return _delegated(adds, clause, clock) or adds
    past = _PAST.fullmatch(clause)
    if past and past.group("verb").lower() not in _NOT_DONE_VERBS:  # "I bought the milk"
        return [ActIntent("complete", Target(words=past.group("t")))]
    if not question and find_repeat(clause) is not None:  # "water plants every Monday at 9"
        return build_adds(Draft(clause, {}), clock, split=False)
    listed = parse_list(clause, clock, strong=question)
    return [listed] if listed is not None else None


def _wants_action_after(clause: str) -> bool:
    """Not a question about the list: "tell me to call mom"."""
    return bool(re.match(r"(?:tell\s+me|give\s+me)\s+to\b", clause, _I))


def _delegated(adds: list[Intent], clause: str, clock: Clock) -> list[Intent] | None:
    """A change, not a new task: "I need to delete task 3"."""
    rest = re.sub(
        r"^(?:i\s+|we\s+)?(?:really\s+)?(?:need|have|want|must|should)\s+(?:to\s+)?",
        "",
        clause,
        flags=_I,
    )
    if rest == clause:
        return None
    action = parse_action(rest, clock)
    if isinstance(action, ActIntent) and (action.target.ids or action.target.pronoun):
        return [action]
    return None


def _not_understood(clause: str, original: str, *, question: bool) -> Intent:
    """Short statements might be task titles ("buy milk"): offer to add them."""
    if re.fullmatch(
        r"(?:add|create|new)(?:\s+(?:a|an|new))*(?:\s+(?:task|todo|item))?", clause, _I
    ):
        return ReplyIntent("empty_add")
    if _COMMAND.match(clause):
        return ReplyIntent("unclear_change", clause)
    words = clause.split()
    target = parse_target(clause)
    looks_like_title = 0 < len(words) <= 8 and not question and not _CHATTY.match(clause)
    if looks_like_title and not target.ids and not target.pronoun:
        return ReplyIntent("suggest_add", clause)
    return ReplyIntent("unknown", original)
