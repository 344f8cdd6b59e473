"""From requests to tool calls and, once every result is in, the reply.

The model keeps no state between calls. Each call replays every request against the results
already in this turn's input: a request whose next tool call has a recorded result carries on
with it; the first call without one is what the model asks for next. When no request needs
another call, their outcomes make the reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend.agent.local.acting import run_act, run_show, run_undo
from backend.agent.local.dates import Clock
from backend.agent.local.history import Conversation, ToolResult
from backend.agent.local.intents import (
    ActIntent,
    AddIntent,
    HistoryIntent,
    Intent,
    ListIntent,
    RemindersIntent,
    ReplyIntent,
    ShowIntent,
    SkipIntent,
    SnoozeIntent,
    UndoIntent,
)
from backend.agent.local.lists import run_list
from backend.agent.local.reminders import run_reminders, run_skip, run_snooze
from backend.agent.local.replies import added, canned, now_text
from backend.agent.local.steps import Call, Env, Finish, NeedCalls, Outcome, Pool, Script
from backend.agent.local.timeline import run_history

MAX_CALLS_PER_TURN = 30


def run_intent(intent: Intent, script: Script, env: Env) -> Outcome:
    if isinstance(intent, AddIntent):
        result = script.call("add_task", **intent.arguments())
        return Outcome([added(result, env.clock)], [_created(result)] if result.ok else [])
    if isinstance(intent, ListIntent):
        return run_list(intent, script, env)
    if isinstance(intent, ActIntent):
        return run_act(intent, script, env)
    if isinstance(intent, ShowIntent):
        return run_show(intent, script, env)
    if isinstance(intent, HistoryIntent):
        return run_history(intent, script, env)
    if isinstance(intent, UndoIntent):
        return run_undo(script, env)
    if isinstance(intent, RemindersIntent):
        return run_reminders(intent, script, env)
    if isinstance(intent, SnoozeIntent):
        return run_snooze(intent, script, env)
    if isinstance(intent, SkipIntent):
        return run_skip(intent, script, env)
    if intent.kind == "now":
        return Outcome([now_text(env.clock)])
    return Outcome([canned(intent.kind, intent.text)])


def _created(result: ToolResult) -> dict[str, Any]:
    data = dict(result.data or {})
    data.setdefault("id", data.get("task_id"))
    return data


def _uses_earlier(intent: Intent) -> bool:
    target = intent.target if isinstance(intent, ActIntent | ShowIntent | HistoryIntent) else None
    if isinstance(intent, SkipIntent | SnoozeIntent):
        target = intent.target
    return target is not None and target.pronoun is not None


def plan(intents: Sequence[Intent], conversation: Conversation, clock: Clock) -> list[Call] | str:
    """The next tool calls to make, or the final reply."""
    pool = Pool(conversation.current)
    outcomes: list[Outcome | None] = []
    pending: list[Call] = []
    for index, intent in enumerate(intents):
        outcome: Outcome | None = None
        if not (pending and _uses_earlier(intent)):  # "add bread and mark it done" waits
            earlier = tuple(o for o in outcomes if o is not None) if index else ()
            try:
                outcome = run_intent(intent, Script(pool), Env(clock, conversation, earlier))
            except NeedCalls as need:
                pending.extend(need.calls)
            except Finish as finish:
                outcome = finish.outcome
        outcomes.append(outcome)
    if pending and len(conversation.current) < MAX_CALLS_PER_TURN:
        return pending
    return compose(intents, outcomes)


def compose(intents: Sequence[Intent], outcomes: Sequence[Outcome | None]) -> str:
    lines: list[str] = []
    for intent, outcome in zip(intents, outcomes, strict=True):
        if outcome is None:
            lines.append("I stopped before finishing everything; please ask again for the rest.")
        elif (
            len(intents) > 1
            and isinstance(intent, ReplyIntent)
            and intent.kind
            in (
                "unknown",
                "suggest_add",
            )
        ):
            lines.append(f'I didn\'t understand "{intent.text}".')
        else:
            lines.extend(line for line in outcome.lines if line)
    return "\n".join(dict.fromkeys(lines)) if lines else canned("ok")
