"""Which model the settings choose, and whole turns through an OpenAI-compatible server.

The compatible server is a tiny fake `/v1/chat/completions` on loopback: it answers a user
message with an `add_task` tool call and a tool result with plain text, streamed or not.
The turns run through the real API, the real MCP server and the test database.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from agents import (
    Agent,
    MessageOutputItem,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    ToolCallItem,
    function_tool,
)
from agents.models import get_default_model
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.tracing import get_trace_provider
from chatkit.types import (
    ThreadAddUserMessageParams,
    ThreadCreatedEvent,
    ThreadCreateParams,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadStreamEvent,
)
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlmodel import col
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from backend.agent.local_model import LocalModel
from backend.agent.runtime import LOCAL_MODEL_NAME, UniqueIdChatModel, select_model
from backend.config import Settings
from backend.db import Database
from backend.models import AgentRun, Message, Task
from tests.chat import conftest as chat_fixtures
from tests.chat.conftest import AppFactory, free_port
from tests.chat.test_chatkit import user_input
from tests.chat.test_streaming_and_concurrency import parse_sse
from tests.conftest import auth

# The real MCP server and the API client factory, shared with tests/chat.
chat_client = chat_fixtures.chat_client
mcp_url = chat_fixtures.mcp_url

FAKE_MODEL = "fake-model"
AGENT_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENT_MODEL", "AGENT_TRACING")


class ChatKitChunk(BaseModel):
    """One `data:` line of a ChatKit stream."""

    event: ThreadStreamEvent


@pytest.fixture(autouse=True)
def clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment too; a developer's OpenAI variables must not leak in."""
    for name in AGENT_ENV:
        monkeypatch.delenv(name, raising=False)


def settings_with(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, app_env="test", data_dir=tmp_path, **values)


# --- select_model ------------------------------------------------------------------------------


async def test_nothing_configured_selects_the_offline_local_model(tmp_path: Path) -> None:
    model, name = select_model(settings_with(tmp_path))
    assert isinstance(model, LocalModel)
    assert name == LOCAL_MODEL_NAME == "local"


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"openai_api_key": "sk-test"}, id="with-an-openai-key"),
        pytest.param({"openai_base_url": "http://127.0.0.1:9/v1"}, id="with-a-base-url"),
        pytest.param(
            {"openai_api_key": "sk-test", "openai_base_url": "http://127.0.0.1:9/v1"},
            id="with-both",
        ),
    ],
)
async def test_agent_model_local_wins_over_any_openai_setting(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    model, name = select_model(settings_with(tmp_path, agent_model="local", **values))
    assert isinstance(model, LocalModel)
    assert name == "local"


async def test_an_openai_key_selects_the_responses_model_with_the_sdk_default_name(
    tmp_path: Path,
) -> None:
    model, name = select_model(settings_with(tmp_path, openai_api_key="sk-test"))
    assert isinstance(model, OpenAIResponsesModel)
    assert not isinstance(model, UniqueIdChatModel)
    assert name == get_default_model()
    assert model.model == name
    assert model._client.api_key == "sk-test"


async def test_an_openai_key_with_agent_model_uses_that_name(tmp_path: Path) -> None:
    model, name = select_model(
        settings_with(tmp_path, openai_api_key="sk-test", agent_model="gpt-4.1-mini")
    )
    assert isinstance(model, OpenAIResponsesModel)
    assert (name, model.model) == ("gpt-4.1-mini", "gpt-4.1-mini")


async def test_a_base_url_without_agent_model_is_a_configuration_error(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, openai_base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="AGENT_MODEL"):
        select_model(settings)


@pytest.mark.parametrize(
    ("key", "sent_key"),
    [
        pytest.param(None, "not-needed", id="without-a-key"),
        pytest.param("sk-local", "sk-local", id="with-a-key"),
    ],
)
async def test_a_base_url_with_agent_model_selects_the_unique_id_chat_model(
    tmp_path: Path, key: str | None, sent_key: str
) -> None:
    settings = settings_with(
        tmp_path,
        openai_base_url="http://127.0.0.1:9/v1",
        agent_model=FAKE_MODEL,
        openai_api_key=key,
    )
    model, name = select_model(settings)
    assert isinstance(model, UniqueIdChatModel)
    assert name == FAKE_MODEL
    assert model.model == FAKE_MODEL
    assert str(model._client.base_url).rstrip("/") == "http://127.0.0.1:9/v1"
    assert model._client.api_key == sent_key


# --- a fake OpenAI-compatible server -----------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


@dataclass
class FakeChatServer:
    """`/v1/chat/completions`: a user message gets an add_task call, a tool result gets text."""

    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        messages: list[dict[str, Any]] = body["messages"]
        last = messages[-1]
        if last["role"] == "tool":
            asked = next(m for m in reversed(messages) if m["role"] == "assistant")
            title = json.loads(asked["tool_calls"][0]["function"]["arguments"])["title"]
            return {"role": "assistant", "content": f"Added task '{title}'."}, "stop"
        text = _text_of(last.get("content")).strip()
        if not text.lower().startswith("add "):
            return {"role": "assistant", "content": "Nothing to add."}, "stop"
        call = {
            "id": f"call_{uuid.uuid4().hex}",
            "type": "function",
            "function": {
                "name": "add_task",
                "arguments": json.dumps({"title": text[4:].strip()}),
            },
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        broken = _text_of(body["messages"][-1].get("content")).strip()
        if broken == "answer with html":
            return Response("<html>502 from a proxy</html>", media_type="text/html")
        if broken == "answer with no choices":
            base = {"id": "chatcmpl-x", "object": "chat.completion", "model": body["model"]}
            return JSONResponse({**base, "created": int(time.time()), "choices": []})
        message, finish = self.answer(body)
        usage = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
        base["model"] = body["model"]
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish}
            payload = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return JSONResponse(payload)
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._chunks(base, message, finish, usage if with_usage else None),
            media_type="text/event-stream",
        )

    async def _chunks(
        self,
        base: dict[str, Any],
        message: dict[str, Any],
        finish: str,
        usage: dict[str, int] | None,
    ) -> AsyncIterator[str]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            payload = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            return f"data: {json.dumps(payload)}\n\n"

        def delta(values: dict[str, Any]) -> str:
            return chunk([{"index": 0, "delta": values, "finish_reason": None}])

        if message.get("tool_calls"):
            tool = message["tool_calls"][0]
            head = {"name": tool["function"]["name"], "arguments": ""}
            start = {"index": 0, "id": tool["id"], "type": "function", "function": head}
            yield delta({"role": "assistant", "tool_calls": [start]})
            arguments = tool["function"]["arguments"]
            for piece in (arguments[:5], arguments[5:]):
                yield delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        else:
            text = message["content"]
            yield delta({"role": "assistant", "content": ""})
            for piece in (text[:6], text[6:]):
                yield delta({"content": piece})
        yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        if usage is not None:
            yield chunk([], usage=usage)
        yield "data: [DONE]\n\n"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeChatServer]:
    fake = FakeChatServer()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake chat completions server did not start")
        time.sleep(0.02)
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    yield fake
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def fake_openai(fake_server: FakeChatServer) -> FakeChatServer:
    fake_server.requests.clear()
    return fake_server


def compatible_settings(fake: FakeChatServer) -> dict[str, Any]:
    return {"openai_base_url": fake.base_url, "agent_model": FAKE_MODEL, "openai_api_key": "test"}


# --- the selected model, with and without streaming --------------------------------------------


@function_tool
def add_task(title: str) -> str:
    """Create a task."""
    return json.dumps({"task_id": 7, "title": title, "status": "created"})


async def test_the_compatible_model_gives_every_item_its_own_id_streamed_or_not(
    fake_openai: FakeChatServer, tmp_path: Path
) -> None:
    model, _ = select_model(settings_with(tmp_path, **compatible_settings(fake_openai)))
    agent = Agent(name="t", instructions="sys", model=model, tools=[add_task])
    config = RunConfig(tracing_disabled=True)
    plain = await Runner.run(agent, "add Buy milk", run_config=config)
    streamed = Runner.run_streamed(agent, "add Eggs", run_config=config)
    async for _ in streamed.stream_events():
        pass
    assert plain.final_output == "Added task 'Buy milk'."
    assert streamed.final_output == "Added task 'Eggs'."
    assert [bool(r.get("stream")) for r in fake_openai.requests] == [False, False, True, True]
    assert {r["model"] for r in fake_openai.requests} == {FAKE_MODEL}
    ids = [
        getattr(item.raw_item, "id", None)
        for result in (plain, streamed)
        for item in result.new_items
        if isinstance(item, ToolCallItem | MessageOutputItem)
    ]
    assert len(ids) == 4
    assert FAKE_RESPONSES_ID not in ids
    assert len(set(ids)) == len(ids)


# --- whole turns through the API, the MCP server and the database ------------------------------


async def chatkit_stream(
    client: httpx.AsyncClient, user: str, request: BaseModel
) -> list[ThreadStreamEvent]:
    response = await client.post(
        "/chatkit", content=request.model_dump_json().encode(), headers=auth(user)
    )
    assert response.status_code == 200, response.text
    return [
        ChatKitChunk.model_validate({"event": json.loads(chunk.removeprefix("data: "))}).event
        for chunk in response.text.split("\n\n")
        if chunk.startswith("data: ")
    ]


def chatkit_reply(events: list[ThreadStreamEvent]) -> str:
    done = [
        e
        for e in events
        if isinstance(e, ThreadItemDoneEvent) and e.item.type == "assistant_message"
    ]
    assert len(done) == 1, events
    return "".join(part.text for part in done[0].item.content)  # type: ignore[union-attr]


async def rows(database: Database, model: Any) -> list[Any]:
    async with database.session_scope() as session:
        return list((await session.scalars(select(model).order_by(col(model.id)))).all())


async def stored_titles(database: Database, user_id: str) -> list[str]:
    async with database.session_scope() as session:
        query = select(col(Task.title)).where(col(Task.user_id) == user_id).order_by(col(Task.id))
        return list((await session.scalars(query)).all())


def roles(request: dict[str, Any]) -> list[str]:
    return [m["role"] for m in request["messages"]]


async def assert_stored_ids_are_unique(database: Database) -> None:
    messages = await rows(database, Message)
    item_ids = [m.item_id for m in messages]
    assert FAKE_RESPONSES_ID not in item_ids
    assert len(set(item_ids)) == len(item_ids)
    call_ids = [c["call_id"] for m in messages for c in m.tool_calls or []]
    assert FAKE_RESPONSES_ID not in call_ids
    assert len(set(call_ids)) == len(call_ids)
    runs = await rows(database, AgentRun)
    assert {(r.model, r.status) for r in runs} == {(FAKE_MODEL, "succeeded")}


async def test_chat_turns_json_then_sse_through_a_compatible_server(
    chat_client: AppFactory, database: Database, fake_openai: FakeChatServer
) -> None:
    async with chat_client(None, **compatible_settings(fake_openai)) as client:
        ready = await client.get("/readyz")
        first = await client.post(
            "/api/alice/chat", json={"message": "add Buy milk"}, headers=auth("alice")
        )
        assert first.status_code == 200, first.text
        conversation_id = first.json()["conversation_id"]
        turn_one_requests = len(fake_openai.requests)
        second = await client.post(
            "/api/alice/chat",
            json={"message": "add Eggs", "conversation_id": conversation_id},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
        third = await client.post(
            "/api/alice/chat",
            json={"message": "thanks", "conversation_id": conversation_id},
            headers=auth("alice"),
        )
    assert ready.json()["model"] == FAKE_MODEL
    body = first.json()
    assert body["response"] == "Added task 'Buy milk'."
    [tool_call] = body["tool_calls"]
    assert (tool_call["name"], tool_call["arguments"]) == ("add_task", {"title": "Buy milk"})
    assert not tool_call["is_error"]

    assert second.status_code == 200
    events = parse_sse(second.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "conversation"
    assert kinds[-1] == "done", events
    assert "tool_call_started" in kinds
    assert "tool_call_finished" in kinds
    deltas = "".join(data["text"] for kind, data in events if kind == "delta")
    assert deltas == events[-1][1]["response"] == "Added task 'Eggs'."

    assert third.status_code == 200, third.text
    assert third.json()["response"] == "Nothing to add."
    assert await stored_titles(database, "alice") == ["Buy milk", "Eggs"]

    # Turn two's first request replays turn one, tool call and tool result included.
    replayed = fake_openai.requests[turn_one_requests]
    assert roles(replayed) == ["system", "user", "assistant", "tool", "assistant", "user"]
    history_call = replayed["messages"][2]["tool_calls"][0]
    assert replayed["messages"][3]["tool_call_id"] == history_call["id"]
    assert json.loads(history_call["function"]["arguments"]) == {"title": "Buy milk"}
    assert "Buy milk" in replayed["messages"][3]["content"]
    assert all(r["model"] == FAKE_MODEL and r.get("stream") for r in fake_openai.requests)
    assert len(fake_openai.requests) == 5  # two per tool turn, one for "thanks"
    await assert_stored_ids_are_unique(database)


async def test_chatkit_turns_through_a_compatible_server_have_unique_item_ids(
    chat_client: AppFactory, database: Database, fake_openai: FakeChatServer
) -> None:
    async with chat_client(None, **compatible_settings(fake_openai)) as client:
        created = await chatkit_stream(
            client,
            "alice",
            ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add Bread"))),
        )
        thread_id = next(e.thread.id for e in created if isinstance(e, ThreadCreatedEvent))
        followed = await chatkit_stream(
            client,
            "alice",
            ThreadsAddUserMessageReq(
                params=ThreadAddUserMessageParams(thread_id=thread_id, input=user_input("add Jam"))
            ),
        )
    assert chatkit_reply(created) == "Added task 'Bread'."
    assert chatkit_reply(followed) == "Added task 'Jam'."
    assert await stored_titles(database, "alice") == ["Bread", "Jam"]

    events = created + followed
    done_ids = [e.item.id for e in events if isinstance(e, ThreadItemDoneEvent)]
    added_ids = {e.item.id for e in events if isinstance(e, ThreadItemAddedEvent)}
    updated_ids = {e.item_id for e in events if isinstance(e, ThreadItemUpdatedEvent)}
    assert len(done_ids) == 4  # two user messages, two replies
    assert len(set(done_ids)) == len(done_ids)
    assert FAKE_RESPONSES_ID not in {*done_ids, *added_ids, *updated_ids}
    assert updated_ids <= added_ids
    assert [m.item_id for m in await rows(database, Message)] == done_ids
    await assert_stored_ids_are_unique(database)


async def test_chatkit_streams_a_compatible_server_reply_under_one_item_id(
    chat_client: AppFactory, database: Database, fake_openai: FakeChatServer
) -> None:
    async with chat_client(None, **compatible_settings(fake_openai)) as client:
        events = await chatkit_stream(
            client,
            "alice",
            ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add Bread"))),
        )
    replies = [
        e.item.id
        for e in events
        if isinstance(e, ThreadItemAddedEvent | ThreadItemDoneEvent)
        and e.item.type == "assistant_message"
    ]
    updated = {e.item_id for e in events if isinstance(e, ThreadItemUpdatedEvent)}
    # Chat Completions streams every item as __fake_id__; the reply must keep one id from
    # thread.item.added through its updates to thread.item.done.
    assert len(replies) == 2  # added, then done
    assert replies[0] == replies[1]
    assert updated == {replies[1]}


# --- the offline model stays offline -----------------------------------------------------------


@dataclass
class Destinations:
    connects: list[Any] = field(default_factory=list)
    lookups: list[Any] = field(default_factory=list)
    refused: list[Any] = field(default_factory=list)


@pytest.fixture
def destinations(monkeypatch: pytest.MonkeyPatch, database_url: str, mcp_url: str) -> Destinations:
    """Record every outbound connect and name lookup; refuse any beyond the test's servers."""
    seen = Destinations()
    database = make_url(database_url)
    allowed_ports = {urlsplit(mcp_url).port}
    if database.get_backend_name() == "postgresql":
        allowed_ports.add(database.port or 5432)
    allowed_hosts = {"127.0.0.1", "localhost", "::1", database.host}
    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex
    getaddrinfo = socket.getaddrinfo

    def check(address: Any) -> None:
        seen.connects.append(address)
        if not isinstance(address, tuple) or address[1] not in allowed_ports:
            seen.refused.append(address)
            raise OSError(f"the test refused an outbound connection to {address!r}")

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        check(address)
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        check(address)
        return connect_ex(sock, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.lookups.append(host)
        if host not in allowed_hosts:
            seen.refused.append(host)
            raise OSError(f"the test refused a name lookup of {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return seen


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="default-settings"),
        pytest.param({"agent_model": "local"}, id="local-named-with-an-openai-key-exported"),
    ],
)
async def test_the_local_model_connects_to_nothing_but_the_mcp_server_and_database(
    chat_client: AppFactory,
    database: Database,
    mcp_url: str,
    destinations: Destinations,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, Any],
) -> None:
    if overrides:
        # The SDK's trace exporter would pick this key up if tracing were on.
        monkeypatch.setenv("OPENAI_API_KEY", "sk-should-never-be-used")
    async with chat_client(None, **overrides) as client:
        ready = await client.get("/readyz")
        added = await client.post(
            "/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice")
        )
        assert added.status_code == 200, added.text
        listed = await client.post(
            "/api/alice/chat",
            json={"message": "what's pending?", "conversation_id": added.json()["conversation_id"]},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
    # Anything the SDK queued for export would leave now.
    await asyncio.to_thread(get_trace_provider().force_flush)
    assert ready.json()["model"] == "local"
    assert [c["name"] for c in added.json()["tool_calls"]] == ["add_task"]
    kind, done = parse_sse(listed.text)[-1]
    assert kind == "done", listed.text
    assert "Buy milk" in done["response"]
    assert await stored_titles(database, "alice") == ["Buy milk"]
    assert destinations.refused == []
    mcp_port = urlsplit(mcp_url).port
    assert mcp_port in {a[1] for a in destinations.connects if isinstance(a, tuple)}


@pytest.mark.parametrize("message", ["answer with html", "answer with no choices"])
async def test_a_compatible_server_answering_nonsense_is_a_model_error(
    chat_client: AppFactory, database: Database, fake_openai: FakeChatServer, message: str
) -> None:
    async with chat_client(None, **compatible_settings(fake_openai)) as client:
        response = await client.post(
            "/api/alice/chat", json={"message": message}, headers=auth("alice")
        )
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "model_error"
    [run] = await rows(database, AgentRun)
    assert (run.status, run.error_code) == ("failed", "model_error")
    assert run.model_calls == 1
    messages = await rows(database, Message)
    assert [m.role for m in messages] == ["user"]  # no empty "answer" stored
