"""create_app(): the FastAPI application, its lifespan and its routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from agents import Model
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.agent.runtime import AgentRuntime
from backend.auth.jwks import JWKSCache
from backend.auth.tokens import UserTokenVerifier, shared_secret_config
from backend.chat.chatkit import TodoChatKitServer
from backend.chat.chatkit import router as chatkit_router
from backend.chat.router import router as chat_router
from backend.chat.turns import TurnRunner, wait_for_running_turns
from backend.config import Settings, get_settings
from backend.console.router import STATIC_DIR as CONSOLE_STATIC_DIR
from backend.console.router import page_router as console_page_router
from backend.console.router import router as console_router
from backend.db import Database
from backend.errors import ErrorBody, ServiceUnavailable
from backend.events.publishers import build_publisher
from backend.events.relay import Relay
from backend.events.router import router as events_router
from backend.observability import HttpMetricsMiddleware, Metrics
from backend.reminders.router import router as notifications_router
from backend.reminders.scheduler import Scheduler
from backend.tasks.router import router as tasks_router
from backend.web import (
    BodyLimitMiddleware,
    ConsoleHeadersMiddleware,
    RequestIdMiddleware,
    install_error_handlers,
)

logger = logging.getLogger("backend")
# How long shutdown waits for turns in flight to finish and record.
SHUTDOWN_GRACE_SECONDS = 10.0
DOCS_ASSETS_URL = "/docs-assets"


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    auth_mode: str
    model: str


def _auth_mode(settings: Settings) -> str:
    if settings.auth_jwks_url:
        return "jwks"
    return "shared_secret" if settings.auth_secret else "dev"


async def _start_relay(
    stack: AsyncExitStack, database: Database, settings: Settings, metrics: Metrics
) -> None:
    publisher = build_publisher(settings)
    stack.push_async_callback(publisher.aclose)
    relay = Relay(database, publisher, settings, metrics=metrics)
    task = relay.start()
    stack.push_async_callback(relay.aclose)
    # A relay that died of a bug must say so, not vanish with its exception unread.
    task.add_done_callback(_report_relay_end)


async def _start_scheduler(
    stack: AsyncExitStack, database: Database, settings: Settings, metrics: Metrics
) -> None:
    scheduler = Scheduler(database, settings, metrics=metrics)
    task = scheduler.start()
    stack.push_async_callback(scheduler.aclose)
    task.add_done_callback(_report_scheduler_end)


def _report_scheduler_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("The reminder scheduler stopped", exc_info=task.exception())


def _report_relay_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("The task event relay stopped", exc_info=task.exception())


def _engine_of(app: FastAPI) -> AsyncEngine | None:
    """The running app's engine, for the pool gauges (none before start-up)."""
    database: Database | None = getattr(app.state, "database", None)
    return None if database is None else database.engine


def create_app(settings: Settings | None = None, *, model: Model | None = None) -> FastAPI:
    """The API. `model` replaces the configured chat model (tests use a scripted one)."""
    settings = settings or get_settings()
    # This app's own registry: apps built side by side (tests, workers) never share counts.
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database.for_server(settings)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(database.dispose)
            if settings.events_relay:
                # Stopped after turns in flight have recorded (their events go out too) and
                # before the database closes: callbacks run last-in, first-out.
                await _start_relay(stack, database, settings, metrics)
            if settings.reminders_scheduler:
                await _start_scheduler(stack, database, settings, metrics)
            jwks = None
            if settings.auth_jwks_url:
                http = await stack.enter_async_context(
                    httpx.AsyncClient(timeout=settings.jwks_timeout_seconds)
                )
                jwks = JWKSCache(
                    settings.auth_jwks_url,
                    client=http,
                    max_age_seconds=settings.jwks_cache_seconds,
                    refetch_cooldown_seconds=settings.jwks_refetch_cooldown_seconds,
                    stale_limit_seconds=settings.jwks_stale_limit_seconds,
                )
                # Before the HTTP client closes: no fetch left running against it.
                stack.push_async_callback(jwks.aclose)
            app.state.settings = settings
            app.state.database = database
            app.state.token_verifier = UserTokenVerifier(
                settings, jwks, None if jwks else shared_secret_config(settings)
            )
            runtime = AgentRuntime.create(settings, model)
            stack.push_async_callback(runtime.aclose)
            app.state.turns = TurnRunner(database, runtime, metrics)
            app.state.chatkit = TodoChatKitServer(app.state.turns)
            await app.state.turns.close_stale_runs()
            # Turns still answering get a moment to record before the database closes.
            stack.push_async_callback(wait_for_running_turns, SHUTDOWN_GRACE_SECONDS)
            logger.info(
                "API ready: auth=%s database=%s model=%s mcp=%s",
                _auth_mode(settings),
                database.engine.url.get_backend_name(),
                runtime.model_name,
                settings.mcp_url,
            )
            yield

    # /docs and /redoc with their scripts served from this process: the product runs offline.
    app = FastAPIOffline(
        title="Todo Assistant API",
        version="0.1.0",
        summary="Tasks, chat and ChatKit for a todo assistant.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS_URL,
        # Swagger UI's default asks validator.swagger.io to check the document.
        swagger_ui_parameters={"validatorUrl": None},
    )
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Timezone"],
            expose_headers=["X-Request-ID", "Location"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ConsoleHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: counts every answer, the 500s RequestIdMiddleware renders included.
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics
    metrics.watch_pool(lambda: _engine_of(app))
    app.include_router(tasks_router)
    app.include_router(chat_router)
    app.include_router(chatkit_router)
    app.include_router(events_router)
    app.include_router(notifications_router)
    app.include_router(console_router)
    app.include_router(console_page_router)
    app.mount("/console/static", StaticFiles(directory=CONSOLE_STATIC_DIR), name="console-static")

    if settings.metrics_enabled:
        # Prometheus text format, for scrapers inside the cluster; holds no user data.
        app.add_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"model": ErrorBody, "description": "Database unreachable"}},
    )
    async def readyz() -> Readiness:
        """The database answers."""
        database: Database = app.state.database
        try:
            async with database.session_scope() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            raise ServiceUnavailable("Database unreachable", code="database_unavailable") from exc
        return Readiness(
            status="ok",
            database=database.engine.url.get_backend_name(),
            auth_mode=_auth_mode(settings),
            model=app.state.turns.runtime.model_name,
        )

    return app
