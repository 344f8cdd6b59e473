"""The MCP server as an OAuth protected resource: only access tokens minted for it pass."""

from __future__ import annotations

import json
import logging
from typing import Any

import pydantic_core
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.types import INVALID_REQUEST, ErrorData, JSONRPCError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.auth.mcp_tokens import (
    READ_SCOPE,
    WRITE_SCOPE,
    InvalidMcpToken,
    McpTokenConfig,
    verify_mcp_token,
)

logger = logging.getLogger(__name__)

# The SDK's own wording for these (it answers parse errors and a wrong Accept the same way).
UNSUPPORTED_MEDIA_TYPE = "Unsupported Media Type: Content-Type must be application/json"
BATCH_REFUSED = "Invalid Request: batches are not supported; send one JSON-RPC message per request"


class McpTokenVerifier(TokenVerifier):
    """Accepts tokens with aud = this server, iss = the API, the shared secret, short expiry."""

    def __init__(self, config: McpTokenConfig) -> None:
        self._config = config

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            access = verify_mcp_token(self._config, token)
        except InvalidMcpToken as exc:
            logger.info("rejected MCP access token: %s", exc)
            return None
        return AccessToken(
            token=token,
            client_id=access.client_id,
            scopes=list(access.scopes),
            expires_at=access.expires_at,
            resource=self._config.audience,
            subject=access.user_id,
            claims={
                name: value
                for name, value in (("channel", access.channel), ("tz", access.zone))
                if value
            }
            or None,
        )


class _TooLarge(Exception):
    pass


class WriteScopeGate:
    """The body side of `POST /mcp`: size, media type, batches and the per-tool write scope.

    It sits inside the SDK's authentication middleware and reads nothing until the SDK has
    accepted the token: a request without a usable one goes on untouched to the SDK's
    401/403, so no byte an anonymous client sends is ever parsed. The SDK checks one scope
    set for the whole endpoint; tools differ, so this reads the JSON-RPC message of
    tools/call first. It parses with the SDK's own parser, so both see the same message; a
    body that does not parse goes on to the SDK's 400 parse error.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        write_tools: frozenset[str],
        resource_metadata_url: str,
        path: str = "/mcp",
        max_body_bytes: int = 64 * 1024,
    ) -> None:
        self.app = app
        self.write_tools = write_tools
        self.resource_metadata_url = resource_metadata_url
        self.path = path
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        access = get_access_token()
        if access is None or READ_SCOPE not in access.scopes:
            await self.app(scope, receive, send)
            return
        if not _is_json(Headers(scope=scope).get("content-type", "")):
            await _rpc_error(send, 415, UNSUPPORTED_MEDIA_TYPE)
            return
        try:
            body = await self._read_body(receive)
        except _TooLarge:
            logger.warning("MCP request body over %s bytes -> 413", self.max_body_bytes)
            limit = f"Payload Too Large: the body exceeds {self.max_body_bytes} bytes"
            await _rpc_error(send, 413, limit)
            return
        if body is None:
            return  # the client went away
        message = _parse(body)
        if isinstance(message, list):
            await _rpc_error(send, 400, BATCH_REFUSED)
            return
        if _called_tool(message) in self.write_tools and WRITE_SCOPE not in access.scopes:
            await self._refuse_write(send)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, counted as it streams; None when the client disconnects."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse_write(self, send: Send) -> None:
        challenge = (
            f'Bearer error="insufficient_scope", scope="{WRITE_SCOPE}", '
            f'resource_metadata="{self.resource_metadata_url}"'
        )
        body = {
            "error": "insufficient_scope",
            "error_description": f"Required scope: {WRITE_SCOPE}",
        }
        await _reply(send, 403, json.dumps(body).encode(), {"www-authenticate": challenge})


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def _parse(body: bytes) -> Any:
    """The JSON document as the SDK will read it, or None when it is not JSON."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:  # also too deep: the parser has its own depth limit, not the stack's
        return None


def _called_tool(message: Any) -> str | None:
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return None
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return name if isinstance(name, str) else None


async def _rpc_error(send: Send, status: int, text: str) -> None:
    """A JSON-RPC error without an id, the shape the SDK answers transport errors with."""
    error = ErrorData(code=INVALID_REQUEST, message=text)
    body = JSONRPCError(jsonrpc="2.0", id=None, error=error)
    await _reply(send, status, body.model_dump_json(by_alias=True, exclude_unset=True).encode())


async def _reply(
    send: Send, status: int, raw: bytes, headers: dict[str, str] | None = None
) -> None:
    header_list = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    header_list += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": header_list})
    await send({"type": "http.response.body", "body": raw})
