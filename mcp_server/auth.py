"""The MCP server as an OAuth protected resource: only access tokens minted for it pass."""

from __future__ import annotations

import json
import logging

from mcp.server.auth.provider import AccessToken, TokenVerifier
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.auth.mcp_tokens import WRITE_SCOPE, InvalidMcpToken, McpTokenConfig, verify_mcp_token

logger = logging.getLogger(__name__)


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
        )


class WriteScopeGate:
    """Answers 403 insufficient_scope when a token without tasks:write calls a writing tool.

    The SDK checks one scope set for the whole endpoint; tools differ, so this looks at the
    JSON-RPC body of tools/call before the SDK does.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: McpTokenConfig,
        write_tools: frozenset[str],
        resource_metadata_url: str,
        path: str = "/mcp",
        max_body_bytes: int = 64 * 1024,
    ) -> None:
        self.app = app
        self.config = config
        self.write_tools = write_tools
        self.resource_metadata_url = resource_metadata_url
        self.path = path
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _reply(send, 413, {"error": "payload_too_large"}, {})
                return
        if self._lacks_write_scope(scope, body):
            challenge = (
                f'Bearer error="insufficient_scope", scope="{WRITE_SCOPE}", '
                f'resource_metadata="{self.resource_metadata_url}"'
            )
            await _reply(
                send,
                403,
                {
                    "error": "insufficient_scope",
                    "error_description": f"Required scope: {WRITE_SCOPE}",
                },
                {"www-authenticate": challenge},
            )
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _lacks_write_scope(self, scope: Scope, body: bytes) -> bool:
        try:
            payload = json.loads(body)
        except ValueError:
            return False  # the SDK answers malformed JSON itself
        calls = payload if isinstance(payload, list) else [payload]
        names = {
            str(call.get("params", {}).get("name"))
            for call in calls
            if isinstance(call, dict)
            and call.get("method") == "tools/call"
            and isinstance(call.get("params"), dict)
        }
        if not names & self.write_tools:
            return False
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False  # no token: the SDK answers 401
        try:
            access = verify_mcp_token(self.config, token.strip())
        except InvalidMcpToken:
            return False  # bad token: the SDK answers 401
        return WRITE_SCOPE not in access.scopes


async def _reply(send: Send, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    header_list = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    header_list += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": header_list})
    await send({"type": "http.response.body", "body": raw})
