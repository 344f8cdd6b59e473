"""Helpers for the reminder and repeat tests: tasks through the service, rows as stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from backend.clock import Clock
from backend.config import Settings
from backend.db import Database
from backend.events.outbox import event_type
from backend.main import create_app
from backend.models import Message, Notification, OutboxEvent, Task
from backend.reminders import notifications
from backend.tasks import service
from backend.tasks.schemas import TaskCreate
from tests.conftest import make_settings

# The MCP client fixtures, for the MCP tests in this folder.
from tests.mcp_server.conftest import connect, mcp_app, mint, token_config  # noqa: F401

ALICE = "alice"
BOB = "bob"
# A Thursday; every test starts from it (the clock is frozen), never from today's date.
START = datetime(2031, 3, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
def frozen(clock: Clock) -> Clock:
    clock.freeze(START)
    return clock


async def create(
    database: Database, user: str = ALICE, zone: str | None = None, **fields: Any
) -> Task:
    async with database.session_scope(write=True) as session:
        return await service.create_task(
            session, user, TaskCreate.model_validate(fields), channel="rest", zone=zone
        )


async def stored(database: Database, task_id: int | None) -> Task:
    """The row as stored, deleted or not."""
    assert task_id is not None
    async with database.session_scope() as session:
        task = await session.get(Task, task_id)
    assert task is not None
    return task


async def series(database: Database, series_id: str | None) -> list[Task]:
    """Every occurrence of a series, deleted ones too, in order."""
    assert series_id is not None
    async with database.session_scope() as session:
        rows = await session.scalars(
            select(Task).where(col(Task.series_id) == series_id).order_by(col(Task.occurrence))
        )
        return list(rows.all())


async def live_tasks(database: Database, user: str = ALICE) -> list[Task]:
    async with database.session_scope() as session:
        rows = await session.scalars(
            select(Task)
            .where(col(Task.user_id) == user, col(Task.deleted_at).is_(None))
            .order_by(col(Task.id))
        )
        return list(rows.all())


async def event_types(database: Database, task_id: int | None) -> list[str]:
    """The task's outbox events, oldest first, without the type prefix."""
    prefix = event_type("")
    async with database.session_scope() as session:
        rows = await session.scalars(
            select(col(OutboxEvent.type))
            .where(col(OutboxEvent.task_id) == task_id)
            .order_by(col(OutboxEvent.id))
        )
        return [name.removeprefix(prefix) for name in rows.all()]


async def all_notifications(database: Database, user: str | None = None) -> list[Notification]:
    statement = select(Notification).order_by(col(Notification.id))
    if user is not None:
        statement = statement.where(col(Notification.user_id) == user)
    async with database.session_scope() as session:
        return list((await session.scalars(statement)).all())


async def messages_of(database: Database, conversation_id: int | None) -> list[Message]:
    async with database.session_scope() as session:
        rows = await session.scalars(
            select(Message)
            .where(col(Message.conversation_id) == conversation_id)
            .order_by(col(Message.seq))
        )
        return list(rows.all())


async def fire(database: Database, batch_size: int = 200) -> list[notifications.Fired]:
    async with database.session_scope(write=True) as session:
        return await notifications.fire_due(session, batch_size=batch_size)


@pytest.fixture
async def second_app(
    tmp_path: Path, database_url: str, database: Database
) -> AsyncIterator[httpx.AsyncClient]:
    """A second API instance over the same database (its own engine and pool)."""
    application: FastAPI = create_app(make_settings(tmp_path / "second", database_url))
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture
def fast_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path, database_url, reminders_poll_seconds=0.05, notifications_poll_seconds=0.05
    )
