"""Prometheus metrics and JSON log lines for the API and the MCP server.

Every app builds its own `Metrics` (its own CollectorRegistry, not prometheus_client's
global one), so any number of apps in one process never register a name twice; the
components an app starts (turn runner, relay, scheduler) are handed the app's `Metrics`.
Components built without one get a private `Metrics` that nothing serves.

Several uvicorn workers (API_WORKERS / MCP_WORKERS > 1): every worker process has its own
registry and answers /metrics with its own counts; a scrape through a Service or the port
samples one worker. PROMETHEUS_MULTIPROC_DIR is not supported: scale with replicas of one
worker each and let Prometheus scrape every pod, or sum what a scrape of each worker saw.

/metrics carries no user data: labels come from fixed sets (turn statuses, channels, tool
names, HTTP methods and route templates), and anything else is counted as "other".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.agent.tools import TOOLS
from backend.auth.mcp_tokens import TURN_CHANNELS
from backend.web import request_id_var

# No `_created` series beside every counter and histogram: twice the series, and nothing a
# dashboard here reads (a process-wide switch of the library).
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

# The run a log line belongs to, set by the turn runner for the turn's own task.
run_id_var: ContextVar[int | None] = ContextVar("run_id", default=None)

OTHER = "other"
TURN_STATUSES = frozenset({"succeeded", "failed", "stopped"})
TOOL_NAMES = frozenset(TOOLS)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# A turn takes from well under a second (a cached answer) to a minute (a slow model with
# several tool calls); AGENT_TIMEOUT caps it near the top bucket.
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# An event goes out within milliseconds of its commit; minutes mean a broker outage.
OUTBOX_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# A reminder fires within a poll interval of its time; hours mean everything was down.
REMINDER_LAG_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    """`value` as a label if it is one of `allowed`, else "other"."""
    return value if value is not None and value in allowed else OTHER


class Metrics:
    """One app's metrics and the registry /metrics renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        self.turns = Counter(
            "todo_chat_turns",
            "Chat turns ended, by the status their run is recorded with and by front door.",
            ["status", "channel"],
            registry=registry,
        )
        self.turn_seconds = Histogram(
            "todo_chat_turn_duration_seconds",
            "How long chat turns took, from the agent's start to the reply (the run's latency).",
            ["status"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.chat_tool_calls = Counter(
            "todo_chat_tool_calls",
            "Tool calls the agent finished in chat turns, counted by the API when the turn ends.",
            ["tool", "outcome"],
            registry=registry,
        )
        self.mcp_tool_calls = Counter(
            "todo_mcp_tool_calls",
            "Tool calls the MCP server ran, by tool and outcome (ok, error).",
            ["tool", "outcome"],
            registry=registry,
        )
        self.mcp_tool_seconds = Histogram(
            "todo_mcp_tool_call_duration_seconds",
            "How long the MCP server took to run a tool call.",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=registry,
        )
        self.outbox_published = Counter(
            "todo_outbox_events_published",
            "Task events the outbox relay published.",
            registry=registry,
        )
        self.outbox_refused = Counter(
            "todo_outbox_events_refused",
            "Task events the publisher refused (each refusal; retried later).",
            registry=registry,
        )
        self.outbox_dead = Counter(
            "todo_outbox_events_dead",
            "Task events given up on after EVENTS_MAX_ATTEMPTS refusals.",
            registry=registry,
        )
        self.outbox_lag = Histogram(
            "todo_outbox_publish_lag_seconds",
            "From a task event's commit to its publication by the relay.",
            buckets=OUTBOX_LAG_BUCKETS,
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "todo_outbox_oldest_event_age_seconds",
            "Age of the oldest event in the relay's last round when it was handled; 0 after a"
            " round with nothing due.",
            registry=registry,
        )
        self.outbox_outage = Gauge(
            "todo_outbox_relay_waiting",
            "1 while the relay waits out a publisher or database outage, else 0.",
            registry=registry,
        )
        self.reminders_fired = Counter(
            "todo_reminders_fired",
            "Reminders the scheduler fired.",
            registry=registry,
        )
        self.reminder_lag = Histogram(
            "todo_reminder_lag_seconds",
            "How late fired reminders were: firing time minus the time they were set for.",
            buckets=REMINDER_LAG_BUCKETS,
            registry=registry,
        )
        self.reminder_last_batch_lag = Gauge(
            "todo_reminder_last_batch_max_lag_seconds",
            "The largest lag in the last batch of reminders fired.",
            registry=registry,
        )
        self.http_requests = Counter(
            "todo_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )

    # --- what the components call ---

    def turn_ended(self, status: str, channel: str | None, seconds: float) -> None:
        status = bounded(status, TURN_STATUSES)
        self.turns.labels(status=status, channel=bounded(channel, TURN_CHANNELS)).inc()
        self.turn_seconds.labels(status=status).observe(max(seconds, 0.0))

    def chat_tool_call(self, name: str | None, is_error: bool) -> None:
        outcome = "error" if is_error else "ok"
        self.chat_tool_calls.labels(tool=bounded(name, TOOL_NAMES), outcome=outcome).inc()

    def mcp_tool_call(self, name: str, ok: bool, seconds: float) -> None:
        tool = bounded(name, TOOL_NAMES)
        self.mcp_tool_calls.labels(tool=tool, outcome="ok" if ok else "error").inc()
        self.mcp_tool_seconds.labels(tool=tool).observe(max(seconds, 0.0))

    def outbox_round(self, published: Iterable[float], refused: Iterable[float]) -> None:
        """One relay round: the age in seconds of each event published and refused."""
        published, refused = list(published), list(refused)
        for age in published:
            self.outbox_lag.observe(max(age, 0.0))
        self.outbox_published.inc(len(published))
        self.outbox_refused.inc(len(refused))
        self.outbox_oldest_age.set(max([*published, *refused, 0.0]))

    def reminders_batch(self, lags: Iterable[float]) -> None:
        values = [max(lag, 0.0) for lag in lags]
        for lag in values:
            self.reminder_lag.observe(lag)
        self.reminders_fired.inc(len(values))
        if values:
            self.reminder_last_batch_lag.set(max(values))

    def watch_pool(self, engine: Callable[[], AsyncEngine | None]) -> None:
        """Report the connection pool of the engine `engine()` returns, read at scrape time."""
        self.registry.register(PoolCollector(engine))

    # --- serving ---

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics: the Prometheus text format, or OpenMetrics when the scraper asks."""
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self.registry), headers={"Content-Type": content_type})


class PoolCollector(Collector):
    """The SQLAlchemy pool's own counters at scrape time (nothing kept in between)."""

    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self._engine = engine

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        engine = self._engine()
        return list(self._families(None if engine is None else engine.pool))

    def _families(self, pool: Any) -> Iterator[Metric]:
        def read(name: str) -> float:
            reader = getattr(pool, name, None)
            return float(reader()) if callable(reader) else 0.0

        size = read("size")
        overflow = read("overflow")
        yield GaugeMetricFamily(
            "todo_db_pool_size", "Connections the pool keeps (DATABASE_POOL_SIZE).", value=size
        )
        yield GaugeMetricFamily(
            "todo_db_pool_checked_out",
            "Connections in use right now (checked out of the pool).",
            value=read("checkedout"),
        )
        yield GaugeMetricFamily(
            "todo_db_pool_overflow",
            "Connections open beyond the pool size (up to DATABASE_MAX_OVERFLOW).",
            value=max(overflow, 0.0),
        )


class HttpMetricsMiddleware:
    """Count answered requests by method, route template (never the raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            method = bounded(str(scope.get("method", "")), HTTP_METHODS)
            self.metrics.http_requests.labels(
                method=method, route=route_template(scope), status=str(status)
            ).inc()


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/api/{user_id}/tasks`), or "unmatched"."""
    route = scope.get("route")
    if route is None:
        # A mount (the console's static files) sets no route: count it under its prefix,
        # not the file asked for.
        app = scope.get("app")
        routes = getattr(getattr(app, "router", None), "routes", [])
        endpoint = scope.get("endpoint")
        route = next((r for r in routes if isinstance(r, Mount) and r.app is endpoint), None)
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Below DEBUG: the SDKs are chatty at INFO (their warnings still come through), and aiokafka
# logs an ERROR per reconnect attempt while a broker is down, which the relay already says
# once per outage, with the reason.
QUIET_LOGGERS = {
    "alembic": "WARNING",
    "mcp": "WARNING",
    "httpx": "WARNING",
    "httpx2": "WARNING",
    "openai.agents": "WARNING",
    "aiokafka": "CRITICAL",
}


def log_formatter(log_format: str) -> logging.Formatter:
    """LOG_FORMAT's formatter: "json" (one object per line) or "text"."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT)


def uvicorn_log_config(log_format: str, log_level: str) -> dict[str, Any]:
    """A `log_config` for uvicorn.run: uvicorn applies it in every worker process (which a
    parent's logging setup never reaches), and its own lines go out in the same format."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": TEXT_LOG_FORMAT}
    )
    quiet = {} if log_level.upper() == "DEBUG" else QUIET_LOGGERS
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": log_level.upper(), "handlers": ["default"]},
        "loggers": {
            **{name: {"level": level} for name, level in quiet.items()},
            # uvicorn's loggers keep no handlers of their own: the root's format applies.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC ISO 8601), level, logger, message, and the
    request and run ids when known; an exception as a string field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id and request_id != "-":
            entry["request_id"] = str(request_id)
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        if run_id is not None:
            entry["run_id"] = run_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
