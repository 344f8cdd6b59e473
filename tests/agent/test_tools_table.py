"""The tool table is what the MCP server serves: same tools, same hints, nothing extra."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from backend.agent.tools import DESTRUCTIVE_TOOLS, TOOLS, WRITE_TOOLS, ToolSpec, progress_text
from backend.auth.mcp_tokens import READ_SCOPE, WRITE_SCOPE
from backend.db import Database
from mcp_server.server import TaskTools, build_server
from tests.conftest import make_settings


async def test_the_mcp_server_lists_exactly_the_table_with_its_hints(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"  # listing tools opens no session
    database = Database(url)
    server = build_server(make_settings(tmp_path, url), database, lambda: "alice")
    try:
        async with Client(server) as client:
            listed = (await client.list_tools()).tools
    finally:
        await database.dispose()

    assert [tool.name for tool in listed] == list(TOOLS)
    for tool in listed:
        assert tool.annotations == TOOLS[tool.name].annotations(), tool.name


def test_every_tool_method_of_the_server_has_a_row_in_the_table() -> None:
    # A tool method without a row would never be served; a row without a method fails here.
    methods = {
        name
        for name, member in inspect.getmembers(TaskTools, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert methods == set(TOOLS)


def test_the_table_derives_scope_and_hints_from_whether_a_tool_changes_tasks() -> None:
    assert set(TOOLS) == {
        "add_task",
        "list_tasks",
        "get_task",
        "complete_task",
        "reopen_task",
        "update_task",
        "delete_task",
        "restore_task",
        "task_history",
        "skip_occurrence",
        "list_notifications",
        "snooze_reminder",
    }
    assert WRITE_TOOLS == set(TOOLS) - {
        "list_tasks",
        "get_task",
        "task_history",
        "list_notifications",
    }
    assert DESTRUCTIVE_TOOLS == {"update_task", "delete_task"}
    for spec in TOOLS.values():
        notes = spec.annotations()
        assert spec.scope == (WRITE_SCOPE if spec.changes_tasks else READ_SCOPE), spec.name
        assert notes.read_only_hint is not spec.changes_tasks, spec.name
        assert notes.open_world_hint is False, spec.name


def test_a_row_whose_scope_contradicts_changes_tasks_is_refused() -> None:
    with pytest.raises(ValueError, match="scope"):
        ToolSpec("add_task", READ_SCOPE, True, destructive=False, idempotent=False, progress="")


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("add_task", {"title": "Buy milk", "priority": "high"}, "Adding 'Buy milk'…"),
        ("complete_task", {"task_id": 7}, "Completing task 7…"),
        ("list_tasks", {"status": "pending"}, "Looking through your tasks…"),
        ("add_task", {}, "Adding…"),
        ("delete_task", {"id": 7}, "Deleting task…"),
        ("update_task", None, "Updating task…"),
        ("get_task", ["task_id", 7], "Opening task…"),
        ("restore_task", {1: 2}, "Restoring task…"),
        ("send_email", {"to": "x"}, "Working…"),
    ],
)
def test_progress_text_names_the_task_and_survives_odd_arguments(
    name: str, arguments: Any, expected: str
) -> None:
    # Arguments are whatever the model wrote: missing, misnamed or not a mapping at all.
    assert progress_text(name, arguments) == expected
