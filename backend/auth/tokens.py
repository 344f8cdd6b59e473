"""Verify user JWTs (Better Auth JWKS or a shared secret) and mint dev tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from backend.auth.jwks import JWKSCache, JWKSUnavailable, UnknownKey
from backend.config import DEV_AUDIENCE, DEV_ISSUER, Settings, read_or_create_secret
from backend.errors import ServiceUnavailable, Unauthorized

MAX_TOKEN_LENGTH = 8192
DEV_SECRET_FILE = "dev-auth-secret"


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for, and whether they may read every user's runs."""

    user_id: str
    operator: bool = False
    # Seconds the token had left when it was verified (with the leeway): a stream that
    # outlives the request must end then.
    valid_for: float | None = None


@dataclass(frozen=True)
class SharedSecretConfig:
    secret: str
    issuer: str | None
    audience: str | None


def shared_secret_config(settings: Settings) -> SharedSecretConfig | None:
    """The HS256 signing setup: AUTH_SECRET, or in dev mode a local secret file."""
    if settings.auth_secret:
        return SharedSecretConfig(
            settings.auth_secret, settings.auth_issuer, settings.auth_audience
        )
    if settings.dev_auth:
        if settings.app_env == "production":
            raise RuntimeError("dev auth is never used in production")
        secret = read_or_create_secret(settings.data_dir / DEV_SECRET_FILE)
        return SharedSecretConfig(
            secret, settings.auth_issuer or DEV_ISSUER, settings.auth_audience or DEV_AUDIENCE
        )
    return None


def mint_user_token(
    config: SharedSecretConfig, user_id: str, ttl_seconds: int = 3600, *, admin: bool = False
) -> str:
    """A user token signed with the shared secret (for dev mode and scripts).

    `admin` adds `role: "admin"`, the claim Better Auth's admin plugin gives its admins.
    """
    # Wall-clock time, not the domain clock: PyJWT checks exp/iat against the system clock.
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["role"] = "admin"
    if config.issuer:
        claims["iss"] = config.issuer
    if config.audience:
        claims["aud"] = config.audience
    return jwt.encode(claims, config.secret, algorithm="HS256")


class UserTokenVerifier:
    """Turns a bearer token into a verified user id, or raises Unauthorized."""

    def __init__(
        self, settings: Settings, jwks: JWKSCache | None, secret: SharedSecretConfig | None
    ) -> None:
        self._jwks = jwks
        self._secret = secret
        self._leeway = settings.auth_leeway_seconds
        self._admin_claim = settings.auth_admin_claim
        self._admin_roles = frozenset(settings.auth_admin_roles)
        self._admin_users = frozenset(settings.admin_users)
        if jwks is not None:
            self._algorithms = list(settings.auth_algorithms)
            self._issuer, self._audience = settings.auth_issuer, settings.auth_audience
        elif secret is not None:
            self._algorithms = ["HS256"]
            self._issuer, self._audience = secret.issuer, secret.audience
        else:
            raise RuntimeError("no way to verify user tokens is configured")

    async def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("Invalid bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("Malformed bearer token") from exc
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise Unauthorized("Token algorithm not accepted")
        key = await self._key(header)
        required = (
            ["exp", "sub"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid bearer token") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 128:
            raise Unauthorized("Token subject is invalid")
        # Wall-clock time, as PyJWT checked `exp` against it.
        valid_for = float(claims["exp"]) + self._leeway - time.time()
        operator = self._is_operator(subject, claims.get(self._admin_claim))
        return Principal(subject, operator, valid_for)

    def _is_operator(self, subject: str, roles: Any) -> bool:
        # Better Auth stores several roles as one comma-separated string ("user,admin").
        if isinstance(roles, str):
            roles = roles.split(",")
        if not isinstance(roles, list):
            roles = []
        named = {role.strip() for role in roles if isinstance(role, str)}
        return subject in self._admin_users or bool(named & self._admin_roles)

    async def _key(self, header: dict[str, Any]) -> Any:
        if self._jwks is None:
            assert self._secret is not None
            return self._secret.secret
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise Unauthorized("Invalid key id")
        try:
            return await self._jwks.key_for(kid)
        except UnknownKey as exc:
            raise Unauthorized("Token signed by an unknown key") from exc
        except JWKSUnavailable as exc:
            raise ServiceUnavailable(
                "Cannot verify tokens right now: the key set is unreachable",
                code="jwks_unavailable",
            ) from exc
