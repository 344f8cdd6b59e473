"""Support for the console's browser tests: live servers on loopback and the system Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    Playwright,
    ViewportSize,
)

from backend.cli import migrate
from backend.config import Settings
from backend.main import create_app
from mcp_server.server import create_http_app
from tests.chat.conftest import chat_settings, free_port, serving_in_thread
from tests.conftest import user_token

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def require_chromium() -> Path:
    """The system Chromium; missing, a failure in CI and a skip (saying how to get it) locally."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing: install it with `apt-get install chromium`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def browser_environment() -> dict[str, str | float | bool]:
    """This process's environment without faketime: the browser keeps the real clock."""
    return {
        name: value
        for name, value in os.environ.items()
        if name != "LD_PRELOAD" and not name.startswith("FAKETIME")
    }


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=str(require_chromium()),
        args=CHROMIUM_ARGS,
        env=browser_environment(),
    )


@dataclass
class Servers:
    """The API (with the offline model) and the MCP server it calls, on one SQLite database."""

    base_url: str
    database_url: str
    data_dir: Path

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )


def _api_settings(data_dir: Path, database_url: str, mcp_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"agent_model": "local", "console_poll_seconds": 0.2}
    values.update(overrides)
    return chat_settings(data_dir, database_url, mcp_url, **values)


@contextmanager
def running_servers(data_dir: Path) -> Iterator[Servers]:
    """A fresh migrated SQLite database, the real MCP server and the API, over real HTTP."""
    data_dir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite+aiosqlite:///{data_dir / 'console.db'}"
    # Off this thread: a running Playwright holds an event loop on it, and migrating runs one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(migrate, Settings(_env_file=None, database_url=database_url)).result()
    mcp_port, api_port = free_port(), free_port()
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    mcp_settings = chat_settings(data_dir, database_url, mcp_url)
    with ExitStack() as stack:
        stack.enter_context(serving_in_thread(create_http_app(mcp_settings), mcp_port))
        api = create_app(_api_settings(data_dir, database_url, mcp_url))
        stack.enter_context(serving_in_thread(api, api_port))
        yield Servers(f"http://127.0.0.1:{api_port}", database_url, data_dir)


@contextmanager
def api_without_tools(servers: Servers) -> Iterator[str]:
    """A second API replica on the same database whose MCP server is unreachable: its turns
    that need a tool fail, which gives the runs list and charts a failure to show."""
    port, dead_port = free_port(), free_port()
    dead_url = f"http://127.0.0.1:{dead_port}/mcp"
    app = create_app(_api_settings(servers.data_dir, servers.database_url, dead_url))
    with serving_in_thread(app, port):
        yield f"http://127.0.0.1:{port}"


def chat(base_url: str, user: str, message: str, conversation_id: int | None = None) -> Any:
    """One turn through `POST /api/{user}/chat` as that user; the answer or error body."""
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = httpx.post(
        f"{base_url}/api/{user}/chat",
        json=body,
        headers={"Authorization": f"Bearer {user_token(user)}"},
        timeout=60,
    )
    return response.json()


@dataclass
class PageWatch:
    """What went wrong in a page: JS errors, CSP violations, and any dialog (an XSS sign)."""

    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        # A failed fetch (401, 404) is logged as "Failed to load resource": the page expects
        # those and shows them; everything else at error level is a fault.
        if "Content Security Policy" in text or (
            message.type == "error" and not text.startswith("Failed to load resource")
        ):
            self.problems.append(f"console {message.type}: {text}")

    def on_page_error(self, error: Error) -> None:
        self.problems.append(f"page error: {error}")

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def attach(self, page: Page) -> None:
        page.on("console", self.on_console)
        page.on("pageerror", self.on_page_error)
        page.on("dialog", self.on_dialog)

    def assert_clean(self) -> None:
        assert not self.dialogs, f"a dialog opened: {self.dialogs}"
        assert not self.problems, "\n".join(self.problems)
