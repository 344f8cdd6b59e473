"""Shared fixtures: every database test runs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import NullPool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import backend.models  # noqa: F401  (registers the tables)
from backend.cli import migrate
from backend.clock import Clock
from backend.clock import clock as the_clock
from backend.config import Settings
from backend.db import Database
from backend.main import create_app

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


# The whole suite (`pytest` with no paths, as `make test` and CI run it) runs on one
# pytest-xdist worker process per core, each with databases of its own, and on no more than
# this many: every worker holds PostgreSQL connections, on a server that allows 100 for
# everyone. (Four workers on two cores were slower than two, and timed out a Kafka test.)
# Named tests run in one process (a worker's start costs more than most files take); `-n N`,
# `-n0` or `-p no:xdist` choose for themselves.
MAX_WORKERS = 4


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # Runs before pytest-xdist reads its options (a conftest hook is called before a plugin's);
    # not in a worker, which parses the same command line and must not start workers of its own.
    option = config.option
    if (
        not config.pluginmanager.hasplugin("xdist")
        or hasattr(config, "workerinput")
        or "PYTEST_XDIST_WORKER" in os.environ
    ):
        return
    if option.numprocesses is None and config.args_source is pytest.Config.ArgsSource.TESTPATHS:
        option.numprocesses = "auto"
    if option.numprocesses in ("auto", "logical") and not option.maxprocesses:
        option.maxprocesses = MAX_WORKERS
    if option.numprocesses and option.dist == "no":
        # Test files take from a tenth of a second to a minute: an idle worker takes pending
        # tests from a busy one rather than waiting for it.
        option.dist = "worksteal"


def _worker_database_url(url: str) -> str:
    """This process's own PostgreSQL database: TEST_DATABASE_URL's, or `<name>_gw0`... under
    pytest-xdist, since tests empty tables and count sessions and locks per database."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


_created_databases: list[str] = []


async def _on_the_server(url: str, statement: str) -> None:
    """CREATE or DROP DATABASE (outside any transaction), from the same server's `postgres`."""
    server = make_url(url).set(database="postgres")
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            name = make_url(url).database
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if statement == "CREATE" and not exists:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
            elif statement == "DROP" and exists:
                # FORCE: a connection some test leaked must not keep the database alive.
                await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _created_databases:
        asyncio.run(_on_the_server(_created_databases.pop(), "DROP"))


async def _reset_postgres(url: str) -> None:
    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
    finally:
        await database.dispose()


@pytest.fixture(autouse=True)
def clock() -> Iterator[Clock]:
    """The one clock every "now" in the product reads; freeze or advance it in a test.

    Reset after every test, so no test leaks its time into the next.
    """
    the_clock.reset()
    try:
        yield the_clock
    finally:
        the_clock.reset()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`postgres_only` tests (races SQLite cannot have, NOTIFY) are deselected from the
    SQLite half rather than skipped, so a skip in CI always means something is missing."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_sqlite = params.get("database_url") == "sqlite"
        (dropped if on_sqlite and item.get_closest_marker("postgres_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database; the PostgreSQL half is required in CI and never skipped there."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    else:
        url = os.environ.get("TEST_DATABASE_URL", "")
        if not url:
            if os.environ.get("CI"):
                pytest.fail("CI must set TEST_DATABASE_URL so the PostgreSQL tests run")
            pytest.skip("TEST_DATABASE_URL is not set (PostgreSQL half skipped locally)")
        if make_url(url).get_backend_name() != "postgresql":
            pytest.fail("TEST_DATABASE_URL must be a postgresql+asyncpg:// URL")
        worker_url = _worker_database_url(url)
        if worker_url != url and worker_url not in _created_databases:
            asyncio.run(_on_the_server(worker_url, "CREATE"))
            _created_databases.append(worker_url)
        url = worker_url
        asyncio.run(_reset_postgres(url))
    migrate(Settings(_env_file=None, database_url=url))
    return url


@pytest.fixture
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "auth_secret": TEST_SECRET,
        # Tests that need the outbox relay start it themselves (tests/events/).
        "events_relay": False,
        # Likewise the reminder scheduler (tests/reminders/).
        "reminders_scheduler": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The test database, emptied before each test."""
    db = Database(database_url)
    async with db.engine.begin() as connection:
        for table in reversed(SQLModel.metadata.sorted_tables):
            await connection.execute(table.delete())
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def user_token(user_id: str, *, secret: str = TEST_SECRET, ttl: int = 600, **claims: Any) -> str:
    payload: dict[str, Any] = {
        "sub": user_id,
        "iat": int(time.time()),
        "exp": int(time.time()) + ttl,
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def auth(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token(user_id)}"}


@pytest.fixture
def auth_headers() -> Callable[[str], dict[str, str]]:
    return auth


def load_script(path: Path) -> ModuleType:
    """A script that is not in a package (.ci/, scripts/), imported for its tests."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up here
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
