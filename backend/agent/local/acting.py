"""Requests about existing tasks: find them (by id, "it", or words), act, confirm."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from backend.agent.local.actions import ALL_TAGS, KEEP, OR_ADD, SHIFT, parse_target
from backend.agent.local.dates import END_OF_DAY, Clock
from backend.agent.local.history import ToolResult, deleted_tasks, last_writes, shown_list, task_of
from backend.agent.local.intents import ActIntent, Action, ShowIntent, Target
from backend.agent.local.matching import (
    SURE,
    best_matches,
    content_words,
    exact,
    names_every_word,
    positions,
    ranked,
    score,
)
from backend.agent.local.repeats import describe_repeat
from backend.agent.local.replies import (
    canned,
    duration,
    error_text,
    local_moment,
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
    "restore": "deleted",
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
    try:
        tasks = resolve(intent.action, intent.target, script, env)
    except Finish as stop:  # "put the bulbs on the shopping list": maybe a new task after all
        if intent.changes.get(OR_ADD) and not stop.outcome.tasks and intent.target.words:
            said = " ".join([intent.target.words, *(f"#{t}" for t in intent.add_tags)])
            raise Finish(canned("suggest_add", said)) from None
        raise
    if intent.action == "delete" and "scope" not in intent.changes:
        _ask_series(tasks)
    lines: list[str] = []
    changes = {k: v for k, v in intent.changes.items() if k not in (KEEP, SHIFT, OR_ADD)}
    if intent.add_tags or intent.remove_tags:
        calls = _tag_updates(intent, _full(tasks, script, lines))
    elif KEEP in intent.changes or SHIFT in intent.changes:
        keep = intent.changes.get(KEEP, "")
        full = _full(tasks, script, lines)
        calls = [_moved(t, changes, keep, env.clock, intent.changes.get(SHIFT)) for t in full]
    else:
        calls = [Call(TOOLS[intent.action], {"task_id": t["id"], **changes}) for t in tasks]
    results = script.batch(calls)
    lines += [confirm(result, env.clock) for result in results]
    return Outcome(lines, [task_of(result) for result in results if result.ok])


def run_show(intent: ShowIntent, script: Script, env: Env) -> Outcome:
    lines: list[str] = []
    tasks = _full(resolve("show", intent.target, script, env), script, lines)
    return Outcome([task_details(t, env.clock) for t in tasks] + lines, tasks)


def _full(tasks: list[dict[str, Any]], script: Script, lines: list[str]) -> list[dict[str, Any]]:
    """The tasks with all their fields: those only known by id are fetched."""
    known = [t for t in tasks if "completed" in t and "title" in t]
    fetched = script.batch(
        [Call("get_task", {"task_id": t["id"]}) for t in tasks if t not in known]
    )
    for result in fetched:
        if result.ok and result.data is not None:
            known.append(result.data)
        else:
            lines.append(not_found(result) or f"I couldn't get that task: {error_text(result)}")
    return known


def _moved(
    task: dict[str, Any], changes: dict[str, Any], keep: str, clock: Clock, shift: int | None
) -> Call:
    """A new day that keeps the task's time of day ("move it to thursday"), a new time that
    keeps its day ("make it 6pm") or a due time moved by some minutes ("an hour later").
    A reminder set at a fixed time moves with the due time."""
    old, remind = (
        local_moment(task.get("due_at"), clock),
        local_moment(task.get("remind_at"), clock),
    )
    if shift is not None and old is None:
        raise Finish(f"{quoted(task.get('id'), task.get('title'))} has no due time to move.")
    due = old + timedelta(minutes=shift) if old and shift is not None else None
    due = due or datetime.fromisoformat(changes["due_at"])
    if old is not None and shift is None:
        if keep == "day":
            due = clock.at(old.date(), due.time())
        elif old.time().replace(second=0, microsecond=0) != END_OF_DAY:
            due = clock.at(due.date(), old.time().replace(microsecond=0))
    moved = {**changes, "task_id": task["id"], "due_at": due.isoformat()}
    if remind and old and task.get("remind_before_minutes") is None and not task.get("reminded"):
        moved["remind_at"] = (remind + (due - old)).isoformat()
    return Call("update_task", moved)


def run_undo(script: Script, env: Env) -> Outcome:
    writes = last_writes(env.conversation)
    if not writes:
        raise Finish("There's nothing to undo in this conversation yet.")
    calls, lines = [], []
    done_now = {t.get("id") for outcome in env.earlier_in_message for t in outcome.tasks}
    for write in writes:
        task_id, tool = write.task_ids()[0], _INVERSE.get(write.name)
        if task_id in done_now:  # "I didn't finish X, undo that": done already
            continue
        if tool:
            calls.append(Call(tool, {"task_id": task_id}))
        else:
            edited = quoted(task_id, write.title())
            lines.append(
                f"I can't undo the edit to {edited} automatically; tell me what to change."
            )
    results = script.batch(calls)
    touched = [task_of(r) for r in results if r.ok]
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


def _tag_updates(intent: ActIntent, tasks: list[dict[str, Any]]) -> list[Call]:
    """The tags after the change; "X isn't work" about a task not tagged #work changes
    nothing."""
    untagged = not any(set(intent.remove_tags) & {*(t.get("tags") or []), ALL_TAGS} for t in tasks)
    if tasks and untagged and not intent.add_tags:
        said = " ".join(f"#{t}" for t in intent.remove_tags)
        label = quoted(tasks[0].get("id"), tasks[0].get("title"))
        raise Finish(f"{label} isn't tagged {said}, so I didn't change anything.", tasks=tasks)
    calls = []
    for task in tasks:
        tags = dict.fromkeys([*(task.get("tags") or []), *intent.add_tags])
        removed = tuple(tags) if ALL_TAGS in intent.remove_tags else intent.remove_tags
        merged = [t for t in tags if t not in removed or t in intent.add_tags]
        calls.append(Call("update_task", {"task_id": task["id"], "tags": merged[:10]}))
    return calls


def resolve(action: str, target: Target, script: Script, env: Env) -> list[dict[str, Any]]:
    """The tasks a request is about, or Finish with a question or a "not found".

    Numbers said bare ("done with 1 and 3") are places in the list shown last when they fit
    it and none of them is an id on it; "#3" and "task 3" are always ids.
    """
    shown = shown_list(env.conversation)
    if target.ids and target.words and shown:
        on_list = {t["id"] for t in shown}
        if not on_list & set(target.ids) and max(target.ids) <= len(shown):
            return [shown[n - 1] for n in dict.fromkeys(target.ids) if n > 0]
    if target.ids:
        if action == "delete" and len(set(target.ids)) > MAX_DELETES_BY_REFERENCE:
            raise Finish(canned("refuse_bulk"))
        return [{"id": task_id} for task_id in dict.fromkeys(target.ids)]
    if target.pronoun is not None:
        return _referenced(action, target, env)
    words = target.words or ""
    said = parse_target(words)  # words as said in the message: "the dentist one"
    if said.pronoun or (said.words and said.words != words):
        return resolve(action, said, script, env)
    parts = re.split(r"\s+and\s+", words)
    if len(parts) > 1 and any(positions(part) for part in parts):  # "the milk one and the 3rd"
        return [t for part in parts for t in resolve(action, parse_target(part), script, env)]
    places = positions(words)
    if places and shown:
        chosen = [shown[p] for p in dict.fromkeys(places) if -len(shown) <= p < len(shown)]
        if not chosen:
            size = f"{len(shown)} task{'s' if len(shown) != 1 else ''}"
            raise Finish(f"The list I showed you has {size}. Which one?")
        return chosen
    if places and re.match(r"(?:the\s+)?(?:number|no)\b", words, re.IGNORECASE):
        return [{"id": places[0] + 1}]  # no list shown: "number 3" is task #3
    deleted = [{"id": i, "title": t} for i, t in deleted_tasks(env.conversation).items()]
    matches = exact(best_matches(deleted, words), words) if action == "restore" else []
    return matches if len(matches) == 1 else _by_words(action, words, script, env)


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
        everything = script.call(
            "list_tasks", status="deleted" if status == "deleted" else "all", limit=100
        )
        each = _each(everything.tasks(), words)
        close, sure = (each, True) if each else ranked(everything.tasks(), words)
        if close and not sure:
            lead = f"I couldn't find a task called '{words}'. Did you mean"
            if len(close) == 1:
                raise Finish(f"{lead} {quoted(close[0]['id'], close[0]['title'])}?", tasks=close)
            raise Finish(which_one(close, env.clock, f"{lead} one of these?"), tasks=close)
        matches = _right_status(action, close)
        if each and matches:
            return matches
    if not matches:
        kind = "a task" if status == "all" else f"a {status} task"
        raise Finish(f"I couldn't find {kind} matching '{words}'.")
    if len(matches) > 1:
        lead = f"I found {len(matches)} tasks matching '{words}'."
        raise Finish(which_one(matches, env.clock, lead), tasks=matches)
    _check_sure(action, words, matches[0])
    return matches


def _check_sure(action: str, words: str, task: dict[str, Any]) -> None:
    """A search hit is only a substring ("the car" is in "Buy carrots"): act on it when the
    words name it well, and delete only when every word said is in its title; else ask."""
    title = str(task.get("title", ""))
    if not content_words(words):
        return  # nothing but small words ("the"): the search found it, nothing to weigh
    sure = score(words, title) >= SURE and (action != "delete" or names_every_word(words, title))
    if not sure:
        raise Finish(
            f"I couldn't find a task called '{words}'. Did you mean "
            f"{quoted(task.get('id'), title)}?",
            tasks=[task],
        )


def _each(tasks: list[dict[str, Any]], words: str) -> list[dict[str, Any]] | None:
    """ "picked up the parcel and returned the books": one sure task for each part."""
    found: dict[int, dict[str, Any]] = {}
    for part in re.split(r"\s+and\s+", words):
        close, sure = ranked(tasks, part)
        if part == words or not sure or len(close) != 1:
            return None
        found[close[0]["id"]] = close[0]
    return list(found.values())


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
