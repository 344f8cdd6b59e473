"""Generated /chatkit bodies from a signed-in user: never a 5xx, never a broken stream, and
every error in our shape.

The bodies are random JSON, raw bytes, deep nesting, and ChatKit-looking operations whose
params mix real ids with NUL, lone surrogates, huge and negative integers and wrong types.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, get_args

import httpx
import pytest
from chatkit.types import ChatKitReq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.chat.chatkit_store import ID_PATTERN
from tests.chat.conftest import AppFactory, echo_model
from tests.chat.test_chatkit_edges import Thread, start_thread
from tests.conftest import auth

OPERATIONS = {cls.model_fields["type"].default for cls in get_args(get_args(ChatKitReq)[0])}
PLACEHOLDERS = ["$thread", "$question", "$answer"]  # the real ids, filled in per request

surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "thr_\x00", "msg_\x00x", "é", "a\x00b", "\u202e", "💥"]),
    st.integers(60, 5000).map(lambda length: "t" * length),
    st.tuples(st.text(max_size=5), surrogates.filter(lambda s: len(s) < 4)).map("".join),
)
nasty_int = st.one_of(
    st.integers(),
    st.sampled_from([-5, -1, 0, 1, 100, 101, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.just(10**400),
)
scalars = st.one_of(
    st.none(), st.booleans(), nasty_int, st.floats(), nasty_text, st.sampled_from(PLACEHOLDERS)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def mostly(valid: st.SearchStrategy[Any], nasty: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """1 in 8 nasty, so that most requests get past parsing to the store and the turn.
    (one_of() would weigh the two alike, and merges repeated branches.)"""
    return st.integers(0, 7).flatmap(lambda pick: valid if pick else nasty)


plain = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
real_ids = st.sampled_from(PLACEHOLDERS)
ids = mostly(real_ids, st.from_regex(ID_PATTERN, fullmatch=True) | nasty_text)
limits = mostly(st.integers(1, 100), st.integers(-10, 120) | nasty_int | values)
texts = mostly(st.text(plain, min_size=1, max_size=20), nasty_text)
content_part = mostly(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": texts}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "input_tag"]) | values, "text": texts},
        optional={"id": ids, "data": values},
    ),
)
message = st.fixed_dictionaries(
    {
        "content": mostly(st.lists(content_part, min_size=1, max_size=3), values),
        "attachments": mostly(st.just([]), st.lists(ids, max_size=2) | values),
        "inference_options": mostly(st.just({}), values),
    },
    optional={"quoted_text": nasty_text},
)
page = {"limit": limits, "after": ids, "order": mostly(st.sampled_from(["asc", "desc"]), values)}
action = st.fixed_dictionaries({"type": texts, "payload": values})
PARAMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # required, optional
    "threads.create": ({"input": message}, {}),
    "threads.add_user_message": ({"thread_id": ids, "input": message}, {}),
    "threads.retry_after_item": ({"thread_id": ids, "item_id": ids}, {}),
    "threads.get_by_id": ({"thread_id": ids}, {}),
    "threads.list": ({}, page),
    "threads.update": ({"thread_id": ids, "title": texts}, {}),
    "threads.delete": ({"thread_id": ids}, {}),
    "items.list": ({"thread_id": ids}, page),
    "items.feedback": (
        {
            "thread_id": ids,
            "item_ids": mostly(st.lists(ids, min_size=1, max_size=3), values),
            "kind": mostly(st.sampled_from(["positive", "negative"]), values),
        },
        {},
    ),
    "threads.custom_action": ({"thread_id": ids, "action": action}, {"item_id": ids}),
    "threads.sync_custom_action": ({"thread_id": ids, "action": action}, {"item_id": ids}),
    "threads.add_client_tool_output": ({"thread_id": ids, "result": values}, {}),
    "threads.add_structured_input": ({"thread_id": ids, "item_id": ids, "input": values}, {}),
    "attachments.create": ({"name": texts, "size": nasty_int, "mime_type": texts}, {}),
    "attachments.delete": ({"attachment_id": ids}, {}),
    "input.transcribe": ({"audio_base64": texts, "mime_type": texts}, {}),
}
assert set(PARAMS) == OPERATIONS, "every operation of the protocol is fuzzed"
operations = st.one_of(
    [
        st.fixed_dictionaries(
            {
                "type": st.just(name),
                "params": mostly(st.fixed_dictionaries(required, optional=optional), values),
            },
            optional={"metadata": mostly(st.dictionaries(st.text(), scalars, max_size=2), values)},
        )
        for name, (required, optional) in sorted(PARAMS.items())
    ]
)
# A body: JSON (ASCII-escaped, or raw UTF-8 where surrogates make it undecodable), or not JSON.
json_bodies = st.tuples(operations, mostly(st.just(True), st.just(False)))
unknown = st.fixed_dictionaries({"type": nasty_text, "params": values}) | values
odd_bodies = st.one_of(
    st.tuples(unknown, st.booleans()),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.binary(max_size=64),
)
bodies = st.integers(0, 3).flatmap(lambda pick: json_bodies if pick else odd_bodies)


def filled(value: Any, thread: Thread) -> Any:
    real = {"$thread": thread.id, "$question": thread.question, "$answer": thread.answer}
    if isinstance(value, str):
        return real.get(value, value)
    if isinstance(value, list):
        return [filled(item, thread) for item in value]
    if isinstance(value, dict):
        return {key: filled(item, thread) for key, item in value.items()}
    return value


def encoded(body: Any, thread: Thread) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    document, ascii_only = body
    text = json.dumps(filled(document, thread), ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


def assert_well_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()
        assert isinstance(error["detail"], str), error
        assert isinstance(error["code"], str), error
        assert error["request_id"] == response.headers["x-request-id"]
        return
    if not response.headers["content-type"].startswith("text/event-stream"):
        response.json()
        return
    chunks = response.text.split("\n\n")
    assert chunks[-1] == "", response.text  # the stream ended, it was not cut off
    for chunk in chunks[:-1]:
        event = json.loads(chunk.removeprefix("data: "))
        # An unexpected exception becomes the SDK's `stream.error` or our "request failed".
        if event["type"] == "error":
            assert event["code"] == "custom", event
            assert event["message"] != "The request failed", event


@pytest.fixture
async def opened(chat_client: AppFactory) -> AsyncIterator[tuple[httpx.AsyncClient, Thread]]:
    """One app for all examples, with a real thread whose ids the bodies can name."""
    async with chat_client(echo_model(steps=1000)) as client:
        yield client, await start_thread(client)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
async def test_generated_bodies_never_get_a_server_error(
    opened: tuple[httpx.AsyncClient, Thread], body: Any
) -> None:
    client, thread = opened
    response = await client.post("/chatkit", content=encoded(body, thread), headers=auth("alice"))
    assert_well_answered(response)
