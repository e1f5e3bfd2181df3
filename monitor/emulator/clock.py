"""The emulator's own time source: the wall clock, or a manual one for tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class WorldClock(Protocol):
    """What the emulator reads time from; the world is a pure function of seed and this clock."""

    def utcnow(self) -> datetime: ...

    def monotonic(self) -> float: ...


class WallClock:
    """Real UTC time and the process's monotonic clock."""

    def utcnow(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; for tests of the world and the throttle."""

    def __init__(self, start_at: datetime) -> None:
        self._now = start_at
        self._mono = 1000.0

    def utcnow(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`."""
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


class ScaledClock:
    """Real time sped up `speed` times: world time runs from `start` at the real instant `anchor`.

    World time is `start + (time.time() - anchor) * speed`; `monotonic()` is the real monotonic
    clock times `speed`, so throttle buckets refill (and tokens expire) in world seconds. Two
    processes given the same three numbers agree on world time without talking to each other.

    Args:
        speed: world seconds per real second (1 runs in real time).
        start: the world time at the real instant `anchor`.
        anchor: a real Unix time in seconds (usually the process start).

    Raises:
        ValueError: `speed` is not positive, or `start` is naive.
    """

    def __init__(self, speed: float, start: datetime, anchor: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.speed = float(speed)
        self.start = start.astimezone(UTC)
        self.anchor = float(anchor)

    def utcnow(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.anchor) * self.speed)

    def monotonic(self) -> float:
        return time.monotonic() * self.speed
