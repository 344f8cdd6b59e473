"""Repeat rules in task requests ("every Monday" -> FREQ=WEEKLY;BYDAY=MO) and in replies."""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.agent.local.dates import PART_HOURS, WEEKDAYS

_WEEKDAY = "|".join(WEEKDAYS)
_DAY_CODES = {name: name[:2].upper() for name in WEEKDAYS}
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "other": 2}
_REPEAT_LEAD = r"(?:(?:that\s+)?(?:repeats?|recurs?|repeating|recurring)\s+)?"
_DAY_LIST = rf"(?:{_WEEKDAY})s?(?:\s*(?:,|and|&|,\s*and)\s*(?:{_WEEKDAY})s?)*"
_NTH = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
REPEAT_PHRASE = re.compile(
    rf"""(?<![\w-]){_REPEAT_LEAD}(?:
        (?:(?:every|each)\s+month|monthly)\s+on\s+the\s+(?P<md>{_NTH})
      | (?:on\s+)?the\s+(?P<md2>{_NTH})\s+of\s+(?:every|each)\s+month
      | (?:every|each)\s+(?P<n>\d+|two|three|four|five|six|other)
        \s+(?:(?P<unit>day|week|month|year)s?(?:\s+on\s+(?P<ndays>{_DAY_LIST}))?|(?P<odays>{_DAY_LIST}))
      | (?:every|each|on)\s+(?:(?P<weekdays>weekdays?|work\s*days?)|(?P<weekends>weekends?))
      | (?:every|each)\s+(?P<days>{_DAY_LIST})
      | on\s+(?P<plural>(?:{_WEEKDAY})s(?:\s*(?:,|and|&)\s*(?:{_WEEKDAY})s)*)
      | (?:every|each)\s+(?:single\s+)?
        (?P<every>day|night|morning|afternoon|evening|week|month|year)
      | (?P<simple>daily|everyday|nightly|weekly|monthly|yearly|annually)
    )(?![\w-])""",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class FoundRepeat:
    rule: str
    days: tuple[str, ...]  # the days it falls on, for the first due date
    start: int
    end: int
    part: str | None = None  # "every evening": evening


def find_repeat(text: str) -> FoundRepeat | None:
    match = REPEAT_PHRASE.search(text)
    if match is None:
        return None
    rule, days = _rule(match)
    part = (match.group("every") or match.group("simple") or "").lower().replace("nightly", "night")
    return FoundRepeat(rule, days, match.start(), match.end(), part if part in PART_HOURS else None)


def parse_repeat(text: str) -> str | None:
    """A whole phrase as a rule: "every monday" -> FREQ=WEEKLY;BYDAY=MO; "never" -> "none"."""
    stripped = text.strip(" ,.!?").lower()
    if stripped in {"never", "none", "no", "not", "no more", "nothing"}:
        return "none"
    match = REPEAT_PHRASE.fullmatch(stripped)
    return _rule(match)[0] if match else None


_RULES = dict.fromkeys(("daily", "everyday", "nightly", "day", *PART_HOURS), "daily")
_RULES |= dict.fromkeys(("weekly", "week"), "weekly") | {"monthly": "monthly", "month": "monthly"}
_RULES |= dict.fromkeys(("yearly", "annually", "year"), "FREQ=YEARLY")
_FREQ = {"day": "DAILY", "week": "WEEKLY", "month": "MONTHLY", "year": "YEARLY"}


def _rule(match: re.Match[str]) -> tuple[str, tuple[str, ...]]:
    """The rule and the days it falls on (for the first due date)."""
    monthday = match.group("md") or match.group("md2")
    if monthday:
        day = int(re.sub(r"\D", "", monthday))
        return f"FREQ=MONTHLY;BYMONTHDAY={day}", (str(day),)
    if match.group("every") or match.group("simple"):
        return _RULES[(match.group("every") or match.group("simple")).lower()], ()
    if match.group("weekdays"):
        return "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", ()
    if match.group("weekends"):
        return "FREQ=WEEKLY;BYDAY=SA,SU", ("saturday",)
    rule = "FREQ=WEEKLY"
    if match.group("n"):
        raw = match.group("n").lower()
        rule = f"FREQ={_FREQ[(match.group('unit') or 'week').lower()]}"
        rule += f";INTERVAL={_NUMBERS.get(raw) or int(raw)}"
    listed = " ".join(match.group(g) or "" for g in ("ndays", "odays", "days", "plural"))
    names = tuple(dict.fromkeys(re.findall(_WEEKDAY, listed.lower())))
    days = ",".join(_DAY_CODES[name] for name in names)
    return (f"{rule};BYDAY={days}" if days else rule), names


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
    word = next((unit for unit, freq in _FREQ.items() if freq == parts.get("FREQ")), "")
    interval = parts.get("INTERVAL", "1")
    if word and interval != "1":
        return f"every {interval} {word}s"
    return f"every {word}" if word else rule
