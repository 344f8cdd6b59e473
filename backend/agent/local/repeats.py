"""Repeat rules in task requests ("every Monday" -> FREQ=WEEKLY;BYDAY=MO) and in replies."""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.agent.local.dates import WEEKDAYS

_WEEKDAY = "|".join(WEEKDAYS)
_DAY_CODES = {name: name[:2].upper() for name in WEEKDAYS}
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "other": 2}
_REPEAT_LEAD = r"(?:(?:that\s+)?(?:repeats?|recurs?|repeating|recurring)\s+)?"
_DAY_LIST = rf"(?:{_WEEKDAY})s?(?:\s*(?:,|and|&|,\s*and)\s*(?:{_WEEKDAY})s?)*"
REPEAT_PHRASE = re.compile(
    rf"""(?<![\w-]){_REPEAT_LEAD}(?:
        (?:every|each)\s+(?P<n>\d+|two|three|four|five|six|other)\s+(?P<unit>day|week|month|year)s?
      | (?:every|each|on)\s+(?P<weekdays>weekdays?|work\s*days?)
      | (?:every|each|on)\s+(?P<weekends>weekends?)
      | (?:every|each)\s+(?P<days>{_DAY_LIST})
      | on\s+(?P<plural>(?:{_WEEKDAY})s(?:\s*(?:,|and|&)\s*(?:{_WEEKDAY})s)*)
      | (?:every|each)\s+(?:single\s+)?(?P<every>day|night|morning|evening|week|month|year)
      | (?P<simple>daily|everyday|nightly|weekly|monthly|yearly|annually)
    )(?![\w-])""",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class FoundRepeat:
    rule: str
    weekdays: tuple[str, ...]
    start: int
    end: int


def find_repeat(text: str) -> FoundRepeat | None:
    match = REPEAT_PHRASE.search(text)
    if match is None:
        return None
    rule, weekdays = _rule(match)
    return FoundRepeat(rule, weekdays, match.start(), match.end())


def parse_repeat(text: str) -> str | None:
    """A whole phrase as a rule: "every monday" -> FREQ=WEEKLY;BYDAY=MO; "never" -> "none"."""
    stripped = text.strip(" ,.!?").lower()
    if stripped in {"never", "none", "no", "not", "no more", "nothing"}:
        return "none"
    match = REPEAT_PHRASE.fullmatch(stripped)
    return _rule(match)[0] if match else None


_SIMPLE_RULES = {
    "daily": "daily",
    "everyday": "daily",
    "nightly": "daily",
    "weekly": "weekly",
    "monthly": "monthly",
    "yearly": "FREQ=YEARLY",
    "annually": "FREQ=YEARLY",
}
_EVERY_RULES = {"day": "daily", "night": "daily", "morning": "daily", "evening": "daily"}
_EVERY_RULES |= {"week": "weekly", "month": "monthly", "year": "FREQ=YEARLY"}
_FREQ = {"day": "DAILY", "week": "WEEKLY", "month": "MONTHLY", "year": "YEARLY"}


def _rule(match: re.Match[str]) -> tuple[str, tuple[str, ...]]:
    """The rule and the weekdays it falls on (for the first due date)."""
    if match.group("simple"):
        return _SIMPLE_RULES[match.group("simple").lower()], ()
    if match.group("every"):
        return _EVERY_RULES[match.group("every").lower()], ()
    if match.group("n"):
        raw = match.group("n").lower()
        count = _NUMBERS.get(raw) or int(raw)
        return f"FREQ={_FREQ[match.group('unit').lower()]};INTERVAL={count}", ()
    if match.group("weekdays"):
        return "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", ()
    if match.group("weekends"):
        return "FREQ=WEEKLY;BYDAY=SA,SU", ("saturday",)
    names = tuple(
        dict.fromkeys(re.findall(_WEEKDAY, (match.group("days") or match.group("plural")).lower()))
    )
    return f"FREQ=WEEKLY;BYDAY={','.join(_DAY_CODES[name] for name in names)}", names


def describe_repeat(rule: str | None) -> str | None:
    """The rule in words ("every Monday") for replies; None when the task does not repeat."""
    if not rule:
        return None
    simple = {"daily": "every day", "weekly": "every week", "monthly": "every month"}
    if rule.lower() in simple:
        return simple[rule.lower()]
    parts = dict(p.split("=", 1) for p in rule.upper().split(";") if "=" in p)
    days = parts.get("BYDAY")
    if days == "MO,TU,WE,TH,FR":
        return "every weekday"
    if days:
        names = [n.capitalize() for n in WEEKDAYS if n[:2].upper() in days.split(",")]
        return "every " + " and ".join(names)
    unit = {"DAILY": "day", "WEEKLY": "week", "MONTHLY": "month", "YEARLY": "year"}
    word = unit.get(parts.get("FREQ", ""), "")
    interval = parts.get("INTERVAL", "1")
    if word and interval != "1":
        return f"every {interval} {word}s"
    return f"every {word}" if word else rule
