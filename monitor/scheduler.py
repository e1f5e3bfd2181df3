"""Owns the task group: discovery, paced polls of every vault, and the outcome of each poll.

Rules:
- One task group owns everything; nothing is fire-and-forget.
- One vault's failure (403, 404, timeouts, malformed pages) never touches another vault; a
  subscription's 429 pauses that subscription only.
- One poll (fetch → absorb → commit) is `monitor/poller.py`'s, around the pure step in
  `monitor/core/tracker.py`; what to watch is `monitor/discovery.py`'s.
- Delivery from the outbox (`monitor/delivery.py`) runs in the same task group from before the
  first discovery (what earlier runs committed goes out at once) until after the last poll
  (what it committed goes out, bounded by `DRAIN_S`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from monitor.checkpoints import StateStore
from monitor.clock import Clock
from monitor.config import Settings
from monitor.core.intervals import PlanSettings
from monitor.core.plan import Planner
from monitor.core.tracker import VaultCheckpoint, VaultJobs
from monitor.core.vaults import VaultRef
from monitor.delivery import Delivery
from monitor.discovery import Discovery, VaultDiscovery
from monitor.health import EstateHealth
from monitor.item_watcher import ItemWatcher
from monitor.metrics import Metrics
from monitor.poller import (
    CHECKPOINT_REFRESH_S,
    Ended,
    JobSource,
    PollStats,
    VaultPoller,
    WatchedVault,
    track_rules,
)

log = structlog.get_logger("monitor.scheduler")

SHUTDOWN_GRACE_S = 10.0
DRAIN_S = 5.0
"""At a stop, how long delivery may go on after the last poll committed (sinks that fail are
not waited for: their events stay in the outbox for the next start)."""
HEARTBEAT_S = 5.0  # the dispatch loop ticks at least this often, so /healthz can tell it lives


class RateSource(Protocol):
    """Each subscription's usable reads per second, and whether its budget is calm enough for
    spare reads: `pacing.BudgetBook` in production."""

    def rate_per_s(self, scope: str) -> float: ...

    def calm(self, scope: str) -> bool: ...


class PollScheduler:
    """Discovers vaults, polls each one when the planner says, and emits its job changes.

    Args:
        source: the ARM client (or another JobSource).
        rates: each subscription's usable reads/s for the planner (the ARM client's budgets).
        store: where each vault's known jobs are checkpointed and its events committed.
        delivery: the sinks' workers, fed from the store's outbox.
        clock: time, sleeps and deadlines.
        settings: the parsed configuration.
        rng: jitter for backoffs.
        metrics: where polls, events and checkpoint failures are counted; it also reads
            `estate_health()` at scrape time. None: nothing is measured.
        checkpoint_refresh_s: how old a stored poll time may grow before a poll that changed
            nothing saves anyway.
    """

    def __init__(
        self,
        *,
        source: JobSource,
        rates: RateSource,
        store: StateStore,
        delivery: Delivery,
        clock: Clock,
        settings: Settings,
        rng: random.Random,
        metrics: Metrics | None = None,
        checkpoint_refresh_s: float = CHECKPOINT_REFRESH_S,
        watcher: ItemWatcher | None = None,
    ) -> None:
        self._source, self._store, self._delivery, self._rates = source, store, delivery, rates
        self._watcher = watcher
        self._metrics = metrics
        self._started = False
        self._ticked_at: float | None = None
        if metrics is not None:
            metrics.watch(self)
        self._clock, self._settings, self._rng = clock, settings, rng
        self._discovery = VaultDiscovery(source, settings, clock, rng)
        poll = settings.poll
        self._planner = Planner(
            PlanSettings(
                active_interval_s=poll.active_interval_s,
                idle_interval_s=poll.idle_interval_s,
                max_in_flight_per_subscription=poll.max_concurrency_per_subscription,
                spare_fraction=settings.budget.spare_fraction,
                spare_polls_per_s=settings.budget.spare_polls_per_s,
            )
        )
        self.stats = PollStats()
        self._poller = VaultPoller(
            source=source,
            store=store,
            clock=clock,
            rules=track_rules(poll, refresh_s=checkpoint_refresh_s),
            rng=rng,
            metrics=metrics,
            stats=self.stats,
            item_of=None if watcher is None else watcher.item_id_of,
        )
        self._watched: dict[str, WatchedVault] = {}
        self._checkpoints: dict[str, VaultCheckpoint] = {}
        self._slots = anyio.Semaphore(poll.max_concurrency)
        self._wake: anyio.CancelScope | None = None
        self._wake_at = 0.0  # monotonic time the dispatcher sleeps until, while it sleeps
        self._scheduling: anyio.CancelScope | None = None
        self._startup: anyio.CancelScope | None = None
        self._stopping = False

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver, discover, then poll until `stop()`; ready after the first discovery.

        Raises:
            StartupError: the first discovery found no way to reach ARM.
            StoreError: the sinks' cursors could not be read or placed at start.
        """
        failure: Exception | None = None
        async with anyio.create_task_group() as delivering:
            await delivering.start(self._delivery.run, name="delivery")
            try:
                await self._poll(task_status)
            except Exception as exc:  # raised as itself, not in an ExceptionGroup
                failure = exc
            finally:
                with anyio.CancelScope(shield=True):
                    await self._delivery.drain(DRAIN_S)
                delivering.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _poll(self, task_status: TaskStatus[None]) -> None:
        with anyio.CancelScope() as startup:
            self._startup = startup
            if self._stopping:
                startup.cancel()
            self._checkpoints = await self._store.load()
            if self._watcher is not None:
                await self._watcher.load()
            found = await self._discovery.first()
        self._startup = None
        if self._stopping:
            log.info("shutdown.done", polls=0, events=0)
            return
        self._add(found.vaults)
        log.info("scheduler.started", vaults=len(self._watched))
        async with anyio.create_task_group() as polls:
            with anyio.CancelScope() as scheduling:
                self._scheduling = scheduling
                async with anyio.create_task_group() as loops:
                    loops.start_soon(self._discovery_loop, found, name="discovery")
                    loops.start_soon(self._dispatch_loop, polls, name="dispatch")
                    if self._watcher is not None:
                        loops.start_soon(self._watcher.run, name="items")
                    self._started = True
                    task_status.started()
            in_flight = self._settings.poll.max_concurrency - self._slots.value
            log.info("shutdown.waiting", polls_in_flight=in_flight, grace_s=SHUTDOWN_GRACE_S)
            polls.cancel_scope.deadline = self._clock.deadline_after(SHUTDOWN_GRACE_S)
        self._started = False
        log.info("shutdown.done", polls=self.stats.polls, events=self.stats.events)

    def stop(self) -> None:
        """Stop: a first discovery under way is abandoned; polls in flight finish (bounded)."""
        self._stopping = True
        for scope in (self._startup, self._scheduling):
            if scope is not None:
                scope.cancel()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stopping

    @property
    def watched(self) -> Sequence[VaultRef]:
        """The vaults being watched now."""
        return [w.vault for w in self._watched.values()]

    def estate_health(self) -> EstateHealth:
        """Vault states, staleness and the dispatch loop's liveness now (for /readyz, metrics).

        A vault is stale when its last successful poll in this process (or, never polled, the
        moment it started being watched) is older than its subscription's planner bound
        (`SubscriptionPlan.poll_bound_s`) plus one request timeout, the time a poll that
        started in time may take to finish.
        """
        slack_s = self._settings.azure.request_timeout_s
        return EstateHealth.of(
            self._watched.values(),
            now=self._clock.monotonic(),
            bound_s=lambda sub: self._planner.plan_for(sub).poll_bound_s + slack_s,
            started=self._started,
            stopping=self._stopping,
            ticked_at=self._ticked_at,
            store_problem=self._poller.store_problem,
        )

    # ------------------------------------- the watched set (what to watch: monitor/discovery.py)

    def _add(self, vaults: Iterable[VaultRef]) -> None:
        fresh = [v for v in vaults if v.key not in self._watched]
        for vault in fresh:
            checkpoint = self._checkpoints.pop(vault.key, None)
            watched = WatchedVault(vault=vault, added_at=self._clock.monotonic())
            if checkpoint is not None:
                watched.known = VaultJobs.restored(checkpoint)
                watched.running_jobs = watched.known.running
            self._watched[vault.key] = watched
            if self._watcher is not None:
                self._watcher.watch(vault)
            if self._metrics is not None:
                self._metrics.subscription_seen(vault.subscription_id)
            log.info("vault.watching", vault=vault.name, subscription=vault.subscription_id)
        now = self._clock.monotonic()
        for vault in fresh:
            sub = vault.subscription_id
            self._planner.set_rate(sub, self._rates.rate_per_s(sub), spare=self._rates.calm(sub))
        running = [v for v in fresh if self._watched[v.key].running_jobs]
        idle = [v for v in fresh if not self._watched[v.key].running_jobs]
        # Paced: the first polls come as fast as each subscription's budget serves them.
        if running:
            self._planner.add_vaults(running, now, running=True, paced=True)
        if idle:
            self._planner.add_vaults(idle, now, running=False, paced=True)
        self.stats.vaults = len(self._watched)
        self._wake_dispatcher()

    def _renew(self, vaults: Iterable[VaultRef]) -> None:
        """Take a watched vault's new description (a tenant or region learnt since): the
        events of its next polls carry it."""
        for vault in vaults:
            watched = self._watched.get(vault.key)
            if watched is not None and watched.vault != vault:
                watched.vault = vault
                if self._watcher is not None:
                    self._watcher.watch(vault)

    async def _drop(self, vault: VaultRef, reason: str) -> None:
        if self._watched.pop(vault.key, None) is None:
            return
        self._planner.remove_vault(vault.key)
        self._source.forget_vault(vault.key)
        if self._watcher is not None:
            self._watcher.unwatch(vault.key)
        log.warning("vault.dropped", vault=vault.name, vault_id=vault.id, reason=reason)
        with anyio.CancelScope(shield=True):
            await self._store.forget(vault.key)
        self.stats.vaults = len(self._watched)

    async def _discovery_loop(self, last: Discovery) -> None:
        """Rediscover every `interval_s`; sooner, with backoff, after a transient failure."""
        interval_s = self._settings.discovery.interval_s
        misses = 0
        while True:
            misses = misses + 1 if last.retry_soon else 0
            delay_s = interval_s
            if misses:
                delay_s = min(interval_s, self._discovery.backoff_s(misses - 1))
                log.info("discovery.retry_scheduled", retry_in_s=round(delay_s, 1))
            await self._clock.sleep(delay_s)
            try:
                known = {key: w.vault for key, w in self._watched.items()}
                last = await self._discovery.discover(known, first=False)
            except Exception:
                log.exception("discovery.failed")
                last = Discovery(vaults=[], reached=False)
                continue
            keys = {v.key for v in last.vaults}
            for watched in list(self._watched.values()):
                if watched.vault.key not in keys:
                    await self._drop(watched.vault, "no longer listed")
            self._renew(last.vaults)
            self._add(last.vaults)

    # ------------------------------------------------------------------------------ dispatch

    def _wake_dispatcher(self) -> None:
        """Wake the sleeping dispatcher if some vault is now due before it would wake."""
        if self._wake is None:
            return
        due_at = self._planner.next_due_at()
        if due_at is not None and due_at < self._wake_at:
            self._wake.cancel()

    async def _dispatch_loop(self, polls: TaskGroup) -> None:
        while True:
            now = self._clock.monotonic()
            self._ticked_at = now
            vault = self._planner.take_due(now)
            if vault is None:
                due_at = self._planner.next_due_at()
                delay = self._settings.discovery.interval_s if due_at is None else due_at - now
                delay = min(max(delay, 0.0), HEARTBEAT_S)
                with anyio.CancelScope() as wake:
                    self._wake, self._wake_at = wake, now + delay
                    await self._clock.sleep(delay)
                self._wake = None
                continue
            if self._slots.value > 0:
                self._slots.acquire_nowait()  # the common case: no scope, no timer
            else:
                while True:
                    with anyio.CancelScope(deadline=self._clock.deadline_after(HEARTBEAT_S)):
                        await self._slots.acquire()
                        break
                    self._ticked_at = self._clock.monotonic()
            polls.start_soon(self._poll_slot, vault, name=f"poll {vault.name}")

    async def _poll_slot(self, vault: VaultRef) -> None:
        try:
            await self._poll_guarded(vault)
        finally:
            self._slots.release()
            # The vault is back in the planner (or gone): the next due time may be earlier.
            self._wake_dispatcher()

    async def _poll_guarded(self, vault: VaultRef) -> None:
        watched = self._watched.get(vault.key)
        if watched is None:
            return
        bound = self._planner.binds(vault.subscription_id)
        result = await self._poller.attempt(watched, bound=bound)
        sub, started = vault.subscription_id, result.started
        match result.ended:
            case Ended.THROTTLED:
                # The budget already paused the whole subscription; keep the vault first in line.
                self._planner.release(vault.key)
                self._planner.hold(sub, started + result.retry_s)
            case Ended.GONE:
                await self._drop(vault, result.reason)
            case Ended.FAILED:
                # The planner counts the next poll from the last: push it back by the delay.
                self._planner.mark_polled(vault.key, started + result.retry_s)
            case Ended.OK:
                self._planner.set_rate(
                    sub, self._rates.rate_per_s(sub), spare=self._rates.calm(sub)
                )
                # A first poll reads the details of every finished job in the lookback: it
                # says nothing about what later polls cost, so it does not feed the planner's
                # reads-per-poll estimate (which would stretch every interval, and push back
                # every vault not yet polled).
                self._planner.mark_polled(
                    vault.key,
                    started,
                    running=watched.running_jobs > 0,
                    reads=result.reads,
                    terminals=result.terminals,
                )


__all__ = ["PollScheduler", "RateSource"]
