"""When the next occurrence of a repeating task is due.

A series is its normalised `recurrence` (see `backend.tasks.schemas.normalise_recurrence`),
its anchor (the original due date of the first occurrence, the rule's DTSTART) and the IANA
zone stored with it. Rules:

- Wall clock. A rule is evaluated on wall-clock time in the series' zone: DTSTART is the anchor
  converted to the zone, made naive (microseconds dropped). "Every day at 09:00" stays at 09:00
  local on both sides of a DST change. `daily`, `weekly` and `monthly` mean FREQ=DAILY,
  FREQ=WEEKLY and FREQ=MONTHLY. Month ends follow RFC 5545 as dateutil implements it: a monthly
  series anchored on the 31st skips months without a 31st (use BYMONTHDAY=-1 for "last day"),
  and a yearly one anchored on 29 February occurs in leap years only.
- No backlog. The next occurrence is the first one strictly after max(now, current_due):
  completing a daily task three days late gives one task, due at the next future slot, and
  completing one early gives the occurrence after the current one, never the current one again.
- End of a series. COUNT counts calendar occurrences from DTSTART (not completions). UNTIL is a
  wall-clock time in the zone and is inclusive; a date-only UNTIL includes that whole local day.
  When nothing is left, the answer is None.
- Wall clock to UTC. A local time that does not exist (spring-forward gap) moves forward by the
  length of the gap (02:30 becomes 03:30 that day); an ambiguous local time (fall-back) is the
  first, earlier instant. "Strictly after" is decided on the UTC instants, so an ambiguous or
  shifted time can never give the same instant twice or go backwards.
- HOURLY rules step on absolute time: they are evaluated in the fixed UTC offset the anchor had,
  so "every 2 hours" stays 2 hours apart across DST changes. Their BYDAY/BYMONTH/... parts read
  days in that fixed offset, which can differ from the zone's wall clock by the DST shift.
- Horizon. An occurrence more than 100 years (at most 500, the 400-year Gregorian cycle is the
  step) after max(now, current_due) is not looked for: the series counts as ended. Rules that
  can never match again (FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30) would otherwise be searched until
  the year 9999.
- Cost. Without COUNT the search starts near max(now, current_due) (DTSTART moves forward by a
  whole number of intervals, which gives the same occurrences), so an anchor decades in the
  past costs nothing extra. With COUNT the occurrences are counted from DTSTART: up to COUNT
  steps.
- An unknown zone name raises ValueError, as do naive datetimes.
"""

from __future__ import annotations

import re
import warnings
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulebase, rrulestr

__all__ = ["next_due"]

_SIMPLE = {"daily": "FREQ=DAILY", "weekly": "FREQ=WEEKLY", "monthly": "FREQ=MONTHLY"}
# Offsets never change by more than a day at once (Samoa 2011 is the largest jump), so a local
# time two days before another is also earlier in UTC.
_MARGIN = timedelta(days=2)
# Calendars repeat every 400 years to the day and weekday: moving a whole evaluation by a
# multiple of it changes nothing but where dateutil's own stop at the year 9999 falls.
_CYCLE = timedelta(days=146_097)
_CYCLE_YEARS = 400
_HORIZON_YEARS = 100
_DAY_PARTS = ("BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")
_UNTIL = re.compile(r"(\d{8})(T\d{6})?")


def next_due(
    recurrence: str,
    *,
    anchor: datetime,
    zone: str,
    current_due: datetime | None,
    now: datetime,
) -> datetime | None:
    """The due instant (UTC) of the next occurrence, or None when the series has ended."""
    threshold = _utc(now, "now")
    if current_due is not None:
        threshold = max(threshold, _utc(current_due, "current_due"))
    return _Series(recurrence, anchor, zone).first_after(threshold)


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone: {name!r}") from exc


def _parts(recurrence: str) -> dict[str, str]:
    body = _SIMPLE.get(recurrence, recurrence).upper().removeprefix("RRULE:")
    parts: dict[str, str] = {}
    for item in body.split(";"):
        name, sep, value = item.partition("=")
        if not sep or not name or name in parts:
            raise ValueError(f"invalid recurrence: {recurrence!r}")
        parts[name] = value
    if "FREQ" not in parts:
        raise ValueError(f"invalid recurrence: {recurrence!r}")
    return parts


def _local_until(value: str) -> datetime:
    match = _UNTIL.fullmatch(value)
    if match is None:
        raise ValueError(f"UNTIL must be a local date or date-time: {value!r}")
    if match.group(2) is None:
        return datetime.strptime(match.group(1), "%Y%m%d") + timedelta(days=1, seconds=-1)
    return datetime.strptime(value, "%Y%m%dT%H%M%S")


def _months(value: date) -> int:
    return value.year * 12 + value.month - 1


class _Series:
    def __init__(self, recurrence: str, anchor: datetime, zone: str) -> None:
        self.anchor = _utc(anchor, "anchor")
        self.zone = _zone(zone)
        self.parts = _parts(recurrence)
        self.freq = self.parts["FREQ"]
        self.interval = int(self.parts.get("INTERVAL", "1"))
        local = self.anchor.astimezone(self.zone)
        self.clock: tzinfo = self.zone
        if self.freq == "HOURLY":
            offset = local.utcoffset()
            assert offset is not None
            self.clock = timezone(offset)
        self.start = self._naive(self.anchor)
        self.until: datetime | None = None
        if "UNTIL" in self.parts:
            until = _local_until(self.parts.pop("UNTIL"))
            # Wall-clock rules compare UNTIL on the wall clock; hourly ones on the instant.
            self.until = self._naive(self._zone_to_utc(until)) if self.freq == "HOURLY" else until
        # Rebasing DTSTART must not change what dateutil derives from it.
        if self.freq in ("MONTHLY", "YEARLY") and not any(p in self.parts for p in _DAY_PARTS):
            self.parts["BYMONTHDAY"] = str(self.start.day)
            if self.freq == "YEARLY":
                self.parts.setdefault("BYMONTH", str(self.start.month))

    def _naive(self, instant: datetime) -> datetime:
        return instant.astimezone(self.clock).replace(tzinfo=None, microsecond=0, fold=0)

    def _zone_to_utc(self, local: datetime) -> datetime:
        # fold=0 is the earlier of two ambiguous instants, and reads a time in a gap with the
        # offset before it, which lands the length of the gap later.
        return local.replace(tzinfo=self.zone, fold=0).astimezone(UTC)

    def _to_utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.clock, fold=0).astimezone(UTC)

    def _rule(self, dtstart: datetime, base: datetime) -> tuple[rrulebase, timedelta]:
        """The rule moved by whole 400-year cycles so `base` is about a horizon before 9999."""
        cycles = max(0, (9999 - _HORIZON_YEARS - base.year) // _CYCLE_YEARS)
        shift = _CYCLE * cycles
        parts = dict(self.parts)
        if self.until is not None and self.until.year + cycles * _CYCLE_YEARS <= 9999:
            parts["UNTIL"] = (self.until + shift).strftime("%Y%m%dT%H%M%S")
        body = ";".join(f"{name}={value}" for name, value in parts.items())
        with warnings.catch_warnings():
            # COUNT with UNTIL: accepted by the schema, only deprecated by dateutil.
            warnings.simplefilter("ignore", DeprecationWarning)
            return rrulestr(body, dtstart=dtstart + shift), shift

    def _rebased(self, lower: datetime) -> datetime:
        """A later DTSTART, at or before `lower`, with the same occurrences from there on."""
        start, step = self.start, self.interval
        if "COUNT" in self.parts or lower <= start:
            return start
        if self.freq == "HOURLY":
            hours = int((lower - start).total_seconds()) // 3600
            return start + timedelta(hours=hours // step * step)
        if self.freq == "DAILY":
            return start + timedelta(days=(lower - start).days // step * step)
        if self.freq == "WEEKLY":
            return start + timedelta(weeks=(lower - start).days // 7 // step * step)
        if self.freq == "MONTHLY":
            # One month short, so the rebased DTSTART is before `lower` whatever its day.
            skip = (_months(lower) - _months(start) - 1) // step * step
            if skip <= 0:
                return start
            year, month = divmod(_months(start) + skip, 12)
            return start.replace(year=year, month=month + 1, day=1)
        if self.freq == "YEARLY":
            skip = (lower.year - start.year - 1) // step * step
            if skip <= 0:
                return start
            return start.replace(year=start.year + skip, month=1, day=1)
        return start

    def first_after(self, threshold: datetime) -> datetime | None:
        lower = self._naive(threshold) - _MARGIN
        dtstart = self._rebased(lower)
        rule, shift = self._rule(dtstart, max(lower, dtstart))
        best: tuple[datetime, datetime] | None = None
        # A time in a gap lands later than the wall-clock times right after the gap, so keep
        # looking until no later local time can be earlier in UTC.
        for shifted in rule.xafter(lower + shift, inc=True):
            local = shifted - shift
            if best is not None and local - best[1] > _MARGIN:
                break
            try:
                instant = self._to_utc(local)
            except OverflowError:
                break
            if instant > threshold and (best is None or instant < best[0]):
                best = (instant, local)
        return None if best is None else best[0]
