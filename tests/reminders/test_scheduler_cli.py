"""`todo-assistant scheduler`: a separate process fires due reminders, then stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import SQLModel

from backend.clock import utc_now
from backend.db import Database
from backend.models import Notification
from backend.tasks import service
from backend.tasks.schemas import TaskCreate
from tests.cli.support import CLI_TIMEOUT_SECONDS, cli_command, cli_env


async def _seed(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.engine.begin() as connection:
            for table in reversed(SQLModel.metadata.sorted_tables):
                await connection.execute(table.delete())
        # The process reads the machine's clock, which a test run may have moved (faketime
        # is not passed on): due long ago whatever either clock says.
        long_ago = utc_now() - timedelta(days=3650)
        async with database.session_scope(write=True) as session:
            for title in ("Call mom", "Stretch"):
                await service.create_task(
                    session, "alice", TaskCreate(title=title, remind_at=long_ago), channel="cli"
                )
    finally:
        await database.dispose()


def _fired(database_url: str) -> int:
    async def count() -> int:
        database = Database(database_url)
        try:
            async with database.session_scope() as session:
                return int(
                    await session.scalar(select(func.count()).select_from(Notification)) or 0
                )
        finally:
            await database.dispose()

    return asyncio.run(count())


def test_the_scheduler_command_fires_due_reminders_once_then_stops_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    asyncio.run(_seed(database_url))
    env = cli_env(tmp_path, DATABASE_URL=database_url, REMINDERS_POLL_SECONDS="0.1")
    output = tmp_path / "scheduler.log"
    with output.open("w") as log:
        process = subprocess.Popen(
            cli_command("scheduler"), env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
        while _fired(database_url) < 2:
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, output.read_text()
    assert "Firing reminders" in output.read_text()
    assert "Traceback" not in output.read_text()
    assert _fired(database_url) == 2
