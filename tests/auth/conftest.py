"""Auth suite fixtures: a clean environment for Settings and the signing keys."""

from __future__ import annotations

import os

import pytest

from backend.cli import migrate
from backend.config import Settings

_SETTINGS_PREFIXES = ("AUTH_", "JWKS_", "MCP_", "APP_ENV", "DATA_DIR", "DATABASE_URL")


@pytest.fixture(autouse=True)
def _clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment; a developer's shell must not change these tests."""
    for name in list(os.environ):
        if name.upper().startswith(_SETTINGS_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database for tests where the database is incidental (JWKS caching).

    Those tests sleep through cache windows; running them once keeps the suite fast.
    """
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('auth-sqlite') / 'auth.db'}"
    migrate(Settings(_env_file=None, database_url=url))
    return url
