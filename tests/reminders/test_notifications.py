"""Notifications: the list, marking read, isolation between users, the SSE stream and MCP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import text

from backend.clock import Clock, utc_now
from backend.config import Settings
from backend.db import Database
from backend.main import create_app
from backend.reminders import notifications
from backend.reminders.router import _events
from tests.chat.conftest import free_port, serving_in_thread
from tests.conftest import auth, make_settings
from tests.mcp_server.conftest import Connector
from tests.reminders.conftest import ALICE, BOB, create, fire

MINUTE = timedelta(minutes=1)
WAIT_SECONDS = 20.0


async def fire_for(database: Database, user: str, *titles: str) -> list[int]:
    """Fire one reminder per title for `user`, in order; the notification ids."""
    ids: list[int] = []
    for title in titles:
        await create(database, user, title=title, remind_at=utc_now())
        [fired] = await fire(database)
        ids.append(fired.notification_id)
    return ids


# --- list and mark read -------------------------------------------------------------------


async def test_list_is_unread_first_then_newest_first(
    client: httpx.AsyncClient, database: Database, frozen: Clock
) -> None:
    first, second, third = await fire_for(database, ALICE, "one", "two", "three")
    path = f"/api/{ALICE}/notifications"

    page = (await client.get(path, headers=auth(ALICE))).json()
    assert [item["title"] for item in page["items"]] == ["three", "two", "one"]
    assert (page["total"], page["unread"]) == (3, 3)
    assert [item["seq"] for item in page["items"]] == [3, 2, 1]
    assert page["items"][0]["kind"] == "reminder"
    assert page["items"][0]["read"] is False

    one = await client.post(f"{path}/{third}/read", headers=auth(ALICE))
    assert one.status_code == 200
    assert (one.json()["id"], one.json()["read"]) == (third, True)
    page = (await client.get(path, headers=auth(ALICE))).json()
    assert [item["title"] for item in page["items"]] == ["two", "one", "three"]
    assert page["unread"] == 2
    unread = (await client.get(path, params={"unread": True}, headers=auth(ALICE))).json()
    assert [item["id"] for item in unread["items"]] == [second, first]

    marked = await client.post(f"{path}/read", json={"ids": [first, third]}, headers=auth(ALICE))
    assert marked.json() == {"marked": 1}  # the third was read already
    rest = await client.post(f"{path}/read", headers=auth(ALICE))
    assert rest.json() == {"marked": 1}
    page = (await client.get(path, headers=auth(ALICE))).json()
    assert page["unread"] == 0
    assert [item["title"] for item in page["items"]] == ["three", "two", "one"]

    missing = await client.post(f"{path}/{third + 1000}/read", headers=auth(ALICE))
    assert (missing.status_code, missing.json()["code"]) == (404, "notification_not_found")


async def test_mark_read_input_is_checked(client: httpx.AsyncClient) -> None:
    path = f"/api/{ALICE}/notifications/read"
    for body in ({"ids": [0]}, {"ids": ["x"]}, {"other": 1}, {"ids": list(range(1, 102))}):
        response = await client.post(path, json=body, headers=auth(ALICE))
        assert response.status_code == 422, body


# --- BOLA ---------------------------------------------------------------------------------

SECRET = "alice secret appointment"
NOTIFICATION_TABLES = ("notification", "task", "message")

# (method, path suffix after /notifications, JSON body or None)
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("GET", "?unread=true", None),
    ("POST", "/read", None),
    ("POST", "/read", {"ids": ["{id}"]}),
    ("POST", "/{id}/read", None),
    ("GET", "/stream", None),
    ("GET", "/stream?after=0", None),
]


async def dump(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    async with database.session_scope() as session:
        return {
            name: [
                tuple(row)
                for row in (await session.execute(text(f"SELECT * FROM {name} ORDER BY id"))).all()
            ]
            for name in NOTIFICATION_TABLES
        }


def _fill(value: Any, notification_id: int) -> Any:
    if isinstance(value, dict):
        return {key: _fill(item, notification_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, notification_id) for item in value]
    return notification_id if value == "{id}" else value


async def test_user_b_never_reaches_the_notifications_of_user_a(
    client: httpx.AsyncClient, database: Database, frozen: Clock
) -> None:
    [secret] = await fire_for(database, ALICE, SECRET)
    [own] = await fire_for(database, BOB, "bob's own")
    before = await dump(database)
    cells = leaks = 0

    for method, suffix, body in ROUTES:
        filled = suffix.replace("{id}", str(secret))
        on_a_path = await client.request(
            method,
            f"/api/{ALICE}/notifications{filled}",
            json=_fill(body, secret),
            headers=auth(BOB),
        )
        cells += 1
        if on_a_path.status_code != 403 or on_a_path.json().get("code") != "user_mismatch":
            leaks += 1
        if "stream" in suffix:
            continue  # B's own stream is B's: checked below
        on_own_path = await client.request(
            method,
            f"/api/{BOB}/notifications{filled}",
            json=_fill(body, secret),
            headers=auth(BOB),
        )
        cells += 1
        if SECRET in on_own_path.text or on_own_path.status_code not in (200, 404):
            leaks += 1
        if suffix == "/{id}/read" and on_own_path.json().get("code") != "notification_not_found":
            leaks += 1

    assert cells == 2 * len(ROUTES) - 2
    assert leaks == 0
    after = await dump(database)
    # Only B's own notification may have been marked read by B's calls.
    assert after["task"] == before["task"]
    assert after["message"] == before["message"]
    alice_rows = [row for row in after["notification"] if row[0] == secret]
    assert alice_rows == [row for row in before["notification"] if row[0] == secret]
    listed = (await client.get(f"/api/{BOB}/notifications", headers=auth(BOB))).json()
    assert [item["id"] for item in listed["items"]] == [own]


async def test_bob_stream_never_carries_alice_notifications(
    database: Database, fast_settings: Settings, frozen: Clock
) -> None:
    await fire_for(database, ALICE, SECRET)
    request = FakeRequest()
    stream = open_stream(database, fast_settings, BOB, 0, request)
    try:
        assert (await next_event(stream))["event"] == "ready"
        await fire_for(database, ALICE, f"{SECRET} 2")
        await fire_for(database, BOB, "bob's own")
        event = await next_event(stream)
        assert json.loads(event["data"])["title"] == "bob's own"
        assert event["id"] == "1"
    finally:
        request.disconnected = True
        await stream.aclose()


# --- SSE ----------------------------------------------------------------------------------


class FakeRequest:
    """What `_events` asks of a request: whether the client went away."""

    def __init__(self) -> None:
        self.disconnected = False

    async def is_disconnected(self) -> bool:
        return self.disconnected


def open_stream(
    database: Database, settings: Settings, user: str, seq: int, request: FakeRequest
) -> AsyncGenerator[dict[str, str]]:
    """The route's event generator, with a request whose disconnection the test controls."""
    stream = _events(database, settings, user, seq, request)  # type: ignore[arg-type]
    return cast(AsyncGenerator[dict[str, str]], stream)


async def next_event(stream: AsyncIterator[dict[str, str]]) -> dict[str, str]:
    return await asyncio.wait_for(anext(stream), timeout=WAIT_SECONDS)


async def test_the_stream_sends_what_fires_and_resumes_without_loss_or_repeat(
    database: Database, fast_settings: Settings, frozen: Clock
) -> None:
    await fire_for(database, ALICE, "one", "two")
    request = FakeRequest()
    stream = open_stream(database, fast_settings, ALICE, 0, request)
    try:
        assert await next_event(stream) == {"id": "0", "event": "ready", "data": '{"after": 0}'}
        first, second = await next_event(stream), await next_event(stream)
        assert [(first["event"], first["id"]), (second["event"], second["id"])] == [
            ("notification", "1"),
            ("notification", "2"),
        ]
        assert json.loads(first["data"])["title"] == "one"
        pending = asyncio.ensure_future(next_event(stream))
        await fire_for(database, ALICE, "three")
        notifications.notify_fired()
        third = await pending
        assert (third["id"], json.loads(third["data"])["title"]) == ("3", "three")
    finally:
        request.disconnected = True
        await stream.aclose()

    # Missed while disconnected, then a reconnect with the last id it got.
    await fire_for(database, ALICE, "four", "five")
    request = FakeRequest()
    resumed = open_stream(database, fast_settings, ALICE, 3, request)
    try:
        assert (await next_event(resumed))["data"] == '{"after": 3}'
        got = [await next_event(resumed), await next_event(resumed)]
        assert [event["id"] for event in got] == ["4", "5"]
        request.disconnected = True
        # A disconnected client ends the stream.
        with pytest.raises(StopAsyncIteration):
            await next_event(resumed)
    finally:
        await resumed.aclose()


async def test_invalid_last_event_id_is_422(client: httpx.AsyncClient) -> None:
    path = f"/api/{ALICE}/notifications/stream"
    token = auth(ALICE)["Authorization"].encode()
    # "²" and "¹²" are digits to str.isdigit() but not to int().
    for value in ("abc", "-1", "1.5", "99999999999", "\u00b2", "\u00b9\u00b2", ""):
        raw = [(b"authorization", token), (b"last-event-id", value.encode("latin-1"))]
        response = await client.get(path, headers=raw)
        assert response.status_code == 422, value
        # The header's pattern (up to 9 digits) is in the OpenAPI document.
        assert response.json()["code"] == "validation_error", value
    bad_after = await client.get(path, params={"after": -1}, headers=auth(ALICE))
    assert bad_after.status_code == 422


async def read_events(lines: AsyncIterator[str], count: int) -> list[dict[str, str]]:
    """The next `count` SSE events (comments and pings skipped)."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    while len(events) < count:
        line = await asyncio.wait_for(anext(lines), timeout=WAIT_SECONDS)
        if not line.strip():
            if "event" in current:
                events.append(current)
            current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        current[name] = value.removeprefix(" ")
    return events


async def test_the_stream_over_http_resumes_with_last_event_id(
    tmp_path: Path, database_url: str, database: Database, frozen: Clock
) -> None:
    settings = make_settings(tmp_path, database_url, notifications_poll_seconds=0.05)
    port = free_port()
    await fire_for(database, ALICE, "one")
    url = f"http://127.0.0.1:{port}/api/{ALICE}/notifications/stream"
    with serving_in_thread(create_app(settings), port):
        async with httpx.AsyncClient(timeout=WAIT_SECONDS) as http:
            async with http.stream("GET", url, headers=auth(ALICE)) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                [ready] = await read_events(lines, 1)
                assert (ready["event"], json.loads(ready["data"])) == ("ready", {"after": 1})
                await fire_for(database, ALICE, "two")
                [two] = await read_events(lines, 1)
                assert (two["event"], two["id"]) == ("notification", "2")

            await fire_for(database, ALICE, "three")
            headers = {**auth(ALICE), "Last-Event-ID": "1"}
            async with http.stream("GET", url, headers=headers) as response:
                lines = response.aiter_lines()
                events = await read_events(lines, 3)
                # `ready` carries the resume point: a reconnect before any notification
                # resumes from there too.
                assert [event.get("id") for event in events] == ["1", "2", "3"]
                assert [json.loads(event["data"]).get("title") for event in events[1:]] == [
                    "two",
                    "three",
                ]


# --- MCP ----------------------------------------------------------------------------------


async def test_mcp_list_notifications(
    connect: Connector, database: Database, frozen: Clock
) -> None:
    first, second = await fire_for(database, ALICE, "one", "two")
    await fire_for(database, BOB, "bob's own")
    await create(database, ALICE, title="later", remind_at=frozen.now() + MINUTE)
    async with database.session_scope(write=True) as session:
        await notifications.mark_read(session, ALICE, ids=[first])
    async with connect(ALICE) as alice:
        listed = await alice.ok("list_notifications")
        assert listed["unread"] == 1
        assert [item["id"] for item in listed["notifications"]] == [second, first]
        assert [item["read"] for item in listed["notifications"]] == [False, True]
        unread = await alice.ok("list_notifications", unread_only=True, limit=5)
        assert [item["title"] for item in unread["notifications"]] == ["two"]
    async with database.session_scope() as session:
        _page, _total, count = await notifications.list_notifications(
            session, ALICE, unread_only=True, limit=10, offset=0
        )
    assert count == 1  # listing reads, it does not mark read
