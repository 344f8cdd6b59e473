"""End to end through a Dapr sidecar emulator, over real HTTP on loopback:

REST change -> outbox -> relay (DaprPublisher) -> sidecar publish API -> topic log ->
delivery to /events/task-activity -> inbox + history, once, in order, whatever the sidecar
repeats. The API serves in a thread (uvicorn); the relay runs in the test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from backend.db import Database
from backend.events.publishers import DaprPublisher, PublisherUnavailable
from backend.events.relay import Relay
from backend.main import create_app
from backend.models import OutboxEvent, TaskActivity
from tests.chat.conftest import free_port, serving_in_thread
from tests.conftest import auth, make_settings
from tests.events.dapr_emulator import DaprEmulator
from tests.events.test_subscriptions import UNREACHABLE_DATABASE

ALICE = "alice"
TOPIC = "task-events"
DAPR_API_TOKEN = "sidecar-api-token-0123456789abcdef"
APP_API_TOKEN = "app-api-token-0123456789abcdef-xyz"
CE_JSON = {"Content-Type": "application/cloudevents+json"}


@dataclass
class Stack:
    api: httpx.AsyncClient
    app: FastAPI
    sidecar: DaprEmulator
    relay: Relay
    database: Database

    async def drain(self) -> None:
        """Relay until the outbox has nothing left, then wait for the sidecar's deliveries."""
        while await self.relay.run_once():
            pass
        await self.sidecar.settled()

    async def history(self, task_id: int) -> list[tuple[int, str]]:
        response = await self.api.get(
            f"/api/{ALICE}/tasks/{task_id}/history", params={"limit": 100}, headers=auth(ALICE)
        )
        assert response.status_code == 200, response.text
        return [(item["version"], item["action"]) for item in reversed(response.json()["items"])]


@pytest.fixture
async def stack(tmp_path: Path, database_url: str, database: Database) -> AsyncIterator[Stack]:
    sidecar_port, app_port = free_port(), free_port()
    settings = make_settings(
        tmp_path,
        database_url,
        events_publisher="dapr",
        events_local_consumers=False,  # only the sidecar feeds the history here
        dapr_http_port=sidecar_port,
        dapr_api_token=DAPR_API_TOKEN,
        dapr_app_api_token=APP_API_TOKEN,
    )
    app = create_app(settings)
    app_url = f"http://127.0.0.1:{app_port}"
    sidecar = DaprEmulator(
        app_url,
        port=sidecar_port,
        api_token=DAPR_API_TOKEN,
        app_token=APP_API_TOKEN,
        max_attempts=100,
    )
    publisher = DaprPublisher(settings)
    relay = Relay(database, publisher, settings)
    with serving_in_thread(app, app_port), sidecar.running():
        async with httpx.AsyncClient(base_url=app_url, timeout=10) as api:
            try:
                yield Stack(api, app, sidecar, relay, database)
            finally:
                await publisher.aclose()


async def change_tasks(api: httpx.AsyncClient) -> list[int]:
    """Two tasks with a few changes each, interleaved."""
    base = f"/api/{ALICE}/tasks"
    ids = []
    for title in ("Pay rent", "Call mum"):
        created = await api.post(base, json={"title": title}, headers=auth(ALICE))
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    first, second = ids
    for method, path, body in [
        ("PATCH", f"{base}/{first}", {"priority": "high"}),
        ("PATCH", f"{base}/{second}/complete", None),
        ("PATCH", f"{base}/{first}/complete", None),
        ("DELETE", f"{base}/{second}", None),
        ("POST", f"{base}/{second}/restore", None),
    ]:
        response = await api.request(method, path, json=body, headers=auth(ALICE))
        assert response.is_success, response.text
    return ids


async def outbox(database: Database) -> list[OutboxEvent]:
    async with database.session_scope() as session:
        return list(
            (await session.scalars(select(OutboxEvent).order_by(col(OutboxEvent.id)))).all()
        )


async def test_every_change_reaches_the_history_once_in_order_despite_duplicates(
    stack: Stack,
) -> None:
    stack.sidecar.duplicates = 1  # every event delivered twice
    first, second = await change_tasks(stack.api)
    await stack.drain()  # one bulk publish
    renamed = await stack.api.patch(
        f"/api/{ALICE}/tasks/{first}", json={"title": "Pay the rent"}, headers=auth(ALICE)
    )
    assert renamed.status_code == 200
    await stack.drain()  # one single publish
    stack.sidecar.replay()  # the consumer group rewinds: everything once more
    await stack.sidecar.settled()

    assert await stack.history(first) == [
        (1, "created"),
        (2, "updated"),
        (3, "completed"),
        (4, "updated"),
    ]
    assert await stack.history(second) == [
        (1, "created"),
        (2, "completed"),
        (3, "deleted"),
        (4, "restored"),
    ]
    rows = await outbox(stack.database)
    log = stack.sidecar.log(TOPIC)
    # Dapr keeps our CloudEvent (its id is what consumers deduplicate on) and adds its own.
    assert [event["id"] for event in log] == [row.event_id for row in rows]
    for row, event in zip(rows, log, strict=True):
        assert {key: event[key] for key in row.payload} == row.payload
        assert (event["pubsubname"], event["topic"]) == ("taskpubsub", TOPIC)
    keys = [message.partition_key for message in stack.sidecar.topics[TOPIC]]
    assert keys == [str(row.task_id) for row in rows]
    assert {outcome for _, outcome in stack.sidecar.outcomes} == {"success"}
    assert len(stack.sidecar.outcomes) == 3 * len(rows)  # twice, then the replay


async def test_a_poison_event_is_dropped_to_the_dead_letter_topic_once_not_retried(
    stack: Stack,
) -> None:
    await stack.api.post(f"/api/{ALICE}/tasks", json={"title": "x"}, headers=auth(ALICE))
    template = (await outbox(stack.database))[0].payload
    exploded = {**template, "id": "poison-1", "type": "com.todo-assistant.task.exploded"}
    publish = f"{stack.sidecar.url}/v1.0/publish/taskpubsub/{TOPIC}"
    headers = {"dapr-api-token": DAPR_API_TOKEN}
    async with httpx.AsyncClient() as http:
        first = await http.post(
            publish, content=json.dumps(exploded), headers={**headers, **CE_JSON}
        )
        # Not a CloudEvent: Dapr wraps it as com.dapr.event.sent, which no consumer knows.
        second = await http.post(publish, json={"hello": "world"}, headers=headers)
    assert (first.status_code, second.status_code) == (204, 204)
    await stack.sidecar.settled()

    outcomes = stack.sidecar.outcomes
    assert [outcome for _, outcome in outcomes] == ["drop", "drop"]
    assert all(stack.sidecar.attempts[event_id] == 1 for event_id, _ in outcomes)
    assert [e["id"] for e in stack.sidecar.log(f"{TOPIC}-dead")] == [i for i, _ in outcomes]
    async with stack.database.session_scope() as session:
        assert (await session.scalars(select(TaskActivity))).all() == []


async def test_a_database_outage_is_retried_by_the_sidecar_until_the_event_applies(
    stack: Stack,
) -> None:
    created = await stack.api.post(f"/api/{ALICE}/tasks", json={"title": "x"}, headers=auth(ALICE))
    task_id = created.json()["id"]
    event_id = (await outbox(stack.database))[0].event_id
    healthy = stack.app.state.database
    down = Database(UNREACHABLE_DATABASE)
    stack.app.state.database = down
    try:
        while await stack.relay.run_once():
            pass
        deadline = time.monotonic() + 5
        while stack.sidecar.attempts[event_id] < 3:
            assert time.monotonic() < deadline, "the sidecar did not retry"
            await asyncio.sleep(0.01)
    finally:
        stack.app.state.database = healthy
        await down.dispose()
    await stack.sidecar.settled()

    assert stack.sidecar.outcomes == [(event_id, "success")]
    assert await stack.history(task_id) == [(1, "created")]


async def test_the_relay_waits_out_a_sidecar_whose_broker_is_down(stack: Stack) -> None:
    created = await stack.api.post(f"/api/{ALICE}/tasks", json={"title": "x"}, headers=auth(ALICE))
    task_id = created.json()["id"]
    stack.sidecar.down = True
    with pytest.raises(PublisherUnavailable):
        await stack.relay.run_once()
    assert stack.sidecar.log(TOPIC) == []
    stack.sidecar.down = False
    await stack.drain()

    assert await stack.history(task_id) == [(1, "created")]
    assert [row.status for row in await outbox(stack.database)] == ["published"]


async def test_the_emulator_answers_like_the_sidecar(stack: Stack) -> None:
    base = stack.sidecar.url
    token = {"dapr-api-token": DAPR_API_TOKEN}
    async with httpx.AsyncClient(base_url=base) as http:
        unknown = await http.post("/v1.0/publish/nopubsub/t", json={}, headers=token)
        not_json = await http.post(f"/v1.0/publish/taskpubsub/{TOPIC}", content=b"{", headers=token)
        no_token = await http.post(f"/v1.0/publish/taskpubsub/{TOPIC}", json={})
        stack.sidecar.down = True
        bulk: Any = await http.post(
            f"/v1.0-alpha1/publish/bulk/taskpubsub/{TOPIC}",
            json=[{"entryId": "1", "event": {}, "contentType": "application/json"}],
            headers=token,
        )

    assert (unknown.status_code, unknown.json()["errorCode"]) == (404, "ERR_PUBSUB_NOT_FOUND")
    assert not_json.status_code == 400
    assert no_token.status_code == 401
    assert bulk.status_code == 500
    assert bulk.json()["failedEntries"][0]["entryId"] == "1"
    assert stack.sidecar.subscriptions[0].route == "/events/task-activity"
