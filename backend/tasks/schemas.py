"""Task schemas: what callers may send and what they get back."""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from dateutil.rrule import rrulestr
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from backend.clock import utc_now
from backend.models import Priority

# The one home of the task input limits: REST schemas and MCP tool arguments both use them.
MAX_TITLE = 200
MAX_DESCRIPTION = 2000
MAX_TAGS = 10
MAX_TAG = 32
MAX_RECURRENCE = 500
MAX_SEARCH = 200
MAX_PAGE = 100
MAX_OFFSET = 1_000_000
MAX_TASK_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
MAX_REMIND_BEFORE_MINUTES = 28 * 24 * 60  # four weeks
MAX_SNOOZE_MINUTES = 28 * 24 * 60
SIMPLE_RECURRENCES = ("daily", "weekly", "monthly")


# Python's str.strip() whitespace as the inside of a regex class, so a server check and the
# OpenAPI pattern read the same set (ECMA-262 `\s` is a different one).
SPACE_CLASS = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_S = SPACE_CLASS
TAG_PATTERN = rf"^[{_S}]*#*[^{_S},#\x00][^{_S},\x00]{{0,{MAX_TAG - 1}}}[{_S}]*$"
"""A tag as sent: 1-32 characters without whitespace or commas, leading `#`s and surrounding
whitespace dropped. The one definition: validation and the OpenAPI document both use it."""
_TAG = re.compile(TAG_PATTERN)


def _any_case(*words: str) -> str:
    """Alternatives in any letter case, without flags (the OpenAPI regex dialect has none)."""
    spelled = ("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in w) for w in words)
    return "(" + "|".join(spelled) + ")"


def _listed(value: str) -> str:
    return f"{value}(,{value})*"


_SIGNED = "[+-]?"
# Every real calendar day except 29 February (a pattern cannot tell leap years).
_MONTH_DAY = "((0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])(29|30)|(0[13578]|1[02])31)"
_UNTIL_DATE = f"(19|20)[0-9]{{2}}{_MONTH_DAY}"
_RRULE_PARTS = {
    "INTERVAL": "[1-9][0-9]{0,5}",
    "COUNT": "[1-9][0-9]{0,3}",  # up to 9999: the rule is counted from its start
    # Naive dates only: the rule is checked against a naive start (a `Z` one is refused).
    "UNTIL": f"{_UNTIL_DATE}({_any_case('T')}([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9])?",
    "WKST": _any_case("MO", "TU", "WE", "TH", "FR", "SA", "SU"),
    "BYDAY": _listed(
        f"({_SIGNED}([1-9]|[1-4][0-9]|5[0-3]))?"
        + _any_case("MO", "TU", "WE", "TH", "FR", "SA", "SU")
    ),
    "BYMONTH": _listed("([1-9]|1[0-2])"),
    "BYMONTHDAY": _listed(f"{_SIGNED}([1-9]|[12][0-9]|3[01])"),
    "BYYEARDAY": _listed(f"{_SIGNED}([1-9]|[1-9][0-9]|[12][0-9]{{2}}|3[0-5][0-9]|36[0-6])"),
    "BYWEEKNO": _listed(f"{_SIGNED}([1-9]|[1-4][0-9]|5[0-3])"),
    "BYSETPOS": _listed(f"{_SIGNED}([1-9]|[1-9][0-9]|[12][0-9]{{2}}|3[0-5][0-9]|36[0-6])"),
    "BYHOUR": _listed("([01]?[0-9]|2[0-3])"),
    "BYMINUTE": _listed("[0-5]?[0-9]"),
    "BYSECOND": _listed("[0-5]?[0-9]"),
}
_SUB_HOURLY_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND")


def _rule(frequency: str, parts: dict[str, str]) -> str:
    """FREQ with the other parts before or after it, in any order (RFC 5545 fixes none)."""
    part = "(" + "|".join(f"{_any_case(name)}=({value})" for name, value in parts.items()) + ")"
    return f"({part};)*{_any_case('FREQ')}={frequency}(;{part})*"


# Hourly rules may not name hours, minutes or seconds: an interval can step past every one of
# them, which dateutil refuses. Minutely and secondly repeats are not tasks.
_RRULE = (
    f"{_any_case('RRULE:')}?("
    + _rule(_any_case("YEARLY", "MONTHLY", "WEEKLY", "DAILY"), _RRULE_PARTS)
    + "|"
    + _rule(
        _any_case("HOURLY"),
        {k: v for k, v in _RRULE_PARTS.items() if k not in _SUB_HOURLY_PARTS},
    )
    + ")"
)
RECURRENCE_PATTERN = (
    f"^[{SPACE_CLASS}]*({_any_case(*SIMPLE_RECURRENCES, 'none')}|{_RRULE})?[{SPACE_CLASS}]*$"
)
"""Empty or `none` (no repeat), daily/weekly/monthly, or an RFC 5545 RRULE (hourly or slower);
any letter case. Everything it matches dateutil accepts, so the OpenAPI pattern is the rule."""
_RECURRENCE = re.compile(RECURRENCE_PATTERN)
DATE_TIME_PATTERN = r"^(19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}[Tt ]"
"""How a date-time starts: an ISO 8601 date (pydantic would also read numbers as Unix times) in
the years 1900-2999, so that every offset still gives a UTC instant Python can hold."""
_DATE_TIME_START = re.compile(DATE_TIME_PATTERN)


def _iso_only(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATE_TIME_START.match(value):
        raise ValueError(
            "must be an ISO 8601 date-time with an offset in the years 1900-2999, "
            "e.g. 2030-01-31T09:00:00Z"
        )
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("date is out of range") from exc


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_only),
    AfterValidator(_to_utc),
    Field(json_schema_extra={"pattern": DATE_TIME_PATTERN}),
]
"""Any offset is accepted; the value is kept as the same instant in UTC."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _unicode(value: str) -> str:
    # JSON may escape a lone surrogate, which no database can store.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


def _trimmed_pattern(max_length: int, *, required: bool) -> str:
    """Surrounding whitespace, then 0 or 1 to `max_length` characters without NUL, trimmed."""
    body = rf"[^{SPACE_CLASS}\x00]([^\x00]{{0,{max_length - 2}}}[^{SPACE_CLASS}\x00])?"
    return rf"^[{SPACE_CLASS}]*{body if required else f'({body})?'}[{SPACE_CLASS}]*$"


def _trimmed(max_length: int, *, required: bool) -> AfterValidator:
    """Trims whitespace after checking the text against the pattern the document shows."""
    compiled = re.compile(_trimmed_pattern(max_length, required=required))
    problem = f"must be {int(required)}-{max_length} characters after trimming, without NUL"

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(problem)
        return value.strip()

    return AfterValidator(check)


def _normalise_tag(raw: str) -> str:
    _unicode(raw)
    if not _TAG.fullmatch(raw):
        raise ValueError(f"each tag must be 1-{MAX_TAG} characters without spaces, commas or NUL")
    # "İ" is the one letter whose lowercase is two characters; Turkish reads it as "i".
    return raw.strip().lstrip("#").replace("\u0130", "i").lower()


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def normalise_recurrence(value: str | None) -> str | None:
    """None, one of daily/weekly/monthly, or an RFC 5545 RRULE (checked with dateutil)."""
    if value is None:
        return None
    if not _RECURRENCE.fullmatch(_unicode(value)):
        raise ValueError(
            "recurrence must be daily, weekly, monthly or an RRULE such as FREQ=WEEKLY;BYDAY=MO"
        )
    text = value.strip()
    if not text or text.lower() == "none":
        return None
    if text.lower() in SIMPLE_RECURRENCES:
        return text.lower()
    rule = text.upper().removeprefix("RRULE:")
    # A part named twice counts once, with its last value, as dateutil reads it; stored so,
    # the series code sees the rule that was checked.
    parts: dict[str, str] = {}
    for part in rule.split(";"):
        name, _, value = part.partition("=")
        parts[name] = value
    rule = ";".join(f"{name}={value}" for name, value in parts.items())
    try:
        with warnings.catch_warnings():
            # COUNT with UNTIL: still accepted, only deprecated by dateutil.
            warnings.simplefilter("ignore", DeprecationWarning)
            rrulestr(rule, dtstart=datetime(2000, 1, 1))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "recurrence must be daily, weekly, monthly or an RRULE such as FREQ=WEEKLY;BYDAY=MO"
        ) from exc
    return rule


Title = Annotated[
    str,
    AfterValidator(_unicode),
    _trimmed(MAX_TITLE, required=True),
    Field(json_schema_extra={"pattern": _trimmed_pattern(MAX_TITLE, required=True)}),
]
SearchText = Annotated[
    str,
    AfterValidator(_unicode),
    _trimmed(MAX_SEARCH, required=False),
    Field(json_schema_extra={"pattern": _trimmed_pattern(MAX_SEARCH, required=False)}),
]
Description = Annotated[
    str,
    StringConstraints(max_length=MAX_DESCRIPTION),
    AfterValidator(_unicode),
    AfterValidator(_no_nul),
    Field(json_schema_extra={"pattern": r"^[^\x00]*$"}),
]
Tag = Annotated[
    str,
    AfterValidator(_normalise_tag),
    Field(json_schema_extra={"pattern": TAG_PATTERN}),
]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_unique)]
Recurrence = (
    Annotated[
        str,
        StringConstraints(max_length=MAX_RECURRENCE),
        AfterValidator(normalise_recurrence),
        Field(json_schema_extra={"pattern": RECURRENCE_PATTERN}),
    ]
    | None
)


@cache
def zone_names() -> frozenset[str]:
    """The IANA zone names a client may send ("localtime" is this server's own setting)."""
    return frozenset(available_timezones() - {"localtime"})


def _known_zone(value: str) -> str:
    if value not in zone_names():
        raise ValueError("must be an IANA time zone name such as Europe/Paris")
    return value


def zone_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted(zone_names())


TimeZoneName = Annotated[
    str, AfterValidator(_known_zone), Field(json_schema_extra=zone_enum, max_length=64)
]
"""An IANA zone name: where a repeating task keeps its wall-clock time across DST."""


def _not_bool(value: Any) -> Any:
    # JSON's false is no number of minutes (pydantic would read it as 0); 2.0 is one.
    if isinstance(value, bool):
        raise ValueError("must be a whole number of minutes")
    return value


# The bounds come before the check, so the document shows them as minimum and maximum.
RemindBefore = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_REMIND_BEFORE_MINUTES,
        description="Remind this many minutes before the due time; the reminder moves with it.",
    ),
    BeforeValidator(_not_bool),
]
SnoozeMinutes = Annotated[int, Field(ge=1, le=MAX_SNOOZE_MINUTES), BeforeValidator(_not_bool)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A time and an offset in one body cannot both be the reminder (nulls are fine: they clear).
_ONE_REMINDER: dict[str, Any] = {
    "not": {
        "required": ["remind_at", "remind_before_minutes"],
        "properties": {
            "remind_at": {"type": "string"},
            "remind_before_minutes": {"type": "integer"},
        },
    }
}


class TaskCreate(_Input):
    """A new task. Only `title` is required."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_REMINDER)

    title: Title
    description: Description | None = None
    priority: Priority = Priority.medium
    tags: Tags = Field(default_factory=list)
    due_at: UtcDatetime | None = None
    remind_at: UtcDatetime | None = Field(
        default=None, description="When to remind (absolute); or use remind_before_minutes."
    )
    remind_before_minutes: RemindBefore | None = None
    recurrence: Recurrence = None
    time_zone: TimeZoneName | None = Field(
        default=None,
        description="The user's IANA zone: a repeat keeps its local time in it across DST. "
        "Default: the X-Timezone header, else UTC.",
    )


class TaskReplace(TaskCreate):
    """Every editable field; anything omitted goes back to its default."""

    completed: bool = False


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _not_null() -> Any:
    """Optional but never null: absent means unchanged, and there is nothing to clear it to.
    The document shows neither null nor the internal None default."""
    return Field(default=None, json_schema_extra=_no_default)


class TaskUpdate(_Input):
    """Only the fields sent are changed; `null` clears an optional field."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_REMINDER)

    title: Title | SkipJsonSchema[None] = _not_null()
    description: Description | None = None
    priority: Priority | SkipJsonSchema[None] = _not_null()
    tags: Tags | None = None
    due_at: UtcDatetime | None = None
    remind_at: UtcDatetime | None = None
    remind_before_minutes: RemindBefore | None = None
    recurrence: Recurrence = None
    time_zone: TimeZoneName | SkipJsonSchema[None] = _not_null()
    completed: bool | SkipJsonSchema[None] = _not_null()

    @model_validator(mode="after")
    def _required_fields_not_null(self) -> TaskUpdate:
        for name in ("title", "priority", "completed", "time_zone"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class CompletionChange(_Input):
    completed: bool


class Snooze(_Input):
    """Re-arm a task's reminder: in so many minutes, or at a time (exactly one of them)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    minutes: SnoozeMinutes | SkipJsonSchema[None] = None
    until: UtcDatetime | SkipJsonSchema[None] = _not_null()

    @model_validator(mode="after")
    def _one_of(self) -> Snooze:
        if (self.minutes is None) == (self.until is None):
            raise ValueError("send exactly one of minutes or until")
        return self

    def moment(self) -> datetime:
        """When to remind again; a time already past means now."""
        return max(self.until or utc_now() + timedelta(minutes=self.minutes or 0), utc_now())


SortField = Literal["created_at", "updated_at", "due_at", "remind_at", "priority", "title"]


class TaskQuery(_Input):
    """Filters, sort and page for listing tasks."""

    status: Literal["all", "pending", "completed", "deleted"] = Field(
        default="all",
        description="`all`, `pending` and `completed` list live tasks; `deleted` lists the "
        "deleted ones alone (restore brings one back).",
    )
    priority: Priority | None = None
    tag: Tags = Field(
        default_factory=list, description="Repeatable; every tag given must be on the task."
    )
    q: SearchText | None = Field(
        default=None, description="Case-insensitive search in title and description."
    )
    due_before: UtcDatetime | None = None
    due_after: UtcDatetime | None = None
    overdue: bool = False
    has_reminder: bool = Field(
        default=False, description="Only unfinished tasks with a reminder still to come."
    )
    sort: SortField = "created_at"
    order: Literal["asc", "desc"] | None = Field(
        default=None, description="Default: desc for created_at/updated_at, asc otherwise."
    )
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class TaskPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    completed_at: datetime | None
    priority: Priority
    tags: list[str]
    due_at: datetime | None
    remind_at: datetime | None
    remind_before_minutes: int | None
    reminded_at: datetime | None
    recurrence: str | None
    time_zone: str | None
    series_id: str | None
    occurrence: int
    created_at: datetime
    updated_at: datetime


class TaskPage(BaseModel):
    items: list[TaskPublic]
    total: int
    limit: int
    offset: int
