"""Token forging kit, a loopback JWKS server and the 401 contract, for the auth suite."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
import jwt
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from backend.config import Settings
from backend.main import create_app

ISSUER = "http://localhost:3000"
AUDIENCE = "http://localhost:3000"
MCP_AUDIENCE = "http://127.0.0.1:8001/mcp"

Claims = dict[str, Any]
Forge = Callable[[str], str]
"""Makes a bad token claiming to be the given user."""


def new_user() -> str:
    """A fresh user id, so "no side effect" can be checked without emptying tables."""
    return f"u-{uuid.uuid4().hex[:12]}"


def claims_for(user_id: str, *, ttl: int = 600, **overrides: Any) -> Claims:
    """Better Auth-shaped claims; an override of None drops that claim."""
    now = int(time.time())
    claims: Claims = {"sub": user_id, "iat": now, "exp": now + ttl, "iss": ISSUER, "aud": AUDIENCE}
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def mac_segments(header: str, payload: str, key: bytes) -> str:
    """Two already-encoded segments, HS256-MACed by hand: any bytes can be the key."""
    mac = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def hs256(claims: Claims, key: bytes, **header: Any) -> str:
    return mac_segments(b64json({"alg": "HS256", "typ": "JWT", **header}), b64json(claims), key)


def unsigned(claims: Claims, alg: str) -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims)}."


def with_signature_changed_in_the_middle(token: str) -> str:
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def with_payload(token: str, claims: Claims) -> str:
    """The same header and signature over different claims."""
    head, _, signature = token.split(".")
    return f"{head}.{b64json(claims)}.{signature}"


class SigningKey:
    """An Ed25519 key pair as Better Auth's JWT plugin would publish it."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = Ed25519PrivateKey.generate()

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    def sign(self, claims: Claims, headers: dict[str, Any] | None = None) -> str:
        """Signed with `kid` = this key's id unless `headers` says otherwise."""
        header = {"kid": self.kid} if headers is None else headers
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers=header)

    def sign_raw(self, header: dict[str, Any], claims: Claims) -> str:
        """Any header at all (PyJWT would refuse some), with a genuine Ed25519 signature."""
        signing_input = f"{b64json(header)}.{b64json(claims)}"
        return f"{signing_input}.{b64url(self.private.sign(signing_input.encode()))}"


Mode = Literal["ok", "error", "close", "hang", "not_json", "json_list", "no_keys"]


class JWKSServer:
    """A real HTTP server on 127.0.0.1 that serves a JWKS, counts requests, and can fail."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.mode: Mode = "ok"
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/auth/jwks"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _body(self) -> tuple[int, bytes]:
        document: object = {"keys": [key.jwk() for key in self.keys]}
        if self.mode == "error":
            return 500, b'{"error": "boom"}'
        if self.mode == "not_json":
            return 200, b"<html>maintenance</html>"
        if self.mode == "json_list":
            document = [key.jwk() for key in self.keys]
        if self.mode == "no_keys":
            document = {"keys": []}
        return 200, json.dumps(document).encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.mode == "hang":
                await self._stopping.wait()
                return
            if self.mode == "close":
                return
            status, body = self._body()
            head = (
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def running_jwks(keys: list[SigningKey]) -> AsyncIterator[JWKSServer]:
    server = JWKSServer(keys)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, started with its lifespan, behind an in-process HTTP client."""
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error_body(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]


def assert_unauthorized(response: httpx.Response, token: str | None = None) -> None:
    """The 401 contract: Bearer challenge, structured body, the token never echoed."""
    assert_error_body(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if token:
        assert token not in response.text


async def attempt_create(
    client: httpx.AsyncClient, user_id: str, headers: dict[str, str]
) -> httpx.Response:
    """A write that must not happen when the token is rejected."""
    return await client.post(
        f"/api/{user_id}/tasks", json={"title": "written by an attacker"}, headers=headers
    )


async def task_count(client: httpx.AsyncClient, user_id: str, token: str) -> int:
    response = await client.get(f"/api/{user_id}/tasks", headers=bearer(token))
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def escaped_rejection(
    client: httpx.AsyncClient, forgeries: Mapping[str, Forge], valid: Forge
) -> list[str]:
    """Try each forged token on a write; name every one not cleanly refused with nothing written.

    One app serves all the variants of a case: the checks stay separate, the startups do not.
    """
    escaped: list[str] = []
    for name, forge in forgeries.items():
        user = new_user()
        token = forge(user)
        response = await attempt_create(client, user, bearer(token))
        try:
            assert_unauthorized(response, token)
            assert await task_count(client, user, valid(user)) == 0, "a task was written"
        except AssertionError as exc:
            escaped.append(f"{name}: {response.status_code} {exc}")
    return escaped
