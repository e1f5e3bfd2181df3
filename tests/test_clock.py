"""The system clock and the virtual FakeClock both honour the Clock protocol."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from monitor.clock import Clock, SystemClock
from tests.fakes import EPOCH, FakeClock


class TestSystemClock:
    def test_utcnow_is_utc_aware(self) -> None:
        """utcnow() carries a zero UTC offset."""
        clock: Clock = SystemClock()
        assert clock.utcnow().utcoffset() == timedelta(0)

    def test_monotonic_never_goes_back(self) -> None:
        """Two readings in a row are ordered."""
        clock = SystemClock()
        first = clock.monotonic()
        assert clock.monotonic() >= first

    async def test_sleep_really_sleeps_and_tolerates_negative(self) -> None:
        """sleep(0.01) takes at least that long; sleep(-1) returns at once."""
        clock = SystemClock()
        start = clock.monotonic()
        await clock.sleep(0.01)
        assert clock.monotonic() - start >= 0.009
        with anyio.fail_after(1):
            await clock.sleep(-1)


class TestFakeClock:
    async def test_sleep_advances_both_scales_without_waiting(self) -> None:
        """A one-hour sleep moves monotonic and utcnow by an hour, instantly."""
        clock: Clock = FakeClock()
        mono = clock.monotonic()
        with anyio.fail_after(1):
            await clock.sleep(3600)
        assert clock.monotonic() - mono == 3600
        assert clock.utcnow() == EPOCH + timedelta(hours=1)

    async def test_sleep_yields_so_it_is_cancellable(self) -> None:
        """A loop of fake sleeps can be cancelled from outside."""
        clock = FakeClock()
        with anyio.move_on_after(0.5) as scope:
            while True:
                await clock.sleep(1)
        assert scope.cancelled_caught
        assert len(clock.sleeps) > 0

    def test_advance_rejects_going_back(self) -> None:
        """Virtual time only moves forward."""
        clock = FakeClock()
        with pytest.raises(ValueError, match="back in time"):
            clock.advance(-1)

    def test_start_must_be_utc(self) -> None:
        """A naive or non-UTC start is refused."""
        with pytest.raises(ValueError, match="UTC"):
            FakeClock(start_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
        FakeClock(start_at=datetime(2026, 1, 1, tzinfo=UTC))
