"""Scheduler regressions found by the estate benchmark, driven at the JobSource seam."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import anyio
import pytest
from structlog.testing import capture_logs

from monitor.checkpoints import MemoryCheckpointStore
from monitor.core.jobs import BackupJob, KnownEnded
from monitor.core.vaults import VaultRef
from monitor.scheduler import PollScheduler
from tests.test_scheduler import (
    SUB_A,
    ListSink,
    ScriptedSource,
    job,
    one_sink,
    settings,
    vault_ref,
)
from tests.virtual_time import VIRTUAL_TIME_BACKEND, LoopClock

pytestmark = pytest.mark.reliability


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """These tests run on virtual time: their fakes are in-process coroutines."""
    return VIRTUAL_TIME_BACKEND


async def test_job_finishing_after_it_left_the_window_is_emitted_once() -> None:
    """A tracked job that ends after its start fell out of the window: one event, no crash.

    Its terminal change and its removal from the window used to land in one checkpoint, which
    the store refuses ("keys both changed and removed"): the poll failed after emitting, so
    every later poll emitted the same event again and the vault never moved on.
    """
    vault = vault_ref(SUB_A, "v1")
    source = ScriptedSource([vault])
    started = LoopClock().utcnow() - timedelta(seconds=0.3)
    source.listed[vault.key] = [job(vault, "long", "InProgress", start=started)]
    sink, store = ListSink(), MemoryCheckpointStore()
    parsed = settings(lookback_s=1, overlap_s=0.1)
    scheduler = PollScheduler(
        source=source,
        rates=source,
        store=store,
        delivery=one_sink(store, sink, parsed),
        clock=LoopClock(),
        settings=parsed,
        rng=random.Random(1),
    )
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run)
            with anyio.fail_after(20):
                while not sink.statuses("long"):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                # The job's start is now older than the lookback: only a direct read finds it.
                await anyio.sleep(1.2)
                source.direct["long"] = job(vault, "long", "Completed", start=started)
                while ("InProgress", "Completed") not in sink.statuses("long"):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                polls = scheduler.stats.polls + scheduler.stats.failed_polls
                while scheduler.stats.polls + scheduler.stats.failed_polls < polls + 2:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            scheduler.stop()
    assert sink.statuses("long").count(("InProgress", "Completed")) == 1
    assert not [r for r in logs if r.get("event") == "poll.crashed"]


class WholeSecondSource(ScriptedSource):
    """Lists as ARM does: the window's start is cut to whole seconds by the `$filter` format."""

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]:
        return await super().list_jobs(vault, start_at.replace(microsecond=0), end_at)


async def test_job_listed_from_the_second_before_the_window_is_emitted_once() -> None:
    """A finished job from the second before the window start: one event, not one per poll.

    The list returns it (whole-second filter) but it started before the exact window start; it
    used to be forgotten after each poll, so the next poll in the same second saw it as new.
    """
    vault = vault_ref(SUB_A, "v1")
    source = WholeSecondSource([vault])
    sink, store = ListSink(), MemoryCheckpointStore()
    parsed = settings(lookback_s=3600, overlap_s=0.5, active_interval_s=0.05)
    scheduler = PollScheduler(
        source=source,
        rates=source,
        store=store,
        delivery=one_sink(store, sink, parsed),
        clock=LoopClock(),
        settings=parsed,
        rng=random.Random(1),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        with anyio.fail_after(20):
            while scheduler.stats.polls < 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            # Keep a running job whose start pins the window start just after a finished job's.
            base = LoopClock().utcnow()
            finished = job(vault, "done", "Completed", start=base.replace(microsecond=0))
            runner = job(
                vault,
                "runner",
                "InProgress",
                start=base.replace(microsecond=0) + timedelta(seconds=0.7),
            )
            source.listed[vault.key] = [finished, runner]
            polls = scheduler.stats.polls
            while scheduler.stats.polls < polls + 10:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        scheduler.stop()
    assert sink.statuses("done") == [(None, "Completed")]
