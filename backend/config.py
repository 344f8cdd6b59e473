"""Settings, read once from the environment (and `.env`), failing fast on unsafe values."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_BYTES = 32
DEV_ISSUER = "todo-assistant-dev"
DEV_AUDIENCE = "todo-assistant-api"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    # Empty values (`AUTH_SECRET=` as in .env.example) mean "unset", not "".
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    app_env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str = ""
    log_level: str = "INFO"

    # User authentication (Better Auth JWKS, or a shared HS256 secret, or dev mode).
    auth_jwks_url: str | None = None
    auth_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["EdDSA"])
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_secret: str | None = None
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=300, ge=1)
    jwks_refetch_cooldown_seconds: int = Field(default=30, ge=1)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)

    # The MCP server, and the access tokens the API mints for it (never the user's JWT).
    mcp_url: str = "http://127.0.0.1:8001/mcp"
    mcp_resource_url: str = "http://127.0.0.1:8001/mcp"
    mcp_token_issuer: str = "http://127.0.0.1:8000"
    mcp_token_secret: str | None = None
    mcp_token_ttl_seconds: int = Field(default=300, ge=10, le=600)
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    )
    mcp_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:*", "http://localhost:*"]
    )

    # The chat agent.
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    agent_model: str | None = None
    agent_max_turns: int = Field(default=8, ge=1, le=50)
    agent_model_timeout_seconds: float = Field(default=60.0, gt=0)
    agent_tracing: Literal["off", "openai"] = "off"
    chat_history_messages: int = Field(default=40, ge=2, le=500)
    chat_lease_seconds: int = Field(default=300, ge=10)
    # Limits on agency per turn, whatever the model asks for.
    chat_max_tool_calls: int = Field(default=20, ge=1, le=200)
    chat_max_destructive_calls: int = Field(default=5, ge=0, le=100)
    mcp_timeout_seconds: float = Field(default=10.0, gt=0)

    # Limits.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _parse_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            # An empty variable (as in a copied .env.example) means "not set".
            data = {key: value for key, value in data.items() if value != ""}
            for key in (
                "auth_algorithms",
                "cors_origins",
                "mcp_allowed_hosts",
                "mcp_allowed_origins",
            ):
                if key in data:
                    data[key] = _split_csv(data[key])
        return data

    @model_validator(mode="after")
    def _check_safety(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'todo.db'}"
        if self.auth_secret is not None and len(self.auth_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        if self.mcp_token_secret is not None:
            if len(self.mcp_token_secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"MCP_TOKEN_SECRET must be at least {MIN_SECRET_BYTES} bytes")
            if self.mcp_token_secret == self.auth_secret:
                raise ValueError("MCP_TOKEN_SECRET must differ from AUTH_SECRET")
        if "none" in {alg.lower() for alg in self.auth_algorithms}:
            raise ValueError("AUTH_ALGORITHMS must not contain 'none'")
        if self.app_env == "production":
            if not self.auth_jwks_url and not self.auth_secret:
                raise ValueError("production needs AUTH_JWKS_URL or AUTH_SECRET (>= 32 bytes)")
            if not self.mcp_token_secret:
                raise ValueError("production needs MCP_TOKEN_SECRET (>= 32 bytes)")
            if self.auth_jwks_url and not (self.auth_issuer and self.auth_audience):
                raise ValueError(
                    "production with AUTH_JWKS_URL needs AUTH_ISSUER and AUTH_AUDIENCE"
                )
        return self

    @property
    def dev_auth(self) -> bool:
        """No auth configured outside production: sign and verify with a local secret."""
        return not self.auth_jwks_url and not self.auth_secret

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def read_or_create_secret(path: Path) -> str:
    """Return the secret stored at `path`, creating it (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked in: no reader ever sees an empty or partial file.
        staged = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(staged, path)
        except FileExistsError:  # another process created it first
            pass
        finally:
            staged.unlink()
    value = path.read_text().strip()
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds fewer than {MIN_SECRET_BYTES} bytes; delete it to renew")
    return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
