"""The console's API: who is an operator, what each caller sees, filters, charts, live runs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel
from asgi_lifespan import LifespanManager

from backend.chat import logs
from backend.clock import Clock
from backend.console.router import _run_events
from backend.db import Database
from backend.main import create_app
from backend.models import AgentRun
from tests.chat import conftest as chat_fixtures
from tests.chat.conftest import AppFactory, call, reply
from tests.chat.test_streaming_and_concurrency import parse_sse
from tests.conftest import auth, make_settings, user_token
from tests.console.support import ADD_MILK_CALL, seed_turn

# The real MCP server and the API client factory, shared with tests/chat.
chat_client = chat_fixtures.chat_client
mcp_url = chat_fixtures.mcp_url

NOW = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
OPERATOR = {"Authorization": f"Bearer {user_token('ops', role='admin')}"}


@pytest.fixture(autouse=True)
def frozen(clock: Clock) -> None:
    clock.freeze(NOW)


async def _console(path: str, client: httpx.AsyncClient, headers: dict[str, str]) -> Any:
    response = await client.get(f"/console/api{path}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("claims", "settings_overrides", "operator"),
    [
        ({"role": "admin"}, {}, True),
        ({"role": "user,admin"}, {}, True),  # Better Auth keeps several roles in one string
        ({"role": ["user", "admin"]}, {}, True),
        ({"role": "user"}, {}, False),
        ({"role": "administrator"}, {}, False),
        ({"role": {"admin": True}}, {}, False),
        ({}, {}, False),
        ({}, {"admin_users": ["someone-else", "ops"]}, True),
        (
            {"roles": "superuser"},
            {"auth_admin_claim": "roles", "auth_admin_roles": ["superuser"]},
            True,
        ),
        ({"role": "admin"}, {"auth_admin_claim": "roles"}, False),
    ],
)
async def test_operator_comes_from_the_role_claim_or_admin_users(
    tmp_path: Path,
    database_url: str,
    database: Database,
    claims: dict[str, Any],
    settings_overrides: dict[str, Any],
    operator: bool,
) -> None:
    app = create_app(make_settings(tmp_path, database_url, **settings_overrides))
    headers = {"Authorization": f"Bearer {user_token('ops', **claims)}"}
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        me = await _console("/me", client, headers)
        runs = await client.get("/console/api/runs?user=alice", headers=headers)

    assert me == {"user_id": "ops", "operator": operator}
    assert runs.status_code == (200 if operator else 403)


async def test_an_operator_claim_does_not_let_anyone_act_as_another_user_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/alice/tasks", headers=OPERATOR)

    assert response.status_code == 403
    assert response.json()["code"] == "user_mismatch"


async def test_the_runs_list_is_newest_first_and_pages_to_the_end(
    client: httpx.AsyncClient, database: Database
) -> None:
    seeded = [
        await seed_turn(database, "alice", f"message {n}", started_at=NOW - timedelta(minutes=n))
        for n in range(5)
    ]
    expected = sorted((turn.run_id for turn in seeded), reverse=True)

    seen: list[int] = []
    before = ""
    for _ in range(5):
        page = await _console(f"/runs?limit=2{before}", client, OPERATOR)
        seen += [item["id"] for item in page["items"]]
        if page["next_before"] is None:
            break
        before = f"&before={page['next_before']}"

    assert seen == expected
    first = (await _console("/runs?limit=1", client, OPERATOR))["items"][0]
    assert first["user_id"] == "alice"
    assert (first["id"], first["message"]) == (seeded[4].run_id, "message 4")  # newest id


async def test_a_run_shows_its_user_message_tool_calls_tokens_and_feedback(
    client: httpx.AsyncClient, database: Database
) -> None:
    turn = await seed_turn(
        database,
        "alice",
        "x" * 300,
        started_at=NOW,
        tool_calls=[ADD_MILK_CALL, ADD_MILK_CALL],
        feedback="negative",
        latency_ms=840,
    )

    [run] = (await _console("/runs", client, OPERATOR))["items"]

    assert run["id"] == turn.run_id
    assert run["message"] == "x" * 200
    assert run["tool_call_count"] == 2
    assert (run["input_tokens"], run["output_tokens"], run["model_calls"]) == (300, 40, 2)
    assert (run["feedback"], run["latency_ms"], run["channel"]) == ("negative", 840, "chat")


async def _ids(
    client: httpx.AsyncClient, query: str, headers: dict[str, str] = OPERATOR
) -> set[int]:
    page = await _console(f"/runs?{query}", client, headers)
    return {item["id"] for item in page["items"]}


async def test_filters_narrow_the_runs(client: httpx.AsyncClient, database: Database) -> None:
    ok = await seed_turn(database, "alice", "Add MILK please", started_at=NOW - timedelta(hours=3))
    failed = await seed_turn(
        database,
        "bob",
        "what's due",
        started_at=NOW - timedelta(hours=1),
        status="failed",
        error_code="model_timeout",
        error_message="The model took longer than 60 s",
        model="gpt-4o-mini",
    )
    chatkit = await seed_turn(
        database, "bob", "100% done?", started_at=NOW, channel="chatkit", reply="Yes, it is"
    )
    since = (NOW - timedelta(hours=2)).isoformat()

    assert await _ids(client, "status=failed") == {failed.run_id}
    assert await _ids(client, "user=bob") == {failed.run_id, chatkit.run_id}
    assert await _ids(client, "model=gpt-4o-mini") == {failed.run_id}
    assert await _ids(client, "channel=chatkit") == {chatkit.run_id}
    assert await _ids(client, f"since={since.replace('+', '%2B')}") == {
        failed.run_id,
        chatkit.run_id,
    }
    assert await _ids(client, f"until={since.replace('+', '%2B')}") == {ok.run_id}
    assert await _ids(client, "q=milk") == {ok.run_id}  # the message, any case
    assert await _ids(client, "q=YES, IT") == {chatkit.run_id}  # the reply
    assert await _ids(client, "q=longer than") == {failed.run_id}  # the error message
    assert await _ids(client, "q=100%25") == {chatkit.run_id}  # % is a character, not a wildcard
    assert await _ids(client, "q=%25") == {chatkit.run_id}
    assert await _ids(client, "q=_") == set()
    assert await _ids(client, "user=bob&status=succeeded") == {chatkit.run_id}


async def test_a_plain_user_sees_only_their_own_runs_and_users(
    client: httpx.AsyncClient, database: Database
) -> None:
    mine = await seed_turn(database, "alice", "mine", started_at=NOW)
    await seed_turn(database, "bob", "bob's", started_at=NOW)

    assert await _ids(client, "", auth("alice")) == {mine.run_id}
    assert await _ids(client, "user=alice", auth("alice")) == {mine.run_id}
    users = await _console("/users", client, auth("alice"))
    assert [user["user_id"] for user in users["items"]] == ["alice"]
    everyone = await _console("/users", client, OPERATOR)
    assert {user["user_id"] for user in everyone["items"]} == {"alice", "bob"}
    for path in ("/runs?user=bob", "/stats?user=bob", "/runs/stream?user=bob"):
        response = await client.get(f"/console/api{path}", headers=auth("alice"))
        assert response.status_code == 403, path
        assert response.json()["code"] == "operator_only"


async def test_the_transcript_shows_tool_calls_replaced_answers_and_the_run_error(
    client: httpx.AsyncClient, database: Database
) -> None:
    first = await seed_turn(
        database,
        "alice",
        "add milk",
        started_at=NOW - timedelta(minutes=2),
        reply="Added.",
        tool_calls=[ADD_MILK_CALL],
        replaced=True,
    )
    await seed_turn(
        database,
        "alice",
        "and bread",
        started_at=NOW,
        status="failed",
        error_code="tools_unavailable",
        error_message="The task tools did not answer",
        conversation_id=first.conversation_id,
        tool_calls=[{**ADD_MILK_CALL, "is_error": True, "result": "boom"}],
    )

    body = await _console(f"/conversations/{first.conversation_id}", client, OPERATOR)

    assert body["conversation"]["user_id"] == "alice"
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["deleted_at"] is not None
    assert messages[3]["deleted_at"] is None
    assert messages[1]["tool_calls"] == [ADD_MILK_CALL]
    assert messages[3]["tool_calls"][0]["is_error"] is True
    assert [run["status"] for run in body["runs"]] == ["succeeded", "failed"]
    assert [m["run_id"] for m in messages] == [body["runs"][0]["id"]] * 2 + [
        body["runs"][1]["id"]
    ] * 2
    assert body["runs"][1]["error_message"] == "The task tools did not answer"


async def test_exports_are_the_cli_exports(client: httpx.AsyncClient, database: Database) -> None:
    turn = await seed_turn(
        database, "alice", "add milk", started_at=NOW, tool_calls=[ADD_MILK_CALL]
    )
    async with database.session_scope() as session:
        transcript = await logs.load_transcript(session, turn.conversation_id)

    markdown = await client.get(
        f"/console/api/conversations/{turn.conversation_id}/export?format=md", headers=auth("alice")
    )
    jsonl = await client.get(
        f"/console/api/conversations/{turn.conversation_id}/export?format=jsonl", headers=OPERATOR
    )

    assert markdown.text == logs.export_markdown(transcript)
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "attachment" in markdown.headers["content-disposition"]
    assert jsonl.text == logs.export_jsonl(transcript)
    assert [json.loads(line)["type"] for line in jsonl.text.splitlines()][0] == "conversation"


async def test_another_users_conversation_is_not_found_for_a_plain_user(
    client: httpx.AsyncClient, database: Database
) -> None:
    turn = await seed_turn(database, "alice", "secret plan", started_at=NOW)
    missing = turn.conversation_id + 1000

    for path in (
        f"/conversations/{turn.conversation_id}",
        f"/conversations/{turn.conversation_id}/export",
    ):
        theirs = await client.get(f"/console/api{path}", headers=auth("bob"))
        absent = await client.get(
            f"/console/api{path.replace(str(turn.conversation_id), str(missing))}",
            headers=auth("bob"),
        )
        assert theirs.status_code == absent.status_code == 404
        assert theirs.json()["code"] == absent.json()["code"] == "conversation_not_found"
        assert "secret" not in theirs.text


async def test_stats_count_runs_per_hour_by_status_with_latency_percentiles(
    client: httpx.AsyncClient, database: Database
) -> None:
    hour = NOW.replace(minute=0) - timedelta(hours=2)
    for n, latency in enumerate([100, 200, 300, 400, 1000]):
        await seed_turn(
            database, "alice", f"m{n}", started_at=hour + timedelta(minutes=n), latency_ms=latency
        )
    await seed_turn(
        database,
        "bob",
        "x",
        started_at=hour + timedelta(minutes=30),
        status="failed",
        error_code="model_timeout",
        latency_ms=60000,
    )
    await seed_turn(
        database,
        "bob",
        "y",
        started_at=NOW - timedelta(minutes=1),
        status="failed",
        error_code="model_timeout",
    )
    await seed_turn(
        database,
        "bob",
        "z",
        started_at=NOW - timedelta(minutes=2),
        status="failed",
        error_code="tools_unavailable",
    )
    await seed_turn(database, "bob", "old", started_at=NOW - timedelta(days=3))

    stats = await _console("/stats", client, OPERATOR)

    assert stats["total"] == 8
    assert len(stats["buckets"]) in (24, 25)
    by_start = {bucket["start"]: bucket for bucket in stats["buckets"]}
    busy = by_start[hour.isoformat().replace("+00:00", "Z")]
    assert busy["counts"] == {"succeeded": 5, "failed": 1}
    assert (busy["p50_ms"], busy["p95_ms"]) == (300, 60000)
    assert stats["failures"] == [
        {"code": "model_timeout", "count": 2},
        {"code": "tools_unavailable", "count": 1},
    ]
    only_alice = await _console("/stats?user=alice", client, OPERATOR)
    assert only_alice["total"] == 5
    assert only_alice["failures"] == []
    mine = await _console("/stats", client, auth("alice"))
    assert mine["total"] == 5


async def test_stats_cover_at_most_31_days_and_an_empty_range_is_empty(
    client: httpx.AsyncClient,
) -> None:
    wide = await _console("/stats?since=2020-01-01T00:00:00Z", client, OPERATOR)
    backwards = await _console(
        "/stats?since=2031-03-10T00:00:00Z&until=2031-03-09T00:00:00Z", client, OPERATOR
    )

    assert len(wide["buckets"]) == 31 * 24  # NOW is on the hour
    assert backwards["total"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "status=crashed",
        "channel=fax",
        "limit=0",
        "limit=101",
        "before=-1",
        "q=" + "x" * 201,
        "since=yesterday",
        "since=1700000000",
        "user=" + "u" * 129,
        "q=a%00b",
        "model=x%00",
        "running=1,x",
        "running=" + ",".join(["1"] * 101),
    ],
)
async def test_bad_filters_get_a_validation_error(client: httpx.AsyncClient, query: str) -> None:
    path = "/runs/stream" if query.startswith("running=") else "/runs"
    response = await client.get(f"/console/api{path}?{query}", headers=OPERATOR)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_every_console_endpoint_needs_a_token(client: httpx.AsyncClient) -> None:
    paths = [
        "/me",
        "/runs",
        "/runs/stream",
        "/stats",
        "/users",
        "/conversations/1",
        "/conversations/1/export",
        "/users/alice/tasks",
        "/users/alice/notifications",
    ]
    for path in paths:
        response = await client.get(f"/console/api{path}")
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
    posted = await client.post("/console/api/users/alice/chat", json={"message": "hi"})
    assert posted.status_code == 401


async def test_console_responses_carry_a_strict_policy_and_are_never_framed(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/console", "/console/static/console.js", "/console/api/me", "/console/api/nope"):
        response = await client.get(path, headers=OPERATOR)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy, path
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    api = await client.get("/console/api/me", headers=OPERATOR)
    assert api.headers["cache-control"] == "no-store"
    docs = await client.get("/docs")
    assert "content-security-policy" not in docs.headers  # Swagger UI runs an inline script


async def test_the_page_has_no_inline_script_and_no_third_party_source(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/console")).text

    assert "<script>" not in page.replace(" ", "")
    assert "http://" not in page
    assert "https://" not in page
    assert "/console/static/console.js" in page


async def _first_events(
    stream: AsyncGenerator[dict[str, str], None], count: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        event = await asyncio.wait_for(anext(stream), timeout=10)
        assert event["event"] == "run"
        events.append(json.loads(event["data"]))
    return events


async def test_the_live_stream_sends_new_runs_and_the_finish_of_running_ones(
    database: Database,
) -> None:
    old = await seed_turn(database, "alice", "old", started_at=NOW - timedelta(minutes=5))
    running = await seed_turn(database, "alice", "in flight", started_at=NOW, status="running")
    await seed_turn(database, "bob", "not alice", started_at=NOW)
    stream = _run_events(database, logs.RunFilter(user_id="alice"), old.run_id, 0.05)
    try:
        [first] = await _first_events(stream, 1)
        assert (first["id"], first["status"]) == (running.run_id, "running")

        async with database.session_scope(write=True) as session:
            row = await session.get(AgentRun, running.run_id)
            assert row is not None
            row.status, row.latency_ms = "succeeded", 900
        new = await seed_turn(database, "alice", "a new turn", started_at=NOW)
        events = await _first_events(stream, 2)
    finally:
        await stream.aclose()

    assert [(e["id"], e["status"]) for e in events] == [
        (running.run_id, "succeeded"),
        (new.run_id, "succeeded"),
    ]


async def test_the_playground_runs_a_turn_as_the_chosen_user_for_an_operator(
    chat_client: AppFactory, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    model = ScriptedModel(
        [call("add_task", {"title": "Water the plants"}), reply("Added 'Water the plants'.")]
    )
    async with chat_client(model) as client:
        with caplog.at_level(logging.INFO, logger="backend.console.router"):
            response = await client.post(
                "/console/api/users/carol/chat",
                json={"message": "add water the plants"},
                headers={**OPERATOR, "Accept": "text/event-stream"},
            )
        tasks = await _console("/users/carol/tasks", client, OPERATOR)
        runs = await _console("/runs?user=carol", client, OPERATOR)

    kinds = [kind for kind, _ in parse_sse(response.text)]
    assert kinds[0] == "conversation"
    assert kinds[-1] == "done"
    assert {"tool_call_started", "tool_call_finished"} <= set(kinds)
    assert [task["title"] for task in tasks["items"]] == ["Water the plants"]
    assert [run["user_id"] for run in runs["items"]] == ["carol"]
    assert "operator ops chats as carol" in caplog.text


async def test_a_plain_user_cannot_use_another_users_playground_tasks_or_notifications(
    chat_client: AppFactory, database: Database
) -> None:
    model = ScriptedModel([reply("never")])
    async with chat_client(model) as client:
        chat = await client.post(
            "/console/api/users/carol/chat", json={"message": "add x"}, headers=auth("mallory")
        )
        tasks = await client.get("/console/api/users/carol/tasks", headers=auth("mallory"))
        notes = await client.get("/console/api/users/carol/notifications", headers=auth("mallory"))
        own = await client.post(
            "/console/api/users/mallory/chat",
            json={"message": "hello"},
            headers={**auth("mallory"), "Accept": "text/event-stream"},
        )

    assert chat.status_code == tasks.status_code == notes.status_code == 403
    assert chat.json()["code"] == "operator_only"
    assert [kind for kind, _ in parse_sse(own.text)][-1] == "done"
    assert len(model.calls) == 1  # mallory's own turn only


async def test_a_run_stuck_running_does_not_hold_back_newer_runs(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backend.console.service.WATCH_BATCH", 2)
    stuck = await seed_turn(database, "alice", "stuck", started_at=NOW, status="running")
    later = [await seed_turn(database, "alice", f"later {n}", started_at=NOW) for n in range(5)]
    stream = _run_events(database, logs.RunFilter(), 0, 0.05)
    try:
        events = await _first_events(stream, 6)
    finally:
        await stream.aclose()

    assert [event["id"] for event in events] == [stuck.run_id] + [t.run_id for t in later]


async def _finish(
    database: Database, run_id: int, status: str = "succeeded", **fields: Any
) -> None:
    async with database.session_scope(write=True) as session:
        row = await session.get(AgentRun, run_id)
        assert row is not None
        row.status, row.latency_ms = status, 700
        for name, value in fields.items():
            setattr(row, name, value)


async def test_a_run_running_on_the_first_page_sends_its_finish(database: Database) -> None:
    running = await seed_turn(database, "alice", "in flight", started_at=NOW, status="running")
    # The client's first page ends with the running run, which finishes before the client
    # opens the stream: it names the rows it shows as running.
    await _finish(database, running.run_id)
    stream = _run_events(
        database, logs.RunFilter(user_id="alice"), running.run_id, 0.05, None, [running.run_id]
    )
    try:
        [event] = await _first_events(stream, 1)
    finally:
        await stream.aclose()

    assert (event["id"], event["status"]) == (running.run_id, "succeeded")


@pytest.mark.parametrize(
    ("query", "finish"),
    [
        (logs.RunFilter(status="failed"), {"status": "failed", "error_code": "model_error"}),
        (logs.RunFilter(text="quota"), {"error_message": "over quota"}),
    ],
)
async def test_a_run_that_matches_only_once_finished_is_sent_when_it_finishes(
    database: Database, query: logs.RunFilter, finish: dict[str, Any]
) -> None:
    running = await seed_turn(database, "alice", "in flight", started_at=NOW, status="running")
    stream = _run_events(database, query, 0, 0.05)
    try:
        later = await seed_turn(
            database,
            "alice",
            "later",
            started_at=NOW,
            status="failed",
            error_code="model_error",
            error_message="quota",
        )
        [first] = await _first_events(stream, 1)
        await _finish(database, running.run_id, **finish)
        [second] = await _first_events(stream, 1)
    finally:
        await stream.aclose()

    assert [first["id"], second["id"]] == [later.run_id, running.run_id]


async def test_a_run_committed_after_a_newer_one_is_still_sent(database: Database) -> None:
    """On PostgreSQL an id is taken at INSERT and seen at COMMIT: a lower id can appear late."""
    early = await seed_turn(database, "alice", "committed late", started_at=NOW)
    newer = await seed_turn(database, "alice", "committed first", started_at=NOW)
    async with database.session_scope(write=True) as session:
        row = await session.get(AgentRun, early.run_id)
        assert row is not None
        kept = row.model_dump()
        await session.delete(row)
    stream = _run_events(database, logs.RunFilter(), 0, 0.05)
    try:
        [first] = await _first_events(stream, 1)
        async with database.session_scope(write=True) as session:
            session.add(AgentRun(**kept))
        [second] = await _first_events(stream, 1)
    finally:
        await stream.aclose()

    assert [first["id"], second["id"]] == [newer.run_id, early.run_id]


async def test_the_live_stream_ends_when_the_token_does(database: Database) -> None:
    deadline = asyncio.get_running_loop().time() + 0.3
    stream = _run_events(database, logs.RunFilter(), 0, 0.05, deadline)

    ended = [event async for event in stream]  # returns on its own once the deadline passes

    assert ended == []


async def test_a_plain_user_naming_another_users_running_run_learns_nothing(
    database: Database,
) -> None:
    theirs = await seed_turn(database, "bob", "bob's", started_at=NOW, status="running")
    await _finish(database, theirs.run_id)
    stream = _run_events(
        database, logs.RunFilter(user_id="alice"), theirs.run_id, 0.05, None, [theirs.run_id]
    )
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), timeout=0.5)
    finally:
        await stream.aclose()
