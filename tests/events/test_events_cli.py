"""`todo-assistant events` and `relay` on a real database, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlmodel import SQLModel, col

from backend import cli
from backend.clock import utc_now
from backend.config import get_settings
from backend.db import Database
from backend.events.relay import Relay
from backend.models import OutboxEvent
from backend.tasks import service
from backend.tasks.schemas import TaskCreate
from tests.cli.support import CLI_TIMEOUT_SECONDS, cli_command, cli_env
from tests.conftest import make_settings
from tests.events.test_relay import RecordingPublisher

ALICE = "alice"


async def _seed(database_url: str, *, poison_first: bool, tmp_path: Path) -> list[OutboxEvent]:
    """Two tasks' events; with `poison_first`, the first one is refused until dead."""
    database = Database(database_url)
    try:
        async with database.engine.begin() as connection:
            for table in reversed(SQLModel.metadata.sorted_tables):
                await connection.execute(table.delete())
        for title in ("Poisoned", "Fine"):
            async with database.session_scope(write=True) as session:
                await service.create_task(session, ALICE, TaskCreate(title=title), channel="cli")
        if poison_first:
            settings = make_settings(
                tmp_path, database_url, events_max_attempts=1, events_local_consumers=False
            )
            first = (await _rows(database))[0].event_id
            publisher = RecordingPublisher(
                refuse=lambda event: "413 too large" if event.event_id == first else None
            )
            await Relay(database, publisher, settings).run_once()
        return await _rows(database)
    finally:
        await database.dispose()


async def _rows(database: Database) -> list[OutboxEvent]:
    async with database.session_scope() as session:
        return list(
            (await session.scalars(select(OutboxEvent).order_by(col(OutboxEvent.id)))).all()
        )


async def _due_whatever_the_clock(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.session_scope(write=True) as session:
            long_ago = utc_now() - timedelta(days=3650)
            await session.execute(update(OutboxEvent).values(available_at=long_ago))
    finally:
        await database.dispose()


def rows_now(database_url: str) -> list[OutboxEvent]:
    async def read() -> list[OutboxEvent]:
        database = Database(database_url)
        try:
            return await _rows(database)
        finally:
            await database.dispose()

    return asyncio.run(read())


@pytest.fixture
def operator(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[OutboxEvent]]:
    """The CLI's settings point at the test database; a dead event and a published one."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    try:
        yield asyncio.run(_seed(database_url, poison_first=True, tmp_path=tmp_path))
    finally:
        get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        cli.main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code) if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_show_and_requeue_a_dead_event(
    operator: list[OutboxEvent], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dead, published = operator
    assert (dead.status, published.status) == ("dead", "published")

    code, out, _ = run(capsys, "events", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["LOG", "ID"]
    assert [line.split()[0] for line in lines[1:]] == [str(dead.id), str(published.id)]
    assert lines[1].split()[3:5] == ["dead", "1"]
    assert lines[1].endswith("created  (413 too large)")

    code, out, _ = run(capsys, "events", "list", "--status", "dead", "--task", str(dead.task_id))
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(dead.id)]

    code, out, _ = run(capsys, "events", "show", dead.event_id)
    assert code == 0
    head, envelope = out.split("\n\n", 1)
    assert {"status      dead", "attempts    1", "last error  413 too large"} <= set(
        head.splitlines()
    )
    assert json.loads(envelope) == dead.payload

    code, _, err = run(capsys, "events", "requeue", str(published.id))
    assert code == 2
    assert err.strip() == (
        f"todo-assistant: only dead events can be requeued; not {published.id} (published)"
    )
    code, _, err = run(capsys, "events", "show", "00000000-0000-4000-8000-000000000000")
    assert (code, len(err.splitlines())) == (2, 1)
    assert "not found" in err

    code, out, _ = run(capsys, "events", "requeue", "--dead")
    assert (code, out.strip()) == (0, "Requeued 1 dead event.")
    requeued = rows_now(database_url)[0]
    assert (requeued.status, requeued.attempts) == ("pending", 0)


def test_the_relay_command_publishes_then_stops_cleanly_on_sigterm(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(_seed(database_url, poison_first=False, tmp_path=tmp_path))
    asyncio.run(_due_whatever_the_clock(database_url))
    # The process reads the machine's clock, which a test run may have moved (faketime is
    # not passed on): due now whatever it says, and nothing pruned for looking old.
    env = cli_env(
        tmp_path,
        DATABASE_URL=database_url,
        EVENTS_POLL_SECONDS="0.1",
        EVENTS_RETENTION_DAYS="0",
    )
    output = tmp_path / "relay.log"
    with output.open("w") as log:
        process = subprocess.Popen(
            cli_command("relay"), env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
        while {row.status for row in rows_now(database_url)} != {"published"}:
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, output.read_text()
    assert "Relaying task events" in output.read_text()
    assert "Traceback" not in output.read_text()

    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "DATA_DIR", "LOG_LEVEL"):
        monkeypatch.setenv(name, env[name])
    get_settings.cache_clear()
    try:
        code, out, err = run(capsys, "events", "list", "--status", "published")
    finally:
        get_settings.cache_clear()
    assert code == 0, err
    assert len(out.splitlines()) == 3, out
