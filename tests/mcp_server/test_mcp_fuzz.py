"""Generated JSON-RPC bodies against /mcp with a valid token: no 5xx, and no tool crash.

Bodies mix random bytes, random JSON, deep nesting and tools/call messages whose names and
arguments carry NUL characters, lone surrogates (escaped or as raw bytes), huge integers,
odd floats and far-off dates with odd offsets. The run is derandomized, so CI sees the same
cases every time; a failure prints the body that caused it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from backend.tasks.schemas import MAX_TASK_ID
from mcp_server.server import TaskTools
from tests.mcp_server.conftest import MCP_PATH, RPC_HEADERS, TOOL_NAMES, Minter, asgi_client

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app and client serve every example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
INTERNAL_ERROR = -32603

# Text that favours what broke things before: NUL, lone surrogates, astral characters.
TRICKY = st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d\ude00", "\N{GRINNING FACE}", "é"])
TEXT = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(exclude_categories=()), max_size=30),  # surrogates included
    st.lists(st.one_of(TRICKY, st.text(max_size=3)), max_size=8).map("".join),
)
INTS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, MAX_TASK_ID, MAX_TASK_ID + 1, 2**63 - 1, 2**63, 2**64, 10**30]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=12,
)
OFFSETS = st.integers(min_value=-(24 * 60) + 1, max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _often(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` three times in four, so most calls get past validation to the database."""
    return st.integers(min_value=0, max_value=3).flatmap(lambda roll: odd if roll == 0 else usual)


TIMES = _often(
    st.datetimes(timezones=OFFSETS).map(datetime.isoformat),
    st.one_of(
        st.datetimes().map(datetime.isoformat),  # naive
        st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "now", ""]),
        TEXT,
    ),
)
TAGS = st.lists(_often(st.from_regex(r"#?[a-z0-9-]{1,12}", fullmatch=True), TEXT), max_size=12)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "task_id": _often(st.integers(min_value=1, max_value=30), INTS),
    "title": _often(st.text(min_size=1, max_size=40), TEXT),
    "description": _often(st.text(max_size=60), TEXT),
    "priority": st.sampled_from(["low", "medium", "high", "urgent"]),
    "tags": TAGS,
    "due_at": TIMES,
    "remind_at": TIMES,
    "recurrence": _often(st.sampled_from(["daily", "FREQ=WEEKLY;BYDAY=MO", "none"]), TEXT),
    "status": st.sampled_from(["all", "pending", "completed", "deleted"]),
    "search": _often(st.text(max_size=20), TEXT),
    "due_before": TIMES,
    "due_after": TIMES,
    "overdue": st.booleans(),
    "sort": st.sampled_from(
        ["created_at", "updated_at", "due_at", "remind_at", "priority", "title"]
    ),
    "order": st.sampled_from(["asc", "desc"]),
    "limit": _often(st.integers(min_value=1, max_value=100), INTS),
    "offset": _often(st.integers(min_value=0, max_value=50), INTS),
    "clear_due_at": st.booleans(),
    "remind_before_minutes": _often(st.integers(min_value=0, max_value=40320), INTS),
    "clear_reminder": st.booleans(),
    "time_zone": _often(st.sampled_from(["Europe/Paris", "UTC", "Mars/Olympus"]), TEXT),
    "has_reminder": st.booleans(),
    "scope": st.sampled_from(["occurrence", "series"]),
    "unread_only": st.booleans(),
    "minutes": _often(st.integers(min_value=1, max_value=40320), INTS),
    "until": TIMES,
}
# Each tool's own parameters, read from the tool functions so the fuzzer follows the schema.
PARAMETERS = {
    name: {
        parameter.name: parameter.default is inspect.Parameter.empty
        for parameter in inspect.signature(getattr(TaskTools, name)).parameters.values()
        if parameter.name != "self"
    }
    for name in sorted(TOOL_NAMES)
}


def _arguments(tool: str) -> st.SearchStrategy[dict[str, Any]]:
    """The tool's required arguments (usually plausible) and any of its optional ones."""
    own = {name: _often(PLAUSIBLE[name], JSON_VALUES) for name in PARAMETERS[tool]}
    required = {name: own.pop(name) for name, needed in PARAMETERS[tool].items() if needed}
    return st.fixed_dictionaries(required, optional=own)


def _call(name: str, arguments: Any, request_id: Any) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


KNOWN_TOOL_CALLS = st.sampled_from(sorted(TOOL_NAMES)).flatmap(
    lambda tool: st.builds(_call, st.just(tool), _arguments(tool), st.one_of(INTS, TEXT))
)
ODD_TOOL_CALLS = st.builds(
    _call,
    st.one_of(st.sampled_from(sorted(TOOL_NAMES)), TEXT),
    st.one_of(st.dictionaries(st.sampled_from(sorted(PLAUSIBLE)) | TEXT, JSON_VALUES), JSON_VALUES),
    st.one_of(INTS, TEXT, JSON_VALUES),
)
TOOL_CALLS = st.one_of(KNOWN_TOOL_CALLS, KNOWN_TOOL_CALLS, KNOWN_TOOL_CALLS, ODD_TOOL_CALLS)
METHODS = st.one_of(
    st.sampled_from(
        [
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "resources/list",
            "resources/read",
            "prompts/list",
            "prompts/get",
            "completion/complete",
            "logging/setLevel",
            "notifications/initialized",
            "notifications/cancelled",
        ]
    ),
    TEXT,
)
ENVELOPES = st.fixed_dictionaries(
    {"jsonrpc": st.one_of(st.just("2.0"), JSON_VALUES), "method": METHODS},
    optional={"id": st.one_of(INTS, TEXT, JSON_VALUES), "params": JSON_VALUES},
)


def _encode(document: Any, ascii_only: bool) -> bytes:
    """JSON text; without ascii_only a lone surrogate goes out as raw (invalid UTF-8) bytes."""
    return json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


JSON_DOCUMENTS = st.one_of(TOOL_CALLS, ENVELOPES, JSON_VALUES)
BODIES = st.one_of(
    st.builds(_encode, JSON_DOCUMENTS, st.booleans()),
    st.builds(_nested, st.integers(min_value=1, max_value=12_000), st.sampled_from(["[", '{"a":'])),
    st.binary(max_size=64),
)


@pytest.fixture
async def alice(mcp_app: Starlette, mint: Minter) -> AsyncIterator[httpx2.AsyncClient]:
    async with asgi_client(mcp_app, mint("alice"), headers=RPC_HEADERS) as http:
        yield http


def assert_no_server_error(response: httpx2.Response, body: bytes) -> Any:
    """Any 4xx or 2xx, with a JSON body (202 excepted) that is not an internal error."""
    sent = body[:300]
    event(f"HTTP {response.status_code}")  # the spread shows with --hypothesis-show-statistics
    assert response.status_code < 500, (response.status_code, response.text[:500], sent)
    if response.status_code == 202:
        return None
    assert response.headers["content-type"].startswith("application/json"), sent
    answer = response.json()
    assert "Traceback" not in response.text, sent
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        assert answer["error"].get("code") != INTERNAL_ERROR, (answer, sent)
    return answer


@FUZZ
@given(body=BODIES)
async def test_generated_bodies_never_get_a_server_error(
    alice: httpx2.AsyncClient, body: bytes
) -> None:
    response = await alice.post(MCP_PATH, content=body)

    assert_no_server_error(response, body)


@FUZZ
@given(call=TOOL_CALLS, ascii_only=st.booleans())
async def test_generated_tool_calls_are_answered_without_a_crash(
    alice: httpx2.AsyncClient, call: dict[str, Any], ascii_only: bool
) -> None:
    body = _encode(call, ascii_only)

    response = await alice.post(MCP_PATH, content=body)

    answer = assert_no_server_error(response, body)
    result = answer.get("result") if isinstance(answer, dict) else None
    if isinstance(result, dict):
        event("tool error" if result.get("isError") else "tool result")
    if isinstance(result, dict) and result.get("isError"):
        text = result["content"][0]["text"]
        # The SDK hides a crash behind this bare prefix; an anticipated error says more.
        name = call["params"]["name"]
        assert text.strip() != f"Error executing tool {name}", (text, body[:300])
