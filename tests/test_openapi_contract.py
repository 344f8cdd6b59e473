"""Schemathesis over the whole OpenAPI document, in-process: the server keeps its contract.

Every operation gets the examples, coverage and fuzzing phases with every default check, in
positive and negative modes, on SQLite with the real MCP server behind chat turns. Requests carry
a token whose subject is the path's `user_id`, so they reach the routes rather than stopping at
403. Some cases are aimed at a dev user whose first tasks and conversations are seeded, so
success answers are checked as well as errors.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.auths import AuthContext
from schemathesis.python import asgi as schemathesis_asgi

from backend.chat import service as chat_service
from backend.cli import migrate
from backend.config import Settings
from backend.db import Database
from backend.deps import USER_ID_PATTERN
from backend.main import create_app
from backend.tasks import service as task_service
from backend.tasks.schemas import TaskCreate
from mcp_server.server import create_http_app
from tests.chat.conftest import TEST_MCP_SECRET, free_port, serving_in_thread
from tests.conftest import make_settings, user_token

DEV_USER = "contract-user"
# Per operation, for the fuzzing phase; the examples and coverage phases add their own cases.
# The suite's run is the same every time; CONTRACT_EXPLORE=1 draws new cases on each run.
MAX_EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "100"))
EXPLORE = bool(os.environ.get("CONTRACT_EXPLORE"))
MAX_USER_ID = 128
# Task and conversation ids seeded for the dev user, so some cases find their row.
KNOWN_IDS = 20


def _path_user(value: object) -> str | None:
    """The user id the server reads from the path: schemathesis sends `quote(unquote(value))`."""
    if not isinstance(value, str):
        return None
    user = unquote(value)
    valid = 1 <= len(user) <= MAX_USER_ID and "/" not in user
    return user if valid and re.fullmatch(USER_ID_PATTERN, user) else None


async def _seed(url: str) -> None:
    """Ids 1..KNOWN_IDS of tasks and conversations belong to the dev user."""
    database = Database(url)
    try:
        async with database.session_scope(write=True) as session:
            for number in range(1, KNOWN_IDS + 1):
                await task_service.create_task(
                    session, DEV_USER, TaskCreate(title=f"t{number}"), channel="rest"
                )
                await chat_service.create_conversation(session, DEV_USER, f"c{number}")
    finally:
        await database.dispose()


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("contract")
    url = f"sqlite+aiosqlite:///{data_dir / 'contract.db'}"
    mcp_url = f"http://127.0.0.1:{free_port()}/mcp"
    migrate(Settings(_env_file=None, database_url=url))
    asyncio.run(_seed(url))
    return make_settings(
        data_dir, url, mcp_token_secret=TEST_MCP_SECRET, mcp_url=mcp_url, mcp_resource_url=mcp_url
    )


@pytest.fixture(scope="module")
def mcp_server(api_settings: Settings) -> Iterator[None]:
    """The real MCP server on loopback, so chat turns run their tools for real."""
    port = int(api_settings.mcp_url.rsplit(":", 1)[1].split("/")[0])
    with serving_in_thread(create_http_app(api_settings), port):
        yield


@pytest.fixture(scope="module")
def contract_app(api_settings: Settings, mcp_server: None) -> Iterator[FastAPI]:
    yield create_app(api_settings)
    # Schemathesis runs the app's lifespan in its own event loop; end it so the database closes.
    schemathesis_asgi.shutdown_lifespans()


# Building an app touches nothing (its lifespan does), so the document is known at import. This
# app never starts: it only makes schemathesis call in-process; each call names the running app.
_document_app = create_app(make_settings(Path("unused"), "sqlite+aiosqlite://"))
# The notification and console run streams are endless by design: no answer ever ends to be
# validated. Their contracts are tested in tests/reminders/ and tests/console/.
schema = schemathesis.openapi.from_dict(_document_app.openapi()).exclude(
    path=["/api/{user_id}/notifications/stream", "/console/api/runs/stream"]
)
schema.app = _document_app


def _valid_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**31


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    """Keep the drawn values, or (only where they are valid) aim at the dev user's first rows."""
    if not isinstance(path_parameters, dict) or not _path_user(path_parameters.get("user_id")):
        return st.just(path_parameters)
    mine = {**path_parameters, "user_id": DEV_USER}
    ids = [name for name in ("task_id", "conversation_id") if _valid_id(mine.get(name))]
    if not ids:
        return st.sampled_from([path_parameters, mine])
    existing = st.integers(1, KNOWN_IDS).map(lambda n: {**mine, **dict.fromkeys(ids, n)})
    return st.one_of(st.just(path_parameters), st.just(mine), existing)


@schema.auth()
class TokenForPathUser:
    """A valid token for the path's user (or the dev user where the path names none)."""

    def get(self, case: Case[Any], ctx: AuthContext) -> str:
        return DEV_USER

    def set(self, case: Case[Any], data: str, ctx: AuthContext) -> None:
        path = case.path_parameters if isinstance(case.path_parameters, dict) else {}
        subject = _path_user(path.get("user_id", data)) or data
        case.headers["Authorization"] = f"Bearer {user_token(subject)}"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_server_keeps_its_openapi_contract(case: Case[Any], contract_app: FastAPI) -> None:
    case.call_and_validate(app=contract_app)
