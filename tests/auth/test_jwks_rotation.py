"""The JWKS cache on simulated time: rotation, removed keys, outages and floods of forged kids.

The cache runs on a simulated clock against a JWKS served through httpx's MockTransport with
real Ed25519 keys, so minutes of traffic take milliseconds and every bound is exact.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from jwt import PyJWK

from backend.auth.jwks import JWKSCache, JWKSUnavailable, UnknownKey
from tests.auth.support import SigningKey

# Loop turns that let every runnable task reach its next simulated sleep. Nothing here waits
# on real I/O, so the number needed is fixed by the code (6 today), not by the machine.
SETTLE_TURNS = 25
START = 1000.0

OLD, NEW = SigningKey("better-auth-key-1"), SigningKey("better-auth-key-2")


class SimTime:
    """A clock and a sleep that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = START
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, wake))
        await wake

    async def advance_to(self, until: float) -> None:
        """Move time on, waking each sleeper at its own instant."""
        await _settle()
        while (due := self._next_wake()) is not None and due <= until:
            self.now = max(self.now, due)
            for at, wake in self._sleepers:
                if at <= self.now and not wake.done():
                    wake.set_result(None)
            await _settle()
        self.now = max(self.now, until)
        await _settle()

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self.now + seconds)

    async def finish(self, task: asyncio.Future[object]) -> None:
        await _settle()
        while not task.done():
            due = self._next_wake()
            assert due is not None, "the task waits on something other than simulated time"
            await self.advance_to(due)

    def _next_wake(self) -> float | None:
        self._sleepers = [(at, wake) for at, wake in self._sleepers if not wake.done()]
        return min((at for at, _ in self._sleepers), default=None)


async def _settle() -> None:
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)


class FakeJWKS:
    """Better Auth's JWKS endpoint: real public keys, an off switch and a response time."""

    def __init__(self, sim: SimTime) -> None:
        self.sim = sim
        self.keys = [OLD]
        self.up = True
        self.latency = 0.0
        self.sent: list[float] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(self.sim.now)
        if self.latency:
            await self.sim.sleep(self.latency)
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"keys": [key.jwk() for key in self.keys]})

    def fetches_between(self, start: float, end: float) -> int:
        return sum(1 for at in self.sent if start <= at <= end)


@dataclass(frozen=True)
class Answer:
    got: str  # the accepted key's id, "unknown" (401) or "unavailable" (503)
    waited: float


def _answer(task: asyncio.Task[PyJWK], waited: float) -> Answer:
    error = task.exception()
    if isinstance(error, UnknownKey):
        return Answer("unknown", waited)
    if isinstance(error, JWKSUnavailable):
        return Answer("unavailable", waited)
    if error is not None:
        raise error
    return Answer(task.result().key_id or "", waited)


Event = tuple[float, str | Callable[[], None]]
"""At a simulated instant, a request for a key id, or a change to the JWKS."""


async def run(sim: SimTime, cache: JWKSCache, events: list[Event]) -> list[tuple[str, Answer]]:
    """Play the events in time order, each request concurrent with the others."""
    asked: list[tuple[str, float, asyncio.Task[PyJWK]]] = []
    finished: dict[asyncio.Task[PyJWK], float] = {}
    for at, event in sorted(events, key=lambda item: item[0]):
        await sim.advance_to(at)
        if callable(event):
            event()
            continue
        task = asyncio.create_task(cache.key_for(event))
        task.add_done_callback(lambda done: finished.setdefault(done, sim.now))
        asked.append((event, sim.now, task))
    everything = asyncio.gather(*(task for _, _, task in asked), return_exceptions=True)
    await sim.finish(asyncio.ensure_future(everything))
    return [(kid, _answer(task, finished[task] - at)) for kid, at, task in asked]


async def ask(sim: SimTime, cache: JWKSCache, kid: str) -> Answer:
    """One request's key lookup, run to its end: what it got and how long it waited."""
    [(_, answer)] = await run(sim, cache, [(sim.now, kid)])
    return answer


def forged(count: int, start: float, end: float) -> list[Event]:
    """`count` requests with random key ids, spread evenly over [start, end)."""
    step = (end - start) / count
    return [(start + index * step, uuid.uuid4().hex) for index in range(count)]


@pytest.fixture
def sim() -> SimTime:
    return SimTime()


@pytest.fixture
def jwks(sim: SimTime) -> FakeJWKS:
    return FakeJWKS(sim)


@pytest.fixture
async def cache(sim: SimTime, jwks: FakeJWKS) -> AsyncIterator[JWKSCache]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks.handle)) as client:
        cache = JWKSCache(
            "https://auth.example/api/auth/jwks", client=client, clock=sim, sleep=sim.sleep
        )
        yield cache
        await cache.aclose()


async def test_new_key_right_after_a_burst_of_unknown_kids_is_accepted_within_a_second(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache
) -> None:
    assert (await ask(sim, cache, OLD.kid)).got == OLD.kid
    flood = await run(sim, cache, forged(1000, START + 5, START + 6))
    await sim.advance_to(START + 6.5)
    jwks.keys = [NEW]  # Better Auth restarted with in-memory keys

    answer = await ask(sim, cache, NEW.kid)

    assert answer == Answer(NEW.kid, 0.5)  # the next fetch a second after the last one
    assert {a.got for _, a in flood} == {"unknown"}
    assert max(a.waited for _, a in flood) <= 1.0
    assert len(jwks.sent) == 4  # the first, two for the burst, one for the new key


async def test_sustained_flood_delays_a_new_key_by_at_most_the_refetch_cooldown(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache
) -> None:
    assert (await ask(sim, cache, OLD.kid)).got == OLD.kid
    # Just after a fetch the flood paid for (once its burst is spent, one every 10 s, the last
    # at START + 31): the worst moment to rotate.
    rotated_at = START + 31.5
    genuine: list[Event] = [(rotated_at + i / 10, NEW.kid) for i in range(200)]
    rotation: Event = (rotated_at, lambda: setattr(jwks, "keys", [OLD, NEW]))

    answers = await run(sim, cache, [*forged(1200, START + 1, START + 61), rotation, *genuine])

    results = [answer for kid, answer in answers if kid == NEW.kid]
    first = [answer.got for answer in results].index(NEW.kid)
    accepted_at = genuine[first][0] + results[first].waited
    assert accepted_at - rotated_at <= 10.0  # JWKSCache's default refetch cooldown
    assert {answer.got for answer in results[:first]} == {"unknown"}
    assert {answer.got for answer in results[first:]} == {NEW.kid}
    assert {answer.got for kid, answer in answers if kid != NEW.kid} == {"unknown"}


async def test_thousand_random_kids_over_a_minute_cause_at_most_nine_fetches(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache
) -> None:
    assert (await ask(sim, cache, OLD.kid)).got == OLD.kid

    flood = await run(sim, cache, forged(1000, START + 1, START + 61))

    assert {a.got for _, a in flood} == {"unknown"}
    assert max(a.waited for _, a in flood) <= 1.0
    # A burst of 3, then one per 10 s cooldown: 3 + 60 / 10.
    assert jwks.fetches_between(START + 1, START + 61) <= 9
    assert (await ask(sim, cache, OLD.kid)).got == OLD.kid


@pytest.mark.parametrize("rotated_after", [0.2, 5.0])
async def test_concurrent_requests_for_a_new_key_share_one_fetch(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache, rotated_after: float
) -> None:
    jwks.latency = 0.3
    assert (await ask(sim, cache, OLD.kid)).got == OLD.kid
    await sim.advance(rotated_after)
    jwks.keys = [OLD, NEW]

    answers = await run(sim, cache, [(sim.now, NEW.kid)] * 100)

    assert {a.got for _, a in answers} == {NEW.kid}
    assert max(a.waited for _, a in answers) <= 1.0 + jwks.latency
    assert len(jwks.sent) == 2


async def test_removed_key_is_refused_after_the_max_age_and_requests_never_wait_on_refresh(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache
) -> None:
    jwks.keys, jwks.latency = [OLD, NEW], 0.5
    assert (await ask(sim, cache, NEW.kid)).got == NEW.kid
    await sim.advance(1)
    jwks.keys = [NEW]
    removed_at = sim.now

    steps = [removed_at + 5 * i for i in range(1, 25)]
    events: list[Event] = [(at, OLD.kid) for at in steps]
    events += [(at + 0.01, NEW.kid) for at in steps]

    answers = await run(sim, cache, events)

    old = [answer.got for kid, answer in answers if kid == OLD.kid]
    assert {got for at, got in zip(steps, old, strict=True) if at >= removed_at + 60} == {"unknown"}
    assert {answer for kid, answer in answers if kid == NEW.kid} == {Answer(NEW.kid, 0.0)}


async def test_removed_key_is_refused_by_the_first_request_after_an_idle_max_age(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache
) -> None:
    jwks.keys = [OLD, NEW]
    assert (await ask(sim, cache, NEW.kid)).got == NEW.kid
    jwks.keys = [NEW]
    await sim.advance(60)

    assert (await ask(sim, cache, OLD.kid)).got == "unknown"
    assert (await ask(sim, cache, NEW.kid)).got == NEW.kid
    assert len(jwks.sent) == 2


@pytest.mark.parametrize("outage", [0.3, 20.0])
async def test_cold_start_with_the_jwks_down_accepts_tokens_within_two_seconds_of_its_return(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache, outage: float
) -> None:
    jwks.up = False
    while sim.now < START + outage:
        answer = await ask(sim, cache, OLD.kid)
        assert answer.got == "unavailable"
        assert answer.waited <= 1.0
        await sim.advance(0.25)
    attempts = len(jwks.sent)
    jwks.up = True
    back_at = sim.now

    while (answer := await ask(sim, cache, OLD.kid)).got != OLD.kid:
        assert answer.got == "unavailable"
        await sim.advance(0.25)

    assert sim.now - back_at <= 2.0
    assert attempts <= 2 + outage / 2  # 1 s after the first failure, then every 2 s


async def test_last_good_key_set_is_used_through_an_outage_for_an_hour(
    sim: SimTime, jwks: FakeJWKS, cache: JWKSCache
) -> None:
    assert (await ask(sim, cache, OLD.kid)).got == OLD.kid
    jwks.up = False

    during: list[Answer] = []
    while sim.now < START + 3600 - 30:
        await sim.advance(30)
        during.append(await ask(sim, cache, OLD.kid))
    unknown = await ask(sim, cache, NEW.kid)
    await sim.advance_to(START + 3600)
    after = await ask(sim, cache, OLD.kid)
    jwks.up = True
    await sim.advance(2)
    back = await ask(sim, cache, OLD.kid)

    assert set(during) == {Answer(OLD.kid, 0.0)}
    assert unknown.got == "unknown"
    assert after.got == "unavailable"
    assert back.got == OLD.kid
