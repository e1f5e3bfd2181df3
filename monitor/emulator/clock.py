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
