"""An async JWKS cache: never blocks the event loop, survives JWKS outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

logger = logging.getLogger(__name__)


class JWKSUnavailable(Exception):
    """No key set has ever been fetched and the JWKS endpoint cannot be reached."""


class UnknownKey(Exception):
    """The token names a key the JWKS does not list."""


class JWKSCache:
    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient,
        max_age_seconds: float = 300,
        refetch_cooldown_seconds: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._client = client
        self._max_age = max_age_seconds
        self._cooldown = refetch_cooldown_seconds
        self._clock = clock
        self._keys: dict[str, PyJWK] | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> PyJWK:
        keys = self._keys
        stale = keys is None or self._clock() - self._fetched_at > self._max_age
        if keys is None or stale or self._lookup(keys, kid) is None:
            keys = await self._refresh()
        key = self._lookup(keys, kid)
        if key is None:
            raise UnknownKey(kid)
        return key

    @staticmethod
    def _lookup(keys: dict[str, PyJWK], kid: str | None) -> PyJWK | None:
        if kid is None:  # tolerated only when the set holds exactly one key
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    async def _refresh(self) -> dict[str, PyJWK]:
        async with self._lock:
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self._cooldown:
                if self._keys is None:
                    raise JWKSUnavailable("JWKS not available yet")
                return self._keys
            self._last_attempt = now
            try:
                self._keys = await self._fetch()
                self._fetched_at = now
            except (httpx.HTTPError, ValueError, PyJWKError, PyJWKSetError) as exc:
                logger.warning("JWKS fetch from %s failed: %s", self._url, type(exc).__name__)
                if self._keys is None:
                    raise JWKSUnavailable("JWKS endpoint unreachable") from exc
            return self._keys

    async def _fetch(self) -> dict[str, PyJWK]:
        response = await self._client.get(self._url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("the JWKS document is not a JSON object")
        key_set = PyJWKSet.from_dict(document)
        return {key.key_id or "": key for key in key_set.keys}
