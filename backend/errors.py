"""One error hierarchy. Services raise these; one handler renders them for HTTP."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AppError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class InvalidInput(AppError):
    status_code = 422
    code = "validation_error"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "Invalid bearer token", *, missing: bool = False) -> None:
        # RFC 6750: no error code when the request carried no token at all.
        challenge = 'Bearer realm="todo-assistant"'
        if not missing:
            challenge += ', error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="What went wrong, for a human.")
    code: str = Field(description="A stable machine-readable error code.")
    request_id: str = Field(description="Echoes the X-Request-ID response header.")
    errors: list[dict[str, object]] | None = Field(
        default=None, description="Field-level problems, for validation errors."
    )
