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
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

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

    # Limits.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _parse_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("auth_algorithms", "cors_origins"):
                if key in data:
                    data[key] = _split_csv(data[key])
        return data

    @model_validator(mode="after")
    def _check_safety(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'todo.db'}"
        if self.auth_secret is not None and len(self.auth_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        if "none" in {alg.lower() for alg in self.auth_algorithms}:
            raise ValueError("AUTH_ALGORITHMS must not contain 'none'")
        if self.app_env == "production":
            if not self.auth_jwks_url and not self.auth_secret:
                raise ValueError("production needs AUTH_JWKS_URL or AUTH_SECRET (>= 32 bytes)")
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
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
