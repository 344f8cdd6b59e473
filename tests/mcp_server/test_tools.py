"""Every tool over HTTP with the SDK client: schemas, successes, errors, and the rows behind."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.db import Database
from tests.mcp_server.conftest import (
    ID_TOOLS,
    TOOL_NAMES,
    Connector,
    McpUser,
    id_tool_arguments,
    task_row,
    task_rows,
)

DUE = "2030-05-01T17:00:00+02:00"
DUE_UTC = datetime(2030, 5, 1, 15, 0, tzinfo=UTC)


def _keys(schema: Any) -> set[str]:
    """Every dictionary key anywhere in a JSON schema (property names included)."""
    if isinstance(schema, dict):
        found = set(schema)
        for value in schema.values():
            found |= _keys(value)
        return found
    if isinstance(schema, list):
        found = set()
        for item in schema:
            found |= _keys(item)
        return found
    return set()


async def _add(user: McpUser, title: str, **fields: Any) -> int:
    created = await user.ok("add_task", title=title, **fields)
    task_id = created["task_id"]
    assert isinstance(task_id, int)
    return task_id


# --- tools/list ---------------------------------------------------------------------------


async def test_tools_list_offers_the_nine_task_tools_with_strict_schemas(
    connect: Connector,
) -> None:
    async with connect("alice") as alice:
        tools = (await alice.session.list_tools()).tools

    assert {tool.name for tool in tools} == TOOL_NAMES
    assert len(tools) == len(TOOL_NAMES)
    for tool in tools:
        schema = tool.input_schema
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False, tool.name
        assert tool.description, tool.name
        assert len(tool.description) > 20, tool.name
        assert tool.output_schema is not None, tool.name
        for name, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
        # Identity comes from the token, never from an argument or a result field.
        for part in (schema, tool.output_schema):
            assert "user_id" not in _keys(part), tool.name
            assert "user_id" not in json.dumps(part), tool.name


async def test_tool_annotations_tell_clients_which_tools_only_read_and_which_destroy(
    connect: Connector,
) -> None:
    expected = {  # (read_only, destructive, idempotent)
        "add_task": (False, False, False),
        "list_tasks": (True, False, True),
        "get_task": (True, False, True),
        "complete_task": (False, False, True),
        "reopen_task": (False, False, True),
        "update_task": (False, True, True),
        "delete_task": (False, True, True),
        "restore_task": (False, False, True),
        "task_history": (True, False, True),
        "skip_occurrence": (False, False, False),
        "list_notifications": (True, False, True),
        "snooze_reminder": (False, False, True),
    }
    async with connect("alice") as alice:
        tools = (await alice.session.list_tools()).tools

    for tool in tools:
        notes = tool.annotations
        assert notes is not None, tool.name
        actual = (notes.read_only_hint, notes.destructive_hint, notes.idempotent_hint)
        assert actual == expected[tool.name], tool.name
        assert notes.open_world_hint is False, tool.name


async def test_input_schemas_advertise_the_limits_the_server_enforces(
    connect: Connector,
) -> None:
    async with connect("alice") as alice:
        tools = {tool.name: tool for tool in (await alice.session.list_tools()).tools}

    add = tools["add_task"].input_schema
    assert add["required"] == ["title"]
    assert add["properties"]["title"]["maxLength"] == 200
    assert add["properties"]["title"]["minLength"] == 1
    tags = next(option for option in add["properties"]["tags"]["anyOf"] if "items" in option)
    assert tags["maxItems"] == 10
    assert tags["items"]["maxLength"] == 32
    listing = tools["list_tasks"].input_schema["properties"]
    assert listing["limit"]["maximum"] == 100
    assert listing["status"]["enum"] == ["all", "pending", "completed", "deleted"]
    for name in ID_TOOLS:
        assert tools[name].input_schema["required"] == ["task_id"], name
    remind = add["properties"]["remind_at"]["description"].lower()
    assert "remind" in remind
    assert "due" not in remind


UNKNOWN_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("add_task", {"title": "Buy milk", "user_id": "bob"}, "user_id"),
    ("add_task", {"title": "Buy milk", "colour": "red"}, "colour"),
    ("list_tasks", {"user_id": "bob"}, "user_id"),
    ("get_task", {"user_id": "bob"}, "user_id"),
    ("update_task", {"title": "x", "completed": True}, "completed"),
    ("delete_task", {"hard": True}, "hard"),
]


async def test_unknown_arguments_are_rejected_and_nothing_changes(
    connect: Connector, database: Database, subtests: pytest.Subtests
) -> None:
    async with connect("alice") as alice:
        task_id = await _add(alice, "Existing")
        before = await task_rows(database)
        for tool, arguments, extra in UNKNOWN_ARGUMENTS:
            if tool not in ("add_task", "list_tasks"):
                arguments = {**arguments, "task_id": task_id}
            with subtests.test(tool=tool, extra=extra):
                message = await alice.fail(tool, **arguments)
                assert extra in message
                assert "Extra inputs are not permitted" in message
                assert await task_rows(database) == before


# --- add_task -------------------------------------------------------------------------------


async def test_add_task_stores_every_field_for_the_caller(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        created = await alice.ok(
            "add_task",
            title="  Pay rent  ",
            description="Transfer to the landlord",
            priority="high",
            tags=["Home", "#money", "home"],
            due_at=DUE,
            remind_at="2030-05-01T09:00:00-04:00",
            recurrence="freq=monthly;bymonthday=1",
        )

    assert created["status"] == "created"
    assert created["task_id"] == created["id"]
    assert created["title"] == "Pay rent"
    assert created["tags"] == ["home", "money"]
    assert created["priority"] == "high"
    assert created["completed"] is False
    assert datetime.fromisoformat(created["due_at"]) == DUE_UTC
    row = await task_row(database, created["task_id"])
    assert row["user_id"] == "alice"
    assert row["title"] == "Pay rent"
    assert row["description"] == "Transfer to the landlord"
    assert row["priority"] == "high"
    assert row["tags"] == ["home", "money"]
    assert row["due_at"] == DUE_UTC
    assert row["remind_at"] == datetime(2030, 5, 1, 13, 0, tzinfo=UTC)
    assert row["recurrence"] == "FREQ=MONTHLY;BYMONTHDAY=1"
    assert row["completed"] is False
    assert row["deleted_at"] is None


async def test_add_task_with_only_a_title_uses_the_defaults(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        created = await alice.ok("add_task", title="Buy milk")

    row = await task_row(database, created["task_id"])
    assert (row["title"], row["priority"], row["tags"], row["due_at"]) == (
        "Buy milk",
        "medium",
        [],
        None,
    )
    assert row["recurrence"] is None
    assert row["description"] is None


INVALID_NEW_TASKS: dict[str, tuple[dict[str, Any], str]] = {
    "blank-title": ({"title": "   "}, "title"),
    "empty-title": ({"title": ""}, "title"),
    "title-201-chars": ({"title": "x" * 201}, "at most 200 characters"),
    "eleven-tags": ({"title": "t", "tags": [f"t{i}" for i in range(11)]}, "at most 10 items"),
    "tag-33-chars": ({"title": "t", "tags": ["x" * 33]}, "at most 32 characters"),
    "tag-with-space": ({"title": "t", "tags": ["two words"]}, "spaces"),
    "bad-recurrence": (
        {"title": "t", "recurrence": "every other blue moon"},
        "recurrence must be daily, weekly, monthly or an RRULE",
    ),
    "naive-due-at": ({"title": "t", "due_at": "2030-05-01T17:00:00"}, "timezone"),
    "unparsable-due-at": ({"title": "t", "due_at": "next tuesday"}, "due_at"),
    "bad-priority": ({"title": "t", "priority": "critical"}, "priority"),
    "description-2001": ({"title": "t", "description": "d" * 2001}, "2000"),
    "nul-in-title": ({"title": "nul\x00byte"}, "NUL"),
    "missing-title": ({}, "title"),
}


async def test_add_task_rejects_invalid_input_and_stores_nothing(
    connect: Connector, database: Database, subtests: pytest.Subtests
) -> None:
    async with connect("alice") as alice:
        for case, (arguments, fragment) in INVALID_NEW_TASKS.items():
            with subtests.test(case):
                assert fragment in await alice.fail("add_task", **arguments)
                assert await task_rows(database) == []


async def test_parallel_tool_calls_each_get_their_own_database_session(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        results = await asyncio.gather(*(alice.ok("add_task", title=f"T{i}") for i in range(8)))
        listed = await alice.ok("list_tasks", limit=100)

    ids = {result["task_id"] for result in results}
    assert len(ids) == 8
    assert listed["total"] == 8
    assert {row["id"] for row in await task_rows(database)} == ids


# --- list_tasks and get_task ------------------------------------------------------------------


async def test_list_tasks_filters_sorts_and_pages(connect: Connector) -> None:
    now = datetime.now(UTC)
    async with connect("alice") as alice:
        milk = await _add(alice, "Buy milk", tags=["home"], priority="low")
        report = await _add(
            alice,
            "Write report",
            tags=["work"],
            priority="urgent",
            due_at=(now - timedelta(days=1)).isoformat(),
        )
        call = await _add(
            alice,
            "Call the bank",
            tags=["home", "money"],
            priority="high",
            due_at=(now + timedelta(days=3)).isoformat(),
            description="ask about the MILK subscription",
        )
        await alice.ok("complete_task", task_id=milk)

        async def ids(**query: Any) -> list[int]:
            page = await alice.ok("list_tasks", **query)
            return [task["id"] for task in page["tasks"]]

        assert await ids() == [call, report, milk]  # newest first
        assert await ids(status="pending") == [call, report]
        assert await ids(status="completed") == [milk]
        assert await ids(priority="urgent") == [report]
        assert await ids(tags=["home"]) == [call, milk]
        assert await ids(tags=["home", "money"]) == [call]
        assert await ids(search="milk") == [call, milk]  # title or description, any case
        assert await ids(overdue=True) == [report]
        assert await ids(due_before=now.isoformat()) == [report]
        assert await ids(due_after=now.isoformat()) == [call]
        assert await ids(sort="priority", order="desc") == [report, call, milk]
        assert await ids(sort="title") == [milk, call, report]
        assert await ids(sort="due_at") == [report, call, milk]  # undated last

        page = await alice.ok("list_tasks", sort="title", limit=1, offset=1)
        assert [task["id"] for task in page["tasks"]] == [call]
        assert page["total"] == 3
        first = page["tasks"][0]
        assert set(first) >= {"id", "title", "completed", "priority", "tags", "due_at"}
        assert "user_id" not in first


async def test_list_tasks_with_nothing_stored_is_empty(connect: Connector) -> None:
    async with connect("alice") as alice:
        assert await alice.ok("list_tasks") == {"tasks": [], "total": 0}


BAD_QUERIES: dict[str, tuple[dict[str, Any], str]] = {
    "limit-101": ({"limit": 101}, "less than or equal to 100"),
    "limit-0": ({"limit": 0}, "greater than or equal to 1"),
    "negative-offset": ({"offset": -1}, "offset"),
    "bad-status": ({"status": "done"}, "status"),
    "bad-sort": ({"sort": "user_id"}, "sort"),
    "tag-33-chars": ({"tags": ["x" * 33]}, "at most 32 characters"),
    "search-201-chars": ({"search": "s" * 201}, "at most 200 characters"),
    "naive-due-before": ({"due_before": "2030-01-01T00:00:00"}, "timezone"),
}


async def test_list_tasks_rejects_bad_queries(
    connect: Connector, subtests: pytest.Subtests
) -> None:
    async with connect("alice") as alice:
        for case, (arguments, fragment) in BAD_QUERIES.items():
            with subtests.test(case):
                assert fragment in await alice.fail("list_tasks", **arguments)


async def test_get_task_returns_the_task_with_all_its_details(connect: Connector) -> None:
    async with connect("alice") as alice:
        task_id = await _add(
            alice, "Pay rent", description="by transfer", tags=["money"], due_at=DUE
        )
        task = await alice.ok("get_task", task_id=task_id)

    assert task["id"] == task_id
    assert task["title"] == "Pay rent"
    assert task["description"] == "by transfer"
    assert task["tags"] == ["money"]
    assert datetime.fromisoformat(task["due_at"]) == DUE_UTC
    assert task["completed"] is False


async def test_every_id_tool_names_the_missing_task(
    connect: Connector, subtests: pytest.Subtests
) -> None:
    async with connect("alice") as alice:
        for tool in ID_TOOLS:
            arguments = id_tool_arguments(tool, 424242)
            with subtests.test(tool):
                message = await alice.fail(tool, **arguments)
                assert message == f"Error executing tool {tool}: Task 424242 not found"


async def test_task_ids_out_of_range_are_rejected_before_any_lookup(
    connect: Connector, subtests: pytest.Subtests
) -> None:
    async with connect("alice") as alice:
        for task_id in (0, -3, 2**31):
            with subtests.test(task_id=task_id):
                assert "task_id" in await alice.fail("get_task", task_id=task_id)


# --- complete / reopen ------------------------------------------------------------------------


async def test_complete_then_reopen_changes_the_stored_task(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        task_id = await _add(alice, "Buy milk")

        done = await alice.ok("complete_task", task_id=task_id)
        assert done == {"task_id": task_id, "status": "completed", "title": "Buy milk"}
        row = await task_row(database, task_id)
        assert row["completed"] is True
        assert row["completed_at"] is not None
        completed_at = row["completed_at"]

        again = await alice.ok("complete_task", task_id=task_id)  # idempotent
        assert again["status"] == "completed"
        assert (await task_row(database, task_id))["completed_at"] == completed_at

        reopened = await alice.ok("reopen_task", task_id=task_id)
        assert reopened == {"task_id": task_id, "status": "pending", "title": "Buy milk"}
        row = await task_row(database, task_id)
        assert row["completed"] is False
        assert row["completed_at"] is None


# --- update_task ------------------------------------------------------------------------------


async def test_update_task_changes_only_the_fields_passed(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        task_id = await _add(
            alice,
            "Pay rent",
            description="by transfer",
            priority="high",
            tags=["money"],
            due_at=DUE,
            recurrence="monthly",
        )
        before = await task_row(database, task_id)

        changed = await alice.ok("update_task", task_id=task_id, title="Pay the rent")
        assert changed == {"task_id": task_id, "status": "updated", "title": "Pay the rent"}
        row = await task_row(database, task_id)
        assert row["title"] == "Pay the rent"
        unchanged = ("description", "priority", "tags", "due_at", "recurrence", "completed")
        assert {k: row[k] for k in unchanged} == {k: before[k] for k in unchanged}
        assert row["updated_at"] > before["updated_at"]

        await alice.ok(
            "update_task",
            task_id=task_id,
            priority="low",
            tags=["Home", "bills"],
            due_at="2031-01-02T03:04:05Z",
            recurrence="FREQ=WEEKLY;BYDAY=MO",
        )
        row = await task_row(database, task_id)
        assert row["priority"] == "low"
        assert row["tags"] == ["home", "bills"]
        assert row["due_at"] == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert row["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
        assert row["title"] == "Pay the rent"


async def test_update_task_can_clear_optional_fields(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        task_id = await _add(
            alice, "Pay rent", description="notes", tags=["money"], due_at=DUE, recurrence="daily"
        )
        await alice.ok(
            "update_task",
            task_id=task_id,
            description="",
            tags=[],
            clear_due_at=True,
            recurrence="none",
        )

    row = await task_row(database, task_id)
    assert row["description"] is None
    assert row["tags"] == []
    assert row["due_at"] is None
    assert row["recurrence"] is None
    assert row["title"] == "Pay rent"


BAD_UPDATES: dict[str, tuple[dict[str, Any], str]] = {
    "nothing-to-change": ({}, "Nothing to change"),
    "all-null": ({"priority": None, "title": None}, "Nothing to change"),
    "blank-title": ({"title": "   "}, "title"),
    "title-201-chars": ({"title": "x" * 201}, "at most 200 characters"),
    "eleven-tags": ({"tags": [f"t{i}" for i in range(11)]}, "at most 10 items"),
    "bad-recurrence": ({"recurrence": "sometimes"}, "recurrence must be"),
    "naive-due-at": ({"due_at": "2030-05-01T17:00:00"}, "timezone"),
}


async def test_update_task_rejects_bad_changes_and_leaves_the_row_alone(
    connect: Connector, database: Database, subtests: pytest.Subtests
) -> None:
    async with connect("alice") as alice:
        task_id = await _add(alice, "Pay rent", tags=["money"], due_at=DUE)
        before = await task_rows(database)
        for case, (arguments, fragment) in BAD_UPDATES.items():
            with subtests.test(case):
                message = await alice.fail("update_task", task_id=task_id, **arguments)
                assert fragment in message
                assert await task_rows(database) == before


# --- delete / restore -------------------------------------------------------------------------


async def test_delete_is_soft_and_restore_brings_the_task_back(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        task_id = await _add(alice, "Old chore", tags=["home"])
        keep = await _add(alice, "Keep me")

        deleted = await alice.ok("delete_task", task_id=task_id)
        assert deleted == {"task_id": task_id, "status": "deleted", "title": "Old chore"}
        row = await task_row(database, task_id)
        assert row["deleted_at"] is not None  # still stored, only hidden
        assert row["tags"] == ["home"]

        listed = await alice.ok("list_tasks")
        assert [task["id"] for task in listed["tasks"]] == [keep]
        assert listed["total"] == 1
        for tool in ("get_task", "complete_task", "delete_task"):
            assert (await alice.fail(tool, task_id=task_id)).endswith(f"Task {task_id} not found")
        assert (await task_row(database, task_id))["completed"] is False

        restored = await alice.ok("restore_task", task_id=task_id)
        assert restored == {"task_id": task_id, "status": "restored", "title": "Old chore"}
        assert (await task_row(database, task_id))["deleted_at"] is None
        listed = await alice.ok("list_tasks")
        assert {task["id"] for task in listed["tasks"]} == {task_id, keep}

        before = await task_rows(database)
        again = await alice.ok("restore_task", task_id=task_id)  # restoring a live task: no-op
        assert again["status"] == "restored"
        assert await task_rows(database) == before
