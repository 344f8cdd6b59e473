"""A peer-style chat turn for bench.chat_turn: `uvicorn --factory bench._peer_app:build`.

What a straightforward implementation on the same stack does: per request a new
`MCPServerStreamableHttp` (a new HTTP client; connect, initialize and list_tools every turn,
SDK defaults) to the product's MCP server, messages stored with plain SQLModel ORM in the same
tables, `Runner.run` with the same offline model and instructions. It answers
POST /api/{user}/chat like the product's JSON route and says in Server-Timing how long the
agent part and the whole handler took.
"""

from __future__ import annotations

import time
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

import jwt
from agents import Agent, Runner, set_tracing_disabled
from agents.items import ToolCallItem
from agents.mcp import MCPServerStreamableHttp
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.agent.instructions import build_instructions
from backend.agent.local_model import LocalModel
from backend.auth.mcp_tokens import mcp_token_config, mint_mcp_token
from backend.auth.tokens import shared_secret_config
from backend.clock import utc_now
from backend.config import get_settings
from backend.models import Conversation, Message

HISTORY = 40


class ChatIn(BaseModel):
    message: str
    conversation_id: int | None = None


def build() -> FastAPI:
    settings = get_settings()
    secret = shared_secret_config(settings)
    if secret is None:
        raise RuntimeError("the peer app verifies shared-secret user tokens; none configured")
    token_config = mcp_token_config(settings)
    sqlite = settings.database_url.startswith("sqlite")
    # The same pool the product's processes get from the same settings.
    pool: dict[str, Any] = (
        {}
        if sqlite
        else {
            "pool_size": getattr(settings, "database_pool_size", 4),
            "max_overflow": getattr(settings, "database_max_overflow", 2),
        }
    )
    engine = create_async_engine(settings.database_url, **pool)
    model = LocalModel()
    set_tracing_disabled(True)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def check_user(authorization: str, user_id: str) -> None:
        try:
            claims = jwt.decode(
                authorization.removeprefix("Bearer "),
                secret.secret,
                algorithms=["HS256"],
                audience=secret.audience,
                issuer=secret.issuer,
            )
        except jwt.PyJWTError as exc:
            raise HTTPException(401, "bad token") from exc
        if claims.get("sub") != user_id:
            raise HTTPException(403, "not your chat")

    @app.post("/api/{user_id}/chat")
    async def chat(user_id: str, body: ChatIn, authorization: str = Header()) -> JSONResponse:
        started = time.perf_counter()
        check_user(authorization, user_id)
        # Reads and writes in separate transactions: a SQLite read upgraded to a write fails
        # at once when another process wrote in between.
        async with AsyncSession(engine, expire_on_commit=False) as session:
            if body.conversation_id is None:
                conversation = Conversation(user_id=user_id, title=body.message[:200])
                session.add(conversation)
                await session.commit()
            else:
                found = await session.get(Conversation, body.conversation_id)
                if found is None or found.user_id != user_id:
                    raise HTTPException(404, "no such conversation")
                conversation = found
            assert conversation.id is not None
            history = (
                await session.exec(
                    select(Message)
                    .where(col(Message.conversation_id) == conversation.id)
                    .order_by(col(Message.seq).desc())
                    .limit(HISTORY)
                )
            ).all()
        seq = history[0].seq + 1 if history else 1
        async with AsyncSession(engine, expire_on_commit=False) as session:
            session.add(
                Message(
                    conversation_id=conversation.id,
                    user_id=user_id,
                    seq=seq,
                    role="user",
                    content=body.message,
                )
            )
            await session.commit()
        items: list[Any] = [
            {"role": message.role, "content": message.content}
            for message in reversed(history)
            if message.content
        ]
        items.append({"role": "user", "content": body.message})

        agent_started = time.perf_counter()
        token = mint_mcp_token(token_config, user_id, channel="chat", zone="UTC")
        async with MCPServerStreamableHttp(
            params={"url": settings.mcp_url, "headers": {"Authorization": f"Bearer {token}"}},
            name="todo-tasks",
        ) as server:
            agent = Agent(
                name="Todo Assistant",
                instructions=build_instructions(utc_now(), ZoneInfo("UTC")),
                model=model,
                mcp_servers=[server],
            )
            result = await Runner.run(agent, items)
        agent_ms = (time.perf_counter() - agent_started) * 1000
        calls = [
            {"name": getattr(item.raw_item, "name", None)}
            for item in result.new_items
            if isinstance(item, ToolCallItem)
        ]
        reply = str(result.final_output or "")

        async with AsyncSession(engine, expire_on_commit=False) as session:
            session.add(
                Message(
                    conversation_id=conversation.id,
                    user_id=user_id,
                    seq=seq + 1,
                    role="assistant",
                    content=reply,
                    tool_calls=calls,
                )
            )
            stored = await session.get(Conversation, conversation.id)
            assert stored is not None
            stored.updated_at = utc_now().astimezone(UTC)
            await session.commit()
        total_ms = (time.perf_counter() - started) * 1000
        return JSONResponse(
            {"conversation_id": conversation.id, "response": reply, "tool_calls": calls},
            headers={"Server-Timing": f"agent;dur={agent_ms:.2f}, total;dur={total_ms:.2f}"},
        )

    return app
