"""Which tasks words from a message point at ("I finished writing the report"), and verbs
said with a typo ("cmplete task 3"), both by fuzzy matching (rapidfuzz)."""

from __future__ import annotations

import re
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

_STOP = set(
    """the a an my our to of for and or with on in at by from this that it is are be task tasks
    todo todos item one thing about already yet just finally eventually managed got round around
    actually""".split()
)  # the last words tell how a report went ("I finally got round to paying"), not what was done
# Other words for the same act: "phoned grandma" is "Call grandma"; irregular past forms.
_SAME = dict.fromkeys(("phone", "phoned", "rang", "ring", "rung", "called"), "call")
_SAME |= {"bought": "buy", "paid": "pay", "sent": "send", "went": "go", "made": "make"}
_SAME |= {"took": "take", "wrote": "write", "gave": "give", "sold": "sell", "fed": "feed"}
# A title matching at least this well (0-100) is the task meant; a little less, and the
# model asks "did you mean ...?" instead of changing anything.
SURE = 80
UNSURE = 60
_VERBS = (
    "complete delete mark remove finish rename restore reopen remind reschedule postpone change "
    "update create search remember"
).split()
# Real words one slip away from a verb: never "corrected".
_NOT_TYPOS = {"remote", "chance", "compete", "finnish", "remains", "reminds", "creates", "marks"}


def fix_verb(text: str) -> str:
    """ "cmplete task 3" -> "complete task 3": a first word one slip away from an action verb
    (a four-letter one only by swapped letters: "mrak", never "make" or "park"), or its
    first three letters ("del"); its past tense only by swapped letters ("finsihed", never
    "parked")."""
    first, _, rest = text.partition(" ")
    word = first.lower()
    if word in _NOT_TYPOS or word in _VERBS:
        return text
    for verb in _VERBS:
        past = verb + ("d" if verb.endswith("e") else "ed")
        if word.startswith(verb):  # "deleted", "completes": said as meant
            continue
        slip = OSA.distance(word, verb) == 1 and (len(word) > 4 or sorted(word) == sorted(verb))
        if slip or (len(word) == 3 and verb.startswith(word)):  # or cut short: "del"
            return f"{verb} {rest}".strip()
        if OSA.distance(word, past) == 1 and sorted(word) == sorted(past):
            return f"{past} {rest}".strip()
    return text


_ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth".split()
_NUMBERS = "one two three four five six seven eight nine ten".split()
POSITION = re.compile(
    r"(?:the\s+)?(?:(?P<o>" + "|".join(_ORDINALS) + r"|last|\d{1,2}(?:st|nd|rd|th))"
    r"|(?:number|no\.?)\s*(?P<n>" + "|".join(_NUMBERS) + r"|\d{1,2}))(?:\s+(?:one|task|item))?",
    re.IGNORECASE,
)


_EDGE = re.compile(
    r"(?:the\s+)?(?P<edge>first|last|top|bottom)\s+(?P<k>" + "|".join(_NUMBERS[1:]) + r"|\d)"
    r"(?:\s+(?:ones|tasks|items))?",
    re.IGNORECASE,
)


def positions(text: str) -> tuple[int, ...]:
    """Places in a list the assistant showed ("the third one", "number two", "the last",
    "the first two"): 0-based, -1 for the last; () when `text` is not that."""
    edge = _EDGE.fullmatch(text.strip())
    if edge:
        k = _count(edge.group("k").lower())
        first = edge.group("edge").lower() in ("first", "top")
        return tuple(range(k)) if first else tuple(range(-k, 0))
    parts = re.split(r"\s*(?:,|\band\b)\s*", text.strip().lower())
    found = [POSITION.fullmatch(part) for part in parts if part]
    if not found or not all(found):
        return ()
    return tuple(_place(m) for m in found if m)


def _place(match: re.Match[str]) -> int:
    said = match.group("o") or ""
    if match.group("n"):
        return _count(match.group("n")) - 1
    if said == "last":
        return -1
    return _ORDINALS.index(said) if said in _ORDINALS else int(said[:-2]) - 1


def _count(said: str) -> int:
    return int(said) if said.isdigit() else _NUMBERS.index(said) + 1


def content_words(text: str) -> list[str]:
    return [_SAME.get(w, w) for w in re.findall(r"[\w']+", text.lower()) if w not in _STOP]


def score(words: str, title: str) -> float:
    """How well `words` name a task titled `title`: a first word that matches nothing
    ("bought" for "Buy milk") costs a little, and words beyond the title ("got back from the
    gym" for "Go to the gym") cost a little when the whole title is there."""
    wanted, have = content_words(words), content_words(title)
    if not wanted or not have:
        return 0.0
    each = [max(_similar(w, t) for t in have) for w in wanted]
    whole = sum(each) / len(each)
    rest = sum(each[1:]) / (len(each) - 1) - 8 if len(each) > 1 else 0.0
    covered = sum(max(_similar(w, t) for w in wanted) for t in have) / len(have)
    return max(whole, rest, covered - 10)


def names_every_word(words: str, title: str) -> bool:
    """Every word said is in the title (spelling slips and word forms allowed): what a
    delete needs before it acts without asking ("the cat food task" is not "Buy dog food")."""
    have = content_words(title)
    return bool(have) and all(any(_same_word(w, t) for t in have) for w in content_words(words))


def _same_word(word: str, other: str) -> bool:
    """The same word, another form of it ("paying"/"pay", "writing"/"write") or one slip in
    a long word ("shoping"); never a word inside another ("bread"/"read", "cart"/"car")."""
    word, other = _SAME.get(word, word), _SAME.get(other, other)
    short, long = sorted((word, other), key=len)
    endings = ("", "s", "'s", "es", "ed", "d", "ing")
    if long.startswith(short) and long[len(short) :] in endings:
        return True
    if short.endswith("e") and long.startswith(short[:-1]) and long[len(short) - 1 :] in endings:
        return True
    slip = len(short) >= 5 and OSA.distance(word, other) == 1
    return slip and word[0] == other[0] and word[-1] == other[-1]


def _similar(word: str, other: str) -> float:
    """Spelling slips ("shoping") and other forms ("watering" for "water") both count."""
    close = fuzz.partial_ratio(word, other) - 10 if min(len(word), len(other)) >= 4 else 0
    short, long = sorted((word, other), key=len)
    ending = long[len(short) :] if long.startswith(short) and len(short) >= 3 else "-"
    stem = 85 if ending in ("ing", "ed", "d", "s", "es") else 0  # "paying" for "pay"
    return max(fuzz.ratio(word, other), close, stem)


def exact(tasks: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    """The one task titled exactly `words`, if any; otherwise all of `tasks`."""
    wanted = words.casefold().strip()
    same = [t for t in tasks if str(t.get("title", "")).casefold().strip() == wanted]
    return same if len(same) == 1 else tasks


def ranked(tasks: list[dict[str, Any]], words: str) -> tuple[list[dict[str, Any]], bool]:
    """The best matches for `words` (ties within a few points), and whether they are sure
    matches; ([], False) when nothing is even close."""
    scored = sorted(((score(words, str(t.get("title", ""))), t) for t in tasks), key=lambda p: p[0])
    top = scored[-1][0] if scored else 0.0
    if top < UNSURE:
        return [], False
    return [t for s, t in reversed(scored) if s >= top - 5], top >= SURE


def best_matches(tasks: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    matches, sure = ranked(tasks, words)
    return matches if sure else []
