"""`todo-assistant logs`: developers read turns, transcripts and exports from the database."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from agents.testing import ScriptedModel

from backend.cli import main
from backend.config import get_settings
from tests.chat.conftest import AppFactory, call, reply
from tests.conftest import auth

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def _run_cli(
    args: list[str],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    try:
        await asyncio.to_thread(main, args)
    finally:
        get_settings.cache_clear()
    return capsys.readouterr().out


async def _conversation_with_a_failure(chat_client: AppFactory) -> int:
    model = ScriptedModel(
        [call("add_task", {"title": "Call mom"}), reply("Added 'Call mom'."), RuntimeError("down")]
    )
    async with chat_client(model) as client:
        first = await client.post(
            "/api/alice/chat", json={"message": "remind me to call mom"}, headers=auth("alice")
        )
        conversation_id = int(first.json()["conversation_id"])
        failed = await client.post(
            "/api/alice/chat",
            json={"message": "and again", "conversation_id": conversation_id},
            headers=auth("alice"),
        )
        assert failed.status_code == 502
    return conversation_id


async def test_logs_list_shows_runs_and_filters_failures(
    chat_client: AppFactory,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _conversation_with_a_failure(chat_client)
    everything = await _run_cli(["logs", "list"], database_url, monkeypatch, capsys)
    failed = await _run_cli(
        ["logs", "list", "--status", "failed", "--since", "1h"], database_url, monkeypatch, capsys
    )
    other_user = await _run_cli(
        ["logs", "list", "--user", "bob"], database_url, monkeypatch, capsys
    )
    assert everything.count("alice") == 2
    assert "succeeded" in everything
    assert "model_error" in everything
    assert failed.count("alice") == 1
    assert "succeeded" not in failed
    assert "alice" not in other_user


async def test_logs_list_filters_turns_stopped_at_a_limit(
    chat_client: AppFactory,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    three_calls = call("list_tasks", {}) + call("list_tasks", {}) + call("list_tasks", {})
    model = ScriptedModel([three_calls, reply("never used")])
    async with chat_client(model, chat_max_tool_calls=2) as client:
        response = await client.post(
            "/api/alice/chat", json={"message": "look three times"}, headers=auth("alice")
        )
        assert response.status_code == 200
    stopped = await _run_cli(
        ["logs", "list", "--status", "stopped"], database_url, monkeypatch, capsys
    )
    assert stopped.count("alice") == 1
    assert "tool_call_limit" in stopped


async def test_logs_show_prints_the_transcript_with_tool_calls_and_errors(
    chat_client: AppFactory,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conversation_id = await _conversation_with_a_failure(chat_client)
    out = await _run_cli(["logs", "show", str(conversation_id)], database_url, monkeypatch, capsys)
    assert "remind me to call mom" in out
    assert 'add_task({"title": "Call mom"})' in out
    assert "Added 'Call mom'." in out
    assert "model_error" in out
    assert "RuntimeError: down" in out


async def test_logs_export_jsonl_and_markdown(
    chat_client: AppFactory,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conversation_id = await _conversation_with_a_failure(chat_client)
    jsonl = await _run_cli(
        ["logs", "export", str(conversation_id), "--format", "jsonl"],
        database_url,
        monkeypatch,
        capsys,
    )
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert [row["type"] for row in rows] == [
        "conversation",
        "message",
        "message",
        "message",
        "run",
        "run",
    ]
    assert rows[2]["tool_calls"][0]["name"] == "add_task"
    assert rows[-1]["status"] == "failed"
    markdown = await _run_cli(
        ["logs", "export", str(conversation_id), "--format", "md"],
        database_url,
        monkeypatch,
        capsys,
    )
    assert markdown.startswith("# remind me to call mom")
    assert "tool `add_task`" in markdown


async def test_logs_show_of_a_missing_conversation_exits_with_a_message(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="Conversation 999999 not found"):
        await _run_cli(["logs", "show", "999999"], database_url, monkeypatch, capsys)


async def test_logs_tail_prints_new_turns_as_they_happen(
    chat_client: AppFactory, database_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DATA_DIR"))}
    env |= {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    tail = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.cli",
        "logs",
        "tail",
        "--user",
        "carol",
        "--interval",
        "0.2",
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=PROJECT_ROOT,
    )
    try:
        assert tail.stdout is not None
        header = await asyncio.wait_for(tail.stdout.readline(), timeout=30)
        assert b"status" in header
        async with chat_client(ScriptedModel([reply("Hi Carol.")])) as client:
            response = await client.post(
                "/api/carol/chat", json={"message": "hello"}, headers=auth("carol")
            )
            assert response.status_code == 200
        lines = [await asyncio.wait_for(tail.stdout.readline(), timeout=30)]
        while b"succeeded" not in lines[-1] and len(lines) < 3:
            lines.append(await asyncio.wait_for(tail.stdout.readline(), timeout=30))
    finally:
        tail.terminate()
        await tail.wait()
    # The turn shows up (while it runs, if a poll catches it) and again when it ends.
    assert all(b"carol" in line for line in lines)
    assert b"succeeded" in lines[-1]
