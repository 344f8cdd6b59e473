"""The one clock: every "now" in domain code comes from here, so tests can set it.

Production reads the system clock. Tests freeze it (`clock.freeze(at)`), move it
(`clock.advance(delta)`) or let it run from a chosen instant (`clock.start_at(at)`),
and `clock.reset()` goes back to the system clock. The MCP server imports the same
module, so a test that runs it in-process sees the same "now".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._frozen: datetime | None = None
        self._offset = timedelta()

    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        if self._frozen is not None:
            return self._frozen
        return datetime.now(UTC) + self._offset

    def freeze(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("freeze() needs a timezone-aware datetime")
        self._frozen = at.astimezone(UTC)

    def start_at(self, at: datetime) -> None:
        """Let time run, starting from `at` now."""
        if at.tzinfo is None:
            raise ValueError("start_at() needs a timezone-aware datetime")
        self._frozen = None
        self._offset = at.astimezone(UTC) - datetime.now(UTC)

    def advance(self, delta: timedelta) -> None:
        if self._frozen is not None:
            self._frozen += delta
        else:
            self._offset += delta

    def reset(self) -> None:
        self._frozen = None
        self._offset = timedelta()


clock = Clock()


def utc_now() -> datetime:
    """Now, from the one clock."""
    return clock.now()
