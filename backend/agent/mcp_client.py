"""The API's side of the MCP hop: one pooled HTTP client per process and the tool list, kept.

The MCP server speaks the stateless per-request protocol revision: every request carries its
own protocol version, client info and bearer token, so nothing needs a session. A turn
therefore costs one `tools/call` POST per tool call on a kept-alive connection: the tool list
is fetched once per process and again only when it may have changed, which is when

- the server's version stamp on a result differs from the one the list was fetched under
  (the MCP server puts a digest of its tool list into its version), or
- a call names a tool the server does not know (any more), or
- the list is older than `TOOLS_MAX_AGE_SECONDS` (for a server that stamps no version), or
- a streamed result carries `notifications/tools/list_changed`.

The token stays per user and per turn; only connections and the list are shared.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx2
from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_NAME_HEADER, MCP_PROTOCOL_VERSION_HEADER
from mcp.types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
    CallToolResult,
    ListToolsResult,
    TextContent,
    Tool,
)
from mcp.types.version import LATEST_MODERN_VERSION

logger = logging.getLogger(__name__)

CLIENT_INFO = {"name": "todo-assistant-api", "version": "0.1.0"}
TOOLS_MAX_AGE_SECONDS = 300.0
MAX_TOOL_PAGES = 20
# Concurrent tool calls of one API process; more wait for a free connection.
MAX_CONNECTIONS = 64
# The MCP server keeps connections open longer than this (mcp_server/runner.py).
KEEPALIVE_EXPIRY_SECONDS = 60.0
TOOLS_LIST_CHANGED = "notifications/tools/list_changed"
# How servers word it, as a JSON-RPC error or (the Python SDK) as an error result.
UNKNOWN_TOOL = "unknown tool"


class McpCallError(Exception):
    """The MCP server could not be reached, refused the request or answered with an error."""


class UnknownTool(McpCallError):
    """The server does not know the tool (its list changed under us)."""


@dataclass
class _ToolList:
    tools: list[Tool]
    server_version: str | None
    fetched_at: float


@dataclass
class McpToolsClient:
    """Shared by every turn of one API process (and event loop)."""

    url: str
    timeout_seconds: float
    ssl_context: Any = None
    _http: httpx2.AsyncClient | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _list: _ToolList | None = None
    _refresh: asyncio.Lock | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _closed: bool = False
    lists_fetched: int = 0  # how often the list was fetched: a test and the benchmark read it

    def _client(self) -> httpx2.AsyncClient:
        if self._closed:
            raise McpCallError("the MCP client is closed (the server is shutting down)")
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            # Connections belong to the loop that opened them; a new loop (tests) starts over.
            limits = httpx2.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
            )
            verify = self.ssl_context if self.ssl_context is not None else True
            self._http = httpx2.AsyncClient(
                timeout=self.timeout_seconds,
                follow_redirects=False,
                # Shared by every user's turns: a cookie one answer sets (a balancer's,
                # a proxy's) must never ride along with another user's request.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                # A failed connect never reached the server, so trying again is safe.
                transport=httpx2.AsyncHTTPTransport(verify=verify, limits=limits, retries=1),
            )
            self._loop = loop
            self._refresh = asyncio.Lock()
        return self._http

    async def aclose(self) -> None:
        self._closed = True
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = None

    def invalidate(self) -> None:
        """Fetch the tool list again before it is next used."""
        self._list = None

    async def tools(self, token: str) -> list[Tool]:
        """The server's tools, fetched with this caller's token only when not already known."""
        current = self._list
        if current is not None and time.monotonic() - current.fetched_at < TOOLS_MAX_AGE_SECONDS:
            return current.tools
        self._client()
        assert self._refresh is not None
        async with self._refresh:  # one fetch for all the turns that found the list missing
            current = self._list
            if current is None or time.monotonic() - current.fetched_at >= TOOLS_MAX_AGE_SECONDS:
                current = await self._fetch_tools(token)
                self._list = current
            return current.tools

    async def _fetch_tools(self, token: str) -> _ToolList:
        tools: list[Tool] = []
        cursor: str | None = None
        version: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            result = await self._request(token, "tools/list", params)
            page = ListToolsResult.model_validate(result)
            version = version or _server_version(result)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.lists_fetched += 1
        return _ToolList(tools, version, time.monotonic())

    async def call_tool(
        self,
        token: str,
        name: str,
        arguments: Mapping[str, Any] | None,
        meta: Mapping[str, Any] | None = None,
    ) -> CallToolResult:
        params: dict[str, Any] = {"name": name, "arguments": dict(arguments or {})}
        if meta:
            params["_meta"] = dict(meta)
        try:
            result = await self._request(token, "tools/call", params, tool=name)
        except UnknownTool:
            self.invalidate()
            raise
        known = self._list
        stamped = _server_version(result)
        if known is not None and stamped is not None and stamped != known.server_version:
            logger.info(
                "MCP server version %s -> %s: tool list refetched", known.server_version, stamped
            )
            self.invalidate()
        answer = CallToolResult.model_validate(result)
        if answer.is_error and _names_unknown_tool(answer):
            self.invalidate()  # the model reads the error; the next turn gets the new list
        return answer

    async def _request(
        self, token: str, method: str, params: dict[str, Any], *, tool: str | None = None
    ) -> dict[str, Any]:
        request_id = next(self._ids)
        meta = params.setdefault("_meta", {})
        meta.update(
            {
                PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
                CLIENT_INFO_META_KEY: CLIENT_INFO,
                CLIENT_CAPABILITIES_META_KEY: {},
            }
        )
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            MCP_PROTOCOL_VERSION_HEADER: LATEST_MODERN_VERSION,
            MCP_METHOD_HEADER: method,
        }
        if tool is not None:
            headers[MCP_NAME_HEADER] = tool
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            response = await self._client().post(self.url, json=body, headers=headers)
        except httpx2.HTTPError as exc:
            raise McpCallError(f"{method}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise McpCallError(f"{method}: HTTP {response.status_code}: {response.text[:300]}")
        message = self._answer(response, request_id)
        error = message.get("error")
        if error is not None:
            text = str(error.get("message", error)) if isinstance(error, dict) else str(error)
            if tool is not None and UNKNOWN_TOOL in text.lower():
                raise UnknownTool(f"{method} {tool}: {text}")
            raise McpCallError(f"{method}: {text}")
        result = message.get("result")
        if not isinstance(result, dict):
            raise McpCallError(f"{method}: the answer holds no result")
        return result

    def _answer(self, response: httpx2.Response, request_id: int) -> dict[str, Any]:
        """The JSON-RPC answer to `request_id`, from a JSON body or an event stream."""
        content_type = response.headers.get("content-type", "")
        try:
            if content_type.startswith("text/event-stream"):
                return self._from_stream(response.text, request_id)
            message = response.json()
        except ValueError as exc:
            raise McpCallError(f"the MCP server's answer is not JSON: {exc}") from exc
        if not isinstance(message, dict) or message.get("id") != request_id:
            raise McpCallError("the MCP server answered another request")
        return message

    def _from_stream(self, text: str, request_id: int) -> dict[str, Any]:
        for block in text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(
                line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")
            )
            if not data:
                continue
            message = json.loads(data)
            if not isinstance(message, dict):
                continue
            if message.get("method") == TOOLS_LIST_CHANGED:
                self.invalidate()
            elif message.get("id") == request_id:
                return message
        raise McpCallError("the MCP server's event stream ended without an answer")


def _names_unknown_tool(result: CallToolResult) -> bool:
    return any(
        isinstance(part, TextContent) and part.text.lower().startswith(UNKNOWN_TOOL)
        for part in result.content
    )


def _server_version(result: Mapping[str, Any]) -> str | None:
    meta = result.get("_meta")
    info = meta.get(SERVER_INFO_META_KEY) if isinstance(meta, dict) else None
    version = info.get("version") if isinstance(info, dict) else None
    return version if isinstance(version, str) else None
