"""Access tokens for the MCP server: minted by the API per request, verified by the MCP server.

They are not user JWTs: their own secret, audience = the MCP resource URL, a few minutes of
life, and scopes. The MCP server never sees a user's own token.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from backend.config import Settings, read_or_create_secret
from backend.tasks.schemas import zone_names

READ_SCOPE = "tasks:read"
WRITE_SCOPE = "tasks:write"
ALL_SCOPES = (READ_SCOPE, WRITE_SCOPE)
MAX_TTL_SECONDS = 600
LEEWAY_SECONDS = 5
DEV_MCP_SECRET_FILE = "dev-mcp-secret"
# The chat front ends a turn's token may name, so task events say where a change came from.
TURN_CHANNELS = frozenset({"chat", "chatkit", "cli"})


class InvalidMcpToken(Exception):
    """The token is not a valid MCP access token for this server."""


@dataclass(frozen=True)
class McpTokenConfig:
    secret: str
    issuer: str
    audience: str
    ttl_seconds: int
    # Accepted, never used to sign: the secret a rotation is replacing.
    previous_secret: str | None = None


@dataclass(frozen=True)
class McpAccess:
    user_id: str
    scopes: tuple[str, ...]
    expires_at: int
    client_id: str
    # The chat front end of the turn that minted the token; None for other MCP clients.
    channel: str | None = None
    # The user's IANA zone in that turn: a task added without one keeps its repeats in it.
    zone: str | None = None


def mcp_token_config(settings: Settings) -> McpTokenConfig:
    """The shared setup; in dev mode a second local secret shared by the API and MCP server."""
    secret = settings.mcp_token_secret
    if secret is None:
        if settings.app_env == "production":
            raise RuntimeError("MCP_TOKEN_SECRET is required in production")
        secret = read_or_create_secret(settings.data_dir / DEV_MCP_SECRET_FILE)
    return McpTokenConfig(
        secret=secret,
        issuer=settings.mcp_token_issuer,
        audience=settings.mcp_resource_url,
        ttl_seconds=settings.mcp_token_ttl_seconds,
        previous_secret=settings.mcp_token_previous_secret,
    )


def mint_mcp_token(
    config: McpTokenConfig,
    user_id: str,
    scopes: tuple[str, ...] = ALL_SCOPES,
    ttl_seconds: int | None = None,
    client_id: str = "todo-assistant-api",
    channel: str | None = None,
    zone: str | None = None,
) -> str:
    ttl = min(ttl_seconds or config.ttl_seconds, MAX_TTL_SECONDS)
    # Wall-clock time, not the domain clock: PyJWT checks exp/iat against the system clock.
    now = int(time.time())
    claims = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": user_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    if channel is not None:
        if channel not in TURN_CHANNELS:
            raise ValueError(f"not a chat channel: {channel!r}")
        claims["channel"] = channel
    if zone is not None:
        claims["tz"] = zone
    return jwt.encode(claims, config.secret, algorithm="HS256")


def _decode(config: McpTokenConfig, token: str) -> dict[str, Any]:
    """The verified claims, signed with the secret or, during a rotation, the previous one."""
    secrets = [config.secret] + ([config.previous_secret] if config.previous_secret else [])
    for secret in secrets:
        try:
            return jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                audience=config.audience,
                issuer=config.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "iss", "aud", "iat"]},
            )
        except jwt.InvalidSignatureError as exc:
            failure: jwt.PyJWTError = exc  # perhaps signed with the other secret
        except jwt.PyJWTError as exc:
            raise InvalidMcpToken(str(exc)) from exc
    raise InvalidMcpToken(str(failure)) from failure


def verify_mcp_token(config: McpTokenConfig, token: str) -> McpAccess:
    if not token or len(token) > 8192:
        raise InvalidMcpToken("bad token size")
    claims = _decode(config, token)
    expires_at = int(claims["exp"])
    if expires_at - time.time() > MAX_TTL_SECONDS + LEEWAY_SECONDS:
        raise InvalidMcpToken("token lives longer than the MCP server accepts")
    subject, scope = claims["sub"], claims.get("scope", "")
    if not isinstance(subject, str) or not subject or not isinstance(scope, str):
        raise InvalidMcpToken("bad subject or scope")
    client_id, channel, zone = claims.get("client_id"), claims.get("channel"), claims.get("tz")
    return McpAccess(
        user_id=subject,
        scopes=tuple(scope.split()),
        expires_at=expires_at,
        client_id=client_id if isinstance(client_id, str) else "unknown",
        channel=channel if channel in TURN_CHANNELS else None,
        zone=zone if isinstance(zone, str) and zone in zone_names() else None,
    )
