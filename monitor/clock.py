"""The Clock protocol and the system clock: the only module that reads time or sleeps by itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime
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
