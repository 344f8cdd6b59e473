"""`todo-assistant chat` in a real subprocess: the terminal goes through the whole turn pipeline.

The CLI talks to this session's MCP server (so it starts none of its own), uses the offline
local model, writes to the test database, and leaves when stdin ends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from select import select as wait_readable
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlmodel import col

from backend.db import Database
from backend.models import AgentRun, Conversation, Message, OutboxEvent, Task
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
    assert "Chatting as alice (model: local), time zone Europe/Paris" in chat.out, shown
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
        channels = set((await session.scalars(select(col(OutboxEvent.channel)))).all())
    assert [(t.title, t.completed) for t in tasks] == [("Buy bread", False)]
    assert channels == {"cli"}
    # "tomorrow" is read in the user's zone (the run may straddle midnight).
    tomorrow = {today_before + timedelta(days=1), datetime.now(paris).date() + timedelta(days=1)}
    assert tasks[0].due_at is not None
    assert tasks[0].due_at.astimezone(paris).date() in tomorrow
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m.content for m in messages[::2]] == ["add buy bread tomorrow", "what's pending?"]
    assert [m.content for m in messages[1::2]] == replies
    assert {(r.user_id, r.model, r.channel, r.status) for r in runs} == {
        ("alice", "local", "cli", "succeeded")
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


async def test_terminal_chat_defaults_to_the_machines_time_zone(
    cli_env: dict[str, str], database: Database
) -> None:
    new_york = ZoneInfo("America/New_York")
    cli_env["TZ"] = "America/New_York"

    chat = await run_cli(cli_env, "chat", "--user", "bob", stdin="add call mom tomorrow at 5pm\n")

    shown = f"stdout:\n{chat.out}\nstderr:\n{chat.err}"
    assert chat.code == 0, shown
    assert "time zone America/New_York" in chat.out, shown
    async with database.session_scope() as session:
        [task] = (await session.scalars(select(Task).where(col(Task.user_id) == "bob"))).all()
    assert task.due_at is not None
    due = task.due_at.astimezone(new_york)
    assert (due.hour, due.minute) == (17, 0)


def _type_in_a_terminal(env: dict[str, str], steps: list[tuple[str, int]]) -> str:
    """Run the chat on a pseudo-terminal; each step types keys, then waits until the screen
    shows that many assistant replies. Ctrl-D at the end."""
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "chat", "--user", "carol", "--timezone", "UTC"],
        cwd=PROJECT_ROOT,
        env={**env, "TERM": "xterm"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS

    def read_until(replies: int = 0, prompt: bool = False) -> None:
        nonlocal screen
        while not (
            (prompt and screen.rstrip().endswith(b"you>"))
            or (replies and screen.count(b"assistant> ") >= replies and screen.endswith(b"you> "))
        ):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the terminal chat stalled:\n{screen.decode(errors='replace')}"
                )
            ready, _, _ = wait_readable([controller], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(controller, 4096)
                except OSError:  # the child closed the terminal
                    return

    try:
        read_until(prompt=True)
        for keys, replies in steps:
            os.write(controller, keys.encode())
            read_until(replies=replies)
        os.write(controller, b"\x04")
        process.wait(timeout=CLI_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return screen.decode(errors="replace")


async def test_terminal_chat_recalls_the_previous_line_with_the_up_arrow(
    cli_env: dict[str, str], database: Database
) -> None:
    up_arrow = "\x1b[A"

    screen = await asyncio.to_thread(
        _type_in_a_terminal, cli_env, [("add buy milk\r", 1), (f"{up_arrow}\r", 2)]
    )

    assert "^[[A" not in screen, screen
    async with database.session_scope() as session:
        tasks = (await session.scalars(select(Task).where(col(Task.user_id) == "carol"))).all()
    assert [task.title for task in tasks] == ["Buy milk", "Buy milk"], screen
