"""New tasks in the offline model: notes, modifiers, dates and repeats, read by the parser.

Now is Monday 2026-11-30 10:00 in Paris (Tue = Dec 1 ... Sun = Dec 6).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backend.agent.local.adds import join_details, parse_add
from backend.agent.local.dates import Clock, fix_typos, parse_when, refer_back
from backend.agent.local.intents import AddIntent, Intent, ReplyIntent
from backend.agent.local.parsing import parse_message
from backend.agent.local.repeats import parse_repeat

PARIS = ZoneInfo("Europe/Paris")
CLOCK = Clock(now=datetime(2026, 11, 30, 10, 0, tzinfo=PARIS), zone=PARIS)


def adds(text: str) -> list[AddIntent]:
    intents = parse_message(text, CLOCK)
    assert all(isinstance(i, AddIntent) for i in intents), intents
    return [i for i in intents if isinstance(i, AddIntent)]


def one(text: str) -> tuple[str, dict[str, Any]]:
    found = adds(text)
    assert len(found) == 1, found
    return found[0].title, found[0].fields


@pytest.mark.parametrize(
    ("text", "title", "note"),
    [
        ("add call the bank: ask about the mortgage rate", "Call the bank", "mortgage rate"),
        ("add buy paint (the blue one for the hall)", "Buy paint", "the blue one for the hall"),
        ("add renew passport with the note bring two photos", "Renew passport", "two photos"),
        ("add fix the sink, note: washer is under the sink", "Fix the sink", "washer"),
        ("add book flights, details: aisle seat, window if not", "Book flights", "aisle seat"),
        ("add order a cake - note: chocolate, no nuts", "Order a cake", "no nuts"),
        ("add pay for parking (ticket no. 4471)", "Pay for parking", "4471"),
        ("put 'book restaurant' on the list (somewhere italian)", "Book restaurant", "italian"),
        ("add 'call mom': ask about dinner", "Call mom", "ask about dinner"),
    ],
)
def test_a_note_goes_to_the_description_never_to_a_second_task(
    text: str, title: str, note: str
) -> None:
    found_title, fields = one(text)
    assert found_title == title
    assert note in fields["description"]


def test_task_colon_still_means_the_title() -> None:
    assert one("add task: buy milk") == ("Buy milk", {})


def test_a_note_keeps_its_day_words_and_the_title_keeps_its_date() -> None:
    title, fields = one("remind me to call grandma on sunday, note: ask about thursday")
    assert title == "Call grandma"
    assert fields["due_at"] == "2026-12-06T23:59:00+01:00"
    assert fields["description"] == "ask about thursday"


def test_details_in_brackets_or_after_a_dash_are_details_not_notes() -> None:
    assert one("add pay rent - top priority") == ("Pay rent", {"priority": "urgent"})
    assert one("add buy paint (urgent)") == ("Buy paint", {"priority": "urgent"})


@pytest.mark.parametrize(
    ("text", "title", "expected"),
    [
        ("add water the plants, not urgent", "Water the plants", {"priority": "low"}),
        ("add call the plumber asap", "Call the plumber", {"priority": "urgent"}),
        ("add clean garage, low priority", "Clean garage", {"priority": "low"}),
        ("add sort out the loft whenever, no rush", "Sort out the loft", {"priority": "low"}),
        (
            "add pick up dry cleaning, file it under errands",
            "Pick up dry cleaning",
            {"tags": ["errands"]},
        ),
        ("add book physio with the label health", "Book physio", {"tags": ["health"]}),
        ("add buy vitamins under health", "Buy vitamins", {"tags": ["health"]}),
        ("add write report in my work list", "Write report", {"tags": ["work"]}),
        ("add #work prepare onboarding docs", "Prepare onboarding docs", {"tags": ["work"]}),
        ("add eggs to my shopping list", "Eggs", {"tags": ["shopping"]}),
        ("shopping list: add coffee beans", "Coffee beans", {"tags": ["shopping"]}),
        ("todo list: add milk", "Milk", {}),
        (
            "add register for the conference, it's quite important",
            "Register for the conference",
            {"priority": "high"},
        ),
        (
            "add sort the photo albums, whenever really",
            "Sort the photo albums",
            {"priority": "low"},
        ),
        ("add order new doormat low priority", "Order new doormat", {"priority": "low"}),
        ("add call plumber urgnt", "Call plumber", {"priority": "urgent"}),
        (
            "URGENT: need to call the bank about the fraud alert",
            "Call the bank about the fraud alert",
            {"priority": "urgent"},
        ),
        ("pls ad call the garage", "Call the garage", {}),
    ],
)
def test_modifiers_never_stay_in_the_title(text: str, title: str, expected: dict[str, Any]) -> None:
    assert one(text) == (title, expected)


def test_tag_it_on_a_new_task() -> None:
    # parse_message reads "… and tag it work" as a second request; the add alone takes it too
    assert parse_add("add prepare slides and tag it as work", CLOCK) == [
        AddIntent("Prepare slides", {"tags": ["work"]})
    ]


def test_modifiers_are_taken_before_splitting_items() -> None:
    found = adds("add milk, eggs and bread to my shopping list, not urgent")
    assert [a.title for a in found] == ["Milk", "Eggs", "Bread"]
    assert all(a.fields == {"tags": ["shopping"], "priority": "low"} for a in found)


def test_several_priorities_are_each_for_their_own_item() -> None:
    found = adds("add buy printer paper low priority and book flu jab asap")
    assert [(a.title, a.fields) for a in found] == [
        ("Buy printer paper", {"priority": "low"}),
        ("Book flu jab", {"priority": "urgent"}),
    ]


def test_a_named_day_is_a_date_only_where_a_date_would_be() -> None:
    assert one("remind me to wrap presents on christmas eve") == (
        "Wrap presents",
        {
            "due_at": "2026-12-24T23:59:00+01:00",
            "remind_at": "2026-12-24T09:00:00+01:00",
            "time_zone": "Europe/Paris",
        },
    )
    assert one("add buy the christmas tree by friday") == (
        "Buy the christmas tree",
        {"due_at": "2026-12-04T23:59:00+01:00"},
    )
    assert one("add send new year's cards") == ("Send new year's cards", {})


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("whats ovrdue", "whats overdue"),
        ("call plumber urgnt", "call plumber urgent"),
        ("see you tomorow", "see you tomorrow"),
        ("penning a letter", "penning a letter"),
        ("spending review", "spending review"),
    ],
)
def test_keywords_one_slip_away_are_fixed(text: str, fixed: str) -> None:
    assert fix_typos(text) == fixed


@pytest.mark.parametrize(
    ("text", "due"),
    [
        ("add pay the bill on the 22nd", "2026-12-22T23:59:00+01:00"),
        ("add pay the bill the 22nd at 2:30pm", "2026-12-22T14:30:00+01:00"),
        ("add pay the bill on the 30th", "2026-11-30T23:59:00+01:00"),
        ("add pay the bill on the 1st of next month", "2026-12-01T23:59:00+01:00"),
        ("add pay the bill 22nd of December", "2026-12-22T23:59:00+01:00"),
        ("add pay the bill December 22nd", "2026-12-22T23:59:00+01:00"),
        ("add pay the bill 22 Dec", "2026-12-22T23:59:00+01:00"),
        ("add pay the bill next month", "2026-12-01T23:59:00+01:00"),
        ("add pay the bill end of next week", "2026-12-13T23:59:00+01:00"),
        ("add pay the bill by the end of the week", "2026-12-06T23:59:00+01:00"),
        ("add pay the bill Saturday morning", "2026-12-05T09:00:00+01:00"),
        ("add pay the bill friday afternoon", "2026-12-04T15:00:00+01:00"),
        ("add pay the bill tomorrow evening", "2026-12-01T18:00:00+01:00"),
        ("add pay the bill Tuesday night", "2026-12-01T21:00:00+01:00"),
        ("add pay the bill this evening", "2026-11-30T18:00:00+01:00"),
        ("add pay the bill tonight", "2026-11-30T20:00:00+01:00"),
        ("add pay the bill tonight at 9", "2026-11-30T21:00:00+01:00"),
        ("add pay the bill on 25/12", "2026-12-25T23:59:00+01:00"),
        ("add pay the bill on 12/25", "2026-12-25T23:59:00+01:00"),
    ],
)
def test_dates_come_out_of_the_title(text: str, due: str) -> None:
    assert one(text) == ("Pay the bill", {"due_at": due})


@pytest.mark.parametrize("text", ["add sunday roast", "add 2nd coat of paint", "add read at night"])
def test_date_words_that_are_part_of_a_title_stay(text: str) -> None:
    title, fields = one(text)
    assert title.lower() == text.removeprefix("add ")
    assert "due_at" not in fields


@pytest.mark.parametrize(
    ("text", "rule", "due"),
    [
        ("every month on the 15th", "FREQ=MONTHLY;BYMONTHDAY=15", "2026-12-15T23:59:00+01:00"),
        ("on the 1st of every month", "FREQ=MONTHLY;BYMONTHDAY=1", "2026-12-01T23:59:00+01:00"),
        ("monthly on the 3rd at 9am", "FREQ=MONTHLY;BYMONTHDAY=3", "2026-12-03T09:00:00+01:00"),
        ("every 2 weeks on friday", "FREQ=WEEKLY;INTERVAL=2;BYDAY=FR", "2026-12-04T23:59:00+01:00"),
        ("every other friday", "FREQ=WEEKLY;INTERVAL=2;BYDAY=FR", "2026-12-04T23:59:00+01:00"),
        ("every evening at 7", "daily", "2026-11-30T19:00:00+01:00"),
        ("every morning", "daily", "2026-12-01T09:00:00+01:00"),
        ("every weekday at 9", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "2026-12-01T09:00:00+01:00"),
    ],
)
def test_repeats_with_their_first_due_date(text: str, rule: str, due: str) -> None:
    title, fields = one(f"add pay rent {text}")
    assert title == "Pay rent"
    assert fields == {"recurrence": rule, "due_at": due, "time_zone": "Europe/Paris"}


def test_every_other_week_has_no_day() -> None:
    assert parse_repeat("every other week") == "FREQ=WEEKLY;INTERVAL=2"
    assert parse_repeat("every weekday") == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"


@pytest.mark.parametrize(
    ("text", "value", "has_time"),
    [
        ("thursday", "2026-12-03T23:59:00+01:00", False),
        ("the 10th", "2026-12-10T23:59:00+01:00", False),
        ("next monday", "2026-12-07T23:59:00+01:00", False),
        ("friday at 4pm", "2026-12-04T16:00:00+01:00", True),
        ("thursday evening", "2026-12-03T18:00:00+01:00", True),
        ("tonight", "2026-11-30T20:00:00+01:00", True),
        ("9am", "2026-12-01T09:00:00+01:00", True),
        ("in 2 hours", "2026-11-30T12:00:00+01:00", True),
    ],
)
def test_parse_when_tells_whether_a_time_was_said(text: str, value: str, has_time: bool) -> None:
    found = parse_when(text, CLOCK)
    assert found is not None
    assert (found.value.isoformat(), found.has_time) == (value, has_time)


def test_parse_when_needs_the_whole_text_to_be_a_date() -> None:
    assert parse_when("sunday roast", CLOCK) is None


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("dentist fri 3pm", "dentist friday 3pm"),
        ("call bob by Thurs.", "call bob by Thursday"),
        ("gym tues morning", "gym tuesday morning"),
        ("dinner on sat", "dinner on saturday"),
        ("lunch sun at noon", "lunch sunday at noon"),
        # short names that are also words need a time after them or a day word before them
        ("put on sun cream", "put on sun cream"),
        ("sit in the sun", "sit in the sun"),
        ("fix the sat nav", "fix the sat nav"),
        ("I sat 3 exams", "I sat 3 exams"),
    ],
)
def test_short_weekday_names_are_written_out(text: str, written: str) -> None:
    assert fix_typos(text) == written


def test_a_terse_add_with_a_short_weekday() -> None:
    assert one("add: dentist fri 3pm") == ("Dentist", {"due_at": "2026-12-04T15:00:00+01:00"})


@pytest.mark.parametrize(
    ("text", "written"),
    [
        (
            "there's a bake sale on the 22nd, add 'bake cookies' for that day",
            "there's a bake sale on the 22nd, add 'bake cookies' for the 22nd",
        ),
        (
            "it can only be on friday, move it to then",
            "it can only be on friday, move it to friday",
        ),
        ("add milk and then eggs", "add milk and then eggs"),  # no day said before: as it was
        ("add milk for that day", "add milk for that day"),
    ],
)
def test_that_day_is_the_day_said_before(text: str, written: str) -> None:
    assert refer_back(text) == written


def test_same_time_keeps_the_time_of_day() -> None:
    found = parse_when("the 10th, same time", CLOCK)
    assert found is not None
    assert (found.value.isoformat(), found.has_time) == ("2026-12-10T23:59:00+01:00", False)


def test_a_sentence_of_details_is_for_the_tasks_added_before_it() -> None:
    added: list[Intent] = [AddIntent("Register for the conference", {})]
    asked: list[Intent] = [ReplyIntent("unknown", "important")]
    pieces = [("add register for the conference!!", added), ("important", asked)]
    assert join_details(pieces, CLOCK) == [
        (
            "add register for the conference!!",
            [AddIntent("Register for the conference", {"priority": "high"})],
        )
    ]
    # a sentence with more than details, or after no add, stays as it was
    other = [("show my tasks.", asked), ("important", asked)]
    assert join_details(other, CLOCK) == other
    more = [("add milk.", added), ("urgent ones?", asked)]
    assert join_details(more, CLOCK) == more
