"""Reminder phrasings that need a fired reminder in the conversation ("snooze that").

A fired reminder is an assistant note "⏰ Reminder: <title> — due 5:00 PM" that no user turn
asked for, so the utterance table cannot set it up; these run the model's decisions against
stand-in tool results instead (no MCP, no database).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backend.agent.instructions import build_instructions
from backend.agent.local.respond import respond
from backend.agent.tools import TOOLS
from tests.agent.utterances import NOW, PARIS

Tool = Callable[[str, dict[str, Any]], dict[str, Any]]
INSTRUCTIONS = build_instructions(NOW, ZoneInfo(PARIS))
CALL_MOM = {
    "id": 7,
    "title": "Call mom",
    "completed": False,
    "priority": "medium",
    "tags": [],
    "due_at": "2026-11-30T17:00:00+01:00",
    "remind_at": "2026-11-30T09:55:00+01:00",
    "reminded": True,
    "recurrence": None,
}
FIRED = {"role": "assistant", "content": "\u23f0 Reminder: Call mom \u2014 due 5:00 PM"}


def _tools(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    if name == "list_tasks":
        return {"tasks": [CALL_MOM], "total": 1}
    if name == "list_notifications":
        row = {
            "id": 1,
            "task_id": 7,
            "title": "Call mom",
            "due_at": CALL_MOM["due_at"],
            "remind_at": CALL_MOM["remind_at"],
            "fired_at": "2026-11-30T09:55:00+01:00",
            "late": False,
            "read": False,
        }
        return {"notifications": [row], "unread": 1}
    if name == "update_task":
        return {"task_id": arguments["task_id"], "status": "updated", "title": "Call mom"}
    if name == "snooze_reminder":
        return {**CALL_MOM, "remind_at": arguments["until"], "reminded": False}
    raise AssertionError(f"unexpected tool {name}")


def _turn(history: list[Any], text: str, tools: Tool = _tools) -> tuple[str, list[Any]]:
    """One user turn: the model's calls answered by `tools` until it replies."""
    items: list[Any] = [*history, {"role": "user", "content": text}]
    calls: list[tuple[str, dict[str, Any]]] = []
    for index in range(10):
        decision = respond(INSTRUCTIONS, items, set(TOOLS))
        if isinstance(decision, str):
            return decision, calls
        for number, call in enumerate(decision):
            call_id = f"c{index}-{number}"
            calls.append((call.name, call.arguments))
            items.append(
                {
                    "type": "function_call",
                    "call_id": call_id,
                    "name": call.name,
                    "arguments": json.dumps(call.arguments),
                }
            )
            output = json.dumps(tools(call.name, call.arguments))
            items.append({"type": "function_call_output", "call_id": call_id, "output": output})
    raise AssertionError("no reply after 10 rounds")


@pytest.mark.parametrize(
    ("text", "remind_at", "said"),
    [
        ("snooze that for 10 minutes", "2026-11-30T10:10:00+01:00", "at 10:10 AM today"),
        ("snooze", "2026-11-30T10:10:00+01:00", "at 10:10 AM today"),
        ("snooze it for half an hour", "2026-11-30T10:30:00+01:00", "at 10:30 AM today"),
        ("remind me again in an hour", "2026-11-30T11:00:00+01:00", "at 11:00 AM today"),
        ("remind me about it again in 5 minutes", "2026-11-30T10:05:00+01:00", "at 10:05 AM"),
        ("snooze it until tomorrow morning", "2026-12-01T09:00:00+01:00", "at 9:00 AM tomorrow"),
        ("remind me later", "2026-11-30T11:00:00+01:00", "at 11:00 AM today"),
    ],
)
def test_snooze_the_reminder_that_fired(text: str, remind_at: str, said: str) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hi!"}, FIRED]
    reply, calls = _turn(history, text)
    assert calls == [
        ("list_tasks", {"search": "Call mom", "status": "pending"}),
        ("snooze_reminder", {"task_id": 7, "until": remind_at}),
    ]
    assert "Snoozed #7 'Call mom'" in reply
    assert said in reply


def test_a_reminder_before_any_message_is_read() -> None:
    reply, calls = _turn([FIRED], "snooze that for 10 minutes")
    assert [name for name, _ in calls] == ["list_tasks", "snooze_reminder"]
    assert "again at 10:10 AM today" in reply


def test_without_a_reminder_note_the_latest_notification_is_snoozed() -> None:
    reply, calls = _turn([], "snooze that for 10 minutes")
    assert calls == [
        ("list_notifications", {"limit": 1}),
        ("snooze_reminder", {"task_id": 7, "until": "2026-11-30T10:10:00+01:00"}),
    ]
    assert "Snoozed #7" in reply


def test_missed_reminders_are_listed_in_the_users_zone() -> None:
    reply, calls = _turn([], "did I miss any reminders?")
    assert calls == [("list_notifications", {"unread_only": True, "limit": 10})]
    assert "1 reminder you haven't seen" in reply
    assert "Call mom \u00b7 went off at 9:55 AM today (due Mon Nov 30, 5:00 PM)" in reply


@pytest.mark.parametrize(
    "text",
    [
        "snooze that",
        "snooze that for 10 minutes",
        "remind me again in an hour",
        "skip this one",
        "skip it this time",
        "any reminders?",
        "what reminders do I have?",
        "did I miss any reminders?",
        "remind me an hour before",
        "stop repeating it",
    ],
)
def test_reminder_sentences_never_become_tasks(text: str) -> None:
    def no_adds(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        assert name != "add_task", f"{text!r} added a task"
        if name == "list_notifications":
            return {"notifications": [], "unread": 0}
        if name == "list_tasks":
            return {"tasks": [], "total": 0}
        return _tools(name, arguments)

    reply, _calls = _turn([], text, no_adds)
    assert "Added task" not in reply
