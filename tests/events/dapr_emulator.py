"""An emulator of the Dapr sidecar's HTTP contract, as far as our code uses it.

It serves the publish API (single and bulk) on a loopback port, keeps each topic as an
in-memory log, reads the app's programmatic subscriptions (GET /dapr/subscribe) when it
starts, and delivers every published event to the subscribed route with Dapr's rules:

- 2xx with no status, SUCCESS, or a body that is not JSON: delivered;
- RETRY, an unknown status, any other non-2xx, or no answer: redelivered after a short
  backoff, up to `max_attempts`, then moved to the subscription's dead-letter topic;
- DROP: given up, and moved to the dead-letter topic when there is one (Dapr >= 1.12);
- 404: given up and logged, nothing else (Dapr treats it as "no such handler").

Faults to test against: `duplicates` delivers every event that many extra times, `replay()`
delivers the whole log again (a consumer group rewinding), `down = True` makes the publish API
answer 500 as when the broker behind the sidecar is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.chat.conftest import free_port, serving_in_thread

logger = logging.getLogger(__name__)
CLOUDEVENTS_JSON = "application/cloudevents+json"
TOKEN_HEADER = "dapr-api-token"
MAX_BACKOFF = 0.2


@dataclass
class Message:
    topic: str
    event: dict[str, Any]
    partition_key: str | None


@dataclass
class Subscription:
    pubsubname: str
    topic: str
    route: str
    dead_letter_topic: str | None


@dataclass
class DaprEmulator:
    app_url: str
    pubsub_name: str = "taskpubsub"
    api_token: str | None = None  # DAPR_API_TOKEN: what callers of the sidecar must send
    app_token: str | None = None  # APP_API_TOKEN: what the sidecar sends to the app
    max_attempts: int = 4
    backoff_seconds: float = 0.02
    duplicates: int = 0
    down: bool = False
    port: int = field(default_factory=free_port)
    topics: dict[str, list[Message]] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (event id, outcome)
    _queue: asyncio.Queue[Message] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    # Deliveries queued or in progress; changed from both threads, so under a lock.
    _unfinished: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the test's side ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[DaprEmulator]:
        """Serve on the loopback port until the block ends."""
        routes = [
            Route("/v1.0/publish/{pubsub}/{topic:path}", self._publish, methods=["POST"]),
            Route("/v1.0-alpha1/publish/bulk/{pubsub}/{topic:path}", self._bulk, methods=["POST"]),
        ]
        with serving_in_thread(Starlette(routes=routes, lifespan=self._lifespan), self.port):
            yield self

    def log(self, topic: str) -> list[dict[str, Any]]:
        return [message.event for message in self.topics.get(topic, [])]

    def replay(self) -> None:
        """Deliver every message of every subscribed topic again, in log order."""
        assert self._loop is not None
        for subscription in self.subscriptions:
            for message in list(self.topics.get(subscription.topic, [])):
                self._count(1)
                self._loop.call_soon_threadsafe(self._put, message)

    async def settled(self, seconds: float = 5.0) -> None:
        """Wait until every delivery has ended in an outcome."""
        deadline = time.monotonic() + seconds
        while self._unfinished:
            if time.monotonic() > deadline:
                raise AssertionError(f"deliveries still pending: {self.outcomes[-5:]}")
            await asyncio.sleep(0.01)

    # --- the publish API ---------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        if self.api_token and request.headers.get(TOKEN_HEADER) != self.api_token:
            return _error(401, "ERR_UNAUTHORIZED", "invalid api token")
        if request.path_params["pubsub"] != self.pubsub_name:
            pubsub = request.path_params["pubsub"]
            return _error(404, "ERR_PUBSUB_NOT_FOUND", f"pubsub {pubsub} not found")
        return None

    async def _publish(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if self.down:
            return _error(500, "ERR_PUBSUB_PUBLISH_MESSAGE", "broker unreachable")
        content_type = request.headers.get("content-type", "text/plain").split(";")[0]
        try:
            data = json.loads(await request.body())
        except ValueError:
            return _error(400, "ERR_PUBSUB_CLOUD_EVENTS_SER", "body is not valid JSON")
        topic = request.path_params["topic"]
        key = request.query_params.get("metadata.partitionKey")
        self._append(topic, self._envelope(topic, data, content_type), key)
        return Response(status_code=204)

    async def _bulk(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        try:
            entries = json.loads(await request.body())
        except ValueError:
            return _error(400, "ERR_PUBSUB_EVENTS_SER", "body is not valid JSON")
        topic = request.path_params["topic"]
        if self.down:
            failed = [{"entryId": e.get("entryId"), "error": "broker unreachable"} for e in entries]
            return JSONResponse(
                {"failedEntries": failed, "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"}, 500
            )
        for entry in entries:
            event = entry["event"]
            data = json.loads(event) if isinstance(event, str) else event
            envelope = self._envelope(topic, data, entry.get("contentType", "text/plain"))
            self._append(topic, envelope, entry.get("metadata", {}).get("partitionKey"))
        return Response(status_code=204)

    def _envelope(self, topic: str, data: Any, content_type: str) -> dict[str, Any]:
        """What Dapr does: keep a CloudEvent as it is and add its attributes, or wrap data."""
        trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        added = {
            "pubsubname": self.pubsub_name,
            "topic": topic,
            "traceid": trace,
            "traceparent": trace,
            "tracestate": "",
        }
        if content_type == CLOUDEVENTS_JSON and isinstance(data, dict):
            defaults = {"source": "Dapr", "type": "com.dapr.event.sent", "specversion": "1.0"}
            return {**defaults, **data, **added}
        return {
            "id": str(uuid.uuid4()),
            "specversion": "1.0",
            "source": "Dapr",
            "type": "com.dapr.event.sent",
            "datacontenttype": content_type,
            "data": data,
            **added,
        }

    def _append(self, topic: str, event: dict[str, Any], key: str | None) -> None:
        message = Message(topic, event, key)
        self.topics.setdefault(topic, []).append(message)
        if any(s.topic == topic for s in self.subscriptions):
            for _ in range(1 + self.duplicates):
                self._count(1)
                self._put(message)

    def _count(self, change: int) -> None:
        with self._lock:
            self._unfinished += change

    def _put(self, message: Message) -> None:
        assert self._queue is not None
        self._queue.put_nowait(message)

    # --- delivery to the app ---------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        headers = {TOKEN_HEADER: self.app_token} if self.app_token else {}
        async with httpx.AsyncClient(base_url=self.app_url, headers=headers, timeout=5) as app:
            response = await app.get("/dapr/subscribe")
            response.raise_for_status()
            self.subscriptions = [
                Subscription(s["pubsubname"], s["topic"], s["route"], s.get("deadLetterTopic"))
                for s in response.json()
                if s["pubsubname"] == self.pubsub_name
            ]
            worker = asyncio.create_task(self._deliver_forever(app))
            try:
                yield
            finally:
                worker.cancel()

    async def _deliver_forever(self, app: httpx.AsyncClient) -> None:
        assert self._queue is not None
        while True:
            message = await self._queue.get()
            try:
                for subscription in self.subscriptions:
                    if subscription.topic == message.topic:
                        await self._deliver(app, subscription, message)
            finally:
                self._count(-1)

    async def _deliver(self, app: httpx.AsyncClient, sub: Subscription, message: Message) -> None:
        """One message to one subscription, retried in place: later ones wait, as on a
        Kafka partition."""
        event_id = str(message.event.get("id"))
        for attempt in range(1, self.max_attempts + 1):
            self.attempts[event_id] += 1
            outcome = await self._post(app, sub.route, message.event)
            if outcome in ("success", "not_found"):
                self.outcomes.append((event_id, outcome))
                return
            if outcome == "drop":
                self._dead_letter(sub, message, event_id, "drop")
                return
            await asyncio.sleep(min(self.backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF))
        self._dead_letter(sub, message, event_id, "dead")

    async def _post(self, app: httpx.AsyncClient, route: str, event: dict[str, Any]) -> str:
        try:
            response = await app.post(
                route, content=json.dumps(event), headers={"content-type": CLOUDEVENTS_JSON}
            )
        except httpx.HTTPError:
            return "retry"
        if response.status_code == 404:
            return "not_found"
        if not response.is_success:
            return "retry"
        try:
            status = response.json().get("status", "")
        except (ValueError, AttributeError):
            return "success"
        return {"": "success", "SUCCESS": "success", "DROP": "drop"}.get(status, "retry")

    def _dead_letter(self, sub: Subscription, message: Message, event_id: str, why: str) -> None:
        self.outcomes.append((event_id, why))
        logger.warning("dapr emulator: event %s %s on %s", event_id, why, sub.topic)
        if sub.dead_letter_topic:
            dead = Message(sub.dead_letter_topic, message.event, message.partition_key)
            self.topics.setdefault(sub.dead_letter_topic, []).append(dead)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errorCode": code, "message": message}, status_code=status)
