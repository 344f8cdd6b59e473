"""Requests about existing tasks: find them (by id, "it", or words), act, confirm."""

from __future__ import annotations

from typing import Any

from backend.agent.local.dates import Clock
from backend.agent.local.history import ToolResult, deleted_tasks, last_writes
from backend.agent.local.intents import ActIntent, Action, ShowIntent, Target
from backend.agent.local.matching import best_matches, exact
from backend.agent.local.repeats import describe_repeat
from backend.agent.local.replies import (
    canned,
    duration,
    error_text,
    next_due,
    not_found,
    quoted,
    remind_time,
    task_details,
    when,
    which_one,
)
from backend.agent.local.steps import Call, Env, Finish, Outcome, Script

TOOLS: dict[Action, str] = {
    "complete": "complete_task",
    "reopen": "reopen_task",
    "delete": "delete_task",
    "restore": "restore_task",
    "update": "update_task",
}
# "delete them" after a long list is more likely a slip than a wish to empty the list.
MAX_DELETES_BY_REFERENCE = 3
_ACTIONS = {tool: action for action, tool in TOOLS.items()}
_SEARCH_STATUS = {
    "complete": "pending",
    "reopen": "completed",
    "snooze": "pending",
    "skip": "pending",
}
SERIES_QUESTION = "Just this one, or the whole series?"
_INVERSE = {
    "delete_task": "restore_task",
    "restore_task": "delete_task",
    "complete_task": "reopen_task",
    "reopen_task": "complete_task",
    "add_task": "delete_task",
}


def run_act(intent: ActIntent, script: Script, env: Env) -> Outcome:
    tasks = resolve(intent.action, intent.target, script, env)
    if intent.action == "delete" and "scope" not in intent.changes:
        _ask_series(tasks)
    lines: list[str] = []
    if intent.add_tags or intent.remove_tags:
        calls = _tag_updates(intent, tasks, script, lines)
    else:
        calls = [Call(TOOLS[intent.action], {"task_id": t["id"], **intent.changes}) for t in tasks]
    results = script.batch(calls)
    lines += [confirm(result, env.clock) for result in results]
    return Outcome(lines, [_touched(result) for result in results if result.ok])


def run_show(intent: ShowIntent, script: Script, env: Env) -> Outcome:
    tasks = resolve("show", intent.target, script, env)
    known = [t for t in tasks if "completed" in t and "title" in t]
    fetched = script.batch(
        [Call("get_task", {"task_id": t["id"]}) for t in tasks if t not in known]
    )
    lines = [task_details(t, env.clock) for t in known]
    for result in fetched:
        if result.ok and result.data is not None:
            known.append(result.data)
            lines.append(task_details(result.data, env.clock))
        else:
            lines.append(not_found(result) or f"I couldn't get that task: {error_text(result)}")
    return Outcome(lines, known)


def run_undo(script: Script, env: Env) -> Outcome:
    writes = last_writes(env.conversation)
    if not writes:
        raise Finish("There's nothing to undo in this conversation yet.")
    calls, lines = [], []
    for write in writes:
        tool = _INVERSE.get(write.name)
        if tool is None:
            edited = quoted(write.task_ids()[0], write.title())
            lines.append(
                f"I can't undo the edit to {edited} automatically; tell me what to change."
            )
        else:
            calls.append(Call(tool, {"task_id": write.task_ids()[0]}))
    results = script.batch(calls)
    touched = [_touched(r) for r in results if r.ok]
    return Outcome([confirm(r, env.clock) for r in results] + lines, touched)


def _ask_series(tasks: list[dict[str, Any]]) -> None:
    """Deleting a repeating task: this occurrence, or the whole series? Ask first."""
    repeating = [t for t in tasks if t.get("recurrence")]
    if len(tasks) != 1 or not repeating:
        return
    task = repeating[0]
    repeat = describe_repeat(task["recurrence"]) or "regularly"
    label = quoted(task.get("id"), task.get("title"))
    raise Finish(f"{label} repeats {repeat}. {SERIES_QUESTION}", tasks=[task])


def _touched(result: ToolResult) -> dict[str, Any]:
    data = dict(result.data or {})
    data["id"] = data.get("task_id", data.get("id"))
    return data


def _tag_updates(
    intent: ActIntent, tasks: list[dict[str, Any]], script: Script, lines: list[str]
) -> list[Call]:
    unknown = [t for t in tasks if not isinstance(t.get("tags"), list)]
    current = {t["id"]: list(t["tags"]) for t in tasks if t not in unknown}
    for result in script.batch([Call("get_task", {"task_id": t["id"]}) for t in unknown]):
        if result.ok and result.data is not None:
            current[result.data.get("id")] = list(result.data.get("tags") or [])
        else:
            lines.append(not_found(result) or f"I couldn't read that task: {error_text(result)}")
    calls = []
    for task_id, tags in current.items():
        merged = [
            t for t in dict.fromkeys([*tags, *intent.add_tags]) if t not in intent.remove_tags
        ]
        calls.append(Call("update_task", {"task_id": task_id, "tags": merged[:10]}))
    return calls


def resolve(action: str, target: Target, script: Script, env: Env) -> list[dict[str, Any]]:
    """The tasks a request is about, or Finish with a question or a "not found"."""
    if target.ids:
        return [{"id": task_id} for task_id in dict.fromkeys(target.ids)]
    if target.pronoun is not None:
        return _referenced(action, target, env)
    words = target.words or ""
    if action == "restore":
        return _deleted_matching(words, env)
    return _by_words(action, words, script, env)


def _referenced(action: str, target: Target, env: Env) -> list[dict[str, Any]]:
    tasks = env.referenced(many=target.pronoun == "many")
    if not tasks:
        raise Finish("Which task do you mean? Tell me its number or some words from its title.")
    if action == "delete" and len(tasks) > MAX_DELETES_BY_REFERENCE:
        raise Finish(canned("refuse_bulk"))
    if target.pronoun == "one" and len(tasks) > 1:
        raise Finish(which_one(tasks, env.clock, "I'm not sure which task you mean."))
    # Only the ids: details from earlier turns may be stale, so they are fetched again.
    return [
        {"id": t["id"], "title": t.get("title"), "recurrence": t.get("recurrence")} for t in tasks
    ]


def _by_words(action: str, words: str, script: Script, env: Env) -> list[dict[str, Any]]:
    status = _SEARCH_STATUS.get(action, "all")
    first = script.call("list_tasks", search=words, status=status)
    if not first.ok:
        raise Finish(f"I couldn't search your tasks: {error_text(first)}")
    matches = exact(first.tasks(), words)
    if not matches:
        everything = script.call("list_tasks", status="all", limit=100)
        matches = _right_status(action, best_matches(everything.tasks(), words))
    if not matches:
        kind = {"pending": "a pending task", "completed": "a completed task"}.get(status, "a task")
        raise Finish(f"I couldn't find {kind} matching '{words}'.")
    if len(matches) > 1:
        lead = f"I found {len(matches)} tasks matching '{words}'."
        raise Finish(which_one(matches, env.clock, lead), tasks=matches)
    return matches


def _right_status(action: str, matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop tasks already in the wanted state; say so when nothing else is left."""
    wanted = {"complete": False, "reopen": True, "skip": False, "snooze": False}.get(action)
    if wanted is None or not matches:
        return matches
    fitting = [t for t in matches if bool(t.get("completed")) == wanted]
    if fitting:
        return fitting
    task = matches[0]
    state = "already done" if action == "complete" else "not marked done"
    raise Finish(f"{quoted(task.get('id'), task.get('title'))} is {state}.", tasks=[task])


def _deleted_matching(words: str, env: Env) -> list[dict[str, Any]]:
    deleted = [{"id": i, "title": t} for i, t in deleted_tasks(env.conversation).items()]
    matches = exact(best_matches(deleted, words), words)
    if len(matches) == 1:
        return matches
    if len(matches) > 1:
        raise Finish(which_one(matches, env.clock, f"I deleted {len(matches)} tasks like that."))
    raise Finish(
        "Deleted tasks don't show up in searches, so I need the task's number to restore it "
        '(for example "restore task 5").'
    )


def confirm(result: ToolResult, clock: Clock) -> str:
    action = _ACTIONS.get(result.name, "update")
    if not result.ok or result.data is None:
        task_id = result.arguments.get("task_id")
        return not_found(result) or f"I couldn't {action} #{task_id}: {error_text(result)}"
    label = quoted(result.data.get("task_id"), result.data.get("title"))
    if action == "complete":
        return f"Marked {label} as done.{next_due(result.data, clock)}"
    if action == "reopen":
        return f"Reopened {label} \u2014 it's pending again."
    if action == "delete" and result.arguments.get("scope") == "series":
        return f"Deleted {label} and the rest of its series."
    if action == "delete" and result.data.get("next_task_id"):
        return f"Deleted {label} (just this one).{next_due(result.data, clock)}"
    if action == "delete":
        return f'Deleted {label}. Say "undo" to bring it back.'
    if action == "restore":
        return f"Restored {label}."
    return _updated(result, label, clock)


def _updated(result: ToolResult, label: str, clock: Clock) -> str:
    arguments = result.arguments
    if set(arguments) == {"task_id", "title"}:
        return f"Renamed #{arguments['task_id']} to '{result.title()}'."
    if set(arguments) == {"task_id", "remind_before_minutes"}:
        before = duration(int(arguments["remind_before_minutes"]))
        return f"Okay, I'll remind you {before} before {label} is due."
    parts: list[str] = []
    if "title" in arguments:
        parts.append(f"renamed to '{arguments['title']}'")
    if "priority" in arguments:
        priority = arguments["priority"]
        parts.append("urgent" if priority == "urgent" else f"{priority} priority")
    if "due_at" in arguments:
        parts.append(f"due {when(arguments['due_at'], clock)}")
    if arguments.get("clear_due_at"):
        parts.append("no due date")
    if "remind_before_minutes" in arguments:
        parts.append(f"reminder {duration(int(arguments['remind_before_minutes']))} before")
    if "remind_at" in arguments:
        parts.append(f"reminder {remind_time(arguments['remind_at'], clock)}")
    if arguments.get("clear_reminder"):
        parts.append("no reminder")
    if "recurrence" in arguments:
        repeat = describe_repeat(arguments["recurrence"])
        parts.append(f"repeats {repeat}" if repeat and repeat != "none" else "no longer repeats")
    if "tags" in arguments:
        tags = " ".join(f"#{t}" for t in arguments["tags"])
        parts.append(f"tags {tags}" if tags else "no tags")
    if "description" in arguments:
        parts.append("notes updated")
    return f"Updated {label}: {', '.join(parts)}."
