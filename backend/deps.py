"""FastAPI dependencies, as Annotated aliases: the database session and the caller."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from backend.auth.tokens import Principal, UserTokenVerifier
from backend.db import Database
from backend.errors import Forbidden, Unauthorized


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.session_scope() as session:
        yield session


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.session_scope(write=True) as session:
        yield session


# scope="function": commit before the response goes out, so a failed commit is a 503
# rather than a success the client already received.
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]
WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="A Better Auth JWT (or a dev token).")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Missing bearer token", missing=True)
    verifier: UserTokenVerifier = request.app.state.token_verifier
    return await verifier.verify(credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_user_id(principal: CurrentPrincipal) -> str:
    return principal.user_id


CurrentUser = Annotated[str, Depends(current_user_id)]
# PostgreSQL cannot store NUL, and control characters are never a real subject.
USER_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
MAX_USER_ID = 128


def user_id_problem(user_id: str) -> str | None:
    """Why a user id cannot be one (for ids that arrive outside a token: CLI, stdio)."""
    if not user_id.strip():
        return "a user id cannot be empty"
    if len(user_id) > MAX_USER_ID or not re.fullmatch(USER_ID_PATTERN, user_id):
        return f"a user id has at most {MAX_USER_ID} characters and no control characters"
    return None


async def path_user_id(
    user_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=MAX_USER_ID,
            pattern=USER_ID_PATTERN,
            description="The token's subject, percent-encoded in the path (no control characters).",
            examples=["user-123", "пользователь-😀"],
        ),
    ],
    caller: CurrentUser,
) -> str:
    if user_id != caller:
        raise Forbidden("This token cannot act for that user", code="user_mismatch")
    return caller


PathUser = Annotated[str, Depends(path_user_id)]
