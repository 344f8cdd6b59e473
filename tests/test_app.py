"""Cross-cutting HTTP behaviour of the API app."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from backend.db import Database
from backend.main import create_app
from tests.conftest import auth, make_settings


async def test_cors_allows_only_configured_origins_and_exposes_the_request_id(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = make_settings(tmp_path, database_url, cors_origins="http://localhost:5173")
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            preflight = await client.options(
                "/chatkit",
                headers={
                    "Origin": "http://localhost:5173",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type,x-timezone",
                },
            )
            allowed = await client.get(
                "/api/alice/tasks", headers={**auth("alice"), "Origin": "http://localhost:5173"}
            )
            other = await client.get(
                "/api/alice/tasks", headers={**auth("alice"), "Origin": "https://evil.example"}
            )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in other.headers


async def test_database_down_answers_503_with_a_clear_code(tmp_path: Path) -> None:
    closed = "postgresql+asyncpg://postgres@127.0.0.1:1/none"
    app = create_app(make_settings(tmp_path, closed))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ready = await client.get("/readyz")
            create = await client.post(
                "/api/alice/tasks", json={"title": "lost?"}, headers=auth("alice")
            )
            chat = await client.post(
                "/api/alice/chat", json={"message": "hi"}, headers=auth("alice")
            )
            health = await client.get("/healthz")
    assert ready.status_code == 503
    assert ready.json()["code"] == "database_unavailable"
    for response in (create, chat):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "database_unavailable"
        assert "Traceback" not in response.text
    assert health.status_code == 200


async def test_every_answer_says_how_long_the_server_took(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    app = create_app(make_settings(tmp_path, database_url))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answers = [
                await client.get("/api/alice/tasks", headers=auth("alice")),
                await client.get("/api/alice/tasks"),  # 401
                await client.get("/nowhere"),  # 404
                await client.get("/healthz"),
            ]
    for answer in answers:
        [timing] = answer.headers.get_list("server-timing")
        name, duration = timing.split(";dur=")
        assert name == "app"
        assert float(duration) >= 0
