"""The pieces a request runs with: tool calls replayed from this turn's recorded results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.agent.local.dates import Clock
from backend.agent.local.history import Conversation, ToolResult, recent_tasks

# Times are left out when matching a call to its recorded result: they are computed from
# "now", which may have moved on between the model calls of one turn.
_TIME_ARGUMENTS = frozenset({"due_at", "due_before", "due_after", "remind_at"})


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]


@dataclass
class Outcome:
    lines: list[str]
    tasks: list[dict[str, Any]] = field(default_factory=list)


class NeedCalls(Exception):
    """A request cannot go on without these tool results."""

    def __init__(self, calls: list[Call]) -> None:
        super().__init__(f"{len(calls)} tool call(s) needed")
        self.calls = calls


class Finish(Exception):
    """A request ends early (nothing matched, a question back, an error)."""

    def __init__(self, *lines: str, tasks: list[dict[str, Any]] | None = None) -> None:
        super().__init__(lines[0] if lines else "")
        self.outcome = Outcome(list(lines), tasks or [])


def _key(name: str, arguments: dict[str, Any]) -> str:
    kept = {k: v for k, v in arguments.items() if k not in _TIME_ARGUMENTS}
    return f"{name}:{json.dumps(kept, sort_keys=True, default=str)}"


class Pool:
    """This turn's recorded results, each handed to the first call that matches it."""

    def __init__(self, results: Sequence[ToolResult]) -> None:
        self._results = list(results)
        self._used = [False] * len(self._results)

    def take(self, call: Call) -> ToolResult | None:
        key = _key(call.name, call.arguments)
        for index, result in enumerate(self._results):
            if not self._used[index] and _key(result.name, result.arguments) == key:
                self._used[index] = True
                return result
        return None


class Script:
    """Tool calls as a request makes them: recorded results, or NeedCalls."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def call(self, name: str, **arguments: Any) -> ToolResult:
        return self.batch([Call(name, arguments)])[0]

    def batch(self, calls: list[Call]) -> list[ToolResult]:
        found = [self._pool.take(call) for call in calls]
        missing = [call for call, result in zip(calls, found, strict=True) if result is None]
        if missing:
            raise NeedCalls(missing)
        return [result for result in found if result is not None]


@dataclass(frozen=True)
class Env:
    clock: Clock
    conversation: Conversation
    earlier_in_message: tuple[Outcome, ...] = ()

    def referenced(self, many: bool) -> list[dict[str, Any]]:
        """The tasks "it"/"them" mean: from this message first, else the conversation."""
        if self.earlier_in_message:
            tasks = [t for o in self.earlier_in_message for t in o.tasks]
            last = next((o.tasks for o in reversed(self.earlier_in_message) if o.tasks), [])
            if tasks:
                return tasks if many else last
        return recent_tasks(self.conversation)
