"""Due dates and times in task requests, read in the user's zone.

dateparser computes the dates; this module only finds the phrases that look like dates
(dateparser's own search finds dates in words such as "may" or "sun") and handles the few
phrases it does not understand ("end of the week").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dateparser
from dateutil.relativedelta import relativedelta
from dateutil.rrule import MONTHLY, rrule
from rapidfuzz.distance import OSA

from backend.agent.instructions import CURRENT_TIME_PREFIX, TIME_ZONE_PREFIX
from backend.clock import utc_now

# Date-only due times are stored at the end of that day; replies show them without a time.
END_OF_DAY = time(23, 59)

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY = "|".join(WEEKDAYS)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAYNUM = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_ORDINAL = r"(?:(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)|first(?=\s+of\s+next))"
# Days known by name: the next one on or after today.
NAMED_DAYS = {
    "christmas eve": (12, 24),
    "christmas": (12, 25),
    "christmas day": (12, 25),
    "boxing day": (12, 26),
    "new years eve": (12, 31),
    "new years day": (1, 1),
    "halloween": (10, 31),
    "valentines day": (2, 14),
}
_NAMED = (
    r"(?:christmas|xmas)(?:\s+(?:eve|day))?|boxing\s+day|new\s+year'?s\s+(?:eve|day)|halloween"
    r"|valentine'?s(?:\s+day)?"
)
_AMOUNT = (
    r"(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
    r"|a\s+couple\s+of|a\s+few|\d{1,3})"
)
_UNIT = r"(?:minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)"
_DAY = rf"""(?:
    the\s+day\s+after\s+tomorrow | today | tonight | tomorrow | this(?=\s+(?:morning|afternoon|eve))
  | (?:(?:this|next|the\s+coming|coming)\s+)?(?:{_WEEKDAY})
  | {_MONTH}\s+{_DAYNUM}(?:,?\s+\d{{4}})?
  | (?:the\s+)?{_DAYNUM}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?
  | (?:the\s+)?{_ORDINAL}(?:\s+of\s+(?:next|this|the)\s+month)?
  | \d{{4}}-\d{{2}}-\d{{2}} | \d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?
  | in\s+{_AMOUNT}\s+{_UNIT}
  | next\s+(?:week|month|year)
  | (?:the\s+)?end\s+of\s+(?:the\s+|this\s+|next\s+)?(?:day|week|month)
  | (?:this|next)\s+weekend
  | {_NAMED}
)"""
_PART = r"(?:(?:in\s+the\s+)?(?:morning|afternoon|evening)|(?:at\s+)?night|at\s+lunch(?:time)?)"
PART_HOURS = {"morning": 9, "afternoon": 15, "evening": 18, "night": 21, "lunch": 12}
_CLOCK = r"(?:\d{1,2}(?::\d{2})?\s?(?:am|pm|a\.m\.|p\.m\.)|\d{1,2}:\d{2}|noon|midnight)"
_AT = r"(?:at|by|around|before|@)"
_LEAD = r"(?:due\s+(?:on\s+|by\s+|before\s+)?|by\s+|on\s+|before\s+|until\s+|for\s+|from\s+)"

DATE_PHRASE = re.compile(
    rf"""(?<![\w#/:-])
    (?P<lead>{_LEAD})?
    (?:
        (?P<day>{_DAY})(?:\s+(?P<part>{_PART}))?
        (?:,?\s+(?:{_AT}\s*)?(?P<time>{_CLOCK})|\s+{_AT}\s+(?P<hour>\d{{1,2}})(?![\d:]))?
      | (?:{_AT}\s+)?(?P<clock>{_CLOCK})
        (?:,?\s+(?:on\s+)?(?P<day2>{_DAY}))?(?:\s+(?P<part2>{_PART}))?
      | (?:at|@)\s*(?P<hour2>\d{{1,2}})(?![\d:/])(?:\s+(?P<part3>{_PART}))?
    )
    (?![\w/:-])""",
    re.IGNORECASE | re.VERBOSE,
)

_TYPOS = {
    r"\b(?:tmrw|tmr|tmrow|tommorow|2morrow)\b": "tomorrow",
    r"\btonite\b": "tonight",
    r"\b(?:tdy|2day)\b": "today",
}
_AMOUNT_WORDS = {r"\ba\s+couple\s+of\b": "2", r"\ba\s+few\b": "3"}


@dataclass(frozen=True)
class Clock:
    """The user's "now" and zone, as the system instructions give them."""

    now: datetime
    zone: ZoneInfo

    @classmethod
    def from_instructions(cls, instructions: str | None) -> Clock:
        zone, now = ZoneInfo("UTC"), utc_now()
        with suppress(ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo(_line(instructions, TIME_ZONE_PREFIX) or "UTC")
        with suppress(ValueError):
            said = datetime.fromisoformat(_line(instructions, CURRENT_TIME_PREFIX) or "")
            now = said if said.tzinfo is not None else said.replace(tzinfo=UTC)
        return cls(now=now.astimezone(zone), zone=zone)

    def at(self, day: date, clock: time = time(0)) -> datetime:
        return datetime.combine(day, clock, tzinfo=self.zone)

    @property
    def today(self) -> date:
        return self.now.date()

    def start_of_week_after(self, day: date) -> date:
        """The Monday after `day` (a week runs Monday to Sunday)."""
        return day + timedelta(days=7 - day.weekday())

    def first_of_next_month(self, day: date) -> date:
        return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _line(instructions: str | None, prefix: str) -> str | None:
    match = re.search(rf"^{re.escape(prefix)}(\S+)", instructions or "", re.MULTILINE)
    return match.group(1) if match else None


# Short weekday names ("fri 3pm", "by thurs"). Those that are also words ("sat", "sun",
# "wed", "mon") count only with a time after them or a day word before them at the end.
_THEN = rf"(?=\s+(?:(?:at|@)\s*\d|(?:(?:at|@)\s*)?{_CLOCK}|{_PART}))"
_SHORT_DAY = re.compile(
    rf"""(?<![\w'-])(?:
        tues?|thu(?:rs?)?|fri|weds
      | (?P<lead>\b(?:on|next|this|by|every|each|until|till|before)\s+)
        (?P<word>mon|wed|sat|sun)(?=\s*(?:$|[,.;!?)])|{_THEN})
      | (?P<timed>mon|wed|sat|sun){_THEN}
    )\.?(?![\w'-])""",
    re.IGNORECASE | re.VERBOSE,
)
_THAT_DAY = re.compile(
    r"\b(?:(?P<lead>(?:to|by|for|until)\s+)then|(?:that|the\s+same)\s+(?:day|date))\b", re.I
)


def refer_back(text: str) -> str:
    """ "that day", "the same day", "(to|for|by|until) then" written as the day said before
    in the message: "there's a bake sale on the 22nd, add 'bake cookies' for that day"."""

    def day_before(match: re.Match[str]) -> str:
        before = text[: match.start()]
        said = [m for m in DATE_PHRASE.finditer(before) if _plausible(m, before)]
        day = next((d for m in reversed(said) if (d := m.group("day") or m.group("day2"))), None)
        return f"{match.group('lead') or ''}{day}" if day else match.group(0)

    return _THAT_DAY.sub(day_before, text)


# Words requests turn on, corrected when one slip away ("ovrdue", "urgnt", "tomorow").
_KEYWORDS = ("tomorrow", "overdue", "pending", "urgent", "important", "priority")
_NOT_TYPOS = {"penning"}


def fix_typos(text: str) -> str:
    """Misspelt keywords fixed and short weekday names written out."""
    for pattern, replacement in _TYPOS.items():
        text = re.sub(pattern, replacement, text, flags=re.IGNORECASE)
    text = re.sub(r"\b[a-z]{5,}\b", _keyword, text, flags=re.IGNORECASE)
    return _SHORT_DAY.sub(_full_weekday, text)


def _keyword(match: re.Match[str]) -> str:
    """The keyword a word is one slip away from (same first letter), else the word."""
    word = match.group(0).lower()
    if word in _KEYWORDS or word in _NOT_TYPOS:
        return match.group(0)
    close = (k for k in _KEYWORDS if k[0] == word[0] and OSA.distance(word, k) == 1)
    return next(close, match.group(0))


def _full_weekday(match: re.Match[str]) -> str:
    lead = match.group("lead") or ""
    said = match.group(0)[len(lead) :].rstrip(".")
    name = next(day for day in WEEKDAYS if day.startswith(said.lower()[:2]))
    return lead + (name.capitalize() if said[0].isupper() else name)


@dataclass(frozen=True)
class FoundDate:
    value: datetime
    start: int
    end: int
    has_time: bool = False  # a time of day was said ("friday 3pm", "tonight"), not just a day


def find_due(
    text: str, clock: Clock, *, days: tuple[str, ...] = (), part: str | None = None
) -> FoundDate | None:
    """The first date phrase in `text`, with its span (leading "on"/"by"/"due" included).

    `days` are the days of a repeat rule ("every Monday at 9am" is due next Monday 9am;
    "the 15th" for a monthly one) and `part` its part of day ("every evening at 7").
    """
    for match in DATE_PHRASE.finditer(text):
        if not _plausible(match, text):
            continue
        said = match.group("part") or match.group("part2") or match.group("part3") or part
        day = match.group("day") or match.group("day2")
        clock_text = match.group("time") or match.group("clock")
        hour = match.group("hour") or match.group("hour2")
        if clock_text is None and hour:
            clock_text = _hour_text(int(hour), said, day)
        said_days = (day,) if day or not days else days
        found = _soonest(resolve(d, said, clock_text, clock) for d in said_days)
        if found is not None:
            return FoundDate(found[0], match.start(), match.end(), found[1])
    found = _soonest(resolve(d, part, None, clock) for d in days or (None,))
    return FoundDate(found[0], len(text), len(text), found[1]) if found else None


def _hour_text(hour: int, part: str | None, day: str | None) -> str:
    """A bare hour ("at 7"): the part of day decides; otherwise 1-6 means the afternoon."""
    said = f"{part or ''} {day or ''}".lower()
    late = re.search(r"evening|night|afternoon", said) or (hour <= 6 and "morning" not in said)
    return f"{hour}:00" if hour > 12 or hour == 0 else f"{hour}{'pm' if late else 'am'}"


def _soonest(found: Iterable[tuple[datetime, bool] | None]) -> tuple[datetime, bool] | None:
    return min((v for v in found if v is not None), key=lambda v: v[0], default=None)


def _plausible(match: re.Match[str], text: str) -> bool:
    """A bare weekday only counts at the end ("call mom friday", not "sunday roast");
    a bare ordinal needs "the" or "on" ("on the 22nd", not "2nd coat of paint")."""
    day, lead = (match.group("day") or "").lower(), match.group("lead")
    if re.fullmatch(r"\d+(?:st|nd|rd|th)", day):
        return bool(lead)
    detail = lead or match.group("part") or match.group("time") or match.group("hour")
    named = day in WEEKDAYS or _named(day) in NAMED_DAYS
    return not named or bool(detail) or not text[match.end() :].strip(" ,.!?")


def _named(day: str) -> str:
    return re.sub(r"\s+", " ", day.lower().replace("'", "").replace("xmas", "christmas"))


_SAME_TIME = re.compile(r",?\s*\b(?:at\s+)?(?:the\s+)?same\s+time(?:\s+as\s+before)?$", re.I)


def parse_when(text: str, clock: Clock) -> FoundDate | None:
    """`text` as a whole is a date ("friday", "tomorrow at 5pm"), or None.

    `has_time` tells whether a time of day was said, so a move to "thursday" can keep
    the task's own time ("friday, same time" says so)."""
    stripped = _SAME_TIME.sub("", text.strip(" ,.!?"))
    return find_due(stripped, clock) if DATE_PHRASE.fullmatch(stripped) else None


def resolve(
    day: str | None, part: str | None, clock_text: str | None, clock: Clock
) -> tuple[datetime, bool] | None:
    """The moment for a day phrase, part of day and clock time, and whether a time was said."""
    at = _time_of(part, clock_text, clock)
    if day is None:
        if at is None:
            return None
        value = clock.at(clock.today, at)  # a time alone: its next occurrence
        return (value if value > clock.now else clock.at(clock.today + timedelta(1), at)), True
    text = _normalise(day)
    if text == "tonight":
        at = at or time(20)
        at = at.replace(hour=at.hour + 12) if at.hour < 12 else at
    found = _date_of(text, clock)
    if isinstance(found, datetime):
        return found, True
    return (clock.at(found, at or END_OF_DAY), at is not None) if found else None


def _time_of(part: str | None, clock_text: str | None, clock: Clock) -> time | None:
    if clock_text:
        parsed = _parse(clock_text, clock, prefer="current_period")
        return parsed.time() if parsed else None
    if part:
        return time(PART_HOURS[re.sub(r"time$", "", part.lower().split()[-1])])
    return None


def _normalise(day: str) -> str:
    text = re.sub(r"\s+", " ", day.lower()).strip()
    for pattern, replacement in _AMOUNT_WORDS.items():
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"^(?:the )?coming ", "next ", text)
    return re.sub(r"^(?:the )?end of (?:the |this )?", "end ", text)


def _date_of(text: str, clock: Clock) -> date | datetime | None:
    """The day a phrase names (a moment for "in 2 hours")."""
    today, next_week = clock.today, clock.start_of_week_after(clock.today)
    next_month = clock.first_of_next_month(today)
    ordinal = re.fullmatch(r"(?:the )?(\d+|first)(?:st|nd|rd|th)?(?: of (\w+) month)?", text)
    special = dict.fromkeys(("today", "tonight", "this", "end day"), today) | {
        "next month": next_month,
        "end week": next_week - timedelta(1),
        "end next week": next_week + timedelta(6),
        "end month": next_month - timedelta(1),
        "end next month": next_month + relativedelta(months=1, days=-1),
        "this weekend": next_week - timedelta(2),
        "next weekend": next_week + timedelta(5),
    }
    if text in special:
        return special[text]
    if _named(text) in NAMED_DAYS:
        month, day = NAMED_DAYS[_named(text)]
        named = date(today.year, month, day)
        return named if named >= today else named.replace(year=today.year + 1)
    if ordinal:
        start = next_month if ordinal.group(2) == "next" else today
        return next_monthday(int(ordinal.group(1).replace("first", "1")), start)
    parsed = _parse(text, clock, prefer="future")
    if parsed is None or re.search(r"\b(?:minutes?|mins?|hours?|hrs?)\b", text):
        return parsed
    return parsed.date()


def next_monthday(day: int, start: date) -> date:
    """The first day-of-month `day` (1-31) on or after `start`; a 31st skips shorter months."""
    return next(iter(rrule(MONTHLY, bymonthday=day, dtstart=start, count=1))).date()


def _parse(phrase: str, clock: Clock, *, prefer: str) -> datetime | None:
    # Naive wall-clock times in the user's zone; the zone is attached here with zoneinfo
    # (dateparser's own aware results carry pytz offsets that go wrong across DST).
    settings = {
        "PREFER_DATES_FROM": prefer,
        "RELATIVE_BASE": clock.now.replace(tzinfo=None),
        "TIMEZONE": clock.zone.key,
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    parsed = dateparser.parse(phrase, languages=["en"], settings=settings)
    if not isinstance(parsed, datetime):
        return None
    return parsed.replace(tzinfo=clock.zone)
