"""The offline model on requests about existing tasks: fuzzy titles, typos in verbs,
places in the list shown last, corrections, priorities, moved dates and tags.

Requests run through `respond` against a small in-memory stand-in for the task tools.
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backend.agent.instructions import build_instructions
from backend.agent.local.dates import Clock
from backend.agent.local.intents import ActIntent
from backend.agent.local.matching import fix_verb, positions, ranked
from backend.agent.local.parsing import parse_message
from backend.agent.local.respond import respond
from backend.agent.local.steps import Call
from tests.agent.utterances import NOW, PARIS

INSTRUCTIONS = build_instructions(NOW, ZoneInfo(PARIS))
CLOCK = Clock(NOW, ZoneInfo(PARIS))
TOOLS = {
    "list_tasks",
    "get_task",
    "add_task",
    "update_task",
    "complete_task",
    "reopen_task",
    "delete_task",
    "restore_task",
}
WRITES = TOOLS - {"list_tasks", "get_task"}


class Tasks:
    """The task tools over a dict, enough for these requests."""

    def __init__(self, *titles: str, **fields: Any) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        for title in titles:
            self.add(title, **fields.get(title.split()[-1].lower(), {}))
        self.items: list[Any] = []
        self.calls: list[Call] = []

    def add(self, title: str, **fields: Any) -> dict[str, Any]:
        task_id = len(self.tasks) + 1
        task = {"id": task_id, "title": title, "completed": False, "priority": "medium"}
        task |= {"tags": [], "due_at": None, "deleted": False, **fields}
        self.tasks[task_id] = task
        return task

    def run(self, call: Call) -> str:
        args = call.arguments
        if call.name == "list_tasks":
            status, search = args.get("status", "all"), args.get("search", "").lower()
            found = [
                t
                for t in reversed(self.tasks.values())
                if t["deleted"] == (status == "deleted")
                and (status in ("all", "deleted") or t["completed"] == (status == "completed"))
                and search in t["title"].lower()
            ]
            return json.dumps({"tasks": found, "total": len(found)})
        if call.name == "add_task":
            return json.dumps({"task_id": len(self.tasks) + 1} | self.add(**args))
        task = self.tasks.get(args.get("task_id", 0))
        if task is None or (task["deleted"] and call.name != "restore_task"):
            return f"Error executing tool {call.name}: Task {args.get('task_id')} not found"
        if call.name == "get_task":
            return json.dumps(task)
        state = {
            "complete_task": ("completed", {"completed": True}),
            "reopen_task": ("pending", {"completed": False}),
            "delete_task": ("deleted", {"deleted": True}),
            "restore_task": ("restored", {"deleted": False}),
        }
        status, changes = state.get(call.name, ("updated", {}))
        task.update(changes or {k: v for k, v in args.items() if k != "task_id"})
        return json.dumps({"task_id": task["id"], "status": status, "title": task["title"]})

    def say(self, text: str) -> str:
        """One user turn: the model's tool calls are answered until it replies."""
        self.items.append({"role": "user", "content": text})
        self.calls = []
        for _ in range(10):
            decision = respond(INSTRUCTIONS, self.items, TOOLS)
            if isinstance(decision, str):
                self.items.append({"role": "assistant", "content": decision})
                return decision
            for call in decision:
                call_id = f"c{len(self.items)}"
                arguments = json.dumps(call.arguments)
                self.items.append(
                    {"type": "function_call", "call_id": call_id, "name": call.name}
                    | {"arguments": arguments}
                )
                output = self.run(call)
                self.items.append(
                    {"type": "function_call_output", "call_id": call_id, "output": output}
                )
                self.calls.append(call)
        raise AssertionError("the model never replied")

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(c.name, c.arguments) for c in self.calls if c.name in WRITES]


# --- typos and fuzzy titles ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "meant"),
    [
        ("cmplete task 3", "complete task 3"),
        ("delte it", "delete it"),
        ("mrak it done", "mark it done"),
        ("del dentist", "delete dentist"),
        ("make it urgent", "make it urgent"),
        ("park the car", "park the car"),
    ],
)
def test_verbs_with_a_slip_are_read_as_meant(said: str, meant: str) -> None:
    assert fix_verb(said) == meant


def test_a_misspelt_title_is_found_and_a_vague_one_is_asked_about() -> None:
    tasks = [{"id": 1, "title": "Go shopping"}, {"id": 2, "title": "Book dentist appointment"}]
    assert ranked(tasks, "shoping") == ([tasks[0]], True)
    assert ranked(tasks, "dentist") == ([tasks[1]], True)
    assert ranked(tasks, "shops") == ([tasks[0]], False)
    assert ranked(tasks, "taxes") == ([], False)


def test_completes_a_misspelt_task() -> None:
    store = Tasks("Go shopping", "Book dentist appointment")
    reply = store.say("cmplete shoping")
    assert store.writes() == [("complete_task", {"task_id": 1})]
    assert "Marked #1 'Go shopping' as done." in reply


def test_an_unsure_match_asks_first_and_yes_goes_ahead() -> None:
    store = Tasks("Go shopping", "Book dentist appointment")
    reply = store.say("delete the shops")
    assert store.writes() == []
    assert "Did you mean #1 'Go shopping'?" in reply
    reply = store.say("yes")
    assert store.writes() == [("delete_task", {"task_id": 1})]
    assert reply == "Deleted #1 'Go shopping'. Say \"undo\" to bring it back."


# --- the list shown last ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "places"),
    [
        ("the third one", (2,)),
        ("number two", (1,)),
        ("the 2nd", (1,)),
        ("the last one", (-1,)),
        ("the first and third", (0, 2)),
        ("the milk one", ()),
    ],
)
def test_places_in_a_list(said: str, places: tuple[int, ...]) -> None:
    assert positions(said) == places


@pytest.mark.parametrize(
    ("said", "write", "title"),
    [
        ("finish the third one", "complete_task", "Buy milk"),
        ("remove number two from that list", "delete_task", "Do the laundry"),
        ("the last one is done", "complete_task", "Buy milk"),
        ("mark the milk one done", "complete_task", "Buy milk"),
    ],
)
def test_places_refer_to_the_list_shown_last(said: str, write: str, title: str) -> None:
    store = Tasks("Buy milk", "Do the laundry", "Call the bank")
    listing = store.say("what's pending?")
    assert listing.splitlines()[1:] == [
        "- #3 Call the bank",
        "- #2 Do the laundry",
        "- #1 Buy milk",
    ]
    reply = store.say(said)
    task_id = next(t["id"] for t in store.tasks.values() if t["title"] == title)
    assert store.writes() == [(write, {"task_id": task_id})]
    if write == "delete_task":
        assert reply == f"Deleted #{task_id} '{title}'. Say \"undo\" to bring it back."


def test_and_the_laundry_as_well_repeats_the_last_request() -> None:
    store = Tasks("Wash the dishes", "Do the laundry")
    store.say("mark the dishes done")
    reply = store.say("and the laundry as well")
    assert store.writes() == [("complete_task", {"task_id": 2})]
    assert "Marked #2 'Do the laundry' as done." in reply


def test_both_of_them_after_a_list_of_two() -> None:
    store = Tasks("Wash the dishes", "Do the laundry")
    store.say("what's pending?")
    store.say("complete both of them")
    assert sorted(store.writes(), key=str) == [
        ("complete_task", {"task_id": 1}),
        ("complete_task", {"task_id": 2}),
    ]


# --- corrections and reports -----------------------------------------------------------------


def test_corrections_reopen_and_restore_without_adding() -> None:
    store = Tasks("Call the bank", "Buy bread")
    store.say("I called the bank")
    assert store.writes() == [("complete_task", {"task_id": 1})]
    store.say("actually I haven't called the bank yet")
    assert store.writes() == [("reopen_task", {"task_id": 1})]
    store.say("delete the bread")
    store.say("I didn't mean to delete the bread")
    assert store.writes() == [("restore_task", {"task_id": 2})]
    assert len(store.tasks) == 2


def test_undo_after_a_correction_does_not_repeat_it() -> None:
    store = Tasks("Write the report")
    store.say("finished the report")
    store.say("oops, I didn't finish the report, undo that")
    assert store.writes() == [("reopen_task", {"task_id": 1})]


def test_bring_back_a_task_deleted_before_this_conversation() -> None:
    store = Tasks("Buy milk")
    store.tasks[1]["deleted"] = True
    reply = store.say("can I have the milk back")
    assert store.writes() == [("restore_task", {"task_id": 1})]
    assert "Restored #1 'Buy milk'." in reply


@pytest.mark.parametrize(
    "said",
    ["paid the electricity bill already", "the electricity bill is sorted", "I paid the bill"],
)
def test_reports_complete_the_task(said: str) -> None:
    store = Tasks("Pay electricity bill", "Call mom")
    store.say(said)
    assert store.writes() == [("complete_task", {"task_id": 1})]


# --- priorities, dates and tags --------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "changes"),
    [
        ("raise the report to urgent", {"priority": "urgent"}),
        ("bump the report to high priority", {"priority": "high"}),
        ("make the report less important", {"priority": "low"}),
        ("the report isn't urgent anymore", {"priority": "low"}),
        ("the report is now due on the 22nd", {"due_at": "2026-12-22T23:59:00+01:00"}),
        ("push the report to the 10th", {"due_at": "2026-12-10T23:59:00+01:00"}),
    ],
)
def test_changes_to_a_named_task(said: str, changes: dict[str, Any]) -> None:
    [intent] = parse_message(said, CLOCK)
    assert isinstance(intent, ActIntent)
    assert intent.target.words == "report"
    assert {k: v for k, v in intent.changes.items() if k != "keep"} == changes


@pytest.mark.parametrize(
    ("said", "tag"),
    [
        ("tag it work", "work"),
        ("file it under errands", "errands"),
        ("add the label health to it", "health"),
        ("put it under home", "home"),
    ],
)
def test_tag_follow_ups(said: str, tag: str) -> None:
    [intent] = parse_message(said, CLOCK)
    assert isinstance(intent, ActIntent)
    assert intent.target.pronoun == "one"
    assert intent.add_tags == (tag,)


@pytest.mark.parametrize(
    ("said", "due"),
    [
        ("move the dentist to thursday", "2026-12-03T14:30:00+01:00"),
        ("put it on next thursday", "2026-12-03T14:30:00+01:00"),
        ("push it to the 10th", "2026-12-10T14:30:00+01:00"),
        ("move it to thursday at 9am", "2026-12-03T09:00:00+01:00"),
        ("actually make it 6pm", "2026-12-01T18:00:00+01:00"),
    ],
)
def test_a_moved_task_keeps_what_was_not_said(said: str, due: str) -> None:
    store = Tasks("Book dentist", dentist={"due_at": "2026-12-01T14:30:00+01:00"})
    store.say("show the dentist task")
    store.say(said)
    [(name, arguments)] = store.writes()
    assert (name, arguments["due_at"]) == ("update_task", due)


def test_a_correction_right_after_adding_changes_the_new_task() -> None:
    store = Tasks("Book the restaurant", restaurant={"due_at": "2026-12-05T23:59:00+01:00"})
    store.say("show the restaurant task")
    store.tasks[1]["title"] = "Book the restaurant"
    store.say("move it to saturday")
    reply = store.say("actually sunday evening")
    assert store.writes() == [
        ("update_task", {"task_id": 1, "due_at": "2026-12-06T18:00:00+01:00"})
    ]
    assert "due Sun Dec 6, 6:00 PM" in reply


def test_and_the_second_one_too_after_a_list() -> None:
    store = Tasks("Buy milk", "Do the laundry", "Call the bank")
    store.say("what's pending?")
    store.say("finish the first one")
    store.say("and the second one too")
    assert store.writes() == [("complete_task", {"task_id": 2})]


def test_a_title_given_when_asked_for_one_is_added() -> None:
    store = Tasks()
    store.say("can you add a task for me?")
    assert "Added task #1: Oat milk." in store.say("oat milk")


def test_small_talk_is_never_taken_for_a_task_to_act_on() -> None:
    store = Tasks("Wash the dishes")
    store.say("mark the dishes done")
    store.say("thanks, you too")
    assert store.writes() == []


# --- round 2: places said as numbers, slips, follow-ups that say only the new part ------------


@pytest.mark.parametrize(
    ("said", "titles"),
    [
        ("done with 1 and 3", ["Call the bank", "Buy milk"]),
        ("number one is done", ["Call the bank"]),
        ("finished #1", ["Old task"]),  # "#1" is always an id
        ("done with 4", ["Buy milk"]),  # an id on the list shown is that task
    ],
)
def test_numbers_said_bare_are_places_in_the_list_shown(said: str, titles: list[str]) -> None:
    store = Tasks("Old task", "Old task 2", "Old task 3", "Buy milk", "Do the laundry")
    store.add("Call the bank")
    for task_id in (1, 2, 3):
        store.tasks[task_id]["completed"] = True
    store.say("what's pending?")
    store.say(said)
    done = [store.tasks[a["task_id"]]["title"] for _, a in store.writes()]
    assert done == titles


def test_what_is_the_second_one_about_shows_it() -> None:
    store = Tasks("Buy milk", "Do the laundry", "Call the bank")
    store.say("what's pending?")
    assert "Do the laundry" in store.say("what's the second one about?")
    assert store.writes() == []


@pytest.mark.parametrize(
    ("said", "write"),
    [
        ("oops, not yet actually", "reopen_task"),
        ("whoops, didn't mean to tick that off", "reopen_task"),
    ],
)
def test_a_slip_just_after_a_change_undoes_it(said: str, write: str) -> None:
    store = Tasks("Make the slides")
    store.say("I finished the slides")
    store.say(said)
    assert store.writes() == [(write, {"task_id": 1})]


def test_i_meant_the_other_task_moves_the_change() -> None:
    store = Tasks("Buy milk", "Buy bread")
    store.say("mark buy milk as done")
    store.say("oops no, I meant bread not milk")
    assert store.writes() == [("reopen_task", {"task_id": 1}), ("complete_task", {"task_id": 2})]


@pytest.mark.parametrize(
    ("said", "due"),
    [
        ("at 3:30pm", "2026-11-30T15:30:00+01:00"),
        ("due the 22nd", "2026-12-22T23:59:00+01:00"),
        ("sorry, I meant thursday", "2026-12-03T23:59:00+01:00"),
    ],
)
def test_a_when_alone_after_adding_sets_it(said: str, due: str) -> None:
    store = Tasks()
    store.say("add pick up the kids")
    store.say(said)
    assert store.writes() == [("update_task", {"task_id": 1, "due_at": due})]


@pytest.mark.parametrize("said", ["and eggs too", "add eggs too"])
def test_and_eggs_too_adds_with_the_same_tags(said: str) -> None:
    store = Tasks()
    store.say("put bread on my shopping list")
    store.say(said)
    assert [(t["title"], t["tags"]) for t in store.tasks.values()] == [
        ("Bread", ["shopping"]),
        ("Eggs", ["shopping"]),
    ]


@pytest.mark.parametrize("said", ["nevermind, forget it", "no thanks", "thanks"])
def test_a_cancel_answer_to_what_should_it_say_adds_nothing(said: str) -> None:
    store = Tasks()
    store.say("add a task")
    store.say(said)
    assert store.tasks == {}


@pytest.mark.parametrize(
    "said",
    [
        "i need the milk task back please",
        "I deleted the milk task by mistake",
        "I accidentally removed the milk",
    ],
)
def test_asking_for_a_deleted_task_back_restores_it(said: str) -> None:
    store = Tasks("Buy milk")
    store.tasks[1]["deleted"] = True
    store.say(said)
    assert store.writes() == [("restore_task", {"task_id": 1})]


def test_give_me_back_the_task_i_just_deleted() -> None:
    store = Tasks("Buy milk", "Call mom")
    store.say("delete the milk")
    store.say("give me back the task I just deleted")
    assert store.writes() == [("restore_task", {"task_id": 1})]


@pytest.mark.parametrize(
    ("said", "target", "changes", "tags"),
    [
        ("label that one finance", None, {}, ("finance",)),
        ("oh and that one's urgent", None, {"priority": "urgent"}, ()),
        (
            "for the plumber task, note that the leak is under the sink",
            "plumber",
            {"description": "the leak is under the sink"},
            (),
        ),
        (
            "can you add 'two new photos' to the notes of the passport task?",
            "passport",
            {"description": "two new photos"},
            (),
        ),
        ("I called the bank this morning", "bank", {}, ()),
        ("my sister picked up the kids today", "picked up the kids", {}, ()),
    ],
)
def test_requests_about_an_existing_task(
    said: str, target: str | None, changes: dict[str, Any], tags: tuple[str, ...]
) -> None:
    [intent] = parse_message(said, CLOCK)
    assert isinstance(intent, ActIntent)
    assert intent.target.words == target
    assert intent.changes == changes
    assert intent.add_tags == tags


def test_a_past_tense_verb_with_swapped_letters_is_read_as_meant() -> None:
    assert fix_verb("finsihed the present") == "finished the present"
    assert fix_verb("parked the car") == "parked the car"


# --- reports, asides, spans and follow-ups after adding ----------------------------------------


@pytest.mark.parametrize(
    ("said", "done"),
    [
        ("the electricity bill is paid, finally", [1]),
        ("electricity bill's paid", [1]),
        ("fyi already paid the electricity bill lol", [1]),
        ("just got off the phone with mom, she says hi", [2]),
        ("paid the electricity bill and phoned mom", [1, 2]),
    ],
)
def test_reports_in_everyday_words_complete_the_tasks(said: str, done: list[int]) -> None:
    store = Tasks("Pay electricity bill", "Call mom", "Buy stamps")
    store.say(said)
    assert store.writes() == [("complete_task", {"task_id": n}) for n in done]


def test_filler_words_of_a_report_do_not_weigh_against_a_match() -> None:
    tasks = [{"id": 1, "title": "Pay the gas bill"}, {"id": 2, "title": "Pay the water bill"}]
    assert ranked(tasks, "finally got round to paying the gas bill") == ([tasks[0]], True)


@pytest.mark.parametrize(
    ("said", "action", "changes"),
    [
        ("ugh it didn't go through, the report isn't sent after all", "reopen", {}),
        ("the report isn't that important actually, low priority", "update", {"priority": "low"}),
        ("the report can wait, whenever is fine", "update", {"priority": "low"}),
        (
            "change the note on the report to version 3 actually",
            "update",
            {"description": "version 3"},
        ),
    ],
)
def test_statements_about_a_named_task(said: str, action: str, changes: dict[str, Any]) -> None:
    [intent] = parse_message(said, CLOCK)
    assert isinstance(intent, ActIntent)
    assert (intent.action, intent.target.words, intent.changes) == (action, "report", changes)


@pytest.mark.parametrize(
    ("said", "tags"),
    [
        ("put it on the shopping list too", ["work", "shopping"]),
        ("put the light bulbs on the shopping list", ["work", "shopping"]),
        ("change the light bulbs tag from work to home", ["home"]),
        ("buy light bulbs isn't work, remove that tag", []),
    ],
)
def test_tags_of_an_existing_task(said: str, tags: list[str]) -> None:
    store = Tasks("Buy light bulbs", bulbs={"tags": ["work"]})
    store.say("show the light bulbs task")
    store.say(said)
    assert len(store.tasks) == 1
    assert store.tasks[1]["tags"] == tags


def test_a_list_for_a_task_that_is_not_there_asks_before_adding() -> None:
    store = Tasks("Call the electrician")
    reply = store.say("put the light bulbs on the shopping list")
    assert store.writes() == []
    assert 'add "light bulbs #shopping"' in reply


def test_a_task_that_is_not_tagged_so_is_left_alone() -> None:
    store = Tasks("Plan holiday")
    reply = store.say("plan holiday isn't work")
    assert store.writes() == []
    assert "isn't tagged #work" in reply


def test_a_span_earlier_moves_the_due_time_and_its_reminder() -> None:
    fields = {"due_at": "2026-12-01T07:00:00+01:00", "remind_at": "2026-12-01T07:00:00+01:00"}
    store = Tasks("Leave for the airport", airport=fields)
    store.say("show the airport task")
    store.say("make it half an hour earlier")
    [(name, arguments)] = store.writes()
    assert arguments["due_at"] == arguments["remind_at"] == "2026-12-01T06:30:00+01:00"


@pytest.mark.parametrize(
    ("said", "changes"),
    [
        ("oh and note that the viewing is at 2", {"description": "the viewing is at 2"}),
        ("sorry i meant call sara without the h", {"title": "Call sara"}),
        (
            "make that every sunday",
            {"recurrence": "FREQ=WEEKLY;BYDAY=SU", "due_at": "2026-12-06T23:59:00+01:00"},
        ),
    ],
)
def test_a_follow_up_right_after_adding_changes_the_new_task(
    said: str, changes: dict[str, Any]
) -> None:
    store = Tasks()
    store.say("add call sarah")
    store.say(said)
    [(name, arguments)] = store.writes()
    assert (name, arguments) == ("update_task", {"task_id": 1, **changes})


def test_the_first_two_are_places_in_the_list_shown() -> None:
    assert positions("the first two") == (0, 1)
    assert positions("last 3") == (-3, -2, -1)
    store = Tasks("Buy stamps", "Post the letters", "Call Mum")
    store.say("what's on my list")
    store.say("the first two are done")
    assert store.writes() == [("complete_task", {"task_id": 3}), ("complete_task", {"task_id": 2})]
