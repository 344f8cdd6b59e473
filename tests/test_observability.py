"""Prometheus metrics: /metrics on the API and the MCP server, and what moves them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from agents.testing import ScriptedModel
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from backend.clock import Clock
from backend.config import Settings
from backend.db import Database
from backend.events.publishers import NonePublisher
from backend.events.relay import Relay
from backend.main import create_app
from backend.observability import Metrics, bounded
from backend.reminders.scheduler import Scheduler
from backend.tasks import service
from backend.tasks.schemas import TaskCreate
from tests.chat import conftest as chat_fixtures
from tests.chat.conftest import AppFactory, call, reply
from tests.conftest import auth, make_settings

# The real MCP server and the API client factory, shared with tests/chat.
chat_client = chat_fixtures.chat_client
mcp_url = chat_fixtures.mcp_url

START = datetime(2031, 3, 27, 8, 0, tzinfo=UTC)
OUR_FAMILIES = {
    "todo_chat_turns",
    "todo_chat_turn_duration_seconds",
    "todo_chat_tool_calls",
    "todo_mcp_tool_calls",
    "todo_mcp_tool_call_duration_seconds",
    "todo_outbox_events_published",
    "todo_outbox_events_refused",
    "todo_outbox_events_dead",
    "todo_outbox_publish_lag_seconds",
    "todo_outbox_oldest_event_age_seconds",
    "todo_outbox_relay_waiting",
    "todo_reminders_fired",
    "todo_reminder_lag_seconds",
    "todo_reminder_last_batch_max_lag_seconds",
    "todo_http_requests",
    "todo_db_pool_size",
    "todo_db_pool_checked_out",
    "todo_db_pool_overflow",
}


def value(exposition: str, sample: str, **labels: str) -> float:
    """The sum of the samples named `sample` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == sample and labels.items() <= found.labels.items():
                total += found.value
    return total


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def test_metrics_answer_in_prometheus_text_format(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    text = await scrape(client)
    families = {family.name for family in text_string_to_metric_families(text)}
    assert families >= OUR_FAMILIES
    assert "process_resident_memory_bytes" in text
    # The pool the app opened, read at scrape time.
    if not settings.is_sqlite:
        assert value(text, "todo_db_pool_size") == settings.database_pool_size
    assert value(text, "todo_db_pool_checked_out") >= 0
    schema = (await client.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


async def test_http_requests_are_counted_by_route_template_without_user_data(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/api/alice/tasks", json={"title": "Secret plan"}, headers=auth("alice")
    )
    assert created.status_code == 201, created.text
    listed = await client.get("/api/alice/tasks", headers=auth("alice"))
    assert listed.status_code == 200
    assert (await client.get("/no/such/page/alice")).status_code == 404

    text = await scrape(client)
    route = "/api/{user_id}/tasks"
    assert value(text, "todo_http_requests_total", method="POST", route=route, status="201") == 1
    assert value(text, "todo_http_requests_total", method="GET", route=route, status="200") == 1
    assert value(text, "todo_http_requests_total", route="unmatched", status="404") == 1
    assert "alice" not in text
    assert "Secret plan" not in text


async def test_chat_turns_and_tool_calls_move_their_metrics(
    chat_client: AppFactory, mcp_url: str
) -> None:
    model = ScriptedModel(
        [
            call("add_task", {"title": "Buy milk"}),
            reply("Added 'Buy milk'."),
            RuntimeError("provider down"),
        ]
    )
    mcp_metrics = mcp_url.removesuffix("/mcp") + "/metrics"
    async with httpx.AsyncClient() as plain:
        before_mcp = (await plain.get(mcp_metrics)).text
    async with chat_client(model) as client:
        before = await scrape(client)
        ok = await client.post("/api/bob/chat", json={"message": "add milk"}, headers=auth("bob"))
        assert ok.status_code == 200, ok.text
        failed = await client.post(
            "/api/bob/chat", json={"message": "and bread"}, headers=auth("bob")
        )
        assert failed.status_code == 502
        after = await scrape(client)
    async with httpx.AsyncClient() as plain:
        after_mcp_response = await plain.get(mcp_metrics)
    assert after_mcp_response.status_code == 200

    def moved(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    turns = "todo_chat_turns_total"
    assert moved(turns, status="succeeded", channel="chat") == 1
    assert moved(turns, status="failed", channel="chat") == 1
    assert moved(turns) == 2
    assert moved("todo_chat_turn_duration_seconds_count") == 2
    assert moved("todo_chat_turn_duration_seconds_count", status="succeeded") == 1
    assert moved("todo_chat_tool_calls_total", tool="add_task", outcome="ok") == 1
    assert moved("todo_chat_tool_calls_total") == 1
    # The MCP server ran that call once (its own registry, its own count).
    after_mcp = after_mcp_response.text
    mcp_calls = "todo_mcp_tool_calls_total"
    labels = {"tool": "add_task", "outcome": "ok"}
    assert value(after_mcp, mcp_calls, **labels) - value(before_mcp, mcp_calls, **labels) == 1
    assert value(after_mcp, "todo_mcp_tool_call_duration_seconds_count", tool="add_task") >= 1
    for text in (after, after_mcp):
        assert "bob" not in text
        assert "milk" not in text


async def _create_task(database: Database, **fields: object) -> None:
    async with database.session_scope(write=True) as session:
        await service.create_task(
            session, "carol", TaskCreate.model_validate(fields), channel="rest", zone=None
        )


async def test_relay_counts_published_events_and_their_lag(
    database: Database, settings: Settings, clock: Clock
) -> None:
    clock.freeze(START)
    await _create_task(database, title="Water plants")
    clock.advance(timedelta(seconds=5))
    metrics = Metrics()
    relay = Relay(database, NonePublisher(), settings, metrics=metrics)
    assert await relay.run_once() == 1
    text = metrics.render().decode()
    assert value(text, "todo_outbox_events_published_total") == 1
    assert value(text, "todo_outbox_events_refused_total") == 0
    assert value(text, "todo_outbox_publish_lag_seconds_count") == 1
    assert value(text, "todo_outbox_publish_lag_seconds_sum") == pytest.approx(5)
    assert value(text, "todo_outbox_oldest_event_age_seconds") == pytest.approx(5)


async def test_scheduler_records_how_late_reminders_fired(
    database: Database, settings: Settings, clock: Clock
) -> None:
    clock.freeze(START)
    await _create_task(database, title="Call mom", remind_at=START)
    clock.advance(timedelta(seconds=90))
    metrics = Metrics()
    assert await Scheduler(database, settings, metrics=metrics).run_once() == 1
    text = metrics.render().decode()
    assert value(text, "todo_reminders_fired_total") == 1
    assert value(text, "todo_reminder_lag_seconds_count") == 1
    assert value(text, "todo_reminder_lag_seconds_sum") == pytest.approx(90)
    assert value(text, "todo_reminder_last_batch_max_lag_seconds") == pytest.approx(90)


async def test_metrics_can_be_switched_off(tmp_path: Path, database_url: str) -> None:
    app = create_app(make_settings(tmp_path, database_url, metrics_enabled=False))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert (await http.get("/metrics")).status_code == 404


async def test_apps_side_by_side_keep_their_own_counts(tmp_path: Path, database_url: str) -> None:
    apps = [create_app(make_settings(tmp_path, database_url)) for _ in range(2)]
    async with LifespanManager(apps[0]), LifespanManager(apps[1]):
        texts = []
        for app in apps:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                await asyncio.gather(*(http.get("/healthz") for _ in range(3)))
                texts.append(await scrape(http))
    for text in texts:
        assert value(text, "todo_http_requests_total", route="/healthz") == 3


def test_unknown_label_values_are_bucketed() -> None:
    metrics = Metrics()
    metrics.turn_ended("exploded", "carrier-pigeon", 1.0)
    metrics.chat_tool_call("rm_rf", is_error=True)
    text = metrics.render().decode()
    assert value(text, "todo_chat_turns_total", status="other", channel="other") == 1
    assert value(text, "todo_chat_tool_calls_total", tool="other", outcome="error") == 1
    assert bounded(None, {"a"}) == "other"
