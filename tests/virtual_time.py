"""Virtual time for tests: an asyncio event loop whose clock jumps ahead whenever it is idle, and
the `Clock` that reads it.

`VirtualTimeLoop` is a `SelectorEventLoop` whose `time()` is the real monotonic time plus the
seconds it has skipped. When every task is blocked and the loop would wait for its next timer,
it first waits `GRACE_S` of real time for I/O and, if none came, skips the rest of the wait: the
earliest timer (a sleep, a `move_on_after` or `fail_after` deadline, a poll interval) fires at
once, in the spirit of trio's `MockClock(autojump_threshold=...)`. So an hour of scheduler polls
runs in milliseconds, and a test that waits for something that never happens fails at its
`fail_after` deadline at once instead of hanging. With no timer pending, the loop blocks for
real, as any loop would.

`LoopClock` is the `monitor.clock.Clock` on that loop: `monotonic()` and `deadline_after()` read
the loop's clock (`anyio.current_time()`), `sleep` is `anyio.sleep`, and `utcnow()` is the real
wall clock plus the seconds the loop skipped. That keeps it at or ahead of `datetime.now(UTC)`,
so fixtures that build jobs "now" with `datetime.now(UTC)` (or a module-level `NOW`) stay inside
the scheduler's windows, and it moves forward with every skip, so windows and lookbacks age in
virtual time. On any other loop, `LoopClock` is just the system clock.

Use it from a test module with the `anyio_backend` fixture:

    @pytest.fixture
    def anyio_backend() -> tuple[str, dict[str, object]]:
        return VIRTUAL_TIME_BACKEND

Limits: the loop only knows it is idle, not why. Work it cannot see — a worker thread
(`anyio.to_thread`, so the SQLite store and the file sinks), a subprocess, a real socket whose
peer takes longer than `GRACE_S` to answer — lets virtual time jump past timeouts while that
work is still running for real: a read would time out that never would in real time. So use it
for tests whose fakes are in-process coroutines (the scheduler against `ScriptedSource`,
`MemoryCheckpointStore` and `ListSink`), never for tests against the emulator, `hostile_arm`,
the daemon or the real store and sinks; those stay on real time.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

GRACE_S = 0.001
"""Real seconds an idle loop waits for I/O before it skips to its next timer."""


class _IdleSkippingSelector(selectors.BaseSelector):
    """A selector that, asked to wait, waits `GRACE_S` for real and skips the rest of the wait."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= GRACE_S:
            return self._inner.select(timeout)
        deadline = self._loop.time() + timeout
        ready = self._inner.select(GRACE_S)
        if not ready:
            self._loop.skip(deadline - self._loop.time())
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock skips ahead to the next timer whenever the loop is idle."""

    def __init__(self) -> None:
        self._skipped_s = 0.0
        super().__init__(_IdleSkippingSelector(self))

    @property
    def skipped_s(self) -> float:
        """Seconds of virtual time added so far on top of the real time."""
        return self._skipped_s

    def skip(self, seconds: float) -> None:
        """Move this loop's clock forward by `seconds` (≤ 0: no change)."""
        self._skipped_s += max(seconds, 0.0)

    def time(self) -> float:
        """Real monotonic seconds plus the skipped ones."""
        return time.monotonic() + self._skipped_s


VIRTUAL_TIME_BACKEND: tuple[str, dict[str, object]] = ("asyncio", {"loop_factory": VirtualTimeLoop})
"""The `anyio_backend` value that runs a test on `VirtualTimeLoop`."""


def _skipped_s() -> float:
    loop = asyncio.get_running_loop()
    return loop.skipped_s if isinstance(loop, VirtualTimeLoop) else 0.0


class LoopClock:
    """The `Clock` of the running event loop: virtual on `VirtualTimeLoop`, real elsewhere."""

    __slots__ = ()

    def monotonic(self) -> float:
        """The loop's clock, `anyio.current_time()`."""
        return anyio.current_time()

    def utcnow(self) -> datetime:
        """The real wall clock plus the seconds the loop skipped, UTC-aware."""
        return datetime.now(UTC) + timedelta(seconds=_skipped_s())

    async def sleep(self, seconds: float) -> None:
        """`anyio.sleep(max(seconds, 0))`, on the loop's clock."""
        await anyio.sleep(max(seconds, 0.0))

    def deadline_after(self, seconds: float) -> float:
        """`anyio.current_time() + seconds`."""
        return anyio.current_time() + seconds
