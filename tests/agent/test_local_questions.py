"""Questions about the task list for the offline model: tag words, priority filters, "what did
I finish today?", the last task added, and questions about one task (never a new task).

Parsing runs through `parse_message`; answering runs `run_list` against stand-in results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backend.agent.local.dates import Clock
from backend.agent.local.history import Conversation, ToolResult
from backend.agent.local.intents import Intent, ListIntent, ShowIntent
from backend.agent.local.lists import TaskQuestion, run_list
from backend.agent.local.parsing import parse_message
from backend.agent.local.steps import Call, Env, NeedCalls, Outcome, Pool, Script
from tests.agent.utterances import NOW, PARIS

CLOCK = Clock(now=NOW, zone=ZoneInfo(PARIS))
TODAY_UTC = "2026-11-30T08:30:00Z"  # 09:30 in Paris, on NOW's day
YESTERDAY_UTC = "2026-11-29T22:30:00Z"  # 23:30 on Sunday in Paris


def _one(text: str) -> Intent:
    intents = parse_message(text, CLOCK)
    assert len(intents) == 1, intents
    return intents[0]


def _list(text: str) -> TaskQuestion:
    intent = _one(text)
    assert isinstance(intent, TaskQuestion), intent
    return intent


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("what's on my shopping list?", "shopping"),
        ("show my work stuff", "work"),
        ("anything for work?", "work"),
        ("what do I have under errands?", "errands"),
        ("list the health ones", "health"),
        ("show errands", "errands"),
        ("show me what's overdue at work", "work"),
        ("any errands?", "errands"),
    ],
)
def test_a_tag_word_lists_that_tag_and_falls_back_to_a_search(text: str, tag: str) -> None:
    intent = _list(text)
    assert intent.arguments["tags"] == [tag]
    assert intent.fallback == tag


@pytest.mark.parametrize(
    "text", ["show my tasks", "list my low priority stuff", "what's on my to-do list?"]
)
def test_filler_words_are_no_tags(text: str) -> None:
    assert "tags" not in _list(text).arguments


def test_an_explicit_tag_has_no_fallback() -> None:
    intent = _list("show me everything tagged work")
    assert (intent.arguments["tags"], intent.fallback) == (["work"], None)


@pytest.mark.parametrize(
    ("text", "priority", "or_urgent"),
    [
        ("what's high priority?", "high", True),
        ("important stuff", "high", True),
        ("high priority tasks", "high", True),
        ("what's urgent?", "urgent", False),
        ("low priority tasks", "low", False),
        ("what's not urgent?", "low", False),
    ],
)
def test_priority_words(text: str, priority: str, or_urgent: bool) -> None:
    intent = _list(text)
    assert (intent.arguments["priority"], intent.or_urgent) == (priority, or_urgent)


@pytest.mark.parametrize(
    ("text", "keep"),
    [
        ("what did I finish today?", "done_today"),
        ("what have I completed today", "done_today"),
        ("what did I tick off today", "done_today"),
        ("what did I add today?", "added_today"),
        ("which task did I add last?", "newest"),
        ("what was the last thing I added", "newest"),
        ("what did you just add?", "newest"),
    ],
)
def test_questions_answered_from_a_wider_list(text: str, keep: str) -> None:
    intent = _list(text)
    assert intent.keep == keep
    assert "search" not in intent.arguments
    assert "due_after" not in intent.arguments


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("what's due today?", "2026-11-30T00:00:00+01:00"),
        ("what do I need to get done today?", "2026-11-30T00:00:00+01:00"),
        ("what's due tomorrow", "2026-12-01T00:00:00+01:00"),
        ("what about tomorrow?", "2026-12-01T00:00:00+01:00"),
        ("what's due this week", "2026-11-30T00:00:00+01:00"),
    ],
)
def test_due_windows_still_work(text: str, start: str) -> None:
    intent = _list(text)
    assert (intent.arguments["due_after"], intent.arguments["status"]) == (start, "pending")
    assert intent.keep is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("is the report done?", "report"),
        ("is the report done yet?", "report"),
        ("when is the dentist due?", "dentist"),
        ("when's the dentist appointment?", "dentist appointment"),
        ("did I pay rent?", "pay rent"),
        ("has the rent been paid?", "rent"),
        ("did I miss the dentist?", "dentist"),
        ("what's the due date on the car service?", "car service"),
    ],
)
def test_a_question_about_one_task_shows_it(text: str, words: str) -> None:
    intent = _one(text)
    assert isinstance(intent, ShowIntent), intent
    assert intent.target.words == words


@pytest.mark.parametrize(
    "text", ["when are my tasks due?", "is anything overdue?", "is there anything urgent?"]
)
def test_questions_about_many_tasks_list_them(text: str) -> None:
    _list(text)


def test_did_i_finish_still_searches_completed_tasks() -> None:
    assert _list("did I finish the report?").arguments == {
        "status": "completed",
        "search": "report",
    }


def test_anything_about_searches() -> None:
    assert _list("do I have anything about the car?").arguments["search"] == "car"


@pytest.mark.parametrize(
    "text",
    [
        "what am I behind on?",
        "what's late?",
        "anything overdue?",
        "whats overdue",
        "whats ovrdue",
        "am i behind on anything",
    ],
)
def test_overdue_phrasings(text: str) -> None:
    arguments = _list(text).arguments
    assert arguments["overdue"] is True
    assert "sort" not in arguments  # newest first, like every list


@pytest.mark.parametrize(
    "text",
    ["could you possibly add a task to ring the council?", "actually sunday evening"],
)
def test_not_list_questions(text: str) -> None:
    assert not isinstance(_one(text), ListIntent)


# --- answering -------------------------------------------------------------------------


def _task(task_id: int, title: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "title": title, "completed": False, "priority": "medium", **fields}


Answer = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _answer(intent: ListIntent, tools: Answer) -> tuple[Outcome, list[Call]]:
    """Run the question to its end, answering each list_tasks call with `tools`."""
    results: list[ToolResult] = []
    made: list[Call] = []
    while True:
        try:
            env = Env(CLOCK, Conversation("", results, []))
            return run_list(intent, Script(Pool(results)), env), made
        except NeedCalls as need:
            for call in need.calls:
                made.append(call)
                tasks = tools(call.arguments)
                data = {"tasks": tasks, "total": len(tasks)}
                results.append(ToolResult(call.name, call.arguments, data, None))


def test_high_priority_lists_urgent_then_high() -> None:
    tasks = {"urgent": [_task(1, "Send the contract")], "high": [_task(2, "Renew insurance")]}
    outcome, calls = _answer(
        _list("what's high priority?"), lambda a: tasks.get(a.get("priority", ""), [])
    )
    assert [c.arguments["priority"] for c in calls] == ["urgent", "high"]
    assert "2 urgent or high-priority tasks" in outcome.lines[0]
    assert outcome.lines[0].index("Send the contract") < outcome.lines[0].index("Renew")


def test_a_tag_no_task_carries_is_searched_for() -> None:
    milk = [_task(3, "Buy shopping bags")]
    outcome, calls = _answer(
        _list("what's on my shopping list?"), lambda a: [] if "tags" in a else milk
    )
    assert [c.arguments.get("search") for c in calls] == [None, "shopping"]
    assert "matching 'shopping'" in outcome.lines[0]
    assert "tagged" not in outcome.lines[0]


def test_finished_today_keeps_tasks_completed_today_in_the_users_zone() -> None:
    done = [
        _task(1, "Send the invoice", completed=True, completed_at=TODAY_UTC),
        _task(2, "Old one", completed=True, completed_at=YESTERDAY_UTC),
    ]
    outcome, calls = _answer(_list("what did I finish today?"), lambda _a: done)
    assert calls[0].arguments["sort"] == "updated_at"
    assert "1 task done today" in outcome.lines[0]
    assert "Old one" not in outcome.lines[0]


def test_added_today_keeps_tasks_created_today() -> None:
    tasks = [_task(5, "New", created_at=TODAY_UTC), _task(4, "Older", created_at=YESTERDAY_UTC)]
    outcome, _calls = _answer(_list("what did I add today?"), lambda _a: tasks)
    assert "1 task added today" in outcome.lines[0]
    assert "Older" not in outcome.lines[0]


def test_the_last_task_added() -> None:
    outcome, calls = _answer(
        _list("which task did I add last?"), lambda _a: [_task(9, "Renew passport")]
    )
    assert calls[0].arguments == {
        "status": "all",
        "sort": "created_at",
        "order": "desc",
        "limit": 1,
    }
    assert outcome.lines == ["The last task you added:\n- #9 Renew passport"]


def test_tasks_without_a_due_date() -> None:
    intent = _list("which tasks don't have a due date?")
    tasks = [_task(1, "Learn sourdough"), _task(2, "Pay invoice", due_at="2026-12-02T22:59:00Z")]
    outcome, calls = _answer(intent, lambda _a: tasks)
    assert calls[0].arguments == {"status": "all", "limit": 100}
    assert "Learn sourdough" in outcome.lines[0]
    assert "Pay invoice" not in outcome.lines[0]
