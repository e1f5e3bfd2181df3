"""The Clock protocol and the system clock: the only module that reads time or sleeps by itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio

# Rule: every other module takes a Clock (shell) or a `now` argument (core); ruff TID251 bans
# time.time, time.monotonic and datetime.now elsewhere.


class Clock(Protocol):
    """A source of time that the daemon's shell receives by injection."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale with an arbitrary origin; never goes backwards."""
        ...

    def utcnow(self) -> datetime:
        """The current wall-clock instant, UTC-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for `seconds` (≤ 0: just yield); cancellable."""
        ...

    def deadline_after(self, seconds: float) -> float:
        """The deadline of a cancel scope that ends `seconds` from now (on the event loop's
        clock, which `anyio.CancelScope(deadline=...)` reads)."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `datetime.now(UTC)` and `anyio.sleep`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()

    def utcnow(self) -> datetime:
        """`datetime.now(UTC)`."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """`anyio.sleep(max(seconds, 0))`."""
        await anyio.sleep(max(seconds, 0.0))

    def deadline_after(self, seconds: float) -> float:
        """`anyio.current_time() + seconds`."""
        return anyio.current_time() + seconds


class ScaledClock:
    """An accelerated clock for runs against the emulator's (`emulator --clock-speed`).

    World time is `start + (unix time - anchor) * speed`: two processes given the same three
    values agree on it without talking. The monotonic scale runs `speed` times faster than the
    real one, and sleeps and deadlines are `speed` times shorter, so every interval, budget and
    timeout of the daemon is in world seconds. (Timeouts that aiohttp or anyio take directly stay
    in real seconds.)

    Args:
        speed: world seconds per real second (>= 1).
        start: the world time (aware) at `anchor`.
        anchor: the real Unix time at which world time is `start`.
    """

    __slots__ = ("_anchor", "_speed", "_start")

    def __init__(self, *, speed: float, start: datetime, anchor: float) -> None:
        if speed <= 0:
            raise ValueError(f"ScaledClock: speed must be > 0, got {speed}")
        if start.tzinfo is None:
            raise ValueError("ScaledClock: start must be timezone-aware")
        self._speed = speed
        self._start = start.astimezone(UTC)
        self._anchor = anchor

    def __repr__(self) -> str:
        return f"ScaledClock(speed={self._speed:g}, start={self._start.isoformat()})"

    def monotonic(self) -> float:
        """`time.monotonic()` times `speed`."""
        return time.monotonic() * self._speed

    def utcnow(self) -> datetime:
        """The world time now."""
        return self._start + timedelta(seconds=(time.time() - self._anchor) * self._speed)

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of world time (`seconds / speed` real ones)."""
        await anyio.sleep(max(seconds, 0.0) / self._speed)

    def deadline_after(self, seconds: float) -> float:
        """The event loop's deadline `seconds` of world time from now."""
        return anyio.current_time() + seconds / self._speed
