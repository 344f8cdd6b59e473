"""The routes the Dapr sidecar calls: the subscription list and the delivery route, with the
answers Dapr acts on (SUCCESS, DROP, 404, 503) and the app API token."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.config import Settings
from backend.db import Database
from backend.events.consumers import TASK_ACTIVITY
from backend.main import create_app
from backend.models import TaskActivity
from tests.chat.conftest import TEST_MCP_SECRET
from tests.conftest import TEST_SECRET, make_settings
from tests.events.test_consumers import make_history

ROUTE = f"/events/{TASK_ACTIVITY}"
CE_JSON = {"Content-Type": "application/cloudevents+json"}
APP_TOKEN = "app-token-for-the-sidecar-0123456789abcdef"
# Nothing listens on port 1: connecting fails at once, as with a database that is down.
UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/down"


Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve(tmp_path: Path, database_url: str, database: Database) -> Serve:
    """`async with serve(app_env=..., dapr_app_api_token=...) as client:` -> the API."""

    @asynccontextmanager
    async def open_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(make_settings(tmp_path, database_url, **overrides))
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                http.app = app  # type: ignore[attr-defined]
                yield http

    return open_client


async def activity_count(database: Database) -> int:
    async with database.session_scope() as session:
        return int(await session.scalar(select(func.count()).select_from(TaskActivity)) or 0)


def post(client: httpx.AsyncClient, body: Any, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(ROUTE, content=content, headers={**CE_JSON, **headers})


async def test_the_subscription_list_is_the_shape_dapr_reads(client: httpx.AsyncClient) -> None:
    response = await client.get("/dapr/subscribe")

    assert response.status_code == 200
    assert response.json() == [
        {
            "pubsubname": "taskpubsub",
            "topic": "task-events",
            "route": "/events/task-activity",
            "deadLetterTopic": "task-events-dead",
            "metadata": {"rawPayload": "false"},
        }
    ]


async def test_the_subscription_list_follows_the_settings(serve: Serve) -> None:
    async with serve(events_topic="tasks.v2", dapr_pubsub_name="kafka-prod") as client:
        (subscription,) = (await client.get("/dapr/subscribe")).json()
    assert (subscription["pubsubname"], subscription["topic"]) == ("kafka-prod", "tasks.v2")
    assert subscription["deadLetterTopic"] == "tasks.v2-dead"


async def test_a_delivered_event_applies_once_and_every_delivery_answers_success(
    client: httpx.AsyncClient, database: Database
) -> None:
    event = (await make_history(database))[0]
    with_dapr_attributes = {**event, "pubsubname": "taskpubsub", "topic": "task-events"}

    answers = [
        await post(client, event),
        await post(client, event),
        await post(client, with_dapr_attributes),
        await client.post(ROUTE, json=event),  # application/json
    ]

    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "SUCCESS"})] * 4
    assert await activity_count(database) == 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{not json", CE_JSON),
        (b"\xff\xfe", CE_JSON),
        (b"[]", CE_JSON),
        (b'{"specversion": "1.0", "id": "x"}', CE_JSON),
        (b'{"a": 1}', {"Content-Type": "text/plain"}),
        (b"", CE_JSON),
    ],
    ids=["not-json", "not-utf8", "array", "no-type", "text-plain", "empty"],
)
async def test_an_event_that_can_never_be_processed_is_dropped_not_retried(
    client: httpx.AsyncClient,
    database: Database,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: dict[str, str],
) -> None:
    caplog.set_level(logging.WARNING, logger="backend.events.router")
    response = await client.post(ROUTE, content=body, headers=headers)

    assert (response.status_code, response.json()) == (200, {"status": "DROP"})
    assert any("dropped" in r.getMessage() for r in caplog.records)
    assert await activity_count(database) == 0


async def test_an_event_of_an_unknown_type_is_dropped(
    client: httpx.AsyncClient, database: Database
) -> None:
    event = (await make_history(database))[0]
    response = await post(client, {**event, "type": "com.todo-assistant.task.exploded"})
    assert response.json() == {"status": "DROP"}
    assert await activity_count(database) == 0


async def test_an_unknown_consumer_is_404_which_dapr_drops(client: httpx.AsyncClient) -> None:
    response = await client.post("/events/nobody", content=b"{}", headers=CE_JSON)
    assert response.status_code == 404
    assert response.json()["code"] == "consumer_not_found"


async def test_a_database_outage_is_503_which_dapr_retries_then_the_event_applies(
    client: httpx.AsyncClient, database: Database, app: FastAPI
) -> None:
    event = (await make_history(database))[0]
    healthy = app.state.database
    app.state.database = Database(UNREACHABLE_DATABASE)
    try:
        during = await post(client, event)
    finally:
        await app.state.database.dispose()
        app.state.database = healthy
    after = await post(client, event)

    assert during.status_code == 503
    assert during.json()["code"] == "database_unavailable"
    assert after.json() == {"status": "SUCCESS"}
    assert await activity_count(database) == 1


async def test_with_an_app_token_deliveries_must_carry_it(serve: Serve, database: Database) -> None:
    event = (await make_history(database))[0]
    async with serve(dapr_app_api_token=APP_TOKEN) as client:
        missing = await post(client, event)
        wrong = await post(client, event, **{"dapr-api-token": APP_TOKEN[:-1] + "x"})
        assert await activity_count(database) == 0
        right = await post(client, event, **{"dapr-api-token": APP_TOKEN})
        subscribe = await client.get("/dapr/subscribe")  # no secret in it; Dapr reads it first

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthorized"
        assert set(refused.json()) >= {"detail", "code", "request_id"}
    assert right.json() == {"status": "SUCCESS"}
    assert subscribe.status_code == 200
    assert await activity_count(database) == 1


async def test_without_an_app_token_only_a_sidecar_on_this_host_may_deliver(
    serve: Serve, database: Database
) -> None:
    event = (await make_history(database))[0]
    async with serve() as local:
        app = local.app  # type: ignore[attr-defined]
        remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=remote, base_url="http://test") as stranger:
            forged = await post(stranger, event)
        assert await activity_count(database) == 0
        from_sidecar = await post(local, event)

    assert forged.status_code == 401
    assert "DAPR_APP_API_TOKEN" in forged.json()["detail"]
    assert from_sidecar.json() == {"status": "SUCCESS"}
    assert await activity_count(database) == 1


async def test_in_production_deliveries_are_refused_until_an_app_token_is_configured(
    serve: Serve, database: Database
) -> None:
    event = (await make_history(database))[0]
    production: dict[str, Any] = {
        "app_env": "production",
        "auth_secret": TEST_SECRET,
        "mcp_token_secret": TEST_MCP_SECRET,
    }
    async with serve(**production) as client:
        unconfigured = await post(client, event, **{"dapr-api-token": "anything"})
    async with serve(**production, dapr_app_api_token=APP_TOKEN) as client:
        configured = await post(client, event, **{"dapr-api-token": APP_TOKEN})

    assert unconfigured.status_code == 401
    assert configured.json() == {"status": "SUCCESS"}


def test_production_with_dapr_will_not_start_without_the_app_token() -> None:
    production: dict[str, Any] = {
        "app_env": "production",
        "events_publisher": "dapr",
        "auth_jwks_url": "https://auth.example.com/api/auth/jwks",
        "auth_issuer": "https://auth.example.com",
        "auth_audience": "https://auth.example.com",
        "mcp_token_secret": TEST_MCP_SECRET,
    }
    with pytest.raises(ValueError, match="needs DAPR_APP_API_TOKEN"):
        Settings(_env_file=None, **production)
    assert Settings(_env_file=None, dapr_app_api_token="t" * 32, **production).events_publisher
