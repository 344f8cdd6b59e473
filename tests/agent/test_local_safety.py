"""The offline model's safety rules: nothing is added unless asked for, a request taken back
changes nothing, a question changes nothing, and a delete needs a title it is sure of.

Conversations run through `respond` against the in-memory task stand-in of
`test_local_references`.
"""

from __future__ import annotations

import pytest

from backend.agent.local.adds import MAX_ADDS
from backend.agent.local.intents import ActIntent, AddIntent, ReplyIntent, ShowIntent
from backend.agent.local.parsing import parse_message
from tests.agent.test_local_references import CLOCK, Tasks


@pytest.mark.parametrize(
    "said",
    [
        "add it",
        "add that",
        "I need to",
        "I have to go",
        "log out",
        "add nothing",
        "remember me?",
        "every day I forget things",
        "daily standups are boring",
        "every friday we eat pizza",
        "I got milk",
        "I should have called mom",
        "no need to remind me about the pharmacy, I went",
        "don't add milk",
        "is it possible to add recurring tasks?",
    ],
)
def test_what_is_not_an_add_request_never_adds(said: str) -> None:
    assert not [i for i in parse_message(said, CLOCK) if isinstance(i, AddIntent)]


@pytest.mark.parametrize(
    "said",
    [
        "add eggs? no",
        "add milk. actually don't",
        "add milk! just kidding",
        "add eggs, no wait, don't",
        "add milk... wait, no",
        "add eggs, or not",
        "remind me to call mom. never mind",
        "delete it? no, keep it",
        "mark it done? not yet",
    ],
)
def test_a_request_taken_back_in_the_same_message_changes_nothing(said: str) -> None:
    assert parse_message(said, CLOCK) == [ReplyIntent("cancelled")]


@pytest.mark.parametrize(
    "said", ["it is urgent?", "the report is done?", "task 3 is done?", "groceries done?"]
)
def test_a_question_about_a_task_shows_it_instead_of_changing_it(said: str) -> None:
    intents = parse_message(said, CLOCK)
    assert intents
    assert all(isinstance(i, ShowIntent) for i in intents)


def test_a_polite_question_that_asks_for_a_change_still_makes_it() -> None:
    (intent,) = parse_message("could you mark the emails task as done?", CLOCK)
    assert isinstance(intent, ActIntent)
    assert intent.action == "complete"


def test_more_new_tasks_than_the_limit_are_refused_not_half_added() -> None:
    groceries = "milk eggs bread jam tea rice oats soap salt flour sugar butter".split()
    many = "add " + ", ".join(groceries[: MAX_ADDS + 1])
    assert parse_message(many, CLOCK) == [ReplyIntent("too_many")]


@pytest.mark.parametrize(
    ("titles", "said"),
    [
        (("Parent meeting",), "remove pay rent"),
        (("Buy dog food",), "delete the cat food task"),
        (("Wash the car",), "delete sell the car"),
        (("Buy carrots",), "delete the car"),
    ],
)
def test_a_delete_asks_unless_every_word_is_in_the_title(
    titles: tuple[str, ...], said: str
) -> None:
    tasks = Tasks(*titles)
    reply = tasks.say(said)
    assert tasks.writes() == []
    assert "Did you mean" in reply


def test_a_delete_by_a_close_enough_title_goes_ahead() -> None:
    tasks = Tasks("Book dentist appointment", "Buy milk")
    reply = tasks.say("delete the dentist appointment")
    assert tasks.writes() == [("delete_task", {"task_id": 1})]
    assert "undo" in reply


@pytest.mark.parametrize("answer", ["all good", "all wrong", "all fine, thanks"])
def test_all_something_after_which_one_is_not_all_of_them(answer: str) -> None:
    tasks = Tasks("Write report", "Send report", "Print report")
    assert "Which one" in tasks.say("delete report")
    tasks.say(answer)
    assert tasks.writes() == []


@pytest.mark.parametrize("answer", ["idk", "never mind", "hold on", "whatever"])
def test_a_non_answer_to_what_should_the_task_say_adds_nothing(answer: str) -> None:
    tasks = Tasks()
    assert "What should the task say?" in tasks.say("add a task")
    tasks.say(answer)
    assert tasks.writes() == []


def test_it_means_the_task_in_focus_not_an_unrelated_statement() -> None:
    tasks = Tasks("Dentist appointment", "Call mom")
    tasks.say("show task 1")
    tasks.say("Mom will call me later. Delete it please.")
    assert tasks.writes() == [("delete_task", {"task_id": 1})]


def test_it_after_a_report_means_the_task_reported() -> None:
    tasks = Tasks("Pay the gas bill", "Call mom")
    tasks.say(
        "ugh what a week, I finally got round to paying the gas bill so you can tick that off"
    )
    assert tasks.writes() == [("complete_task", {"task_id": 1})]


def test_a_vague_correction_undoes_nothing() -> None:
    tasks = Tasks("Call mom", "Call dad")
    tasks.say("delete call mom")
    tasks.say("I meant the other one")
    assert tasks.writes() == []


@pytest.mark.parametrize(
    "said",
    [
        "Have a good one!",
        "have fun",
        "I have to go now, bye",
        "I want to thank you for your help",
        "I must admit, this is handy",
        "I'll add it later",
        "could I add milk later?",
        "I was going to add milk but I changed my mind",
        "Remember when I added milk?",
        "log off",
        "stick around",
    ],
)
def test_talk_about_tasks_and_sign_offs_never_add(said: str) -> None:
    assert not [i for i in parse_message(said, CLOCK) if isinstance(i, AddIntent)]


@pytest.mark.parametrize(
    "said",
    [
        "add buy bread, is that ok?",
        "add buy bread, don't forget",
        "add learn guitar, no deadline",
        "add learn guitar. no reminder needed.",
    ],
)
def test_an_aside_after_a_new_task_is_no_second_task(said: str) -> None:
    adds = [i for i in parse_message(said, CLOCK) if isinstance(i, AddIntent)]
    assert len(adds) == 1


@pytest.mark.parametrize(
    ("titles", "said"),
    [
        (("Read book",), "delete bread"),
        (("Plan trip",), "delete the planet"),
        (("Pay rent",), "delete parent"),
        (("Fix car",), "delete the cart"),
        (("Call Ann",), "delete Anna"),
    ],
)
def test_a_word_inside_another_is_not_the_same_word_for_a_delete(
    titles: tuple[str, ...], said: str
) -> None:
    tasks = Tasks(*titles)
    tasks.say(said)
    assert tasks.writes() == []


def test_deleting_more_than_three_tasks_by_number_is_refused() -> None:
    tasks = Tasks("A task", "B task", "C task", "D task")
    tasks.say("delete 1 and 2 and 3 and 4")
    assert tasks.writes() == []


def test_a_long_list_of_numbers_parses_at_once() -> None:
    said = "delete " + " and ".join(str(n) for n in range(1, 40)) + " and the milk"
    assert parse_message(said, CLOCK)  # the separators have one reading each: no backtracking


@pytest.mark.parametrize("answer", ["idk, you pick", "sorry wrong button", "good question"])
def test_more_non_answers_add_nothing(answer: str) -> None:
    tasks = Tasks()
    tasks.say("add a task")
    tasks.say(answer)
    assert tasks.writes() == []
