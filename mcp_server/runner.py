"""Run the MCP server over streamable HTTP or stdio."""

from __future__ import annotations

import os

import anyio
from starlette.applications import Starlette

from backend.agent.mcp_client import KEEPALIVE_EXPIRY_SECONDS
from backend.config import Settings, get_settings
from backend.db import Database
from mcp_server.server import build_server, create_http_app

# The API keeps its connections to this server open between turns; uvicorn's default (5 s)
# would close them in every pause and make the next turn connect again. Longer than the
# API's own expiry, so this side never closes a connection the API is about to reuse.
KEEP_ALIVE_SECONDS = int(KEEPALIVE_EXPIRY_SECONDS) + 15


def run_http(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from backend.observability import uvicorn_log_config

    if workers > 1:
        # Each worker process builds its own app (and pool) from the same environment.
        uvicorn.run(
            "mcp_server.runner:app_from_environment",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            # Workers start fresh: the parent's logging setup never reaches them.
            log_config=uvicorn_log_config(settings.log_format, settings.log_level),
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        return
    uvicorn.run(
        create_http_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # uvicorn's own lines in LOG_FORMAT too, not its default text.
        log_config=uvicorn_log_config(settings.log_format, settings.log_level),
    )


def app_from_environment() -> Starlette:
    """The HTTP app of one worker process."""
    return create_http_app(get_settings())


def run_stdio(settings: Settings) -> None:
    """stdio: the user comes from TODO_USER_ID (the MCP spec's rule for stdio)."""
    user_id = os.environ.get("TODO_USER_ID", "").strip()
    if not user_id:
        raise SystemExit("TODO_USER_ID must name the user whose tasks the stdio server manages")
    database = Database(settings.database_url)
    server = build_server(settings, database, lambda: user_id)

    async def serve() -> None:
        try:
            await server.run_stdio_async()
        finally:
            await database.dispose()

    anyio.run(serve)
