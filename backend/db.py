"""Async engine, sessions and the column types shared by every table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from backend.config import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from backend.errors import AppError, ServiceUnavailable

if TYPE_CHECKING:
    from backend.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_SECONDS = 30
# Well under MCP_TIMEOUT_SECONDS (10): a tool call that waited this long for a connection
# must fail inside the MCP server, not commit after the API has given up on it.
POOL_TIMEOUT_SECONDS = 5
# A pooled connection idle this long is tested before use (_ping_idle_connections).
PING_AFTER_IDLE_SECONDS = 2.0

# PostgreSQL states that mean "the server cannot serve you right now", not "your query is
# wrong". asyncpg raises them as plain PostgresError subclasses, which SQLAlchemy wraps in a
# bare DBAPIError, so the class alone does not tell; the SQLSTATE does.
TRANSIENT_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: the backend was terminated
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up or shutting down
        "53300",  # too_many_connections
    }
)
CONNECTION_SQLSTATE_CLASS = "08"  # connection_exception and its subclasses


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; SQLite gets it back aware too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no zone type: store naive UTC text so ordering stays lexical.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether `exc`, or anything it was raised from or while handling, means the database is
    unreachable or turning connections away (retry later), not a bug or bad input.

    Ask it about database work only: an HTTP client's connect error also chains to an OSError.
    """
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        link = pending.pop()
        if not isinstance(link, BaseException) or id(link) in seen:
            continue
        seen.add(id(link))
        if _is_unavailable_here(link):
            return True
        # `orig` is the driver's exception inside a SQLAlchemy one (usually also its cause).
        pending += [link.__cause__, link.__context__, getattr(link, "orig", None)]
    return False


class DatabaseOutage(ServiceUnavailable):
    """The database cannot serve requests right now; retrying later is the answer."""

    code = "database_unavailable"


def _is_unavailable_here(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseOutage):
        return True
    if isinstance(exc, OperationalError | InterfaceError | OSError):
        return True  # OSError covers ConnectionError, TimeoutError and DNS failures
    if isinstance(exc, PoolTimeout):
        return True  # this process's share of connections is in use: retry shortly
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # asyncpg errors and SQLAlchemy's adapted copies carry `sqlstate`; psycopg's `pgcode`.
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return isinstance(state, str) and (
        state in TRANSIENT_SQLSTATES or state.startswith(CONNECTION_SQLSTATE_CLASS)
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control so BEGIN IMMEDIATE is possible.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers start with the write lock so a read-then-write cannot lose a race.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def create_engine(
    database_url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        _configure_sqlite(engine)
        return engine
    # Bounded waits: a partitioned network must end as "database unavailable" in seconds,
    # not hang a request (asyncpg has no statement timeout by default).
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args={
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": STATEMENT_TIMEOUT_SECONDS,
        },
    )
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Test a pooled connection before use only when it has been idle a while.

    A connection that sat idle may have died with a database restart or a network blip;
    one checked in moments ago was just working. Pinging every checkout (`pool_pre_ping`)
    cost a round trip per transaction, a tenth of a chat turn's CPU. A connection that dies
    in between is still an outage for the request that meets it, and SQLAlchemy then
    replaces every connection opened before the failure.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool drops this connection and checks out another (up to three times).
            raise DisconnectionError(f"idle connection is gone: {type(exc).__name__}") from exc
        if not alive:
            raise DisconnectionError("idle connection is gone")


class Database:
    """The engine plus session factories; one per process, created in the app lifespan."""

    def __init__(
        self,
        database_url: str,
        *,
        engine: AsyncEngine | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
    ) -> None:
        self.engine = engine or create_engine(
            database_url, pool_size=pool_size, max_overflow=max_overflow
        )
        # SQLite has one writer at a time and its busy handler backs off by sleeping, which
        # gives long tails under concurrency; queueing this process's writers is fairer.
        self._write_lock = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = async_sessionmaker(
            self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )

    @asynccontextmanager
    async def session_scope(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction: commit on success, roll back on any error.

        An outage surfaces as DatabaseOutage (503 `database_unavailable`), whatever the
        driver raised, so callers never have to guess what a bare OSError meant.
        """
        try:
            if write and self._write_lock is not None:
                async with self._write_lock, self._writer() as session, session.begin():
                    yield session
                return
            factory = self._writer if write else self._reader
            async with factory() as session, session.begin():
                yield session
        except AppError:
            raise
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            raise DatabaseOutage("The database is unavailable; nothing was changed") from exc

    @classmethod
    def for_server(cls, settings: Settings) -> Database:
        """The database of a server process, with the pool its settings allow."""
        return cls(
            settings.database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )

    async def dispose(self) -> None:
        await self.engine.dispose()
