"""The recurrence engine: next occurrences on the wall clock, across DST, month ends and ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.reminders.recurrence import next_due

NY = "America/New_York"
BERLIN = "Europe/Berlin"
SYDNEY = "Australia/Sydney"


def at(zone: str, *fields: int, fold: int = 0) -> datetime:
    """A wall-clock time in `zone` as a UTC instant."""
    return datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)  # type: ignore[arg-type,misc]


def after(
    rule: str,
    anchor: datetime,
    now: datetime,
    zone: str,
    current_due: datetime | None = None,
) -> datetime | None:
    return next_due(rule, anchor=anchor, zone=zone, current_due=current_due, now=now)


@pytest.mark.parametrize(
    ("zone", "anchor", "now", "expected"),
    [
        # Spring forward: 9am stays 9am.
        (NY, (2030, 3, 9, 9), (2030, 3, 9, 12), (2030, 3, 10, 9)),
        (NY, (2030, 3, 10, 9), (2030, 3, 10, 12), (2030, 3, 11, 9)),
        # Fall back.
        (NY, (2030, 11, 2, 9), (2030, 11, 2, 12), (2030, 11, 3, 9)),
        (BERLIN, (2030, 3, 30, 9), (2030, 3, 30, 10), (2030, 3, 31, 9)),
        (BERLIN, (2030, 10, 26, 9), (2030, 10, 26, 10), (2030, 10, 27, 9)),
        # Southern hemisphere: DST ends in April and starts in October.
        (SYDNEY, (2030, 4, 6, 9), (2030, 4, 6, 10), (2030, 4, 7, 9)),
        (SYDNEY, (2030, 10, 5, 9), (2030, 10, 5, 10), (2030, 10, 6, 9)),
    ],
)
def test_daily_keeps_the_local_time_across_dst(
    zone: str, anchor: tuple[int, ...], now: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    got = after("daily", at(zone, *anchor), at(zone, *now), zone)
    assert got == at(zone, *expected)
    assert got is not None
    assert got.tzinfo is UTC


def test_a_time_in_the_spring_gap_moves_forward_by_the_gap() -> None:
    anchor = at(NY, 2030, 3, 9, 2, 30)
    got = after("daily", anchor, anchor, NY)
    assert got == at(NY, 2030, 3, 10, 3, 30)
    assert got == datetime(2030, 3, 10, 7, 30, tzinfo=UTC)
    # And the day after is back at 02:30.
    assert after("daily", anchor, got, NY) == at(NY, 2030, 3, 11, 2, 30)


def test_a_time_in_the_sydney_gap_moves_forward() -> None:
    anchor = at(SYDNEY, 2030, 10, 5, 2, 30)
    assert after("daily", anchor, anchor, SYDNEY) == at(SYDNEY, 2030, 10, 6, 3, 30)


def test_an_ambiguous_time_takes_the_earlier_instant_once() -> None:
    anchor = at(NY, 2030, 11, 2, 1, 30)
    first = after("daily", anchor, anchor, NY)
    assert first == at(NY, 2030, 11, 3, 1, 30, fold=0)
    assert first == datetime(2030, 11, 3, 5, 30, tzinfo=UTC)
    # Completing it during the second 01:30 does not give the same wall time again.
    second = after("daily", anchor, at(NY, 2030, 11, 3, 1, 30, fold=1), NY, current_due=first)
    assert second == at(NY, 2030, 11, 4, 1, 30)


def test_an_anchor_in_the_second_ambiguous_hour() -> None:
    anchor = at(NY, 2030, 11, 3, 1, 30, fold=1)
    assert after("daily", anchor, anchor, NY, current_due=anchor) == at(NY, 2030, 11, 4, 1, 30)


def test_hourly_inside_the_gap_is_strictly_increasing() -> None:
    # Half-hourly wall times around the gap: 02:30 lands after 03:00 once made real.
    rule = "FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0,30"
    anchor = at(NY, 2030, 3, 9, 1, 0)
    seen = []
    now = at(NY, 2030, 3, 10, 0, 0)
    for _ in range(6):
        got = after(rule, anchor, now, NY)
        assert got is not None
        assert got > now
        seen.append(got)
        now = got
    local = [(t.astimezone(ZoneInfo(NY)).hour, t.astimezone(ZoneInfo(NY)).minute) for t in seen]
    assert local == [(1, 0), (1, 30), (3, 0), (3, 30), (1, 0), (1, 30)]
    assert seen[3] == at(NY, 2030, 3, 10, 3, 30)
    assert seen[4] == at(NY, 2030, 3, 11, 1, 0)


@pytest.mark.parametrize(
    ("zone", "start"),
    [(NY, (2030, 3, 9, 22)), (NY, (2030, 11, 2, 22)), (BERLIN, (2030, 3, 30, 23))],
)
def test_hourly_steps_on_absolute_time(zone: str, start: tuple[int, ...]) -> None:
    anchor = at(zone, *start)
    now = anchor
    for _ in range(12):
        got = after("FREQ=HOURLY;INTERVAL=2", anchor, now, zone)
        assert got == now + timedelta(hours=2)
        now = got


def test_hourly_until_is_local_wall_time() -> None:
    anchor = at(BERLIN, 2030, 3, 31, 0, 0)
    rule = "FREQ=HOURLY;UNTIL=20300331T040000"
    assert after(rule, anchor, at(BERLIN, 2030, 3, 31, 3, 0), BERLIN) == at(BERLIN, 2030, 3, 31, 4)
    assert after(rule, anchor, at(BERLIN, 2030, 3, 31, 4, 0), BERLIN) is None


@pytest.mark.parametrize(
    ("rule", "anchor", "now", "expected"),
    [
        # The 31st: months without one are skipped.
        ("FREQ=MONTHLY;BYMONTHDAY=31", (2030, 1, 31, 9), (2030, 1, 31, 10), (2030, 3, 31, 9)),
        ("monthly", (2030, 1, 31, 9), (2030, 1, 31, 10), (2030, 3, 31, 9)),
        ("monthly", (2030, 3, 31, 9), (2030, 3, 31, 10), (2030, 5, 31, 9)),
        ("monthly", (2030, 1, 15, 9), (2030, 1, 15, 10), (2030, 2, 15, 9)),
        # The last day of the month, February in non-leap and leap years.
        ("FREQ=MONTHLY;BYMONTHDAY=-1", (2030, 1, 31, 9), (2030, 1, 31, 10), (2030, 2, 28, 9)),
        ("FREQ=MONTHLY;BYMONTHDAY=-1", (2032, 1, 31, 9), (2032, 1, 31, 10), (2032, 2, 29, 9)),
        ("FREQ=MONTHLY;BYMONTHDAY=-1", (2032, 2, 29, 9), (2032, 2, 29, 10), (2032, 3, 31, 9)),
        ("FREQ=MONTHLY;BYMONTHDAY=-1", (2030, 4, 30, 9), (2030, 4, 30, 10), (2030, 5, 31, 9)),
        # 29 February: leap years only.
        ("FREQ=YEARLY", (2032, 2, 29, 9), (2032, 2, 29, 10), (2036, 2, 29, 9)),
        ("FREQ=YEARLY", (2096, 2, 29, 9), (2096, 2, 29, 10), (2104, 2, 29, 9)),
        # Weekdays.
        ("FREQ=WEEKLY;BYDAY=MO,WE,FR", (2030, 1, 7, 9), (2030, 1, 7, 10), (2030, 1, 9, 9)),
        ("FREQ=WEEKLY;BYDAY=MO,WE,FR", (2030, 1, 7, 9), (2030, 1, 11, 10), (2030, 1, 14, 9)),
        ("FREQ=MONTHLY;BYDAY=1MO", (2030, 1, 7, 9), (2030, 1, 7, 10), (2030, 2, 4, 9)),
        ("FREQ=MONTHLY;BYDAY=-1FR", (2030, 1, 25, 9), (2030, 1, 25, 10), (2030, 2, 22, 9)),
        ("FREQ=MONTHLY;BYDAY=-1FR", (2030, 5, 31, 9), (2030, 5, 31, 10), (2030, 6, 28, 9)),
        # Every other week, counted from the anchor's week.
        ("FREQ=WEEKLY;INTERVAL=2", (2030, 1, 7, 9), (2030, 1, 8, 10), (2030, 1, 21, 9)),
        ("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU", (2030, 1, 8, 9), (2030, 1, 15, 10), (2030, 1, 22, 9)),
        ("weekly", (2030, 1, 7, 9), (2030, 1, 7, 10), (2030, 1, 14, 9)),
    ],
)
def test_calendar_rules(
    rule: str, anchor: tuple[int, ...], now: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    got = after(rule, at(BERLIN, *anchor), at(BERLIN, *now), BERLIN)
    assert got == at(BERLIN, *expected)


def test_count_ends_the_series_counting_occurrences_not_completions() -> None:
    anchor = at(BERLIN, 2030, 1, 1, 9)
    rule = "FREQ=DAILY;COUNT=5"
    assert after(rule, anchor, at(BERLIN, 2030, 1, 4, 10), BERLIN) == at(BERLIN, 2030, 1, 5, 9)
    assert after(rule, anchor, at(BERLIN, 2030, 1, 5, 9), BERLIN) is None
    # Skipped occurrences still count: completing the first one late ends it too.
    late = at(BERLIN, 2030, 1, 7, 9)
    assert after(rule, anchor, late, BERLIN, current_due=anchor) is None


def test_until_is_inclusive_local_wall_time() -> None:
    anchor = at(NY, 2030, 1, 1, 9)
    rule = "FREQ=DAILY;UNTIL=20300105T090000"
    assert after(rule, anchor, at(NY, 2030, 1, 4, 10), NY) == at(NY, 2030, 1, 5, 9)
    assert after(rule, anchor, at(NY, 2030, 1, 5, 9), NY) is None
    assert after("FREQ=DAILY;UNTIL=20300105T085959", anchor, at(NY, 2030, 1, 4, 10), NY) is None
    # A date-only UNTIL includes that whole day.
    assert after("FREQ=DAILY;UNTIL=20300105", anchor, at(NY, 2030, 1, 4, 10), NY) == at(
        NY, 2030, 1, 5, 9
    )
    assert after("FREQ=DAILY;UNTIL=20300104", anchor, at(NY, 2030, 1, 4, 10), NY) is None


def test_count_and_until_together() -> None:
    anchor = at(BERLIN, 2030, 1, 1, 9)
    rule = "FREQ=DAILY;COUNT=3;UNTIL=20300110T000000"
    assert after(rule, anchor, at(BERLIN, 2030, 1, 2, 10), BERLIN) == at(BERLIN, 2030, 1, 3, 9)
    assert after(rule, anchor, at(BERLIN, 2030, 1, 3, 10), BERLIN) is None


def test_no_backlog_when_completed_days_late() -> None:
    anchor = at(NY, 2030, 1, 1, 9)
    due = at(NY, 2030, 1, 3, 9)
    now = at(NY, 2030, 1, 6, 14)
    assert after("daily", anchor, now, NY, current_due=due) == at(NY, 2030, 1, 7, 9)
    # Exactly on a slot: strictly after it.
    assert after("daily", anchor, at(NY, 2030, 1, 6, 9), NY, current_due=due) == at(
        NY, 2030, 1, 7, 9
    )


def test_completing_early_gives_the_occurrence_after_the_current_one() -> None:
    anchor = at(NY, 2030, 1, 1, 9)
    due = at(NY, 2030, 1, 10, 9)
    assert after("daily", anchor, at(NY, 2030, 1, 2, 8), NY, current_due=due) == at(
        NY, 2030, 1, 11, 9
    )
    assert after("weekly", anchor, at(NY, 2030, 1, 2), NY, current_due=at(NY, 2030, 1, 8, 9)) == (
        at(NY, 2030, 1, 15, 9)
    )


def test_an_anchor_decades_ago_answers_the_same_as_a_recent_one() -> None:
    now = at(BERLIN, 2031, 6, 15, 12)
    for rule, old, recent, expected in [
        ("daily", (1931, 6, 1, 9), (2031, 6, 1, 9), (2031, 6, 16, 9)),
        ("FREQ=DAILY;INTERVAL=3", (1931, 6, 1, 9), (2031, 6, 1, 9), None),
        ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH", (1931, 6, 1, 9), (2031, 6, 2, 9), None),
        ("monthly", (1931, 1, 31, 9), (2031, 1, 31, 9), (2031, 7, 31, 9)),
        ("FREQ=MONTHLY;INTERVAL=5;BYDAY=-1FR", (1931, 1, 30, 9), None, None),
        ("FREQ=YEARLY", (1932, 2, 29, 9), (2028, 2, 29, 9), (2032, 2, 29, 9)),
        ("FREQ=YEARLY;INTERVAL=3", (1932, 7, 1, 9), None, None),
        ("FREQ=HOURLY;INTERVAL=7", (1931, 6, 1, 9, 15), None, None),
    ]:
        anchor = at(BERLIN, *old)
        got = after(rule, anchor, now, BERLIN)
        if expected is not None:
            assert got == at(BERLIN, *expected), rule
        if recent is not None:
            assert got == after(rule, at(BERLIN, *recent), now, BERLIN), rule
        # The same answer dateutil gives when walked from the anchor by hand.
        assert got == _brute_force(rule, anchor, BERLIN, now), rule


def test_a_rule_that_never_matches_again_ends_quickly() -> None:
    anchor = at(BERLIN, 2030, 1, 1, 9)
    now = at(BERLIN, 2030, 6, 1)
    assert after("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", anchor, now, BERLIN) is None
    assert after("FREQ=HOURLY;BYMONTH=4;BYMONTHDAY=31", anchor, now, BERLIN) is None


def test_bad_input_is_a_value_error() -> None:
    anchor = at(BERLIN, 2030, 1, 1, 9)
    with pytest.raises(ValueError, match="time zone"):
        after("daily", anchor, anchor, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="time zone"):
        after("daily", anchor, anchor, "../etc/passwd")
    with pytest.raises(ValueError, match="aware"):
        after("daily", anchor, datetime(2030, 1, 2), BERLIN)
    with pytest.raises(ValueError, match="aware"):
        after("daily", anchor.replace(tzinfo=None), anchor, BERLIN)


def test_utc_zone_and_other_offsets_in_inputs() -> None:
    anchor = datetime(2030, 1, 1, 9, tzinfo=ZoneInfo("Asia/Tokyo"))
    got = after("daily", anchor, anchor, "UTC")
    assert got == datetime(2030, 1, 2, 0, tzinfo=UTC)


def _brute_force(rule: str, anchor: datetime, zone: str, threshold: datetime) -> datetime | None:
    """dateutil walked from DTSTART, each wall time made real with fold=0, the first past the
    threshold in UTC: the reference for everything but HOURLY."""
    tz = ZoneInfo(zone)
    body = {"daily": "FREQ=DAILY", "weekly": "FREQ=WEEKLY", "monthly": "FREQ=MONTHLY"}.get(
        rule, rule
    )
    clock: tzinfo = tz
    if "HOURLY" in body:
        offset = anchor.astimezone(tz).utcoffset()
        assert offset is not None
        clock = timezone(offset)
    start = anchor.astimezone(clock).replace(tzinfo=None, microsecond=0)
    local_threshold = threshold.astimezone(clock).replace(tzinfo=None) - timedelta(days=2)
    found: list[datetime] = []
    for local in rrulestr(body, dtstart=start).xafter(local_threshold, inc=True):
        instant = local.replace(tzinfo=clock, fold=0).astimezone(UTC)
        if instant > threshold:
            found.append(instant)
        if local > local_threshold + timedelta(days=400 * 366):
            break
        if len(found) > 60:
            break
    return min(found, default=None)


ZONES = [NY, BERLIN, SYDNEY, "UTC", "Asia/Kolkata", "America/Sao_Paulo"]
RULES = [
    "daily",
    "weekly",
    "monthly",
    "FREQ=DAILY;INTERVAL=3",
    "FREQ=WEEKLY;BYDAY=MO,WE,FR",
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,SU",
    "FREQ=MONTHLY;BYMONTHDAY=31",
    "FREQ=MONTHLY;BYMONTHDAY=-1",
    "FREQ=MONTHLY;BYDAY=1MO",
    "FREQ=MONTHLY;BYDAY=-1FR;INTERVAL=2",
    "FREQ=YEARLY",
    "FREQ=DAILY;COUNT=20",
    "FREQ=DAILY;UNTIL=20310301T000000",
    "FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0,30",
    "FREQ=HOURLY;INTERVAL=5",
]
instants = st.datetimes(min_value=datetime(2029, 1, 1), max_value=datetime(2032, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    zone=st.sampled_from(ZONES),
    anchor=instants,
    now=instants,
    due_offset=st.one_of(st.none(), st.integers(-40 * 24, 40 * 24)),
)
def test_property_next_is_a_later_occurrence(
    rule: str, zone: str, anchor: datetime, now: datetime, due_offset: int | None
) -> None:
    current_due = None if due_offset is None else now + timedelta(hours=due_offset)
    got = after(rule, anchor, now, zone, current_due=current_due)
    threshold = max(now, current_due) if current_due is not None else now
    assert got == _brute_force(rule, anchor, zone, threshold)
    if got is None:
        return
    assert got > threshold
    assert got.tzinfo is UTC
    tz = ZoneInfo(zone)
    if "HOURLY" in rule:
        assert (got - anchor.replace(microsecond=0)) % timedelta(hours=5) == timedelta(0)
        return
    # An occurrence of the rule on the wall clock (or a gap time moved forward).
    local = got.astimezone(tz).replace(tzinfo=None)
    start = anchor.astimezone(tz).replace(tzinfo=None, microsecond=0)
    body = {"daily": "FREQ=DAILY", "weekly": "FREQ=WEEKLY", "monthly": "FREQ=MONTHLY"}.get(
        rule, rule
    )
    occurrences = rrulestr(body, dtstart=start)
    back = local - timedelta(hours=1)
    assert local in occurrences or (
        back in occurrences and back.replace(tzinfo=tz).astimezone(UTC) == got
    )
    if rule in ("daily", "FREQ=DAILY;INTERVAL=3", "FREQ=DAILY;COUNT=20"):
        if local.time() != start.time():
            # Only a wall time that does not exist on that day may move.
            wanted = datetime.combine(local.date(), start.time())
            assert wanted.replace(tzinfo=tz).astimezone(tz).replace(tzinfo=None) != wanted
