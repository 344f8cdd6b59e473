"""Publishing to a real Kafka-protocol broker (Tansu): consumed back, once each, in order."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from backend.config import Settings
from backend.db import Database
from backend.events.publishers import KafkaPublisher, PublisherUnavailable
from backend.events.relay import Relay
from backend.models import OutboxEvent
from tests.conftest import make_settings
from tests.events.conftest import Tansu
from tests.events.test_relay import create, drain, live_cycle, outbox, rename, stored_event

CONSUME_DEADLINE_SECONDS = 10.0
# A restarted broker may need longer than one publish timeout to take the first batch (the
# producer starts, the topic is created) on a loaded machine.
RESTART_DEADLINE_SECONDS = 15.0


def kafka_settings(tmp_path: Path, database_url: str, bootstrap: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "events_publisher": "kafka",
        "kafka_bootstrap_servers": bootstrap,
        # A topic per test: the broker is shared by the session.
        "events_topic": f"task-events-{uuid.uuid4().hex[:12]}",
        "events_publish_timeout_seconds": 2.0,
        "events_local_consumers": False,
    }
    values.update(overrides)
    return make_settings(tmp_path, database_url, **values)


def publisher_for(settings: Settings) -> KafkaPublisher:
    # Tansu answers aiokafka's InitProducerId (version 0) with UNKNOWN_SERVER_ERROR, so the
    # idempotent producer cannot start against it (see KafkaPublisher).
    return KafkaPublisher(settings, idempotent=False)


async def drain_once_up(relay: Relay) -> None:
    """`drain`, retried while the broker that was just started is not taking events yet."""
    deadline = time.monotonic() + RESTART_DEADLINE_SECONDS
    while True:
        try:
            await drain(relay)
            return
        except PublisherUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def consume(settings: Settings, count: int) -> list[Any]:
    """The first `count` records of the topic, from the beginning, in each partition's order."""
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + CONSUME_DEADLINE_SECONDS
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for partition_records in batches.values():
                records += partition_records
        # Anything past `count` would be a duplicate: give it a moment to show up.
        records += [r for batch in (await consumer.getmany(timeout_ms=300)).values() for r in batch]
    finally:
        await consumer.stop()
    return records


def check_records(records: list[Any], expected: list[OutboxEvent]) -> None:
    """Each event once, keyed by its task, as stored, and in version order per partition."""
    by_id = {event.event_id: event for event in expected}
    seen = [json.loads(record.value)["id"] for record in records]
    assert sorted(seen) == sorted(by_id)
    last_version: dict[tuple[int, str], int] = {}
    for record in records:
        event = by_id[json.loads(record.value)["id"]]
        assert json.loads(record.value) == event.payload
        assert record.key == str(event.task_id).encode() == event.payload["partitionkey"].encode()
        assert ("content-type", b"application/cloudevents+json") in record.headers
        place = (record.partition, record.key.decode())
        assert event.version > last_version.get(place, 0)
        last_version[place] = event.version


async def test_the_relay_publishes_each_event_once_keyed_by_task_in_order(
    database: Database, tmp_path: Path, database_url: str, tansu: Tansu
) -> None:
    settings = kafka_settings(tmp_path, database_url, tansu.bootstrap, events_batch_size=4)
    tasks = [await create(database, f"Task {n}") for n in range(3)]
    for task_id in tasks:
        await live_cycle(database, task_id)
    publisher = publisher_for(settings)
    try:
        await drain(Relay(database, publisher, settings))
    finally:
        await publisher.aclose()

    rows = await outbox(database)
    assert len(rows) == 15
    assert {row.status for row in rows} == {"published"}
    check_records(await consume(settings, len(rows)), rows)


async def test_a_broker_outage_delays_events_without_losing_or_counting_them(
    database: Database, tmp_path: Path, database_url: str, own_tansu: Tansu
) -> None:
    # The publish timeout is how long a send to a vanished broker takes to fail.
    settings = kafka_settings(
        tmp_path, database_url, own_tansu.bootstrap, events_publish_timeout_seconds=1.0
    )
    publisher = publisher_for(settings)
    relay = Relay(database, publisher, settings)
    try:
        task_id = await create(database)
        with pytest.raises(PublisherUnavailable):  # nothing listens on the port yet
            await relay.run_once()
        own_tansu.start()
        await drain_once_up(relay)
        own_tansu.stop()  # with the producer connected
        await rename(database, task_id, "Written while the broker is down")
        with pytest.raises(PublisherUnavailable):
            await relay.run_once()
        rows = await outbox(database)
        assert [(row.status, row.attempts) for row in rows] == [("published", 0), ("pending", 0)]

        own_tansu.start()  # memory storage: it comes back empty
        await rename(database, task_id, "Written after")
        await drain_once_up(relay)
    finally:
        await publisher.aclose()
    rows = await outbox(database)
    assert [(row.status, row.attempts) for row in rows] == [("published", 0)] * 3
    check_records(await consume(settings, 2), rows[1:])


async def test_a_record_too_large_is_refused_alone(tansu: Tansu, tmp_path: Path) -> None:
    settings = kafka_settings(tmp_path, "sqlite+aiosqlite:///unused.db", tansu.bootstrap)
    small, large = (
        stored_event(row_id, payload) for row_id, payload in ((1, "x"), (2, "x" * 2_000_000))
    )
    publisher = publisher_for(settings)
    try:
        result = await publisher.publish([large, small])
    finally:
        await publisher.aclose()

    assert list(result.refused) == [2]
    assert "MessageSizeTooLarge" in result.refused[2]
    check_records(await consume(settings, 1), [small])
