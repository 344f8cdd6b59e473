"""The chat benchmarks' plumbing, without running a benchmark: their options, the /proc
readers and the seeded conversations they measure in."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from backend.agent.runtime import AgentRuntime, ToolBudget
from backend.clock import utc_now
from backend.config import Settings
from backend.db import Database
from backend.models import Conversation, Message, Task
from bench import _harness, chat_turn, history_scaling, soak
from bench._floor_app import in_process

MODULES = {"chat_turn": chat_turn, "history_scaling": history_scaling, "soak": soak}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_benchmark_parses_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        MODULES[name].main(["--help"])

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m bench.{name}" in out
    for option in ("--turns", "--port", "--mcp-port", "--database-url", "--admin-url"):
        assert option in out


def test_chat_turn_offers_every_port_and_workers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        chat_turn.main(["--help"])

    out = capsys.readouterr().out
    for option in ("--peer-port", "--floor-port", "--workers", "--rounds", "--users"):
        assert option in out


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        (chat_turn, ["--turns", "2", "--rounds", "5"]),
        (history_scaling, ["--small", "10", "--large", "5"]),
        (soak, ["--turns", "100", "--warmup", "100"]),
    ],
)
def test_impossible_sizes_are_refused_before_anything_starts(
    module: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)

    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_server_timing_reads_each_metric_in_milliseconds() -> None:
    header = 'agent;dur=12.5, db;desc="storage";dur=3, total;dur=20.25'

    assert _harness.server_timing(header) == {"agent": 12.5, "db": 3.0, "total": 20.25}
    assert _harness.server_timing(None) == {}


def test_p95_and_ratio() -> None:
    samples = [float(n) for n in range(1, 101)]

    assert _harness.p95(samples) == 95.0
    assert _harness.ratio(30.0, 10.0) == "3.00x"
    assert _harness.ratio(1.0, 0.0) == "n/a"


def test_proc_readers_find_a_child_and_its_cpu_and_memory() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert child.pid in _harness.children(os.getpid())
        assert child.pid in _harness.descendants(os.getpid())
        assert "sys.stdin.read()" in _harness.cmdline(child.pid)
        assert _harness.rss_kib([child.pid]) > 0
    finally:
        child.communicate(b"")
    sum(n * n for n in range(200_000))  # some CPU of our own to see
    assert _harness.cpu_seconds([os.getpid()]) > 0
    assert _harness.cpu_seconds([child.pid]) == 0  # gone: counted as nothing, not an error


async def test_seeded_conversation_copies_the_template_in_order(database: Database) -> None:
    async with database.session_scope(write=True) as session:
        conversation = Conversation(user_id="template")
        session.add(conversation)
        await session.flush()
        assert conversation.id is not None
        for seq, role in enumerate(["user", "assistant", "user", "assistant", "user"], start=1):
            session.add(
                Message(
                    conversation_id=conversation.id,
                    user_id="template",
                    seq=seq,
                    role=role,
                    content=f"{role} {seq}",
                    client_message_id=f"c{seq}" if role == "user" else None,
                )
            )
        template_id = conversation.id
    template = await _harness.template_messages(database, template_id)

    copy_id = await _harness.seeded_conversation(database, "someone", template, 7)

    assert copy_id != template_id
    assert await _harness.message_count(database, copy_id) == 7
    async with database.session_scope() as session:
        copied = (
            await session.scalars(
                select(Message)
                .where(col(Message.conversation_id) == copy_id)
                .order_by(col(Message.seq))
            )
        ).all()
    # The trailing unanswered message is left out of the pattern: pairs repeat.
    assert [m.content for m in copied] == [
        "user 1", "assistant 2", "user 3", "assistant 4", "user 1", "assistant 2", "user 3"
    ]  # fmt: skip
    assert [m.seq for m in copied] == list(range(1, 8))
    assert {m.user_id for m in copied} == {"someone"}
    assert {m.client_message_id for m in copied} == {None}
    assert len({m.item_id for m in copied}) == 7


async def test_the_floor_calls_the_tools_in_process_for_the_turn_within_its_budget(
    settings: Settings, database: Database
) -> None:
    runtime = AgentRuntime.create(settings)
    try:
        floor = await in_process(runtime, database)
        budget = ToolBudget(max_calls=1, max_destructive=1, max_argument_bytes=10_000)

        async with floor.tools_for("alice", budget, "chat", "Europe/Paris") as turn:
            agent = floor.agent(turn, utc_now(), ZoneInfo("Europe/Paris"))
            added = await floor.in_process.call_tool("add_task", {"title": "Buy milk"})
            refused = await floor.in_process.call_tool("add_task", {"title": "Buy bread"})
        outside = floor.in_process.call_tool("list_tasks", {})
        with pytest.raises(RuntimeError, match="outside a turn"):
            await outside
    finally:
        await runtime.aclose()

    assert not added.is_error, added.content
    assert added.structured_content is not None
    assert added.structured_content["title"] == "Buy milk"
    assert added.structured_content["time_zone"] == "Europe/Paris"  # the turn's zone claim
    assert refused.is_error
    assert "tool_call_limit" in str(refused.content)
    assert agent.mcp_servers == []
    assert {tool.name for tool in agent.tools} >= {"add_task", "list_tasks"}
    async with database.session_scope() as session:
        titles = (await session.scalars(select(Task.title).where(Task.user_id == "alice"))).all()
    assert list(titles) == ["Buy milk"]
