"""Delivery from the outbox: one worker per sink, each with its own durable cursor.

Rules:
- Isolation: each sink has its own task, cursor and backoff; a sink that is down delays only
  itself. Polling never waits for a sink: it waits only for the outbox's commit.
- Order: a sink delivers events in outbox order; a batch that fails is retried before any
  later event is tried.
- The cursor moves after the sink said the events are delivered (at least once). A crash
  between the two repeats them, unless the sink can read back what it holds (the file sink):
  then the repeats are skipped (exactly once).
- Nothing is dropped silently: a refused event (a `permanent` failure of a batch of one) and
  events retention removed before a sink read them are counted and logged.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.clock import Clock
from monitor.config_fields import DAY_S
from monitor.config_sinks import OutboxSettings, SinkSettings
from monitor.core.cadence import backoff_s
from monitor.errors import DeliveryError, SinkError, StoreError
from monitor.outbox import Outbox, OutboxEvent, OutboxSink, SinkStatus
from monitor.sink_filter import passes

__all__ = [
    "PRUNE_INTERVAL_S",
    "Delivery",
    "DeliveryObserver",
    "SinkRoute",
]

log = structlog.get_logger("monitor.delivery")

PRUNE_INTERVAL_S: Final = 60.0
"""How often delivered events are deleted from the outbox and retention is applied."""
STORE_RETRY_S: Final = 5.0
"""The wait before reading the outbox again after a failed read."""


class DeliveryObserver(Protocol):
    """Told what each sink did (`Metrics` is one); called on the event loop."""

    def sink_delivered(self, sink: str, kind: str, events: int) -> None: ...

    def sink_failed(self, sink: str, kind: str) -> None: ...

    def sink_retried(self, sink: str, kind: str) -> None: ...

    def sink_dropped(self, sink: str, kind: str, reason: str, events: int) -> None: ...

    def sink_skipped(self, sink: str, kind: str, reason: str, events: int) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkRoute:
    """A sink and its `[[sinks]]` settings (filter, batching, retry pacing)."""

    sink: OutboxSink
    settings: SinkSettings


class _Worker:
    """Delivers one sink's events from the outbox, for as long as it runs."""

    def __init__(
        self,
        route: SinkRoute,
        outbox: Outbox,
        clock: Clock,
        rng: random.Random,
        observer: DeliveryObserver | None,
    ) -> None:
        self.sink, self.settings = route.sink, route.settings
        self.name, self.kind = route.sink.name, route.sink.kind
        self._outbox, self._clock, self._rng, self._observer = outbox, clock, rng, observer
        self.cursor = 0  # the last seq delivered or skipped
        self.reading = 0  # the highest seq read into memory
        self._head_at: float | None = None  # monotonic commit time of the oldest undelivered
        self._known: set[str] = set()  # ids the destination holds already (read back)
        self._failures = 0
        self._reported: str | None = None
        self._cursor_problem: str | None = None
        self._saved = 0  # the cursor the store holds

    # ------------------------------------------------------------------ state

    def status(self) -> SinkStatus:
        depth = max(self._outbox.last_seq - self.cursor, 0)
        age = 0.0
        if depth and self._head_at is not None:
            age = max(self._clock.monotonic() - self._head_at, 0.0)
        return SinkStatus(self.name, self.kind, depth, age, self._failures > 0)

    def settled(self, target: int) -> bool:
        """Caught up to `target`, or failing (a drain does not wait for a dead sink)."""
        return self.cursor >= target or self._failures > 0

    def moved_past(self, floor: int) -> None:
        """Retention removed every event up to `floor` (and moved a cursor below it, in the
        store too)."""
        if self.cursor < floor:
            self._saved = max(self._saved, floor)
        self.cursor, self.reading = max(self.cursor, floor), max(self.reading, floor)

    # ------------------------------------------------------------------ the loop

    async def start(self, cursor: int) -> None:
        self.cursor = self.reading = self._saved = cursor
        try:
            self._known = await self.sink.delivered_ids()
        except Exception as exc:  # the sink's bug is no reason not to deliver
            log.warning("sink.read_back_failed", sink=self.name, error=f"{exc}")
        if self._known:
            log.info("sink.read_back", sink=self.name, events=len(self._known))

    async def run(self) -> None:
        while True:
            batch = await self._next_batch()
            await self._deliver(batch)

    async def _next_batch(self) -> list[OutboxEvent]:
        limit = self.settings.batch_max_events
        while True:
            if self._outbox.last_seq <= self.cursor:
                self._head_at = None
                if self._cursor_problem is None:
                    await self._outbox.wait_beyond(self.cursor)
                else:  # caught up, but the store lacks the cursor: try it again now and then
                    with anyio.move_on_after(STORE_RETRY_S):
                        await self._outbox.wait_beyond(self.cursor)
                    await self.save_cursor()
                    continue
            if self._head_at is None:
                self._head_at = self._clock.monotonic()
            linger = self.settings.linger_s
            if linger > 0 and self._outbox.last_seq - self.cursor < limit:
                with anyio.move_on_after(linger):
                    while self._outbox.last_seq - self.cursor < limit:
                        await self._outbox.wait_beyond(self._outbox.last_seq)
            try:
                batch = await self._outbox.read(self.cursor, limit)
            except StoreError as exc:
                self._problem("sink.outbox_read_failed", str(exc), STORE_RETRY_S)
                await self._clock.sleep(STORE_RETRY_S)
                continue
            if batch:
                self.reading = max(self.reading, batch[-1].seq)
                # The oldest undelivered event's age counts from its commit.
                waited_s = (self._clock.utcnow() - batch[0].committed_at).total_seconds()
                self._head_at = min(self._head_at, self._clock.monotonic() - max(waited_s, 0.0))
                return batch
            # Retention removed what was past the cursor meanwhile.
            self.cursor = max(self.cursor, self._outbox.last_seq)

    def _wanted(self, batch: Sequence[OutboxEvent]) -> list[OutboxEvent]:
        rule = self.settings.filter
        wanted: list[OutboxEvent] = []
        filtered = known = 0
        for event in batch:
            if event.event_id in self._known:
                self._known.discard(event.event_id)
                known += 1
            elif rule.passes_all or passes(rule, event.event):
                wanted.append(event)
            else:
                filtered += 1
        if self._observer is not None:
            if filtered:
                self._observer.sink_skipped(self.name, self.kind, "filtered", filtered)
            if known:
                self._observer.sink_skipped(self.name, self.kind, "already_delivered", known)
        if known:
            log.info("sink.already_delivered", sink=self.name, events=known)
        return wanted

    async def _deliver(self, batch: list[OutboxEvent]) -> None:
        pending = self._wanted(batch)
        chunk = len(pending)
        while pending:
            head = pending[:chunk]
            try:
                await self.sink.deliver(head)
            except Exception as exc:
                error = self._as_delivery_error(exc)
                done = min(max(error.delivered, 0), len(head))
                if done:
                    await self._delivered(head[:done])
                    pending, head = pending[done:], head[done:]
                if error.permanent:
                    if len(head) == 1:
                        self._rejected(head[0], error)
                        await self._advance(head[0].seq)
                        pending = pending[1:]
                        chunk = len(pending)  # the rest goes together again
                    else:
                        chunk = max(len(head) // 2, 1)  # find the event it refuses
                    continue
                await self._retry_after(error, len(pending))
                continue
            await self._delivered(head)
            pending = pending[len(head) :]
        await self._advance(batch[-1].seq)
        self._head_at = None if self._outbox.last_seq <= self.cursor else self._clock.monotonic()

    def _as_delivery_error(self, exc: Exception) -> DeliveryError:
        """What a sink raised, as a DeliveryError. Anything but a SinkError is a bug in the
        sink: logged with its traceback (once per problem) and retried like a failure that may
        pass, so that one sink's bug never stops the others or the polls."""
        if isinstance(exc, DeliveryError):
            return exc
        if isinstance(exc, SinkError):
            return DeliveryError(str(exc))
        problem = f"{type(exc).__name__}: {exc}"
        if problem != self._reported:
            log.exception("sink.crashed", sink=self.name, error=problem)
        return DeliveryError(problem)

    async def _delivered(self, events: Sequence[OutboxEvent]) -> None:
        if self._failures:
            log.info("sink.delivery_recovered", sink=self.name, failed_attempts=self._failures)
        self._failures, self._reported = 0, None
        if self._observer is not None:
            self._observer.sink_delivered(self.name, self.kind, len(events))
        await self._advance(events[-1].seq)

    async def _retry_after(self, error: DeliveryError, pending: int) -> None:
        settings = self.settings
        self._failures += 1
        if self._observer is not None:
            self._observer.sink_failed(self.name, self.kind)
        if error.retry_after_s is not None:
            # Honoured up to a day; never under retry_initial_s (a `Retry-After: 0` answered
            # again and again must not make a busy loop).
            delay = min(max(error.retry_after_s, settings.retry_initial_s), DAY_S)
        else:
            base = backoff_s(
                self._failures - 1, cap_s=settings.retry_max_s, base_s=settings.retry_initial_s
            )
            delay = base * self._rng.uniform(0.5, 1.0)
        self._problem("sink.delivery_failed", str(error), delay, pending=pending)
        await self._clock.sleep(delay)
        if self._observer is not None:
            self._observer.sink_retried(self.name, self.kind)

    def _rejected(self, event: OutboxEvent, error: DeliveryError) -> None:
        if self._observer is not None:
            self._observer.sink_dropped(self.name, self.kind, "rejected", 1)
        log.error(
            "sink.event_rejected",
            sink=self.name,
            event_id=event.event_id,
            status=error.status,
            error=str(error),
        )

    async def _advance(self, seq: int) -> None:
        if seq <= self.cursor:
            return
        self.cursor = seq
        await self.save_cursor()

    async def save_cursor(self) -> None:
        """Store the cursor if the store lacks it. One that cannot be stored is kept in memory
        (nothing is delivered twice in this process) and stored again while the worker waits
        for events and at a stop; a restart before then repeats what was delivered since (at
        least once; the file sink's read-back skips it)."""
        if self.cursor <= self._saved:
            return
        seq = self.cursor
        try:
            await self._outbox.advance(self.name, seq)
        except StoreError as exc:
            if self._cursor_problem != str(exc):
                log.warning("sink.cursor_save_failed", sink=self.name, error=str(exc))
            self._cursor_problem = str(exc)
            return
        self._saved = max(self._saved, seq)
        if self._cursor_problem is not None:
            log.info("sink.cursor_saved", sink=self.name, seq=seq)
            self._cursor_problem = None

    def _problem(self, event: str, error: str, retry_in_s: float, **fields: object) -> None:
        """Log a failure once per distinct problem, not once per retry."""
        if error == self._reported:
            return
        self._reported = error
        log.warning(event, sink=self.name, error=error, retry_in_s=round(retry_in_s, 1), **fields)


class Delivery:
    """Every sink's worker, and the outbox's retention.

    Args:
        outbox: the committed events (the state store).
        routes: the sinks, in configuration order; their names are unique.
        settings: `[outbox]` retention.
        clock: time and sleeps.
        rng: jitter of the retry delays.
        observer: per-sink counts (the daemon's `Metrics`); None: not measured.
    """

    def __init__(
        self,
        *,
        outbox: Outbox,
        routes: Sequence[SinkRoute],
        settings: OutboxSettings,
        clock: Clock,
        rng: random.Random,
        observer: DeliveryObserver | None = None,
    ) -> None:
        names = [r.sink.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        self._outbox, self._settings, self._clock = outbox, settings, clock
        self._workers = [_Worker(r, outbox, clock, rng, observer) for r in routes]
        self._observer = observer

    def status(self) -> list[SinkStatus]:
        """Every sink now (scrape time)."""
        return [w.status() for w in self._workers]

    @property
    def outbox_size(self) -> tuple[int, int]:
        """Events the outbox holds and their bytes."""
        return self._outbox.size

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Place every sink's cursor, then deliver until cancelled; ready once placed.

        A sink without a cursor starts where its `start` setting says; the placement is stored
        at once, so it survives a crash before the first delivery.

        Raises:
            StoreError: the cursors could not be read or stored at start.
        """
        stored = await self._outbox.cursors()
        for worker in self._workers:
            cursor = stored.get(worker.name)
            if cursor is None:
                cursor = 0 if worker.settings.start == "oldest" else self._outbox.last_seq
                await self._outbox.advance(worker.name, cursor)
                log.info("sink.cursor_placed", sink=worker.name, seq=cursor)
            await worker.start(cursor)
        async with anyio.create_task_group() as tg:
            for worker in self._workers:
                tg.start_soon(worker.run, name=f"sink {worker.name}")
            tg.start_soon(self._prune_loop, name="outbox retention")
            task_status.started()

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until every sink that is not failing has delivered what
        was committed when this was called, then store the cursors the store refused before."""
        target = self._outbox.last_seq
        with anyio.move_on_after(timeout_s):
            while not all(w.settled(target) for w in self._workers):
                await self._clock.sleep(0.02)
        with anyio.move_on_after(timeout_s):
            for worker in self._workers:
                await worker.save_cursor()  # one the store refused earlier, once more

    async def _prune_loop(self) -> None:
        while True:
            await self.prune()
            await self._clock.sleep(PRUNE_INTERVAL_S)

    async def prune(self) -> None:
        """Delete what every sink delivered, and apply retention (counted, logged)."""
        settings = self._settings
        try:
            pruned = await self._outbox.prune(
                delivered={w.name: w.cursor for w in self._workers},
                reading={w.name: w.reading for w in self._workers},
                older_than=self._clock.utcnow() - timedelta(seconds=settings.max_age_s),
                max_bytes=settings.max_bytes,
            )
        except StoreError as exc:
            log.warning("outbox.prune_failed", error=str(exc))
            return
        by_name: Mapping[str, _Worker] = {w.name: w for w in self._workers}
        for worker in self._workers:
            worker.moved_past(pruned.floor)  # only a sink behind retention is moved
        for name, count in pruned.dropped.items():
            worker = by_name[name]
            if self._observer is not None:
                self._observer.sink_dropped(name, worker.kind, "retention", count)
            log.warning(
                "sink.dropped",
                sink=name,
                events=count,
                reason="retention",
                max_age_s=settings.max_age_s,
                max_bytes=settings.max_bytes,
            )
