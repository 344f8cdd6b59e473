"""An async JWKS cache: follows key rotation within a second, drops removed keys within
its max age, rides out JWKS outages, and never lets forged key ids drive the fetching.

Fetches are rate-limited, not lookups: one fetch at a time (everyone who needs a fetch waits
for the one in flight), at least MIN_FETCH_INTERVAL_SECONDS between two, a short backoff
after a failure, and fetches caused by an unknown `kid` drawn from a small token bucket.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import httpx
from jwt import PyJWK, PyJWKSet, PyJWTError

logger = logging.getLogger(__name__)

# Also the longest a request waits for a fetch to be allowed: a genuine new `kid` is then
# accepted on first sight, and a forged one costs its sender a wait rather than us a fetch.
MIN_FETCH_INTERVAL_SECONDS = 1.0
# Unknown-kid fetches allowed back to back (a second apart); then one per refetch cooldown.
UNKNOWN_KID_BURST = 3
# After a failure the next try waits 1 s, then 2 s: a JWKS that comes back is used within 2 s,
# and one that stays down gets one request every 2 s from each process.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 2.0
OUTAGE_LOG_EVERY = 30
# Better Auth's tokens live 15 minutes by default, so an outage of Better Auth itself ends
# long before this; past it, a key set nobody can confirm is no longer trusted (503).
STALE_LIMIT_SECONDS = 3600.0


class JWKSUnavailable(Exception):
    """No trusted key set is at hand and the JWKS endpoint cannot be reached."""


class UnknownKey(Exception):
    """The token names a key the JWKS does not list."""


class JWKSCache:
    """The key set, refreshed in the background once half of `max_age_seconds` has passed.

    A set older than `max_age_seconds` is refetched before use, so a removed key is refused
    within that time; it is used anyway while the JWKS cannot be reached, for at most
    `stale_limit_seconds` after it was fetched. Unknown key ids may cause UNKNOWN_KID_BURST
    fetches, then one per `refetch_cooldown_seconds`.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient,
        max_age_seconds: float = 60,
        refetch_cooldown_seconds: float = 10,
        stale_limit_seconds: float = STALE_LIMIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = url
        self._client = client
        self._max_age = max_age_seconds
        self._cooldown = refetch_cooldown_seconds
        self._stale_limit = max(stale_limit_seconds, max_age_seconds)
        self._clock = clock
        self._sleep = sleep
        self._keys: dict[str, PyJWK] | None = None
        self._fetched_at = -math.inf  # when the request that brought `_keys` was sent
        self._attempted_at = -math.inf  # when the last finished fetch, good or not, was sent
        self._next_start = -math.inf  # spacing and backoff: no fetch starts before this
        self._failures = 0
        self._tokens = float(UNKNOWN_KID_BURST)
        self._tokens_at = clock()
        self._fetch: asyncio.Task[None] | None = None

    async def key_for(self, kid: str | None) -> PyJWK:
        asked_at = self._clock()
        key = _lookup(await self._trusted_keys(), kid)
        # Only a fetch sent after the question can answer it; one already in flight may not.
        while key is None and self._attempted_at < asked_at:
            if not await self._fetch_soon(unknown_kid=True):
                break
            key = _lookup(self._keys or {}, kid)
        if key is None:
            raise UnknownKey(kid)
        return key

    async def aclose(self) -> None:
        """Stop a fetch in flight (before the HTTP client it uses is closed)."""
        if self._fetch is not None:
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)

    async def _trusted_keys(self) -> dict[str, PyJWK]:
        age = self._clock() - self._fetched_at
        outage = self._failures > 0 and age < self._stale_limit
        if self._keys is not None and (age < self._max_age or outage):
            due = age >= self._max_age / 2 and self._clock() >= self._next_start
            if due and self._fetch is None:
                self._start_fetch(0.0)
            return self._keys
        await self._fetch_soon(unknown_kid=False)
        if self._keys is None or self._clock() - self._fetched_at >= self._stale_limit:
            raise JWKSUnavailable("the JWKS endpoint cannot be reached")
        return self._keys

    async def _fetch_soon(self, *, unknown_kid: bool) -> bool:
        """Wait for the fetch in flight, or one that may start within a second; else False."""
        if self._fetch is None:
            now = self._clock()
            start = max(now, self._next_start)
            if unknown_kid:
                start = max(start, self._token_time(now))
            if start - now > MIN_FETCH_INTERVAL_SECONDS:
                return False
            if unknown_kid:
                self._tokens, self._tokens_at = self._tokens_at_time(start) - 1, start
            self._start_fetch(start - now)
        assert self._fetch is not None
        # Shielded: a client that hangs up must not cancel the fetch others are waiting for.
        await asyncio.shield(self._fetch)
        return True

    def _tokens_at_time(self, at: float) -> float:
        refilled = self._tokens + max(0.0, at - self._tokens_at) / self._cooldown
        return min(float(UNKNOWN_KID_BURST), refilled)

    def _token_time(self, now: float) -> float:
        missing = 1.0 - self._tokens_at_time(now)
        return now + max(0.0, missing) * self._cooldown

    def _start_fetch(self, delay: float) -> None:
        self._next_start = self._clock() + delay + MIN_FETCH_INTERVAL_SECONDS
        self._fetch = asyncio.create_task(self._run_fetch(delay))

    async def _run_fetch(self, delay: float) -> None:
        try:
            if delay > 0:
                await self._sleep(delay)
            sent = self._clock()
            try:
                keys = await self._download()
            except (httpx.HTTPError, ValueError, PyJWTError) as exc:
                self._failures += 1
                backoff = RETRY_FIRST_SECONDS * 2 ** min(self._failures - 1, 8)
                retry_in = min(backoff, RETRY_MAX_SECONDS)
                self._next_start = max(self._next_start, self._clock() + retry_in)
                # Retries come every 2 s through an outage: one line a minute is enough.
                loud = self._failures % OUTAGE_LOG_EVERY == 1
                logger.log(
                    logging.WARNING if loud else logging.DEBUG,
                    "JWKS fetch from %s failed (%s, %d in a row)",
                    self._url,
                    type(exc).__name__,
                    self._failures,
                )
            else:
                if self._failures:
                    logger.info("JWKS at %s answers again", self._url)
                self._keys, self._fetched_at, self._failures = keys, sent, 0
            self._attempted_at = sent
        finally:
            self._fetch = None

    async def _download(self) -> dict[str, PyJWK]:
        response = await self._client.get(self._url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("the JWKS document is not a JSON object")
        key_set = PyJWKSet.from_dict(document)
        return {key.key_id or "": key for key in key_set.keys}


def _lookup(keys: dict[str, PyJWK], kid: str | None) -> PyJWK | None:
    if kid is None:  # tolerated only when the set holds exactly one key
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid)
