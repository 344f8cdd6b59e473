"""Where the relay sends task events: nowhere (dev), a Dapr sidecar, or Kafka brokers.

A publisher answers for each batch in one of three ways:
- it returns normally: every event not listed in `PublishResult.refused` was accepted;
- an event is in `refused`: the broker turned that one event down (too large, forbidden);
  the relay counts an attempt and retries it later, and marks it dead after
  EVENTS_MAX_ATTEMPTS refusals;
- it raises `PublisherUnavailable`: the broker or sidecar could not take the batch at all
  (down, unreachable, timing out); the relay retries the whole batch later without counting
  attempts, so an outage of any length loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from backend.config import Settings
from backend.models import OutboxEvent

logger = logging.getLogger("backend.events")
CLOUDEVENTS_JSON = "application/cloudevents+json"
# What the relay stores of a broker's reason (last_error is 2000 characters).
MAX_REASON_CHARS = 500


class PublisherUnavailable(Exception):
    """The broker or sidecar cannot take the batch now; retry it later, attempts not counted."""


@dataclass
class PublishResult:
    """Outbox row id → the reason, for each event refused on its own merits."""

    refused: dict[int, str] = field(default_factory=dict)


class Publisher(Protocol):
    name: str
    # Publishes without I/O: the relay may then hold a write transaction across the call.
    local: bool

    async def publish(self, events: Sequence[OutboxEvent]) -> PublishResult: ...

    async def aclose(self) -> None: ...


def _row_id(event: OutboxEvent) -> int:
    assert event.id is not None, "only stored events are published"
    return event.id


def _reason(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON_CHARS] or "no reason given"


def _body(event: OutboxEvent) -> bytes:
    # The stored CloudEvent, as stored: its id is the one consumers deduplicate on.
    return json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False).encode()


class NonePublisher:
    """Publishes nowhere: events stay in the log, marked published (local development).

    Our own consumers (task history) are still fed by the relay, so nothing else is needed.
    """

    name = "none"
    local = True

    async def publish(self, events: Sequence[OutboxEvent]) -> PublishResult:
        return PublishResult()

    async def aclose(self) -> None:
        return None


class DaprPublisher:
    """Publishes through the Dapr sidecar's pub/sub HTTP API.

    Plain httpx rather than the Dapr Python SDK: the SDK brings gRPC and protobuf for what is
    one HTTP call here. Each event goes as a CloudEvent (`application/cloudevents+json`), so
    Dapr forwards it as is and keeps our `id`, which consumers deduplicate on; the task id is
    the partition key, so a Kafka-backed component keeps each task's events in order.

    How an answer is classified:
    - 401/403/404, or an errorCode naming the pub/sub or topic (not found, forbidden, not
      configured): the relay's configuration is wrong (token, scopes, component name), not
      any event, so the whole batch is unavailable and no event is counted or killed.
    - Dapr answers 500 ERR_PUBSUB_PUBLISH_MESSAGE both when its broker is down and when the
      broker will never take a message (too large). So when a bulk request fails as a whole
      or every entry fails, the events are sent again one at a time, in this same call: if
      none gets through the broker is down (unavailable); if some do, the broker is up and
      the failed ones are refused. A lone event answered 5xx stays unavailable (ambiguous).
    - Any other 4xx for one event (malformed) refuses that event.
    """

    name = "dapr"
    local = False

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        base = f"http://{settings.dapr_host}:{settings.dapr_http_port}"
        pubsub, topic = settings.dapr_pubsub_name, settings.events_topic
        self._single_url = f"{base}/v1.0/publish/{pubsub}/{topic}"
        self._bulk_url = f"{base}/v1.0-alpha1/publish/bulk/{pubsub}/{topic}"
        self._headers = (
            {"dapr-api-token": settings.dapr_api_token} if settings.dapr_api_token else {}
        )
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.events_publish_timeout_seconds)

    async def publish(self, events: Sequence[OutboxEvent]) -> PublishResult:
        if not events:
            return PublishResult()
        if len(events) == 1:
            failure = await self._send_one(events[0])
            if failure is None:
                return PublishResult()
            if failure.ambiguous:
                raise PublisherUnavailable(f"Dapr sidecar: {failure.reason}")
            return PublishResult({_row_id(events[0]): failure.reason})
        return await self._publish_bulk(events)

    async def _post(self, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.post(url, **kwargs)
        except httpx.HTTPError as exc:  # refused connection, timeout, broken response
            raise PublisherUnavailable(f"Dapr sidecar: {type(exc).__name__}: {exc}") from exc
        _raise_if_misconfigured(response)
        return response

    async def _send_one(self, event: OutboxEvent) -> _Failure | None:
        """None when the sidecar took the event; otherwise why not."""
        response = await self._post(
            self._single_url,
            params={"metadata.partitionKey": str(event.task_id)},
            content=_body(event),
            headers={**self._headers, "Content-Type": CLOUDEVENTS_JSON},
        )
        if response.is_success:
            return None
        return _Failure(
            _reason(f"{response.status_code} {response.text}"),
            ambiguous=response.status_code >= 500,
        )

    async def _publish_bulk(self, events: Sequence[OutboxEvent]) -> PublishResult:
        entries = [
            {
                "entryId": str(_row_id(event)),
                "event": event.payload,
                "contentType": CLOUDEVENTS_JSON,
                "metadata": {"partitionKey": str(event.task_id)},
            }
            for event in events
        ]
        response = await self._post(self._bulk_url, json=entries, headers=self._headers)
        if response.is_success:
            return PublishResult()
        failed = _failed_entries(response)
        known = {str(_row_id(event)): _row_id(event) for event in events}
        refused = {
            known[entry]: reason for entry, reason in (failed or {}).items() if entry in known
        }
        if refused and len(refused) < len(events):
            return PublishResult(refused)
        # Failed as a whole, or every entry: a broker outage, or only bad events? Ask again
        # one event at a time.
        return await self._publish_one_by_one(events, f"{response.status_code}")

    async def _publish_one_by_one(
        self, events: Sequence[OutboxEvent], bulk_status: str
    ) -> PublishResult:
        """Each task's events in order, and tasks side by side (up to PROBE_CONCURRENCY
        requests at once), so telling an outage from bad events stays short."""
        by_task: dict[int, list[OutboxEvent]] = {}
        for event in events:
            by_task.setdefault(event.task_id, []).append(event)
        failures: dict[int, _Failure] = {}
        limit = asyncio.Semaphore(PROBE_CONCURRENCY)

        async def send_in_order(task_events: list[OutboxEvent]) -> None:
            for event in task_events:
                async with limit:
                    failure = await self._send_one(event)
                if failure is not None:
                    failures[_row_id(event)] = failure

        outcomes = await asyncio.gather(
            *(send_in_order(task_events) for task_events in by_task.values()),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):  # unreachable or misconfigured meanwhile
                raise outcome
        if len(failures) == len(events) and any(f.ambiguous for f in failures.values()):
            first = next(iter(failures.values())).reason
            raise PublisherUnavailable(
                f"Dapr sidecar: bulk publish failed ({bulk_status}) and no event got through "
                f"on its own: {first}"
            )
        return PublishResult({row_id: failure.reason for row_id, failure in failures.items()})

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


# Retrying a failed bulk publish one event at a time: at most this many requests at once.
PROBE_CONCURRENCY = 8
# Dapr's answers about the relay's configuration (component, topic, scopes), not an event.
_MISCONFIGURED_STATUSES = frozenset({401, 403, 404})
_MISCONFIGURED_CODES = frozenset(
    {"ERR_PUBSUB_NOT_FOUND", "ERR_PUBSUB_FORBIDDEN", "ERR_PUBSUB_NOT_CONFIGURED"}
)


@dataclass
class _Failure:
    reason: str
    # 5xx: the broker may be down, or may never take this event.
    ambiguous: bool


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("errorCode") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


def _raise_if_misconfigured(response: httpx.Response) -> None:
    """A refusal of the request itself (token, topic scopes, unknown pub/sub) concerns every
    event alike: the relay waits for the configuration to be fixed instead of killing them."""
    code = _error_code(response)
    if response.status_code in _MISCONFIGURED_STATUSES or code in _MISCONFIGURED_CODES:
        answer = " ".join(part for part in (str(response.status_code), code) if part)
        raise PublisherUnavailable(
            f"Dapr refused the publish: {answer}: {_reason(response.text)} (check the API "
            "token, the pub/sub component name and its topic scopes)"
        )


def _failed_entries(response: httpx.Response) -> dict[str, str] | None:
    """entryId → error from a bulk answer, or None when the answer lists no entries."""
    try:
        body = response.json()
    except ValueError:
        return None
    entries = body.get("failedEntries") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        return None
    return {
        str(entry.get("entryId")): _reason(str(entry.get("error", "failed")))
        for entry in entries
        if isinstance(entry, dict)
    }


# Broker answers about one record, not the cluster: the event is refused, the batch goes on.
_RECORD_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
    kafka_errors.PolicyViolationError,
    kafka_errors.UnsupportedForMessageFormatError,
)


class KafkaPublisher:
    """Publishes straight to Kafka with aiokafka: key = task id, value = the CloudEvent.

    Structured mode: the value is the whole CloudEvent JSON with a `content-type` header, so
    any consumer reads the same envelope Dapr would deliver. The key puts each task's events
    on one partition, in order (aiokafka keeps one request in flight per partition). Every
    record is acknowledged by all in-sync replicas before the event is marked published.

    `idempotent` (the default) lets the brokers drop a record the producer resent after a lost
    acknowledgement. It needs InitProducerId, which aiokafka sends as version 0 only; Tansu
    (the broker the tests run) answers that version with UNKNOWN_SERVER_ERROR, so tests turn
    it off. Without it a resend may duplicate a record, which consumers already ignore (they
    deduplicate on the CloudEvent id).

    The producer starts on first use and is thrown away after any failure, so a broker that
    comes back is reached by a fresh connection and fresh metadata.
    """

    name = "kafka"
    local = False

    def __init__(self, settings: Settings, *, idempotent: bool = True) -> None:
        self._bootstrap = settings.kafka_bootstrap_servers
        self._client_id = settings.kafka_client_id
        self._topic = settings.events_topic
        self._timeout = settings.events_publish_timeout_seconds
        self._idempotent = idempotent
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, events: Sequence[OutboxEvent]) -> PublishResult:
        if not events:
            return PublishResult()
        producer = await self._started()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._send_all(producer, events)
        except PublisherUnavailable:
            await self._discard()
            raise
        except (TimeoutError, kafka_errors.KafkaError) as exc:
            await self._discard()
            raise PublisherUnavailable(f"Kafka {self._bootstrap}: {_describe(exc)}") from exc

    async def _send_all(
        self, producer: AIOKafkaProducer, events: Sequence[OutboxEvent]
    ) -> PublishResult:
        refused: dict[int, str] = {}
        sent: dict[int, asyncio.Future[Any]] = {}
        for event in events:
            try:
                sent[_row_id(event)] = await producer.send(
                    self._topic,
                    key=str(event.task_id).encode(),
                    value=_body(event),
                    headers=[("content-type", CLOUDEVENTS_JSON.encode())],
                )
            except _RECORD_ERRORS as exc:  # too large for this producer: refused before sending
                refused[_row_id(event)] = _describe(exc)
        outcomes = await asyncio.gather(*sent.values(), return_exceptions=True)
        for row_id, outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, _RECORD_ERRORS):
                refused[row_id] = _describe(outcome)
            elif isinstance(outcome, BaseException):
                # The cluster, not this record: the whole batch is retried later (a record
                # that did get through is then sent again, and deduplicated downstream).
                raise PublisherUnavailable(
                    f"Kafka {self._bootstrap}: {_describe(outcome)}"
                ) from outcome
        return PublishResult(refused)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._idempotent,
            # A record not acknowledged within the publish timeout fails its batch.
            request_timeout_ms=int(self._timeout * 1000),
        )
        try:
            async with asyncio.timeout(self._timeout):
                await producer.start()
        except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
            await _stop_quietly(producer, self._timeout)
            raise PublisherUnavailable(f"Kafka {self._bootstrap}: {_describe(exc)}") from exc
        self._producer = producer
        return producer

    async def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, self._timeout)

    async def aclose(self) -> None:
        await self._discard()


async def _stop_quietly(producer: AIOKafkaProducer, grace_seconds: float) -> None:
    """Stop a producer that may be unable to flush (its broker gone) without waiting long."""
    try:
        async with asyncio.timeout(grace_seconds):
            await producer.stop()
    except Exception as exc:  # it is being thrown away; why it would not stop does not matter
        logger.debug("Kafka producer did not stop cleanly: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return _reason(f"{name}: {text}" if text and text != name else name)


def build_publisher(settings: Settings) -> Publisher:
    """The publisher EVENTS_PUBLISHER names."""
    if settings.events_publisher == "dapr":
        return DaprPublisher(settings)
    if settings.events_publisher == "kafka":
        return KafkaPublisher(settings, idempotent=settings.kafka_idempotence)
    return NonePublisher()
