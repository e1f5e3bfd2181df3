"""The virtual-time loop: idle waits skip ahead, timers fire in order, deadlines and cancellation
work, and `LoopClock` reads the loop's time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from monitor.clock import Clock
from tests.virtual_time import VIRTUAL_TIME_BACKEND, LoopClock, VirtualTimeLoop


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return VIRTUAL_TIME_BACKEND


async def test_an_hour_long_sleep_passes_in_virtual_time() -> None:
    """A 1 h sleep ends with the loop's clock an hour on, long before an hour of real time."""
    real_start = time.monotonic()
    start = anyio.current_time()
    await anyio.sleep(3600)
    assert anyio.current_time() - start >= 3600
    assert time.monotonic() - real_start < 60  # generous: it takes milliseconds


async def test_the_loop_skips_only_what_it_would_have_waited() -> None:
    """Two sleeps in a row advance virtual time by their sum, not more than a little beyond."""
    start = anyio.current_time()
    await anyio.sleep(10)
    await anyio.sleep(20)
    elapsed = anyio.current_time() - start
    assert 30 <= elapsed < 31


async def test_move_on_after_fires_in_virtual_time() -> None:
    """A deadline of 60 s cancels a sleep of a day at 60 virtual seconds."""
    start = anyio.current_time()
    with anyio.move_on_after(60) as scope:
        await anyio.sleep(86400)
    assert scope.cancelled_caught
    assert 60 <= anyio.current_time() - start < 61


async def test_fail_after_raises_in_virtual_time() -> None:
    """An event that never comes ends with TimeoutError at the deadline, not a hang."""
    start = anyio.current_time()
    with pytest.raises(TimeoutError), anyio.fail_after(300):
        await anyio.Event().wait()
    assert 300 <= anyio.current_time() - start < 301


async def test_sleepers_wake_in_the_order_of_their_deadlines() -> None:
    """Three tasks sleeping 30, 10 and 20 s wake at 10, 20 and 30 virtual seconds."""
    start = anyio.current_time()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await anyio.sleep(seconds)
        woke.append((name, anyio.current_time() - start))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "slow", 30)
        tg.start_soon(sleeper, "fast", 10)
        tg.start_soon(sleeper, "middle", 20)
    assert [name for name, _ in woke] == ["fast", "middle", "slow"]
    for (_, at), expected in zip(woke, [10, 20, 30], strict=True):
        assert expected <= at < expected + 1


async def test_a_cancelled_sleeper_stops_at_once() -> None:
    """Cancelling a task group ends its long sleepers without advancing virtual time to them."""
    start = anyio.current_time()
    finished = False

    async def sleeper() -> None:
        nonlocal finished
        await anyio.sleep(3600)
        finished = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.sleep(5)
        tg.cancel_scope.cancel()
    assert not finished
    assert 5 <= anyio.current_time() - start < 6


async def test_time_waits_for_a_task_that_is_ready() -> None:
    """A task that only yields keeps the loop busy: no time is skipped under it."""
    loop_time = anyio.current_time()
    skipped = _loop().skipped_s
    for _ in range(100):
        await anyio.lowlevel.checkpoint()
    assert _loop().skipped_s == skipped
    assert anyio.current_time() - loop_time < 60


async def test_io_that_is_ready_is_not_skipped_over() -> None:
    """A message on a memory stream arrives before a timeout far in virtual time."""
    send, receive = anyio.create_memory_object_stream[str](1)
    async with send, receive, anyio.create_task_group() as tg:

        async def later() -> None:
            await anyio.sleep(5)
            await send.send("hello")

        tg.start_soon(later)
        with anyio.fail_after(10):
            assert await receive.receive() == "hello"


async def test_loop_clock_reads_the_loops_time() -> None:
    """LoopClock's monotonic, deadlines and wall clock move with virtual time."""
    clock: Clock = LoopClock()
    mono, wall = clock.monotonic(), clock.utcnow()
    assert wall.utcoffset() == timedelta(0)
    assert wall >= datetime.now(UTC) - timedelta(seconds=1)
    await clock.sleep(120)
    assert 120 <= clock.monotonic() - mono < 121
    assert timedelta(seconds=120) <= clock.utcnow() - wall < timedelta(seconds=121)
    assert clock.utcnow() >= datetime.now(UTC)  # ahead of the real wall clock, never behind
    with anyio.CancelScope(deadline=clock.deadline_after(30)) as scope:
        await anyio.sleep(3600)
    assert scope.cancelled_caught
    assert 150 <= clock.monotonic() - mono < 151
    await clock.sleep(-5)  # just yields


def _loop() -> VirtualTimeLoop:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    return loop


async def test_the_tests_run_on_the_virtual_time_loop() -> None:
    """The fixture above did select the virtual-time loop."""
    assert isinstance(_loop(), VirtualTimeLoop)
