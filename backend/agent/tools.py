"""The MCP tool surface in one table: scope, hints and progress text of every task tool.

The MCP server, its write-scope gate, ChatKit and the local model all read this table, so
a new tool or a changed hint is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from mcp.types import ToolAnnotations

from backend.auth.mcp_tokens import READ_SCOPE, WRITE_SCOPE

WORKING = "Working…"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    scope: str
    changes_tasks: bool
    destructive: bool
    idempotent: bool
    progress: str

    def __post_init__(self) -> None:
        # The scope gate trusts `scope`, the hints trust `changes_tasks`: they must agree.
        expected = WRITE_SCOPE if self.changes_tasks else READ_SCOPE
        if self.scope != expected:
            raise ValueError(f"{self.name}: scope {self.scope!r}, expected {expected!r}")

    def annotations(self) -> ToolAnnotations:
        return ToolAnnotations(
            read_only_hint=not self.changes_tasks,
            destructive_hint=self.destructive,
            idempotent_hint=self.idempotent,
            open_world_hint=False,
        )


def _reads(name: str, progress: str) -> ToolSpec:
    return ToolSpec(
        name, READ_SCOPE, changes_tasks=False, destructive=False, idempotent=True, progress=progress
    )


def _writes(
    name: str, progress: str, *, destructive: bool = False, idempotent: bool = True
) -> ToolSpec:
    return ToolSpec(
        name,
        WRITE_SCOPE,
        changes_tasks=True,
        destructive=destructive,
        idempotent=idempotent,
        progress=progress,
    )


TOOLS: Mapping[str, ToolSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _writes("add_task", "Adding '{title}'…", idempotent=False),
            _reads("list_tasks", "Looking through your tasks…"),
            _reads("get_task", "Opening task {task_id}…"),
            _writes("complete_task", "Completing task {task_id}…"),
            _writes("reopen_task", "Reopening task {task_id}…"),
            _writes("update_task", "Updating task {task_id}…", destructive=True),
            _writes("delete_task", "Deleting task {task_id}…", destructive=True),
            _writes("restore_task", "Restoring task {task_id}…"),
            _reads("task_history", "Looking up task {task_id}'s history…"),
            _writes(
                "skip_occurrence", "Skipping this occurrence of task {task_id}…", idempotent=False
            ),
            _reads("list_notifications", "Checking your reminders…"),
            _writes("snooze_reminder", "Snoozing the reminder of task {task_id}…"),
        )
    }
)
WRITE_TOOLS = frozenset(name for name, spec in TOOLS.items() if spec.changes_tasks)
DESTRUCTIVE_TOOLS = frozenset(name for name, spec in TOOLS.items() if spec.destructive)


def progress_text(name: str, arguments: Mapping[str, Any]) -> str:
    """What the user sees while a tool runs; arguments come from the model, so any may be off."""
    spec = TOOLS.get(name)
    if spec is None:
        return WORKING
    try:
        return spec.progress.format(**arguments)
    except (KeyError, IndexError, ValueError, TypeError):
        # "Adding '{title}'…" -> "Adding…"; "Completing task {task_id}…" -> "Completing task…"
        return spec.progress.split(" '")[0].split(" {")[0] + "…"
