"""Telling a database outage from a bug: the predicate, and the REST answer built on it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend import db as db_module
from backend.db import Database, DatabaseOutage, is_database_unavailable
from backend.errors import AppError
from backend.web import RequestIdMiddleware, install_error_handlers

CLOSED_PORT_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"  # nothing listens on 1


async def failure_of(engine: AsyncEngine, sql: str = "SELECT 1") -> BaseException:
    """The exception SQLAlchemy raises for `sql` on `engine`, as application code sees it."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text(sql))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{sql!r} unexpectedly succeeded")


def postgres_answering(error: Exception) -> AsyncEngine:
    """An asyncpg engine whose server answers every connection attempt with `error`.

    The error goes through SQLAlchemy's own asyncpg adaptation and wrapping, so the test sees
    what a real "the database system is starting up" looks like after SQLAlchemy.
    """

    async def connect(*_args: Any, **_kwargs: Any) -> asyncpg.Connection:
        raise error

    return create_async_engine("postgresql+asyncpg://", async_creator=connect)


# --- outages ------------------------------------------------------------------------------------


async def test_a_closed_postgres_port_is_unavailable() -> None:
    exc = await failure_of(create_async_engine(CLOSED_PORT_URL))

    assert isinstance(exc, ConnectionRefusedError)  # SQLAlchemy passes socket errors through
    assert is_database_unavailable(exc)


async def test_a_host_that_does_not_resolve_is_unavailable() -> None:
    exc = await failure_of(create_async_engine("postgresql+asyncpg://postgres@db.invalid/x"))

    assert isinstance(exc, OSError)
    assert is_database_unavailable(exc)


async def test_an_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-database"
    blocked.mkdir()  # a directory where the file should be
    threads_before = set(threading.enumerate())
    exc = await failure_of(create_async_engine(f"sqlite+aiosqlite:///{blocked}"))
    # After a failed connect aiosqlite stops its worker thread without waiting; if the loop
    # closes first, the thread reports into a closed loop (a warning in some later test).
    for thread in set(threading.enumerate()) - threads_before:
        await asyncio.to_thread(thread.join, 5)

    assert isinstance(exc, OperationalError)
    assert "unable to open database file" in str(exc)
    assert is_database_unavailable(exc)


TRANSIENT_POSTGRES_ERRORS = [
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection due to crash of another"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.ConnectionFailureError("connection failure"),
    asyncpg.exceptions.ClientCannotConnectError("could not connect"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
]


@pytest.mark.parametrize(
    "error", TRANSIENT_POSTGRES_ERRORS, ids=lambda e: f"{e.sqlstate}-{type(e).__name__}"
)
async def test_transient_postgres_states_are_unavailable_whatever_class_wraps_them(
    error: asyncpg.PostgresError,
) -> None:
    exc = await failure_of(postgres_answering(error))

    # A bare DBAPIError: only the SQLSTATE inside says it is an outage.
    assert type(exc) is DBAPIError
    assert isinstance(exc, DBAPIError)
    assert getattr(exc.orig, "sqlstate", None) == error.sqlstate
    assert is_database_unavailable(exc)


# --- not outages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.InvalidCatalogNameError('database "nowhere" does not exist'),
        asyncpg.exceptions.InvalidPasswordError('password authentication failed for user "x"'),
    ],
    ids=lambda e: f"{e.sqlstate}-{type(e).__name__}",
)
async def test_a_misconfigured_database_is_not_an_outage(error: asyncpg.PostgresError) -> None:
    # Retrying will not help: this must surface as the error it is, not as "try again".
    exc = await failure_of(postgres_answering(error))

    assert isinstance(exc, DBAPIError)
    assert not is_database_unavailable(exc)


async def test_a_constraint_violation_is_not_an_outage() -> None:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(IntegrityError) as raised:
                await connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()

    assert not is_database_unavailable(raised.value)


def test_an_ordinary_bug_is_not_an_outage() -> None:
    assert not is_database_unavailable(ValueError("bad"))


# --- chains -------------------------------------------------------------------------------------


def _raised(build: Callable[[], None]) -> BaseException:
    try:
        build()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def test_an_outage_is_found_through_causes_and_contexts() -> None:
    def wrapped() -> None:
        try:
            raise ConnectionResetError("peer went away")
        except ConnectionResetError as exc:
            raise AppError("could not save") from exc

    def during_handling() -> None:
        try:
            raise TimeoutError
        except TimeoutError:
            raise RuntimeError("cleanup failed") from None  # context kept, cause suppressed

    assert is_database_unavailable(_raised(wrapped))
    assert is_database_unavailable(_raised(during_handling))


def test_a_chain_that_loops_back_on_itself_ends() -> None:
    first, second = KeyError("a"), KeyError("b")
    first.__context__, second.__context__ = second, first

    assert not is_database_unavailable(first)


# --- the REST answer ----------------------------------------------------------------------------


async def get_through_the_api(engine: AsyncEngine) -> httpx.Response:
    """A request to a route that uses `engine`, through the API's own error handling."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)

    database = Database(str(engine.url), engine=engine)

    @app.get("/work")
    async def work() -> dict[str, str]:
        async with database.session_scope() as session:  # as every route's session does
            await session.execute(text("SELECT 1"))
        return {"status": "ok"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/work")
    finally:
        await engine.dispose()


async def test_rest_answers_503_database_unavailable_when_postgres_is_starting_up() -> None:
    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    response = await get_through_the_api(postgres_answering(starting))

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"


async def test_rest_answers_503_database_unavailable_when_the_host_does_not_resolve() -> None:
    engine = create_async_engine("postgresql+asyncpg://postgres@db.invalid/x")
    response = await get_through_the_api(engine)

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"


async def test_rest_answers_500_for_a_database_error_that_is_not_an_outage() -> None:
    missing = asyncpg.exceptions.InvalidCatalogNameError('database "nowhere" does not exist')
    response = await get_through_the_api(postgres_answering(missing))

    assert response.status_code == 500, response.text
    assert response.json()["code"] == "internal_error"
    assert "nowhere" not in response.text


async def test_rest_answers_503_database_unavailable_when_the_pool_has_no_free_connection(
    tmp_path: Path,
) -> None:
    # A process whose pool is used up (its share of max_connections) asks the client to retry.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    async with engine.connect() as held:
        await held.execute(text("SELECT 1"))
        response = await get_through_the_api(engine)

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"


async def _terminate_pooled_connection(database: Database, url: str) -> None:
    """Use the pool's one connection, then have another session kill its backend."""
    async with database.session_scope() as session:
        pid: int = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    admin = create_async_engine(url)
    try:
        async with admin.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await admin.dispose()


@pytest.mark.postgres_only  # SQLite has no server to lose the connection
async def test_an_idle_pooled_connection_that_died_is_replaced_before_use(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # every reuse counts as idle
    database = Database(database_url, pool_size=1, max_overflow=0)
    try:
        await _terminate_pooled_connection(database, database_url)
        async with database.session_scope() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


@pytest.mark.postgres_only  # SQLite has no server to lose the connection
async def test_a_connection_reused_at_once_is_not_pinged_and_a_dead_one_is_an_outage(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    database = Database(database_url, pool_size=1, max_overflow=0)
    try:
        await _terminate_pooled_connection(database, database_url)
        with pytest.raises(DatabaseOutage):
            async with database.session_scope() as session:
                await session.execute(text("SELECT 1"))
        # The failure replaced the dead connection: the next request works.
        async with database.session_scope() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()
