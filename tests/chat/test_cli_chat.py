"""`todo-assistant chat` in a real subprocess: the terminal goes through the whole turn pipeline.

The CLI talks to this session's MCP server (so it starts none of its own), uses the offline
local model, writes to the test database, and leaves when stdin ends.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlmodel import col

from backend.db import Database
from backend.models import AgentRun, Conversation, Message, Task
from tests.chat.conftest import TEST_MCP_SECRET

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_SECONDS = 60
# Variables that would change what the CLI does if a developer's shell had them set.
INHERITED_OUT = ("OPENAI_", "AGENT_", "MCP_", "AUTH_", "DATABASE_URL", "DATA_DIR", "APP_ENV")


@dataclass
class Finished:
    code: int
    out: str
    err: str


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, mcp_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_OUT)}
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path),
        MCP_URL=mcp_url,
        MCP_RESOURCE_URL=mcp_url,
        MCP_TOKEN_SECRET=TEST_MCP_SECRET,
        AGENT_MODEL="local",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


async def run_cli(env: dict[str, str], *args: str, stdin: str = "") -> Finished:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.cli",
        *args,
        cwd=PROJECT_ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # communicate() closes stdin after writing: EOF is how the chat loop ends.
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode()), timeout=CLI_TIMEOUT_SECONDS
        )
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        pytest.fail(
            f"`{' '.join(args)}` did not finish in {CLI_TIMEOUT_SECONDS}s\n"
            f"stdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        )
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


async def test_terminal_chat_adds_a_task_lists_it_and_the_logs_show_the_transcript(
    cli_env: dict[str, str], database: Database
) -> None:
    paris = ZoneInfo("Europe/Paris")
    today_before = datetime.now(paris).date()
    chat = await run_cli(
        cli_env,
        "chat",
        "--user",
        "alice",
        "--timezone",
        "Europe/Paris",
        stdin="add buy bread tomorrow\nwhat's pending?\n",
    )
    shown = f"stdout:\n{chat.out}\nstderr:\n{chat.err}"
    assert chat.code == 0, shown
    assert "Chatting as alice (model: local)" in chat.out, shown
    replies = [
        turn.split("assistant> ", 1)[1].strip()
        for turn in chat.out.split("you> ")
        if "assistant> " in turn
    ]
    assert len(replies) == 2, shown
    assert "Buy bread" in replies[0], shown
    assert "Buy bread" in replies[1], shown
    assert "add_task(" in chat.out, shown
    assert "list_tasks(" in chat.out, shown
    assert "[error]" not in chat.out, shown
    assert "Traceback" not in chat.err, shown

    async with database.session_scope() as session:
        tasks = list(
            (await session.scalars(select(Task).where(col(Task.user_id) == "alice"))).all()
        )
        conversations = list(
            (
                await session.scalars(
                    select(Conversation).where(col(Conversation.user_id) == "alice")
                )
            ).all()
        )
        [conversation] = conversations
        messages = list(
            (
                await session.scalars(
                    select(Message)
                    .where(col(Message.conversation_id) == conversation.id)
                    .order_by(col(Message.seq))
                )
            ).all()
        )
        runs = list((await session.scalars(select(AgentRun))).all())
    assert [(t.title, t.completed) for t in tasks] == [("Buy bread", False)]
    # "tomorrow" is read in the user's zone (the run may straddle midnight).
    tomorrow = {today_before + timedelta(days=1), datetime.now(paris).date() + timedelta(days=1)}
    assert tasks[0].due_at is not None
    assert tasks[0].due_at.astimezone(paris).date() in tomorrow
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m.content for m in messages[::2]] == ["add buy bread tomorrow", "what's pending?"]
    assert [m.content for m in messages[1::2]] == replies
    assert {(r.user_id, r.model, r.channel, r.status) for r in runs} == {
        ("alice", "local", "chat", "succeeded")
    }

    logs = await run_cli(cli_env, "logs", "show", str(conversation.id))
    assert logs.code == 0, f"stdout:\n{logs.out}\nstderr:\n{logs.err}"
    assert f"Conversation {conversation.id}" in logs.out
    assert "user alice" in logs.out
    for text in ("add buy bread tomorrow", "what's pending?", *replies):
        for line in text.splitlines():
            assert line in logs.out, logs.out
    assert "add_task(" in logs.out
    assert "list_tasks(" in logs.out
