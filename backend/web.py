"""HTTP edges shared by every route: request ids, body limits, error rendering."""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.db import is_database_unavailable
from backend.errors import AppError, ErrorBody

logger = logging.getLogger("backend.http")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
MAX_LOGGED_PATH = 200

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def loggable_path(scope: Scope) -> str:
    """The request path for a log line: decoded paths may hold NUL, newlines or escapes that
    would forge or break lines, so anything unprintable is escaped and the length capped."""
    path = str(scope.get("path", ""))
    escaped = "".join(
        ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode()
        for ch in path[: MAX_LOGGED_PATH + 1]
    )
    if len(path) > MAX_LOGGED_PATH or len(escaped) > MAX_LOGGED_PATH:
        return escaped[:MAX_LOGGED_PATH] + "..."
    return escaped


class RequestIdMiddleware:
    """Accept a sane X-Request-ID from the client or make one; echo it on every response.

    Every response also says how long the server took to start it (`Server-Timing: app;
    dur=ms`, the whole request for a JSON answer): clients and benchmarks tell server time
    from the network's without reading logs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-request-id", b"server-timing")
                ]
                took = (time.perf_counter() - began) * 1000
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"server-timing", f"app;dur={took:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            # Rendered here, inside the request id, rather than by Starlette's outer handler.
            logger.exception("unhandled error on %s %s", scope.get("method"), loggable_path(scope))
            if not started:
                await error_response(500, "Internal server error", "internal_error")(
                    scope, receive, send_with_id
                )
        finally:
            request_id_var.reset(token)


CONSOLE_PREFIX = "/console"
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_CONSOLE_HEADERS = [
    (b"content-security-policy", CONSOLE_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class ConsoleHeadersMiddleware:
    """The console's page, files and API: a strict CSP, never framed, never cached data.

    Only there: /docs draws Swagger UI with an inline script."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path == CONSOLE_PREFIX or path.startswith("/console/")):
            await self.app(scope, receive, send)
            return
        extra = list(_CONSOLE_HEADERS)
        if path.startswith("/console/api/"):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in extra}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, counting bytes as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        received = 0
        rejected = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not rejected:
                    rejected = True
                    # Whatever the app makes of the cut-off body is never sent: don't log it.
                    scope.setdefault("state", {})["body_rejected"] = True
                    if not response_started:
                        await _too_large(self.max_bytes)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return  # the 413 has already been sent
            response_started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _too_large(limit: int) -> JSONResponse:
    logger.warning("request body over %s bytes -> 413 payload_too_large", limit)
    return error_response(413, f"Request body exceeds {limit} bytes", "payload_too_large")


def error_response(
    status: int,
    detail: str,
    code: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = ErrorBody(detail=detail, code=code, request_id=request_id_var.get(), errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _log(status: int, code: str, request: Request) -> None:
    if request.scope.get("state", {}).get("body_rejected"):
        return
    level = logging.ERROR if status >= 500 else logging.WARNING
    logger.log(level, "%s %s -> %s %s", request.method, loggable_path(request.scope), status, code)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    _log(exc.status_code, exc.code, request)
    return error_response(exc.status_code, exc.message, exc.code, exc.headers)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    # Drop the echoed input: it may be large or sensitive.
    return [
        {
            "loc": list(err.get("loc", [])),
            "msg": str(err.get("msg", "")),
            "type": err.get("type", ""),
        }
        for err in errors
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_errors(exc.errors())
    first = errors[0] if errors else {"loc": [], "msg": "invalid input"}
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    message = str(first["msg"])
    _log(422, "validation_error", request)
    return error_response(
        422, f"{where}: {message}" if where else message, "validation_error", errors=errors
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str | None:
    """Every method some route serves on this path; Starlette names only the first route's.

    Each method is tried against the routes rather than reading them, since included routers
    nest their routes. None when a mounted app refused the method itself: it knows its own."""
    routes = request.app.router.routes

    def served(method: str) -> bool:
        probe = {**request.scope, "method": method}
        return any(route.matches(probe)[0] is Match.FULL for route in routes)

    if served(request.method):
        return None
    return ", ".join(method for method in _METHODS if served(method))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    _log(exc.status_code, code, request)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed is not None:
            headers["Allow"] = allowed
    return error_response(exc.status_code, str(exc.detail), code, headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        raise exc  # a bug, not an outage: RequestIdMiddleware logs it and answers 500
    logger.error(
        "database error on %s %s: %s",
        request.method,
        loggable_path(request.scope),
        type(exc).__name__,
    )
    return error_response(
        503, "The database is unavailable; nothing was changed", "database_unavailable"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Sessions turn outages into DatabaseOutage (an AppError); this catches a driver error
    # raised outside a session scope.
    app.add_exception_handler(DBAPIError, _database_error)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The body is not UTF-8 text (bad_request)",
        401: "Missing or invalid bearer token",
        403: "The token's user is not the path's user",
        404: "No such resource for this user, or no such route",
        413: "Request body too large",
        422: "Invalid input",
        503: "Database or key set unavailable",
    }.items()
}
