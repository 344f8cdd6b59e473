"""Settings, read once from the environment (and `.env`), failing fast on unsafe values."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MIN_SECRET_BYTES = 32
DEV_ISSUER = "todo-assistant-dev"
DEV_AUDIENCE = "todo-assistant-api"
DATABASE_URL_FORMS = "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST:5432/DB"
SUPPORTED_DRIVERS = frozenset({"sqlite+aiosqlite", "postgresql+asyncpg"})


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Worker processes per server, and the connections each process may hold by default.
MAX_WORKERS = 32
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 5


class Settings(BaseSettings):
    # Empty values (`AUTH_SECRET=` as in .env.example) mean "unset", not "".
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    app_env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # json: one JSON object per line (time, level, logger, message, request_id, run_id), for
    # log collectors; text: one readable line per record.
    log_format: Literal["text", "json"] = "text"
    # GET /metrics (Prometheus text format) on the API and the MCP server.
    metrics_enabled: bool = True

    # User authentication (Better Auth JWKS, or a shared HS256 secret, or dev mode).
    auth_jwks_url: str | None = None
    auth_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["EdDSA"])
    auth_issuer: str | None = None
    # validate_default: the production rules below must run when the variable is absent.
    auth_audience: str | None = Field(default=None, validate_default=True)
    auth_secret: str | None = Field(default=None, validate_default=True)
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # A key removed from the JWKS is refused within this many seconds (the set is refetched
    # in the background once half as old).
    jwks_cache_seconds: int = Field(default=60, ge=1)
    # Unknown key ids may cause 3 fetches a second apart, then one per this many seconds: the
    # longest a flood of forged key ids can delay a genuinely new key.
    jwks_refetch_cooldown_seconds: int = Field(default=10, ge=1)
    # How long the last good key set is used while the JWKS cannot be reached; then 503.
    jwks_stale_limit_seconds: int = Field(default=3600, ge=60)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    # Operators (the console shows them every user's runs): a token whose claim holds one
    # of these roles (Better Auth's admin plugin sets `role`), or a subject listed here.
    auth_admin_claim: str = Field(default="role", min_length=1, max_length=100)
    auth_admin_roles: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["admin"])
    admin_users: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # The MCP server, and the access tokens the API mints for it (never the user's JWT).
    mcp_url: str = "http://127.0.0.1:8001/mcp"
    # The `aud` of MCP access tokens: the server's URL as its clients name it. Unset, it is
    # MCP_URL, so the API, `token --mcp` and the server agree whatever port they were given.
    mcp_resource_url: str = Field(default="", validate_default=True)
    mcp_token_issuer: str = "http://127.0.0.1:8000"
    mcp_token_secret: str | None = Field(default=None, validate_default=True)
    # During a rotation: the secret being replaced, still accepted (never used to sign) by
    # the MCP server until tokens signed with it have expired (docs/operations.md).
    mcp_token_previous_secret: str | None = None
    # How `todo-assistant mcp` talks: `stdio` for clients that cannot pass a flag of ours.
    mcp_transport: Literal["http", "stdio"] = "http"
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

    # Server processes (uvicorn workers) of the API and of the MCP server. More than one
    # needs PostgreSQL: SQLite takes one writer at a time, so one process writes.
    api_workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    mcp_workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    # PostgreSQL connections per process: at most pool size + overflow. Every worker of the
    # API and of the MCP server (and a separate relay or scheduler) has its own pool, so
    # (api_workers + mcp_workers + others) x (pool + overflow), plus one LISTEN connection per
    # API worker (the relay's), must stay under the server's max_connections, with room for
    # migrations and psql (specs/performance.md).
    database_pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1, le=100)
    database_max_overflow: int = Field(default=DEFAULT_MAX_OVERFLOW, ge=0, le=100)

    # Task events: the outbox relay and where it publishes (specs/events.md).
    # none: events stay in the log, marked published here (dev); dapr: the sidecar's pub/sub;
    # kafka: straight to brokers with aiokafka.
    # Fire due reminders inside `serve`/`api`; false when `todo-assistant scheduler` runs
    # apart. Any number may run on PostgreSQL (each reminder fires once); one on SQLite.
    reminders_scheduler: bool = True
    # The longest the scheduler sleeps: a reminder written by another process (the MCP
    # server) fires at most this late; writes in this process wake it at once.
    reminders_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    reminders_batch_size: int = Field(default=200, ge=1, le=5000)
    # How often an open notification stream looks for new ones (fired in another process).
    notifications_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    events_publisher: Literal["none", "dapr", "kafka"] = "none"
    # Run the relay inside `serve`/`api`; false when `todo-assistant relay` runs apart.
    events_relay: bool = True
    events_topic: str = Field(default="task-events", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    events_batch_size: int = Field(default=100, ge=1, le=1000)
    # The fallback poll; commits in this process (and NOTIFY on PostgreSQL) wake it sooner.
    events_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # An event the publisher refuses this many times is marked dead (broker outages do not
    # count: the relay waits them out).
    events_max_attempts: int = Field(default=10, ge=1, le=1000)
    # Published events older than this leave the log (0 keeps them forever).
    events_retention_days: int = Field(default=30, ge=0)
    # Feed our own consumers (task history) from the relay; unset: yes unless publishing
    # through Dapr, which delivers to /dapr/subscribe routes instead.
    events_local_consumers: bool | None = None
    dapr_http_port: int = Field(default=3500, ge=1, le=65535)
    dapr_host: str = "127.0.0.1"
    dapr_pubsub_name: str = Field(default="taskpubsub", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    # Sent to the sidecar (its API token) and expected from it on deliveries (its app token).
    dapr_api_token: str | None = None
    dapr_app_api_token: str | None = None
    events_publish_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_client_id: str = "todo-assistant"
    # The idempotent producer (no duplicates on resend); off only for brokers without
    # InitProducerId v0 support (Tansu, which the tests use).
    kafka_idempotence: bool = True

    # Limits.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How often an open console run stream looks for new or changed runs (any replica's).
    console_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _parse_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            # An empty variable (as in a copied .env.example) means "not set".
            data = {key: value for key, value in data.items() if value != ""}
            for key in (
                "auth_algorithms",
                "auth_admin_roles",
                "admin_users",
                "cors_origins",
                "mcp_allowed_hosts",
                "mcp_allowed_origins",
            ):
                if key in data:
                    data[key] = _split_csv(data[key])
        return data

    # Each rule is a field validator, not one model validator, so that pydantic reports
    # every broken setting in one go instead of the first one per attempt.
    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        # The logging module takes WARN as WARNING; so do we.
        return "WARNING" if value.upper() == "WARN" else value.upper()

    @field_validator("mcp_resource_url")
    @classmethod
    def _resource_is_mcp_url_by_default(cls, value: str, info: ValidationInfo) -> str:
        return value or str(info.data.get("mcp_url", ""))

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            # Never echo the value: it may hold a password.
            raise ValueError(
                f"DATABASE_URL is not a database URL; use {DATABASE_URL_FORMS}"
            ) from None
        if url.drivername not in SUPPORTED_DRIVERS:
            raise ValueError(
                f"DATABASE_URL scheme {url.drivername}:// is not supported;"
                f" use {DATABASE_URL_FORMS}"
            )
        return value

    @field_validator("auth_algorithms")
    @classmethod
    def _no_alg_none(cls, value: list[str]) -> list[str]:
        if "none" in {alg.lower() for alg in value}:
            raise ValueError("AUTH_ALGORITHMS must not contain 'none'")
        return value

    @field_validator("auth_audience")
    @classmethod
    def _jwks_claims_in_production(cls, value: str | None, info: ValidationInfo) -> str | None:
        data = info.data
        if data.get("app_env") == "production" and data.get("auth_jwks_url"):
            if not (value and data.get("auth_issuer")):
                raise ValueError(
                    "production with AUTH_JWKS_URL needs AUTH_ISSUER and AUTH_AUDIENCE"
                )
        return value

    @field_validator("auth_secret")
    @classmethod
    def _strong_auth_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        production = info.data.get("app_env") == "production"
        if production and value is None and not info.data.get("auth_jwks_url"):
            raise ValueError("production needs AUTH_JWKS_URL or AUTH_SECRET (>= 32 bytes)")
        return value

    @field_validator("mcp_token_secret", "mcp_token_previous_secret")
    @classmethod
    def _strong_mcp_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = (info.field_name or "").upper()
        if value is None:
            if name == "MCP_TOKEN_SECRET" and info.data.get("app_env") == "production":
                raise ValueError("production needs MCP_TOKEN_SECRET (>= 32 bytes)")
            return value
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"{name} must be at least {MIN_SECRET_BYTES} bytes")
        if value == info.data.get("auth_secret"):
            raise ValueError(f"{name} must differ from AUTH_SECRET")
        return value

    @model_validator(mode="after")
    def _dapr_deliveries_authenticated_in_production(self) -> Settings:
        # Without it every delivery would be refused with 401: fail at start, not at 3 a.m.
        dapr = self.events_publisher == "dapr"
        if self.app_env == "production" and dapr and not self.dapr_app_api_token:
            raise ValueError("production with EVENTS_PUBLISHER=dapr needs DAPR_APP_API_TOKEN")
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = default_database_url(self.data_dir)
        return self

    @property
    def dev_auth(self) -> bool:
        """No auth configured outside production: sign and verify with a local secret."""
        return not self.auth_jwks_url and not self.auth_secret

    @property
    def feeds_local_consumers(self) -> bool:
        if self.events_local_consumers is not None:
            return self.events_local_consumers
        return self.events_publisher != "dapr"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_default_database(self) -> bool:
        """The local SQLite file under DATA_DIR that nobody configured: safe to migrate."""
        return self.database_url == default_database_url(self.data_dir)


def default_database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'todo.db'}"


def describe_problems(error: ValidationError) -> list[str]:
    """One line per broken setting, naming the variable and never quoting its value."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        message = problem["msg"].removeprefix("Value error, ")
        names = [str(part).upper() for part in problem["loc"]]
        # Our own rules already name their variable; pydantic's type errors do not.
        if names and names[0] not in message:
            message = f"{names[0]}: {message}"
        lines.append(message)
    return lines


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
