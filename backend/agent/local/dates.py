"""Due dates and times in task requests, read in the user's zone.

dateparser computes the dates; this module only finds the phrases that look like dates
(dateparser's own search finds dates in words such as "may" or "sun") and handles the few
phrases it does not understand ("end of the week").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dateparser

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
_AMOUNT = (
    r"(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
    r"|a\s+couple\s+of|a\s+few|\d{1,3})"
)
_UNIT = r"(?:minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)"
_DAY = rf"""(?:
    the\s+day\s+after\s+tomorrow | today | tonight | tomorrow
  | (?:(?:this|next|the\s+coming|coming)\s+)?(?:{_WEEKDAY})
  | {_MONTH}\s+{_DAYNUM}(?:,?\s+\d{{4}})?
  | (?:the\s+)?{_DAYNUM}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?
  | \d{{4}}-\d{{2}}-\d{{2}} | \d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?
  | in\s+{_AMOUNT}\s+{_UNIT}
  | next\s+(?:week|month|year)
  | (?:the\s+)?end\s+of\s+(?:the\s+|this\s+)?(?:day|week|month)
  | (?:this|next)\s+weekend
)"""
_PART = r"(?:(?:in\s+the\s+)?(?:morning|afternoon|evening)|at\s+night|at\s+lunch(?:time)?)"
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
    r"\b(?:tmrw|tmr|tmrow|tomorow|tommorow|tommorrow|tomorrrow|2morrow|tomrrow)\b": "tomorrow",
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
        zone = _zone_from(instructions or "")
        now = _now_from(instructions or "") or utc_now()
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


def _zone_from(instructions: str) -> ZoneInfo:
    match = re.search(rf"^{re.escape(TIME_ZONE_PREFIX)}(\S+)", instructions, re.MULTILINE)
    if match:
        try:
            return ZoneInfo(match.group(1))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _now_from(instructions: str) -> datetime | None:
    match = re.search(rf"^{re.escape(CURRENT_TIME_PREFIX)}(\S+)", instructions, re.MULTILINE)
    if not match:
        return None
    try:
        parsed = datetime.fromisoformat(match.group(1))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def fix_typos(text: str) -> str:
    for pattern, replacement in _TYPOS.items():
        text = re.sub(pattern, replacement, text, flags=re.IGNORECASE)
    return text


@dataclass(frozen=True)
class FoundDate:
    value: datetime
    start: int
    end: int


def find_due(text: str, clock: Clock, *, weekdays: tuple[str, ...] = ()) -> FoundDate | None:
    """The first date phrase in `text`, with its span (leading "on"/"by"/"due" included).

    `weekdays` are the days of a repeat rule: "every Monday at 9am" is due next Monday 9am.
    """
    for match in DATE_PHRASE.finditer(text):
        if not _plausible(match, text):
            continue
        part = match.group("part") or match.group("part2") or match.group("part3")
        day = match.group("day") or match.group("day2")
        clock_text = match.group("time") or match.group("clock")
        hour = match.group("hour") or match.group("hour2")
        if clock_text is None and hour:
            clock_text, part = _hour_text(int(hour), part, day), None
        days = (day,) if day or not weekdays else weekdays
        value = _soonest([resolve(d, part, clock_text, clock) for d in days])
        if value is not None:
            return FoundDate(value, match.start(), match.end())
    value = _soonest([resolve(d, None, None, clock) for d in weekdays])
    return FoundDate(value, len(text), len(text)) if value else None


def _hour_text(hour: int, part: str | None, day: str | None) -> str:
    """A bare hour ("at 7"): the part of day decides; otherwise 1-6 means the afternoon."""
    said = f"{part or ''} {day or ''}".lower()
    if hour > 12 or hour == 0:
        return f"{hour}:00"
    if re.search(r"evening|night|afternoon|tonight", said) or (
        1 <= hour <= 6 and "morning" not in said
    ):
        return f"{hour}pm"
    return f"{hour}am"


def _soonest(values: list[datetime | None]) -> datetime | None:
    found = [v for v in values if v is not None]
    return min(found) if found else None


def _plausible(match: re.Match[str], text: str) -> bool:
    """A bare weekday only counts at the end ("call mom friday", not "sunday roast")."""
    day = (match.group("day") or "").lower()
    bare_weekday = day in WEEKDAYS and not (
        match.group("lead") or match.group("part") or match.group("time") or match.group("hour")
    )
    return not bare_weekday or not text[match.end() :].strip(" ,.!?")


def parse_when(text: str, clock: Clock) -> FoundDate | None:
    """`text` as a whole is a date ("friday", "tomorrow at 5pm"), or None."""
    stripped = text.strip(" ,.!?")
    match = DATE_PHRASE.fullmatch(stripped)
    if match is None:
        return None
    return find_due(stripped, clock)


def resolve(
    day: str | None, part: str | None, clock_text: str | None, clock: Clock
) -> datetime | None:
    """Compute the datetime for a day phrase plus an optional part of day and clock time."""
    day_text = _normalise(day) if day else None
    if (
        day_text is not None
        and day_text.startswith(("end of", "the end of"))
        or day_text
        in (
            "this weekend",
            "next weekend",
        )
    ):
        return _special_day(day_text, clock_text, clock)
    if day_text == "tonight":
        day_text = "today"
        if clock_text and re.fullmatch(r"\d{1,2}(?::\d{2})?", clock_text):
            clock_text += "pm"
        clock_text = clock_text or ("8pm" if part is None else None)
    if day_text is None:
        return _clock_only(clock_text or part or "", clock)
    phrase = " ".join(p for p in (day_text, _part_text(part, clock_text), _at(clock_text)) if p)
    parsed = _parse(phrase, clock, prefer="future")
    if parsed is None:
        return None
    if not (part or clock_text or re.search(r"\b(?:minutes?|mins?|hours?|hrs?)\b", day_text)):
        return clock.at(parsed.date(), END_OF_DAY)
    return parsed


def _normalise(day: str) -> str:
    text = re.sub(r"\s+", " ", day.lower()).strip()
    for pattern, replacement in _AMOUNT_WORDS.items():
        text = re.sub(pattern, replacement, text)
    return re.sub(r"^(?:the )?coming ", "next ", text)


def _part_text(part: str | None, clock_text: str | None) -> str | None:
    if part is None or clock_text is not None:
        return None
    return re.sub(r"^(?:in the |at )", "", part.lower())


def _at(clock_text: str | None) -> str | None:
    return f"at {clock_text}" if clock_text else None


def _special_day(day_text: str, clock_text: str | None, clock: Clock) -> datetime:
    if day_text == "next weekend":
        target = clock.start_of_week_after(clock.today) + timedelta(days=5)
    elif day_text.endswith("week"):
        target = clock.start_of_week_after(clock.today) - timedelta(days=1)
    elif day_text.endswith("month"):
        target = clock.first_of_next_month(clock.today) - timedelta(days=1)
    elif day_text.endswith("weekend"):
        target = clock.start_of_week_after(clock.today) - timedelta(days=2)
    else:
        target = clock.today
    if clock_text:
        parsed = _parse(clock_text, clock, prefer="current_period")
        if parsed is not None:
            return clock.at(target, parsed.time())
    return clock.at(target, END_OF_DAY)


def _clock_only(clock_text: str, clock: Clock) -> datetime | None:
    """A time with no day means its next occurrence: 8am said at 10am is tomorrow 8am."""
    text = {"morning": "9am", "afternoon": "3pm", "evening": "6pm", "night": "9pm"}.get(
        re.sub(r"^(?:in the |at )", "", clock_text.lower()), clock_text
    )
    parsed = _parse(text, clock, prefer="current_period")
    if parsed is None:
        return None
    value = clock.at(clock.today, parsed.time())
    return value if value > clock.now else clock.at(clock.today + timedelta(days=1), parsed.time())


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
