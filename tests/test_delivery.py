"""Delivery from the outbox (MemoryCheckpointStore) to sinks written here, on virtual time: order,
isolation, retry pacing, partial progress, permanent refusals, cursor placement, read-back
skips, filters, linger, drain, retention drops and status."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import ClassVar

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from monitor.checkpoints import MemoryCheckpointStore
from monitor.config_sinks import OutboxSettings, SinkFilter, SinkSettings, SinkStart
from monitor.delivery import PRUNE_INTERVAL_S, Delivery, SinkRoute
from monitor.errors import DeliveryError, StoreError
from monitor.outbox import EventLine, OutboxEvent, OutboxSink
from tests.test_store_outbox import V1, line, rendered, snap
from tests.virtual_time import VIRTUAL_TIME_BACKEND, LoopClock, VirtualTimeLoop


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """Virtual time: the sinks and the store are in-process coroutines."""
    return VIRTUAL_TIME_BACKEND


class RecordingClock(LoopClock):
    """The loop's clock, recording each sleep with the name of the task that slept."""

    __slots__ = ("sleeps",)

    def __init__(self) -> None:
        self.sleeps: list[tuple[str, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append((anyio.get_current_task().name or "", seconds))
        await super().sleep(seconds)

    def of(self, sink: str) -> list[float]:
        """The sleeps of sink `sink`'s worker (its retry delays)."""
        return [s for task, s in self.sleeps if task == f"sink {sink}"]


class RecordingSink:
    """Delivers by recording; `failures` are raised by the next calls, one each (None: that
    call succeeds). A DeliveryError with `delivered=k` records the batch's first k events; any
    other exception stands for a bug in the sink."""

    kind: ClassVar[str] = "test"

    def __init__(
        self,
        name: str,
        *failures: Exception | None,
        known: set[str] | None = None,
        poison: set[str] | None = None,
        dead: bool = False,
    ) -> None:
        self.name = name
        self.failures = list(failures)
        self.known = known or set()
        self.poison = poison or set()
        self.dead = dead
        self.calls: list[list[str]] = []
        self.delivered: list[str] = []
        self.gate: anyio.Event | None = None
        self.closed = False

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        assert batch, "deliver is never given an empty batch"
        ids = [e.event_id for e in batch]
        self.calls.append(ids)
        if self.gate is not None:
            await self.gate.wait()
        if self.dead:
            raise DeliveryError(f"{self.name} is down", status=503)
        if self.poison.intersection(ids):
            raise DeliveryError("refused", permanent=True, status=400)
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            if isinstance(failure, DeliveryError):
                self.delivered.extend(ids[: failure.delivered])
            raise failure
        self.delivered.extend(ids)

    async def delivered_ids(self) -> set[str]:
        return set(self.known)

    async def aclose(self) -> None:
        self.closed = True


class RecordingObserver:
    """A DeliveryObserver that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def sink_delivered(self, sink: str, kind: str, events: int) -> None:
        self.calls.append(("delivered", sink, events))

    def sink_failed(self, sink: str, kind: str) -> None:
        self.calls.append(("failed", sink))

    def sink_retried(self, sink: str, kind: str) -> None:
        self.calls.append(("retried", sink))

    def sink_dropped(self, sink: str, kind: str, reason: str, events: int) -> None:
        self.calls.append(("dropped", sink, reason, events))

    def sink_skipped(self, sink: str, kind: str, reason: str, events: int) -> None:
        self.calls.append(("skipped", sink, reason, events))

    def of(self, what: str, sink: str) -> list[tuple[object, ...]]:
        return [c for c in self.calls if c[0] == what and c[1] == sink]


def sink_settings(
    name: str,
    *,
    start: SinkStart = "oldest",
    batch: int = 100,
    linger_s: float = 0.0,
    retry_initial_s: float = 1.0,
    retry_max_s: float = 8.0,
    rule: SinkFilter | None = None,
) -> SinkSettings:
    return SinkSettings(
        type="webhook",
        name=name,
        filter=rule or SinkFilter(),
        start=start,
        batch_max_events=batch,
        linger_s=linger_s,
        retry_initial_s=retry_initial_s,
        retry_max_s=retry_max_s,
    )


def ids(*numbers: int) -> list[str]:
    return [line(n).event_id for n in numbers]


async def commit(
    store: MemoryCheckpointStore, events: Sequence[EventLine], *, age_s: float = 0.0
) -> None:
    """One poll's events, committed `age_s` ago."""
    now = LoopClock().utcnow() - timedelta(seconds=age_s)
    await store.save(V1, changed=[snap("a")], removed=[], polled_at=now, events=events, now=now)


async def commit_numbers(store: MemoryCheckpointStore, *numbers: int, age_s: float = 0.0) -> None:
    await commit(store, [line(n) for n in numbers], age_s=age_s)


class Rig:
    def __init__(
        self,
        store: MemoryCheckpointStore,
        routes: Sequence[tuple[OutboxSink, SinkSettings]],
        outbox: OutboxSettings | None = None,
    ) -> None:
        self.store = store
        self.clock = RecordingClock()
        self.observer = RecordingObserver()
        self.delivery = Delivery(
            outbox=store,
            routes=[SinkRoute(sink, s) for sink, s in routes],
            settings=outbox or OutboxSettings(),
            clock=self.clock,
            rng=random.Random(7),
            observer=self.observer,
        )

    def caught_up(self, seq: int) -> bool:
        """Every sink's cursor (in memory) is at `seq`, the last committed."""
        return self.store.last_seq == seq and all(s.depth == 0 for s in self.delivery.status())


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[Rig]:
    async with anyio.create_task_group() as tg:
        await tg.start(rig.delivery.run)
        yield rig
        tg.cancel_scope.cancel()


async def until(
    done: Callable[[], bool], timeout_s: float = 3600.0, *, step_s: float = 0.1
) -> None:
    """Wait (virtual time) until `done()` holds, looking every `step_s`; fails at the deadline."""
    with anyio.fail_after(timeout_s):
        while not done():  # noqa: ASYNC110 - the conditions span sinks and store
            await anyio.sleep(step_s)


async def test_order_is_kept_across_batches() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("s")
    await commit_numbers(store, *range(1, 8))
    async with running(Rig(store, [(sink, sink_settings("s", batch=3))])):
        await commit_numbers(store, *range(8, 12))
        await until(lambda: len(sink.delivered) == 11)
    assert sink.delivered == ids(*range(1, 12))
    assert all(len(c) <= 3 for c in sink.calls)
    assert await store.cursors() == {"s": 11}


async def test_a_dead_sink_does_not_delay_another() -> None:
    store = MemoryCheckpointStore()
    dead, good = RecordingSink("dead", dead=True), RecordingSink("good")
    rig = Rig(store, [(dead, sink_settings("dead")), (good, sink_settings("good"))])
    async with running(rig):
        for n in range(1, 6):
            await commit_numbers(store, n)
            await until(lambda n=n: len(good.delivered) == n, timeout_s=5)  # type: ignore[misc]
        status = {s.name: s for s in rig.delivery.status()}
    assert good.delivered == ids(1, 2, 3, 4, 5)
    assert dead.delivered == []
    assert (status["good"].depth, status["good"].failing) == (0, False)
    assert (status["dead"].depth, status["dead"].failing) == (5, True)
    assert await store.cursors() == {"dead": 0, "good": 5}
    assert rig.observer.of("failed", "dead")
    assert not rig.observer.of("failed", "good")


async def test_retry_after_is_honoured() -> None:
    store = MemoryCheckpointStore()
    busy = DeliveryError("429", retry_after_s=7.5, status=429)
    sink = RecordingSink("s", busy, DeliveryError("503", retry_after_s=30.0, status=503))
    await commit_numbers(store, 1, 2)
    rig = Rig(store, [(sink, sink_settings("s", retry_max_s=1.0, retry_initial_s=0.5))])
    async with running(rig):
        await until(lambda: len(sink.delivered) == 2)
    assert rig.clock.of("s") == [7.5, 30.0]  # above retry_max_s: the destination asked
    assert sink.calls == [ids(1, 2)] * 3
    assert len(rig.observer.of("failed", "s")) == 2
    assert len(rig.observer.of("retried", "s")) == 2


async def test_backoff_doubles_with_jitter_within_bounds() -> None:
    store = MemoryCheckpointStore()
    failures = [DeliveryError("down", status=503) for _ in range(8)]
    sink = RecordingSink("s", *failures)
    await commit_numbers(store, 1)
    rig = Rig(store, [(sink, sink_settings("s", retry_initial_s=0.5, retry_max_s=6.0))])
    async with running(rig):
        await until(lambda: len(sink.delivered) == 1)
    delays = rig.clock.of("s")
    assert len(delays) == 8
    for attempt, delay in enumerate(delays):
        bound = min(6.0, 0.5 * 2**attempt)
        assert bound / 2 <= delay <= bound, (attempt, delay)
    assert len(set(delays)) == len(delays), "the jitter varies the delays"
    assert sink.delivered == ids(1)


async def test_recovery_resets_the_backoff() -> None:
    store = MemoryCheckpointStore()
    down = [DeliveryError("down") for _ in range(4)]
    sink = RecordingSink("s", *down, None, DeliveryError("down again"))
    await commit_numbers(store, 1)
    rig = Rig(store, [(sink, sink_settings("s", retry_initial_s=1.0, retry_max_s=8.0))])
    async with running(rig):
        await until(lambda: len(sink.delivered) == 1)
        await commit_numbers(store, 2)
        await until(lambda: len(sink.delivered) == 2)
    *_, last = rig.clock.of("s")
    assert 0.5 <= last <= 1.0  # the first failure after a success waits retry_initial_s


async def test_partial_progress_advances_the_cursor_and_retries_the_rest() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("s", DeliveryError("half", delivered=2, status=503))
    cursors_seen: list[dict[str, int]] = []
    original = sink.deliver

    async def deliver(batch: Sequence[OutboxEvent]) -> None:
        cursors_seen.append(await store.cursors())
        await original(batch)

    sink.deliver = deliver  # type: ignore[method-assign]
    await commit_numbers(store, 1, 2, 3, 4, 5)
    async with running(Rig(store, [(sink, sink_settings("s"))])):
        await until(lambda: len(sink.delivered) == 5)
    assert sink.calls == [ids(1, 2, 3, 4, 5), ids(3, 4, 5)]
    assert sink.delivered == ids(1, 2, 3, 4, 5)
    assert cursors_seen == [{"s": 0}, {"s": 2}]
    assert await store.cursors() == {"s": 5}


async def test_a_permanent_failure_drops_exactly_the_poison_event() -> None:
    store = MemoryCheckpointStore()
    poison = line(6).event_id
    sink = RecordingSink("s", poison={poison})
    await commit_numbers(store, *range(1, 9))
    rig = Rig(store, [(sink, sink_settings("s", batch=8))])
    with capture_logs() as logs:
        async with running(rig):
            await until(lambda: rig.caught_up(8))
    assert sink.delivered == ids(1, 2, 3, 4, 5, 7, 8)
    assert rig.observer.of("dropped", "s") == [("dropped", "s", "rejected", 1)]
    assert sum(c[2] for c in rig.observer.of("delivered", "s")) == 7  # type: ignore[misc]
    assert not rig.observer.of("failed", "s")  # a refusal is not retried
    rejected = [e for e in logs if e["event"] == "sink.event_rejected"]
    assert [(e["sink"], e["event_id"], e["status"]) for e in rejected] == [("s", poison, 400)]
    assert rig.clock.of("s") == []
    assert await store.cursors() == {"s": 8}


async def test_start_now_and_oldest_place_the_cursor_and_store_it() -> None:
    store = MemoryCheckpointStore()
    await commit_numbers(store, 1, 2, 3)
    await store.advance("resumed", 2)
    new, old = RecordingSink("new"), RecordingSink("old", dead=True)
    resumed = RecordingSink("resumed")
    rig = Rig(
        store,
        [
            (new, sink_settings("new", start="now")),
            (old, sink_settings("old", start="oldest")),
            (resumed, sink_settings("resumed", start="now")),
        ],
    )
    with capture_logs() as logs:
        async with running(rig):
            placed = await store.cursors()
            assert (placed["new"], placed["old"]) == (3, 0)
            await until(lambda: len(resumed.delivered) == 1)
            await commit_numbers(store, 4)
            await until(lambda: len(new.delivered) == 1 and len(resumed.delivered) == 2)
            await until(lambda: bool(old.calls))
    assert new.delivered == ids(4)
    assert resumed.delivered == ids(3, 4)
    assert old.calls[0] == ids(1, 2, 3, 4) or old.calls[0] == ids(1, 2, 3)
    logged = {(e["sink"], e["seq"]) for e in logs if e["event"] == "sink.cursor_placed"}
    assert logged == {("new", 3), ("old", 0)}


async def test_delivered_ids_are_skipped_and_counted() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("file", known=set(ids(1, 2)))
    await commit_numbers(store, 1, 2, 3, 4)
    rig = Rig(store, [(sink, sink_settings("file"))])
    with capture_logs() as logs:
        async with running(rig):
            await until(lambda: len(sink.delivered) == 2)
            await commit_numbers(store, 1)  # the same id again, later: not skipped twice
            await until(lambda: len(sink.delivered) == 3)
    assert sink.delivered == ids(3, 4, 1)
    assert rig.observer.of("skipped", "file") == [("skipped", "file", "already_delivered", 2)]
    assert [e["events"] for e in logs if e["event"] == "sink.already_delivered"] == [2]
    assert await store.cursors() == {"file": 5}


async def test_the_filter_skips_and_counts() -> None:
    store = MemoryCheckpointStore()
    events = [
        EventLine.of(rendered("f1", "Failed")),
        EventLine.of(rendered("ok", "Completed")),
        EventLine.of(rendered("run", "InProgress")),
        EventLine.of(rendered("f2", "Failed")),
    ]
    sink = RecordingSink("alerts")
    rule = SinkFilter(outcomes=("FAILED",))
    await commit(store, events)
    rig = Rig(store, [(sink, sink_settings("alerts", rule=rule))])
    async with running(rig):
        await until(lambda: rig.caught_up(4))
    assert sink.delivered == [events[0].event_id, events[3].event_id]
    assert rig.observer.of("skipped", "alerts") == [("skipped", "alerts", "filtered", 2)]
    assert await store.cursors() == {"alerts": 4}


async def test_a_batch_the_filter_empties_moves_the_cursor_without_delivering() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("alerts")
    await commit(store, [EventLine.of(rendered("ok", "Completed"))])
    rig = Rig(store, [(sink, sink_settings("alerts", rule=SinkFilter(outcomes=("failed",))))])
    async with running(rig):
        await until(lambda: rig.caught_up(1))
    assert sink.calls == []
    assert await store.cursors() == {"alerts": 1}


async def test_linger_waits_to_fill_a_batch() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("s")
    rig = Rig(store, [(sink, sink_settings("s", batch=5, linger_s=10.0))])
    async with running(rig):
        await commit_numbers(store, 1, 2)
        await anyio.sleep(4)
        assert sink.calls == []
        await commit_numbers(store, 3, 4, 5, 6)
        await until(lambda: len(sink.delivered) == 6)
    # Full at 5 well before the linger ends; the sixth lingers on its own.
    assert sink.calls == [ids(1, 2, 3, 4, 5), ids(6)]


async def test_linger_delivers_a_short_batch_when_it_ends() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("s")
    rig = Rig(store, [(sink, sink_settings("s", batch=5, linger_s=10.0))])
    async with running(rig):
        await commit_numbers(store, 1, 2)
        await anyio.sleep(9)
        assert sink.calls == []
        await until(lambda: bool(sink.delivered), timeout_s=5)
    assert sink.calls == [ids(1, 2)]


async def test_drain_returns_when_caught_up_and_does_not_wait_for_a_failing_sink() -> None:
    store = MemoryCheckpointStore()
    dead, good = RecordingSink("dead", dead=True), RecordingSink("good")
    rig = Rig(store, [(dead, sink_settings("dead")), (good, sink_settings("good"))])
    async with running(rig):
        await commit_numbers(store, 1, 2, 3)
        with anyio.fail_after(600):
            await rig.delivery.drain(timeout_s=3600)
        assert good.delivered == ids(1, 2, 3)
        assert dead.calls


async def test_drain_waits_for_a_slow_sink() -> None:
    store = MemoryCheckpointStore()
    slow = RecordingSink("slow")
    slow.gate = anyio.Event()
    rig = Rig(store, [(slow, sink_settings("slow"))])
    async with running(rig):
        await commit_numbers(store, 1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.delivery.drain, 3600)
            await anyio.sleep(30)
            assert slow.delivered == []
            slow.gate.set()
        assert slow.delivered == ids(1)


async def test_retention_drops_are_counted_and_the_worker_continues_after_the_floor() -> None:
    """A sink stuck on event 1 while events 1-5 age past max_age: the prune drops the four it
    had not read (counted, logged), moves it to the floor, and it then delivers event 1 (in
    flight) and what comes later."""
    store = MemoryCheckpointStore()
    stuck = RecordingSink("stuck")
    stuck.gate = anyio.Event()
    outbox = OutboxSettings(max_age_s=60.0)
    rig = Rig(store, [(stuck, sink_settings("stuck", batch=1))], outbox)
    await commit_numbers(store, 1, 2, 3, 4, 5, age_s=30)
    with capture_logs() as logs:
        async with running(rig):
            await until(lambda: bool(stuck.calls))
            await until(lambda: bool(rig.observer.of("dropped", "stuck")), timeout_s=600)
            assert store.size[0] == 0
            stuck.gate.set()
            await commit_numbers(store, 6, 7)
            await until(lambda: len(stuck.delivered) == 3)
    assert stuck.delivered == ids(1, 6, 7)
    assert rig.observer.of("dropped", "stuck") == [("dropped", "stuck", "retention", 4)]
    dropped = [e for e in logs if e["event"] == "sink.dropped"]
    assert [(e["sink"], e["events"], e["reason"], e["max_age_s"]) for e in dropped] == [
        ("stuck", 4, "retention", 60.0)
    ]
    assert await store.cursors() == {"stuck": 7}
    assert ("outbox retention", PRUNE_INTERVAL_S) in rig.clock.sleeps


async def test_prune_deletes_what_every_sink_delivered() -> None:
    store = MemoryCheckpointStore()
    a, b = RecordingSink("a"), RecordingSink("b")
    rig = Rig(store, [(a, sink_settings("a")), (b, sink_settings("b"))])
    async with running(rig):
        await commit_numbers(store, 1, 2, 3)
        await until(lambda: len(a.delivered) == 3 and len(b.delivered) == 3)
        await rig.delivery.prune()
        assert rig.delivery.outbox_size == (0, 0)
    assert not rig.observer.of("dropped", "a")


async def test_status_depth_and_oldest_age() -> None:
    store = MemoryCheckpointStore()
    dead = RecordingSink("dead", dead=True)
    rig = Rig(store, [(dead, sink_settings("dead"))])
    async with running(rig):
        assert [(s.depth, s.oldest_age_s, s.failing) for s in rig.delivery.status()] == [
            (0, 0.0, False)
        ]
        await commit_numbers(store, 1, 2, age_s=100)
        await commit_numbers(store, 3)
        await until(lambda: rig.delivery.status()[0].failing)
        (status,) = rig.delivery.status()
        assert (status.name, status.kind, status.depth) == ("dead", "test", 3)
        assert status.oldest_age_s >= 100
        await anyio.sleep(50)
        assert rig.delivery.status()[0].oldest_age_s >= 150
        dead.dead = False
        await until(lambda: rig.delivery.status()[0].depth == 0)
        assert [(s.depth, s.oldest_age_s, s.failing) for s in rig.delivery.status()] == [
            (0, 0.0, False)
        ]


def test_sink_names_must_be_unique() -> None:
    store = MemoryCheckpointStore()
    with pytest.raises(ValueError, match="unique"):
        Rig(
            store,
            [(RecordingSink("x"), sink_settings("x")), (RecordingSink("x"), sink_settings("x"))],
        )


_failure = st.none() | st.builds(
    lambda k, after: DeliveryError("scripted", delivered=k, retry_after_s=after),
    st.integers(0, 6),
    st.none() | st.floats(0, 5),
)


@settings(max_examples=100, deadline=None)
@given(
    polls=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    failures=st.lists(_failure, max_size=8),
    poison=st.sets(st.integers(1, 30), max_size=3),
    batch=st.integers(1, 7),
)
def test_every_event_once_in_order_whatever_fails(
    polls: list[int], failures: list[DeliveryError | None], poison: set[int], batch: int
) -> None:
    """Whatever partial failures and refused events: every other event is delivered exactly
    once, in order; each refused one is dropped and counted once; the cursor reaches the end."""
    total = sum(polls)
    refused = set(ids(*sorted(n for n in poison if n <= total)))

    async def run() -> None:
        store = MemoryCheckpointStore()
        sink = RecordingSink("s", *failures, poison=refused)
        rig = Rig(store, [(sink, sink_settings("s", batch=batch, retry_max_s=2.0))])
        async with running(rig):
            n = 0
            for count in polls:
                await commit_numbers(store, *range(n + 1, n + count + 1))
                n += count
            await until(lambda: rig.caught_up(total))
        want = [i for i in ids(*range(1, total + 1)) if i not in refused]
        assert sink.delivered == want
        assert rig.observer.of("dropped", "s") == [("dropped", "s", "rejected", 1)] * len(refused)
        assert await store.cursors() == {"s": total}

    anyio.run(run, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})


async def test_a_retry_after_of_zero_waits_retry_initial_s() -> None:
    """A destination answering `Retry-After: 0` again and again makes no busy loop."""
    store = MemoryCheckpointStore()
    zero = [DeliveryError("429", retry_after_s=0.0, status=429) for _ in range(3)]
    sink = RecordingSink("s", *zero)
    await commit_numbers(store, 1)
    rig = Rig(store, [(sink, sink_settings("s", retry_initial_s=0.25))])
    async with running(rig):
        await until(lambda: bool(sink.delivered))
    assert rig.clock.of("s") == [0.25, 0.25, 0.25]


async def test_a_sink_that_crashes_is_retried_and_stops_nobody() -> None:
    """A sink's bug (an exception that is not a SinkError) is logged with its traceback once,
    and retried; another sink delivers meanwhile."""
    store = MemoryCheckpointStore()
    buggy = RecordingSink("buggy", KeyError("job"), KeyError("job"))
    good = RecordingSink("good")
    await commit_numbers(store, 1, 2)
    rig = Rig(store, [(buggy, sink_settings("buggy")), (good, sink_settings("good"))])
    with capture_logs() as logs:
        async with running(rig):
            await until(lambda: len(buggy.delivered) == 2 and len(good.delivered) == 2)
    crashed = [e for e in logs if e["event"] == "sink.crashed"]
    assert [(e["sink"], e["error"]) for e in crashed] == [("buggy", "KeyError: 'job'")]
    assert buggy.delivered == good.delivered == ids(1, 2)


async def test_a_retry_after_beyond_a_day_waits_a_day() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("s", DeliveryError("503", retry_after_s=10 * 86_400.0, status=503))
    await commit_numbers(store, 1)
    rig = Rig(store, [(sink, sink_settings("s"))])
    async with running(rig):
        await until(lambda: bool(sink.delivered), timeout_s=3 * 86_400, step_s=3600)
    assert rig.clock.of("s") == [86_400.0]


async def test_a_failure_is_logged_once_and_the_recovery_counts_the_attempts() -> None:
    store = MemoryCheckpointStore()
    sink = RecordingSink("s", *[DeliveryError("receiver down", status=503)] * 5)
    await commit_numbers(store, 1, 2)
    rig = Rig(store, [(sink, sink_settings("s", retry_max_s=2.0))])
    with capture_logs() as logs:
        async with running(rig):
            await until(lambda: len(sink.delivered) == 2)
    failed = [e for e in logs if e["event"] == "sink.delivery_failed"]
    assert [(e["sink"], e["error"], e["pending"]) for e in failed] == [("s", "receiver down", 2)]
    recovered = [e for e in logs if e["event"] == "sink.delivery_recovered"]
    assert [(e["sink"], e["failed_attempts"]) for e in recovered] == [("s", 5)]
    assert len(rig.observer.of("failed", "s")) == 5
    assert rig.observer.of("delivered", "s") == [("delivered", "s", 2)]


async def test_after_the_poison_event_the_rest_of_the_batch_goes_together() -> None:
    """Finding the refused event takes a bisection; the events after it are not then sent one
    request each."""
    store = MemoryCheckpointStore()
    sink = RecordingSink("s", poison={line(2).event_id})
    await commit_numbers(store, *range(1, 9))
    rig = Rig(store, [(sink, sink_settings("s", batch=8))])
    async with running(rig):
        await until(lambda: rig.caught_up(8))
    assert sink.delivered == ids(1, 3, 4, 5, 6, 7, 8)
    assert sink.calls == [
        ids(*range(1, 9)),
        ids(1, 2, 3, 4),
        ids(1, 2),
        ids(1),
        ids(2),
        ids(3, 4, 5, 6, 7, 8),
    ]


class CursorRefusingStore(MemoryCheckpointStore):
    """The memory store, whose cursor writes fail while `refusing` is set (a full volume)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = False

    async def advance(self, sink: str, seq: int) -> None:
        if self.refusing:
            raise StoreError("database or disk is full")
        await super().advance(sink, seq)


async def test_a_cursor_the_store_refused_is_stored_once_it_can_be() -> None:
    """Delivered while cursor writes fail, then nothing new comes: the worker stores the cursor
    by itself once the store works again, so a restart repeats nothing."""
    store = CursorRefusingStore()
    sink = RecordingSink("s")
    rig = Rig(store, [(sink, sink_settings("s"))])
    with capture_logs() as logs:
        async with running(rig):
            store.refusing = True
            await commit_numbers(store, 1, 2)
            await until(lambda: len(sink.delivered) == 2)
            assert (await store.cursors())["s"] == 0
            store.refusing = False
            with anyio.fail_after(60):  # virtual time
                while (await store.cursors())["s"] != 2:  # noqa: ASYNC110 - the store is the signal
                    await anyio.sleep(0.5)
    assert sink.delivered == ids(1, 2)
    events = [e["event"] for e in logs]
    assert events.count("sink.cursor_save_failed") == 1
    assert events.count("sink.cursor_saved") == 1


async def test_a_drain_stores_a_cursor_the_store_refused() -> None:
    store = CursorRefusingStore()
    sink = RecordingSink("s")
    rig = Rig(store, [(sink, sink_settings("s"))])
    async with running(rig):
        store.refusing = True
        await commit_numbers(store, 1)
        await until(lambda: len(sink.delivered) == 1)
        store.refusing = False
        await rig.delivery.drain(1.0)
        assert (await store.cursors())["s"] == 1
