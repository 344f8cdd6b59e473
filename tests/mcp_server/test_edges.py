"""Bad input at the HTTP edge of /mcp: every case is a clear 4xx (or a tool error), never a 5xx.

Transport errors are JSON-RPC errors without an id, as the SDK answers a parse error; auth
errors keep the OAuth shape. Nothing is read from a request before its token is accepted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from backend.db import Database
from backend.tasks.schemas import MAX_TASK_ID
from tests.mcp_server.conftest import (
    MCP_PATH,
    RPC_HEADERS,
    Minter,
    asgi_client,
    rpc_call,
    task_row,
    task_rows,
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
DEEP_BRACKETS = "[" * 60_000  # under the 64 KiB limit, far deeper than any parser's stack
# Server-side log budget per rejected request: a short line or two, never a traceback.
LOG_BYTES_PER_REQUEST = 150


def _raw_call(name: str, arguments_json: str) -> str:
    """A tools/call body with the arguments spliced in as raw JSON text."""
    return (
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
        f'"params": {{"name": "{name}", "arguments": {arguments_json}}}}}'
    )


class CountingBody:
    """A streamed request body that records how many of its chunks the server pulled."""

    def __init__(self, data: bytes, chunk: int = 4096) -> None:
        self.chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def assert_rpc_error(response: httpx2.Response, status: int, code: int) -> str:
    """A JSON-RPC error object without an id (the request's id is unknown); its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] is None
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    assert "Traceback" not in message
    return message


def tool_result(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


@pytest.fixture
async def alice(mcp_app: Starlette, mint: Minter) -> AsyncIterator[httpx2.AsyncClient]:
    """Raw JSON-RPC POSTs with a valid token for alice (all scopes)."""
    async with asgi_client(mcp_app, mint("alice"), headers=RPC_HEADERS) as http:
        yield http


# --- nothing is read before the token is accepted ----------------------------------------------


ANONYMOUS_BODIES: dict[str, bytes] = {
    "60000-brackets": DEEP_BRACKETS.encode(),
    "1-MiB": b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": "' + b"x" * 2**20 + b'"}',
    "not-utf-8": b"\xff\xfe\xfd",
    "batch-of-writes": json.dumps([rpc_call("add_task", {"title": "anonymous"})] * 2).encode(),
}


async def test_an_anonymous_request_gets_401_before_a_byte_of_its_body_is_read(
    rpc: httpx2.AsyncClient, database: Database, subtests: pytest.Subtests
) -> None:
    for case, data in ANONYMOUS_BODIES.items():
        for headers in ({}, {"Authorization": "Bearer not.a.token"}):
            with subtests.test(case, token=bool(headers)):
                body = CountingBody(data)

                response = await rpc.post(MCP_PATH, content=body, headers=headers)

                assert response.status_code == 401, response.text
                assert response.json()["error"] == "invalid_token"
                assert body.pulled == 0
    assert await task_rows(database) == []


# --- bodies that do not parse ------------------------------------------------------------------


async def test_a_too_deep_body_is_a_parse_error_and_logs_no_traceback(
    alice: httpx2.AsyncClient, rpc: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    requests = 50
    for _ in range(requests):
        response = await alice.post(MCP_PATH, content=DEEP_BRACKETS)
        assert "recursion limit" in assert_rpc_error(response, 400, PARSE_ERROR)
        response = await alice.post(
            MCP_PATH, content=_raw_call("add_task", '{"title": ' + "[" * 5000 + "]" * 5000 + "}")
        )
        assert_rpc_error(response, 400, PARSE_ERROR)
        anonymous = await rpc.post(MCP_PATH, content=DEEP_BRACKETS)
        assert anonymous.status_code == 401

    server_side = [record for record in caplog.records if not record.name.startswith("httpx")]
    assert [record for record in server_side if record.exc_info] == []
    logged = sum(len(record.getMessage()) for record in server_side)
    assert logged <= 3 * requests * LOG_BYTES_PER_REQUEST, logged


UNDECODABLE: dict[str, str | bytes] = {
    "not-json": "hello",
    "empty": "",
    "truncated": '{"jsonrpc": "2.0", "id": 1, "method": "tools/l',
    "not-utf-8": b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}',
    "utf-16": json.dumps(rpc_call("list_tasks", {})).encode("utf-16"),
    "lone-surrogate-title": _raw_call("add_task", '{"title": "a\\ud800b"}'),
    "lone-low-surrogate-tag": _raw_call("add_task", '{"title": "t", "tags": ["\\udc00"]}'),
    "lone-surrogate-description": _raw_call("add_task", '{"title": "t", "description": "\\udfff"}'),
    "lone-surrogate-search": _raw_call("list_tasks", '{"search": "\\ud83d"}'),
    "lone-surrogate-name": _raw_call("\\ud800", "{}"),
    "5000-digit-task-id": _raw_call("get_task", '{"task_id": ' + "9" * 5000 + "}"),
}


async def test_an_undecodable_body_is_a_json_rpc_parse_error(
    alice: httpx2.AsyncClient, database: Database, subtests: pytest.Subtests
) -> None:
    for case, body in UNDECODABLE.items():
        with subtests.test(case):
            response = await alice.post(MCP_PATH, content=body)

            assert assert_rpc_error(response, 400, PARSE_ERROR).startswith("Parse error: ")
    assert await task_rows(database) == []


async def test_a_valid_surrogate_pair_is_stored_as_the_character_it_encodes(
    alice: httpx2.AsyncClient, database: Database
) -> None:
    pair = _raw_call("add_task", '{"title": "\\ud83d\\ude00"}')

    response = await alice.post(MCP_PATH, content=pair)

    assert tool_result(response)["isError"] is False
    assert [row["title"] for row in await task_rows(database)] == ["\N{GRINNING FACE}"]


# --- size, media type, Accept, batches ---------------------------------------------------------


async def test_a_body_over_the_limit_gets_413_as_a_json_rpc_error_whether_sized_or_streamed(
    alice: httpx2.AsyncClient, database: Database, subtests: pytest.Subtests
) -> None:
    data = json.dumps(rpc_call("add_task", {"title": "big", "description": "d" * 70_000})).encode()
    for case, content in (("sized", data), ("streamed", CountingBody(data))):
        with subtests.test(case):
            response = await alice.post(MCP_PATH, content=content)

            assert "65536 bytes" in assert_rpc_error(response, 413, INVALID_REQUEST)
    assert await task_rows(database) == []


NOT_JSON = ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", "")


async def test_a_body_that_is_not_declared_json_gets_415(
    alice: httpx2.AsyncClient, database: Database, subtests: pytest.Subtests
) -> None:
    body = json.dumps(rpc_call("add_task", {"title": "typed"}))
    for content_type in NOT_JSON:
        with subtests.test(content_type):
            response = await alice.post(
                MCP_PATH, content=body, headers={"Content-Type": content_type}
            )

            assert "Content-Type" in assert_rpc_error(response, 415, INVALID_REQUEST)
    assert await task_rows(database) == []
    response = await alice.post(
        MCP_PATH, content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert tool_result(response)["isError"] is False


async def test_a_client_that_does_not_accept_json_gets_406(
    alice: httpx2.AsyncClient, database: Database
) -> None:
    response = await alice.post(
        MCP_PATH, json=rpc_call("add_task", {"title": "x"}), headers={"Accept": "text/html"}
    )

    assert "Not Acceptable" in assert_rpc_error(response, 406, INVALID_REQUEST)
    assert await task_rows(database) == []


async def test_a_batch_gets_400_and_runs_nothing(
    alice: httpx2.AsyncClient,
    mcp_app: Starlette,
    mint: Minter,
    database: Database,
    subtests: pytest.Subtests,
) -> None:
    batches = {
        "two-writes": [rpc_call("add_task", {"title": "1"}), rpc_call("add_task", {"title": "2"})],
        "one-read": [rpc_call("list_tasks", {})],
        "empty": [],
    }
    async with asgi_client(mcp_app, mint("alice", ("tasks:read",)), headers=RPC_HEADERS) as reader:
        for client_name, client in (("read-write", alice), ("read-only", reader)):
            for case, batch in batches.items():
                with subtests.test(case, token=client_name):
                    response = await client.post(MCP_PATH, json=batch)

                    assert "batch" in assert_rpc_error(response, 400, INVALID_REQUEST)
    assert await task_rows(database) == []


# --- tool arguments: NUL characters and integers out of range ----------------------------------


NUL = "nul\x00here"
NUL_ARGUMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "add-title": ("add_task", {"title": NUL}),
    "add-description": ("add_task", {"title": "t", "description": NUL}),
    "add-tag": ("add_task", {"title": "t", "tags": [NUL]}),
    "add-recurrence": ("add_task", {"title": "t", "recurrence": NUL}),
    "add-due": ("add_task", {"title": "t", "due_at": "2026-12-01T17:00:00\x00Z"}),
    "add-priority": ("add_task", {"title": "t", "priority": "high\x00"}),
    "list-search": ("list_tasks", {"search": NUL}),
    "list-tag": ("list_tasks", {"tags": [NUL]}),
    "list-status": ("list_tasks", {"status": "all\x00"}),
    "update-title": ("update_task", {"title": NUL}),
    "update-description": ("update_task", {"description": NUL}),
    "update-tag": ("update_task", {"tags": [NUL]}),
    "update-recurrence": ("update_task", {"recurrence": NUL}),
    "unknown-argument": ("add_task", {"title": "t", "ti\x00tle": "x"}),
}


async def test_nul_characters_in_tool_arguments_are_tool_errors_and_change_nothing(
    alice: httpx2.AsyncClient, database: Database, subtests: pytest.Subtests
) -> None:
    created = await alice.post(MCP_PATH, json=rpc_call("add_task", {"title": "Keep me"}))
    task_id = tool_result(created)["structuredContent"]["task_id"]
    before = await task_rows(database)
    for case, (tool, arguments) in NUL_ARGUMENTS.items():
        if tool == "update_task":
            arguments = {"task_id": task_id, **arguments}
        with subtests.test(case):
            result = tool_result(await alice.post(MCP_PATH, json=rpc_call(tool, arguments)))

            assert result["isError"] is True
            text = result["content"][0]["text"]
            assert text.startswith(f"Error executing tool {tool}: "), text
            assert "Traceback" not in text
    with subtests.test("tool-name"):
        result = tool_result(await alice.post(MCP_PATH, json=rpc_call("add\x00task", {})))
        assert result["isError"] is True
        assert result["content"][0]["text"].startswith("Unknown tool")
    assert await task_rows(database) == before


OUT_OF_RANGE: dict[str, tuple[str, dict[str, Any]]] = {
    "task-id-0": ("get_task", {"task_id": 0}),
    "task-id-negative": ("complete_task", {"task_id": -1}),
    "task-id-int32-overflow": ("get_task", {"task_id": MAX_TASK_ID + 1}),
    "task-id-int64-overflow": ("delete_task", {"task_id": 2**63}),
    "task-id-10e30": ("restore_task", {"task_id": 10**30}),
    "task-id-minus-2e70": ("reopen_task", {"task_id": -(2**70)}),
    "task-id-float-max": ("get_task", {"task_id": 1e308}),
    "task-id-fraction": ("get_task", {"task_id": 1.5}),
    "update-task-id-huge": ("update_task", {"task_id": 2**64, "title": "x"}),
    "limit-2e64": ("list_tasks", {"limit": 2**64}),
    "offset-2e63": ("list_tasks", {"offset": 2**63}),
    "offset-negative": ("list_tasks", {"offset": -(2**63) - 1}),
}


async def test_integers_out_of_range_are_validation_errors_before_the_database(
    alice: httpx2.AsyncClient, database: Database, subtests: pytest.Subtests
) -> None:
    for case, (tool, arguments) in OUT_OF_RANGE.items():
        with subtests.test(case):
            result = tool_result(await alice.post(MCP_PATH, json=rpc_call(tool, arguments)))

            assert result["isError"] is True
            text = result["content"][0]["text"]
            assert "validation error" in text, text
            assert "Traceback" not in text
    # The largest id the schema allows reaches the database (a 32-bit column) and is just absent.
    result = tool_result(
        await alice.post(MCP_PATH, json=rpc_call("get_task", {"task_id": MAX_TASK_ID}))
    )
    assert result["isError"] is True
    assert result["content"][0]["text"].endswith(f"Task {MAX_TASK_ID} not found")
    assert await task_rows(database) == []


async def test_a_read_only_token_still_gets_403_for_a_write_tool_after_the_reordering(
    mcp_app: Starlette, mint: Minter, database: Database
) -> None:
    async with asgi_client(mcp_app, mint("alice"), headers=RPC_HEADERS) as writer:
        created = await writer.post(MCP_PATH, json=rpc_call("add_task", {"title": "Mine"}))
    task_id = tool_result(created)["structuredContent"]["task_id"]
    async with asgi_client(mcp_app, mint("alice", ("tasks:read",)), headers=RPC_HEADERS) as reader:
        refused = await reader.post(MCP_PATH, json=rpc_call("delete_task", {"task_id": task_id}))
        allowed = await reader.post(MCP_PATH, json=rpc_call("get_task", {"task_id": task_id}))

    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "insufficient_scope"
    assert tool_result(allowed)["structuredContent"]["title"] == "Mine"
    assert (await task_row(database, task_id))["deleted_at"] is None
