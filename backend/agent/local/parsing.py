"""One user message -> the task requests in it (the local model's understanding)."""

from __future__ import annotations

import re
from dataclasses import replace

from backend.agent.local.actions import parse_action, parse_show, parse_target
from backend.agent.local.adds import Draft, build_adds, join_details, parse_add
from backend.agent.local.dates import Clock, fix_typos, refer_back
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
from backend.agent.local.matching import fix_verb, positions
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
    r"\b(?:shw|sho|shwo)\b": "show",
    r"\b(?:lsit|lst)\b": "list",
    r"\b(?:waht|wat|whta|wht)\b": "what",
}
_LEADING = re.compile(
    r"^(?:please|pls|plz|kindly|could\s+you|can\s+you|would\s+you|will\s+you|could\s+u|can\s+u"
    r"|would\s+you\s+mind|i\s+would\s+like\s+you\s+to|i\s+want\s+you\s+to|i\s+need\s+you\s+to"
    r"|go\s+ahead\s+and|help\s+me(?=\s+(?:remember|add|find|delete|mark|complete))|oh|ok|okay"
    r"|so|hey|hi|hello|um+|uh+|well|actually|also|and|now|then|alright|right|wait|sorry"
    r"|no(?!\s+(?:need|longer|more|reminder|deadline|due|rush)\b)|nope|oops|hmm+|yo|just|btw|assistant|quickly|anyway"
    r"|gosh|ugh|right|i\s+guess|i\s+think|i\s+suppose|update)\b[\s,!:.-]*",
    _I,
)
_TRAILING = re.compile(
    r"[\s,]*\b(?:please|pls|plz|thanks|thank\s+you(?:\s+so\s+much)?|thx|ty|for\s+me"
    r"|if\s+you\s+can|if\s+possible|right\s+now|now|ok|okay|again|cheers|would\s+you"
    r"|thanks\s+(?:a\s+(?:million|lot|bunch)|so\s+much|heaps)|many\s+thanks|ta"
    r"|could\s+you|will\s+you)[\s,.!?]*$|[\s,.!?]+$",
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
    rf"|\s+plus)\s+(?=(?:(?:now|just)\s+)?{_CMD_START})",
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
    r"|no\s+thanks|never\s*mind|nvm|forget\s+it|no\s+worries)",
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
_QUESTION_START = re.compile(
    r"(?:what|which|who|when|where|why|how|is|are|can|could|do|does|did|should|will|would)\b", _I
)


# Emoji and pictographs ("groceries done ✅"): not words.
_EMOJI = re.compile(r"\s*[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]+\s*")


def normalise(text: str) -> str:
    text = text.translate(
        {0x2019: "'", 0x2018: "'", 0x201C: '"', 0x201D: '"', 0x2014: "-", 0x2013: "-"}
    )
    text = re.sub(r"\s+", " ", _EMOJI.sub(" ", text)).strip()
    text = fix_typos(text)
    for patterns in (_TYPOS, _CONTRACTIONS):
        for pattern, replacement in patterns.items():
            text = re.sub(pattern, replacement, text, flags=_I)
    text = _ASK_FOR_LIST.sub("show ", _ASK_TO_KNOW.sub("tell me ", text))
    return _GERUND.sub(lambda m: f"{m.group('lead')} {_imperative(m.group('verb'))}", text)


# "I'd love a quick rundown of what's overdue" asks to be shown the list.
_ASK_FOR_LIST = re.compile(
    r"\b(?:i\s+would\s+(?:love|like)|i\s+want|can\s+i\s+(?:get|have|see)|give\s+me|let\s+me\s+see)"
    r"\s+(?:a\s+|an\s+)?(?:quick\s+|brief\s+|short\s+)?(?:rundown|summary|overview|list|look)"
    r"\s+(?:of|at|on)\s+",
    _I,
)
# "I want to see my tasks", "remind me what I have today": questions about the list.
_ASK_TO_KNOW = re.compile(
    r"\b(?:i\s+(?:want|need|would\s+like)\s+to\s+(?:see|know|check|find\s+out)"
    r"|remind\s+me(?=\s+(?:what|when|whether|which|how|if)\b))\s*",
    _I,
)
# "would you mind deleting the yoga task": the request is the verb after "mind".
_GERUND = re.compile(r"(?P<lead>\bmind(?:\s+\w+ly)?)\s+(?P<verb>[a-z]+ing)\b", _I)


def _imperative(gerund: str) -> str:
    """ "deleting" -> "delete", "putting" -> "put", "adding" -> "add" (command verbs only)."""
    stem = gerund[:-3].lower()
    for verb in (stem, stem + "e", stem[:-1]):
        if _COMMAND_VERB.fullmatch(verb):
            return verb
    return gerund


# Words that wrap a request without adding to it: "would you be so kind as to add …",
# "I was wondering if you could maybe add …", "hmm ok add … i think??".
_WRAPPING_WORDS = set(
    """would could can will you u be so kind as to please pls plz kindly i was wondering if like
    want need mind do me a favour favor and hmm hm ok okay maybe perhaps um uh just quickly hey
    love appreciate grateful great mate possibly erm er terribly hiya reckon better yeah any
    chance we
    hi hello assistant it possible think guess going go ahead help let us actually also then
    now right well oh sorry great thanks thank cool alright yeah yes sure real quick for
    might are able there way""".split()
)
_COMMAND_VERB = re.compile(
    r"\b(?:add|adding|create|remind|mark|complete|finish|delete|remove|rename|move|reschedule"
    r"|postpone|push|show|list|find|search|restore|reopen|undo|tag|change|update|put|make"
    r"|check|tick|cross|snooze|skip|schedule|jot|note|pop|stick|get\s+rid|scrap|ditch|drop"
    r"|cancel|bring|give)\b",
    _I,
)
_HEDGE = re.compile(
    r"[\s,]*\b(?:i\s+think|i\s+guess|yeah|right|ok|okay|i\s+suppose|maybe|perhaps|or\s+something|or\s+so|lol"
    r"|if\s+(?:that\s+is|it\s+is)\s+(?:ok|okay|alright|fine)|if\s+you\s+do\s+not\s+mind"
    r"|when\s+you\s+(?:get|have)\s+a\s+(?:chance|sec(?:ond)?|minute)|at\s+some\s+point"
    r"|some\s*time|one\s+of\s+these\s+days|that\s+would\s+be\s+(?:great|lovely|amazing|perfect"
    r"|brilliant|awesome|nice))[\s,.!?]*$",
    _I,
)


def strip_politeness(text: str) -> str:
    previous = None
    while text != previous:
        previous = text
        text = _TRAILING.sub("", _HEDGE.sub("", _LEADING.sub("", _unwrap(text))))
    return re.sub(r"\s*\bplease\b,?\s*", " ", text, flags=_I).strip()


def _unwrap(text: str) -> str:
    """Drop a polite or hesitant lead-in made only of wrapping words before a command verb."""
    verb = _COMMAND_VERB.search(text)
    if verb is None or verb.start() == 0:
        return text
    lead = re.findall(r"[a-z']+", text[: verb.start()].lower())
    about_myself = (
        "i" in lead and "you" not in lead and {"will", "might", "was", "could"} & set(lead)
    )
    if about_myself:  # "I'll add it later", "could I add milk later?": not a request
        return text
    return text[verb.start() :] if all(w in _WRAPPING_WORDS for w in lead) else text


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


# A message that takes its own request back: "add eggs? no", "delete it… actually don't".
_TAKEN_BACK = re.compile(
    r"[,.!?;-]\s*(?:(?:oh|ok|okay|um|hmm|wait)\s*,?\s*)?(?:no\s*,?\s*wait|wait\s*,?\s*no"
    r"|no\s*,?\s*(?:keep\s+it|do\s+not)|(?:actually\s+)?do\s+not(?:\s+bother)?|or\s+not"
    r"|never\s*mind|nvm|just\s+kidding|jk|scratch\s+that|forget\s+(?:it|that)|not\s+yet"
    r"|keep\s+it|on\s+second\s+thoughts?|no|nope|nah)[\s.!]*$",
    _I,
)


_KEEPS_AN_ADD = re.compile(r"not\s+yet|keep\s+it", _I)  # "add renew licence, not yet"


def parse_message(text: str, clock: Clock) -> list[Intent]:
    """Everything asked for in one message, in order.

    A chatty message is read sentence by sentence ("Hi there! Hope you're well. Could you
    remind me to ..."): sentences that ask for nothing are dropped when another one asks for
    something; a message that asks for nothing at all gets one answer for the whole of it.
    """
    chatter = small_talk(text)
    if chatter is not None:
        return [chatter]
    taken_back = _TAKEN_BACK.search(normalise(text))
    if taken_back and not (_KEEPS_AN_ADD.search(taken_back.group()) and _ADD_VERB.match(text)):
        return [ReplyIntent("cancelled")]
    text = refer_back(text)  # "…on the 22nd. Can you add bake cookies for that day?"
    sentences = [s for s in _SENTENCE.split(text) if s and s.strip(" ,.!?;")]
    if len(sentences) > 1:
        found = _bind([(s, _parse_sentence(s, clock)) for s in sentences], clock)
        found = join_details(found, clock)  # "Add the slides by Friday. It's important!"
        wanted = [i for _, intents in found if not _asks_nothing(intents) for i in intents]
        if wanted:
            return _no_pronoun_titles(_merge_reminders(wanted, clock), text)
    return _no_pronoun_titles(_parse_sentence(text, clock), text)


def _no_pronoun_titles(intents: list[Intent], said: str) -> list[Intent]:
    """ "add it" with nothing said before that it could mean: never a task called "It"."""
    return [
        ReplyIntent("statement", said.strip())
        if isinstance(i, AddIntent) and _PRONOUN_TITLE.fullmatch(i.title)
        else i
        for i in intents
    ]


# Sentence ends ("!", "?", a full stop after a word, ";", a new line) and ", but" / ", so".
_SENTENCE = re.compile(
    r"(?:(?<=[!?])\s+|\s*[\U0001F300-\U0001FAFF]+\s*|(?<=[^\W\d]{3}\.)\s+|\s*;\s*|\s*\n+\s*)(?!(?:notes?|details|description)\s*:)"
    r"|,?\s+(?:but|so)\s+(?=\w)"
    r"|(?:,|\s+[-\u2013\u2014])\s+(?=(?:can|could|would|will)\s+(?:you|u|we)\b|please\b|any\s+chance\b)"
    r"|,\s+(?=(?:i|we)(?:\s|'))",
    _I,
)
# A whole sentence that says not to do something: "no need to remind me", "don't add milk".
_NEGATED = re.compile(
    r"(?:(?:oh|ok|okay|so|well|actually|um|hmm|oops|but|and)\b[\s,]*)*"
    r"(?:no\s+need|(?:i|we|you)\s+(?:do|does|did)\s+not\s+(?:need|have|want)"
    r"|(?:i|we)\s+(?:no\s+longer|never)|(?:please\s+)?(?:do\s+not|never)\s+(?!(?:let\s+me\s+)?forget))",
    _I,
)
# "set up a task to …", "create a reminder to …": a new task, whatever verbs follow.
_NEW_TASK = re.compile(
    r"(?:set\s+up|create|make|add|start)\s+(?:me\s+)?(?:a|an|another)\s+(?:new\s+)?"
    r"(?:task|todo|to-do|reminder)\s+(?:to|for|called|about)\b",
    _I,
)
_PRONOUN_OBJECT = re.compile(
    r"\b(?:add|put|stick|pop|jot|write|note)\s+(?:that|it|this|them)\b", _I
)
_PRONOUN_TITLE = re.compile(r"(?:that|it|this|this\s+one|that\s+one|them)", _I)
# The to-do inside a report: "my boss told me I need to prepare the slides by Friday".
_EMBEDDED_WISH = re.compile(
    r".*\b(?:(?:i|we)\s+(?:really\s+)?(?:need|have|must|should|got|ought)"
    r"|(?:asked|told|wants|wanted|reminded)\s+(?:me|us))\s+(?:to\s+)?(?P<do>.+)",
    _I,
)

# What is left of a report once who did it and how is gone: "oh I think I accidentally
# deleted the task about the wedding speech earlier" -> "the wedding speech".
_TOLD = re.compile(
    r"^(?:no\s+need\s+to\s+remind\s+me\s+(?:about|of)\s+)|^.*?\b(?:i|we)\s+(?:think\s+(?:i|we)\s+)?(?:have\s+)?(?:(?:just|already|finally|accidentally"
    r"|actually|also)\s+)*(?:(?:got\s+round|managed|remembered|went\s+and)\s+(?:to\s+)?)?"
    r"(?:(?:deleted|removed|lost)\s+(?:the\s+)?(?:task\s+(?:about|for|called)\s+)?)?"
    r"|\s+(?:earlier|this\s+morning|yesterday|last\s+(?:night|week)|by\s+mistake|already)+$",
    _I,
)

Piece = tuple[str, list[Intent]]


def _asks_nothing(intents: list[Intent]) -> bool:
    return all(isinstance(i, ReplyIntent) and i.kind != "refuse_bulk" for i in intents)


_SAID = {"statement", "unknown", "suggest_add"}


def _said_only(intents: list[Intent]) -> bool:
    """A statement or something not understood: words another part may point back at."""
    return len(intents) == 1 and isinstance(intents[0], ReplyIntent) and intents[0].kind in _SAID


def _same_request(first: ActIntent, second: ActIntent) -> bool:
    return replace(first, target=second.target) == second


# "you know that gym class thing I put in?": the words before "thing"/"task" name it.
_NAMED = re.compile(r"\b(?:the|that|this|my)\s+(?P<what>[\w' -]+?)\s+(?:task|thing|one|item)\b", _I)


# A statement "it" may point back at: it reports on a task ("I finally paid the gas bill",
# "the leaky roof thing is getting worse"), not on the day ("I am so busy this week").
_REPORTS_ON_A_TASK = re.compile(
    r"\b(?:\w+ed|paid|sent|done|bought|got|took|made|went|did|forgot|sorted|task|thing|one)\b", _I
)


def _points_at_a_task(said: str) -> bool:
    """ "the 2nd", "the car service", "I finally paid the gas bill": words "it" can mean."""
    return bool(
        positions(said)
        or _A_THING.fullmatch(said.strip(" ,.!?"))
        or _REPORTS_ON_A_TASK.search(said)
    )


# A task named and nothing else: "ok so like, the car service".
_A_THING = re.compile(
    r"(?:(?:ok|okay|so|like|um|well|right|oh)\W+)*(?:the|my|that)\s+[\w'-]+(?:\s+[\w'-]+){0,3}", _I
)


def _naming_piece(bound: list[Piece]) -> str:
    """Of the statements just before "it", the one that names a task ("that X thing")."""
    said: list[str] = []
    for text, intents in reversed(bound):
        if not _said_only(intents):
            break
        said.append(text)
    return next((text for text in said if _NAMED.search(text)), said[0])


def _bind(pieces: list[Piece], clock: Clock) -> list[Piece]:
    """ "it"/"that" in one part of a message means what an earlier part said:
    "I finally paid the gas bill so you can tick that off", "I need to prepare the slides by
    Friday, can you add that?", "the report is done, mark it off" (said twice: done once).
    """
    bound: list[Piece] = []
    for text, intents in pieces:
        previous = bound[-1] if bound else None
        intent = intents[0] if len(intents) == 1 else None
        if previous is not None and intent is not None:
            said, earlier = previous
            if isinstance(intent, ActIntent | ShowIntent) and intent.target.pronoun == "one":
                if _said_only(earlier) and _points_at_a_task(_naming_piece(bound)):
                    said = _naming_piece(bound)
                    named = _NAMED.search(said)
                    words = named.group("what") if named else _TOLD.sub("", normalise(said))
                    bound[-1] = (said, [replace(intent, target=Target(words=words or said))])
                    continue
                if isinstance(intent, ActIntent) and any(
                    isinstance(i, ActIntent) and _same_request(i, intent) for i in earlier
                ):
                    continue  # "the report is done, mark it off": one request, said twice
            if isinstance(intent, AddIntent) and _PRONOUN_OBJECT.search(normalise(text)):
                if any(isinstance(i, AddIntent) for i in earlier):
                    continue  # "add X – ref 123, so stick that in the notes": X holds it
            if isinstance(intent, AddIntent) and _PRONOUN_TITLE.fullmatch(intent.title):
                wish = _EMBEDDED_WISH.fullmatch(normalise(said)) if _said_only(earlier) else None
                adds = parse_add(f"i need to {wish.group('do')}", clock) if wish else None
                if adds:
                    bound[-1] = (said, adds)
                    continue
        bound.append((text, intents))
    return bound


def _parse_sentence(text: str, clock: Clock) -> list[Intent]:
    chatter = small_talk(text)
    if chatter is not None:
        return [chatter]
    question = is_question(text)
    normal = normalise(text)
    clean = strip_politeness(normal)
    if not clean:
        return [ReplyIntent("help")]
    clauses = split_clauses(clean)
    if len(clauses) == 1:
        found = _parse_with_typos(strip_politeness(clauses[0]), clock, question=question)
        intents = found or [_not_understood(clean, text.strip(), question=question)]
    else:
        pieces: list[Piece] = []
        for clause in clauses:
            said = strip_politeness(clause)
            found = _parse_with_typos(said, clock, question=question)
            pieces.append((said, found or [ReplyIntent("unknown", clause)]))
        intents = [i for _, found in _bind(pieces, clock) for i in found]
        intents = _merge_reminders(intents, clock)
    if _NEGATED.match(normal) and any(isinstance(i, AddIntent) for i in intents):
        return [ReplyIntent("statement", clean)]
    return intents


def _parse_with_typos(clause: str, clock: Clock, *, question: bool) -> list[Intent] | None:
    """The clause as said; if that is not understood, with a mistyped leading verb fixed
    ("cmplete the report", "remnd me to …").
    """
    found = parse_clause(clause, clock, question=question)
    if found and not all(isinstance(i, ReplyIntent) for i in found):
        return found
    fixed = fix_verb(clause)
    return (parse_clause(fixed, clock, question=question) if fixed != clause else None) or found


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


# Who may ask for a new task without an add verb: "I need to X", "we gotta X", "I must X".
# Any other sentence led by "I"/"we" reports or judges ("I got milk", "I haven't called the
# bank", "I should have paid"): it never becomes a task.
_WISH = re.compile(
    r"(?:i|we)\s+(?:(?:really|also|still|definitely|just|will|would|am|are)\s+)*"
    r"(?:need|have\s+to|has\s+to|have\s+got\s+to|gotta|got\s+to|must|should(?!\s+have)"
    r"|want\s+to|ought\s+to|like\s+to|going\s+to|gonna)\b(?!\s+not\b)",
    _I,
)
_ADD_VERB = re.compile(
    r"(?:add|adding|create|put|insert|jot|write\s+down|note|log|stick|pop|schedule|plan|remind"
    r"|set\s+up|set\s+a\s+reminder|reminder|remember|new|make\s+(?:me\s+)?an?\s+(?:new\s+)?"
    r"(?:task|todo|to-do|reminder)|(?:do\s+not|dont)\s+(?:let\s+me\s+)?forget|todo|to-do|task"
    r"|memo)\b",
    _I,
)
_STATES = re.compile(r"\b(?:is|are|was|were|am|be|been|sucks?|feels?|seems?)\b", _I)
_LIST_FIRST = re.compile(r"(?:my|our|the)\s+[\w-]+\s+list\s*[:,-]", _I)  # "my shopping list: …"
_REPORT = re.compile(
    r"(?:i|we|he|she|they|it|my|our|that|this|there)\b"
    r"|(?:not|never|no\s+longer|already|nothing|none)\b|\w*[a-df-z]ed\b"
    r"|.*\b(?:already|yesterday|last\s+(?:night|week))\s*$",
    _I,
)


def asks_to_add(clause: str, *, question: bool) -> bool:
    """Whether a clause may create tasks: an add verb, or a wish ("I need to X") that is
    neither negated nor a question. Statements, reports, negations and questions never may.
    """
    if _SAYING.search(clause):  # "I have to say, you're amazing", "have a good one!"
        return False
    if _ADD_VERB.match(clause) or _LIST_FIRST.match(clause):
        # "remember me?", "remember when I added milk?" ask; "can you add milk?" asks for it
        return not (question and re.match(r"remember\b(?!\s+to\b)", clause, _I))
    if question:
        return False
    wish = _WISH.match(clause)
    if wish:  # "I need it for the cake" points at something; it names no new task
        return not re.match(
            r"\s*(?:to\s+)?(?:it|that|this|them|those|these)\b", clause[wish.end() :], _I
        )
    return not _REPORT.match(clause)


# Talk, not a to-do: sign-offs and speech acts ("have a good one", "I must admit, …").
_SAYING = re.compile(
    r"^(?:have|got)\b(?!\s+to\b)|^(?:(?:i|we)\s+\w+\s+(?:to\s+)?)?(?:say|admit|thank|tell\s+you"
    r"|talk|go\s+(?:now|to\s+bed)|leave|stop\s+here)\b|\b(?:bye|good\s*night|ttyl|see\s+you)\W*$",
    _I,
)


# A question about a task's state, not a request to change it: "the report is done?",
# "it's urgent?", "will it repeat every day?", "groceries done?".
_ASKED = re.compile(
    r"(?:is|are|was|were|does|do|did|will|has|have)\b"
    r"|(?:it|that|this|the|my|task\s+\d+|#\d+)\b.*\b(?:is|are|was|were)\b"
    r"|[\w' ]{1,40}\s(?:done|finished|completed|complete)$",
    _I,
)
# Words that are never a task's whole title: "add it", "log out", "I need to".
_NOT_TITLES = set(
    "to me out go nothing something anything what here there off around round up on away in"
    " later".split()
)


def parse_clause(clause: str, clock: Clock, *, question: bool = False) -> list[Intent] | None:
    """The requests in one clause; adds and changes pass the rules that hold everywhere."""
    intents = _parse_clause(clause, clock, question=question)
    if intents and any(isinstance(i, AddIntent) for i in intents):
        titles = {i.title.casefold() for i in intents if isinstance(i, AddIntent)}
        if not asks_to_add(clause, question=question) or titles & _NOT_TITLES:
            return [ReplyIntent("statement", clause)]
    if intents and question and _ASKED.match(clause) and not _COMMAND_VERB.match(clause):
        # "the report is done?", "it's urgent?": asked, not told; show the task instead
        return [ShowIntent(i.target) if isinstance(i, ActIntent) else i for i in intents]
    return intents


def _parse_clause(clause: str, clock: Clock, *, question: bool = False) -> list[Intent] | None:
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
    adds = parse_add(clause, clock) if _NEW_TASK.match(clause) else None
    action = None if adds else parse_action(clause, clock)
    if action is not None:
        return [action]
    adds = adds or parse_add(clause, clock)
    if adds is not None:
        return _delegated(adds, clause, clock) or adds
    repeat = None if question else find_repeat(clause)
    rest = f"{clause[: repeat.start]} {clause[repeat.end :]}".strip() if repeat else ""
    if repeat and not _REPORT.match(rest) and not _STATES.search(rest):
        return build_adds(Draft(clause, {}), clock, split=False)  # "water plants every Monday"
    listed = parse_list(clause, clock, strong=question)
    return [listed] if listed is not None else None


def _wants_action_after(clause: str) -> bool:
    """Not a question about the list: "tell me to call mom", "what a week, …"."""
    return bool(
        re.match(
            r"(?:tell\s+me|give\s+me)\s+(?:to|back)\b|what\s+an?\s+\w+\s*(?:[,!.]|$)", clause, _I
        )
    )


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
    if _COMMAND_VERB.match(clause):
        return ReplyIntent("unclear_change", clause)
    words = clause.split()
    target = parse_target(clause)
    looks_like_title = (
        0 < len(words) <= 8 and not _CHATTY.match(clause) and asks_to_add(clause, question=question)
    )
    if looks_like_title and not target.ids and not target.pronoun:
        return ReplyIntent("suggest_add", clause)
    if not question and _REPORT.match(clause):
        return ReplyIntent("statement", clause)
    return ReplyIntent("unknown", original)
