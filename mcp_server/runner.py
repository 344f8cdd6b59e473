"""Run the MCP server over streamable HTTP or stdio."""

from __future__ import annotations

import os

import anyio

from backend.config import Settings
from backend.db import Database
from mcp_server.server import build_server, create_http_app


def run_http(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        create_http_app(settings), host=host, port=port, log_level="warning", access_log=False
    )


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
