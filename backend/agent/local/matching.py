"""Which tasks words from a message point at ("I finished writing the report")."""

from __future__ import annotations

import re
from typing import Any

_STOP = set(
    """the a an my our to of for and or with on in at by from this that it is are be task tasks
    todo todos item one thing about""".split()
)


_IRREGULAR = {
    "bought": "buy", "paid": "pay", "sent": "send", "wrote": "writ", "written": "writ",
    "took": "tak", "made": "mak", "got": "get", "went": "go", "ran": "run", "met": "meet",
    "gave": "giv", "brought": "bring", "fed": "feed", "found": "find", "sold": "sell",
    "told": "tell", "ate": "eat", "did": "do", "done": "do",
}  # fmt: skip


def _stem(word: str) -> str:
    word = word.lower()
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    for suffix in ("ing", "ed", "es", "s", "e"):
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def stems(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[\w']+", text.lower()) if w not in _STOP}


def exact(tasks: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    """The one task titled exactly `words`, if any; otherwise all of `tasks`."""
    wanted = words.casefold().strip()
    same = [t for t in tasks if str(t.get("title", "")).casefold().strip() == wanted]
    return same if len(same) == 1 else tasks


def best_matches(tasks: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    """Tasks sharing the most word stems with `words` (at least half of them)."""
    wanted = stems(words)
    if not wanted:
        return []
    scored = [(len(wanted & stems(str(t.get("title", "")))), t) for t in tasks]
    top = max((score for score, _ in scored), default=0)
    if top == 0 or top * 2 < len(wanted):
        return []
    return [t for score, t in scored if score == top]
