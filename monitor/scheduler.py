"""Owns the task group: discovery, paced polls of every vault, and diff → sink → store per poll.

Rules:
- One task group owns everything; nothing is fire-and-forget.
- A vault's events are emitted before its checkpoint is written (at-least-once); emit and save
  are shielded together, so a clean stop never emits without checkpointing.
- What was emitted is never emitted again in this process: once a batch is out, the vault's
  state moves on in memory, and a checkpoint that fails is retried with the next polls (the
  changes it did not store are kept in `WatchedVault.unsaved`) until the store takes it.
- One job's trouble is that job's: a failed direct read or detail read, or a job that cannot be
  rendered, never fails the vault's poll. A terminal change whose details cannot be read is held
  back (not applied, so the next poll sees it again) for up to `poll.detail_retry_s`.
- One vault's failure (403, 404, timeouts, malformed pages) never touches another vault; a
  subscription's 429 pauses that subscription only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from monitor.clock import Clock
from monitor.config import Settings
from monitor.core.cadence import backoff_s
from monitor.core.diff import JobSnapshot, JobStateChanged, apply, diff_jobs
from monitor.core.jobs import BackupJob, JobDetails, JobKey
from monitor.core.plan import Planner, PlanSettings
from monitor.core.vaults import VaultRef
from monitor.discovery import Discovery, VaultDiscovery, VaultSource
from monitor.errors import (
    TRANSIENT_ARM_ERRORS,
    ArmError,
    ArmForbidden,
    ArmNotFound,
    ArmThrottled,
    ParseError,
    SinkError,
    StoreError,
)
from monitor.events import EmittedEvent, render_event
from monitor.health import EstateHealth, VaultState
from monitor.metrics import Metrics
from monitor.recovery import roll_forward
from monitor.sinks import Sink
from monitor.store import CheckpointStore, VaultCheckpoint

log = structlog.get_logger("monitor.scheduler")

LIST_END_SLACK = timedelta(minutes=5)  # the window's end lies past now: clocks differ a little
BACKOFF_CAP_S = 300.0
FORBIDDEN_RETRY_S = 300.0
DETAIL_ATTEMPTS = 2  # detail reads within one poll before the change is held for the next
DETAIL_RETRY_DELAY_S = 1.0  # between them (jittered)
SHUTDOWN_GRACE_S = 10.0
COMMIT_TIMEOUT_S = 30.0
CHECKPOINT_REFRESH_S = 300.0
"""A poll that changed nothing skips the checkpoint unless the stored poll time is this old.

The stored poll time only starts the first window after a restart; one that is older widens that
window (jobs already checkpointed are not emitted again) and never loses a change, while most
polls change nothing and would each cost a SQLite transaction."""
HEARTBEAT_S = 5.0  # the dispatch loop ticks at least this often, so /healthz can tell it lives


class JobSource(VaultSource, Protocol):
    """Where jobs come from: `ArmClient` in production; the vault reads are `VaultSource`'s."""

    async def list_jobs(
        self, vault: VaultRef, start_at: datetime, end_at: datetime
    ) -> list[BackupJob]: ...

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails: ...

    def rate_per_s(self, subscription_id: str) -> float: ...


@dataclass(slots=True, eq=False)
class WatchedVault:
    """What the scheduler knows of one vault between polls."""

    vault: VaultRef
    jobs: dict[JobKey, JobSnapshot] = field(default_factory=dict)
    polled_at: datetime | None = None  # observed time of the last successful poll
    saved_at: datetime | None = None  # the poll time the checkpoint store holds
    # What `jobs` holds and the store does not yet: rolled forward at start, or a failed save's.
    unsaved: dict[JobKey, JobSnapshot] = field(default_factory=dict)
    unsaved_removed: set[JobKey] = field(default_factory=set)
    # Terminal changes held back while their details cannot be read: first failure (monotonic)
    # and the job as last seen (its start keeps the window open; a vanished one is emitted).
    held: dict[JobKey, tuple[float, BackupJob]] = field(default_factory=dict)
    skipped: set[JobKey] = field(default_factory=set)  # jobs whose trouble was logged once
    failures: int = 0
    reported: str | None = None  # the last problem logged, so a repeat is not logged again
    state: VaultState = VaultState.PENDING
    added_at: float = 0.0  # monotonic time it started being watched
    ok_at: float | None = None  # monotonic start of its last successful poll in this process
    running_jobs: int = 0  # tracked jobs not in a terminal state, after the last poll

    @property
    def has_running_jobs(self) -> bool:
        return any(not s.status.is_terminal for s in self.jobs.values())


@dataclass(slots=True)
class PollStats:
    """Counts a run keeps for its summary and for tests."""

    polls: int = 0
    failed_polls: int = 0
    events: int = 0
    throttled: int = 0
    vaults: int = 0
    checkpoint_failures: int = 0


class PollScheduler:
    """Discovers vaults, polls each one when the planner says, and emits its job changes.

    Args:
        source: the ARM client (or another JobSource).
        store: where each vault's known jobs are checkpointed.
        sink: where events go.
        clock: time and sleep.
        settings: the parsed configuration.
        rng: jitter for backoffs.
        metrics: where polls, events and checkpoint failures are counted; it also reads
            `estate_health()` at scrape time. None: nothing is measured.
    """

    def __init__(
        self,
        *,
        source: JobSource,
        store: CheckpointStore,
        sink: Sink,
        clock: Clock,
        settings: Settings,
        rng: random.Random,
        metrics: Metrics | None = None,
    ) -> None:
        self._source, self._store, self._sink = source, store, sink
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
            )
        )
        self._watched: dict[str, WatchedVault] = {}
        self._checkpoints: dict[str, VaultCheckpoint] = {}
        self._unsaved: dict[str, list[JobSnapshot]] = {}
        self._store_problem: str | None = None  # the last checkpoint failure, until one succeeds
        self._slots = anyio.Semaphore(poll.max_concurrency)
        self._wake: anyio.CancelScope | None = None
        self._wake_at = 0.0  # monotonic time the dispatcher sleeps until, while it sleeps
        self._scheduling: anyio.CancelScope | None = None
        self._startup: anyio.CancelScope | None = None
        self._stopping = False
        self.stats = PollStats()

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Discover, then poll until `stop()`; reports readiness after the first discovery.

        Raises:
            StartupError: the first discovery found no way to reach ARM.
        """
        with anyio.CancelScope() as startup:
            self._startup = startup
            if self._stopping:
                startup.cancel()
            self._checkpoints = await self._recover(await self._store.load())
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
                    self._started = True
                    task_status.started()
            in_flight = self._settings.poll.max_concurrency - self._slots.value
            log.info("shutdown.waiting", polls_in_flight=in_flight, grace_s=SHUTDOWN_GRACE_S)
            polls.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_GRACE_S
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

    async def _recover(self, stored: dict[str, VaultCheckpoint]) -> dict[str, VaultCheckpoint]:
        """The stored checkpoints rolled forward to the sink's last events (see recovery.py)."""
        try:
            recent = await self._sink.recent_events()
        except SinkError as exc:
            log.warning("recovery.skipped", error=str(exc))
            return stored
        recovered = roll_forward(stored, recent)
        self._unsaved = recovered.unsaved
        if recovered.jobs:
            log.info(
                "recovery.rolled_forward",
                jobs=recovered.jobs,
                vaults=len(recovered.unsaved),
                events_read=len(recent),
            )
        return recovered.checkpoints

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
        now = self._clock.monotonic()
        slack_s = self._settings.azure.request_timeout_s
        bounds: dict[str, float] = {}
        states: dict[VaultState, int] = {}
        stale: list[str] = []
        pending: list[str] = []
        oldest: float | None = None
        running = 0
        for w in self._watched.values():
            states[w.state] = states.get(w.state, 0) + 1
            running += w.running_jobs
            sub = w.vault.subscription_id.lower()
            bound = bounds.get(sub)
            if bound is None:
                bound = bounds[sub] = self._planner.plan_for(sub).poll_bound_s + slack_s
            age = now - (w.ok_at if w.ok_at is not None else w.added_at)
            oldest = age if oldest is None else max(oldest, age)
            if w.ok_at is None:
                pending.append(w.vault.name)
            if age > bound:
                stale.append(w.vault.name)
        return EstateHealth(
            started=self._started,
            stopping=self._stopping,
            dispatch_age_s=None if self._ticked_at is None else now - self._ticked_at,
            vaults_by_state=states,
            running_jobs=running,
            oldest_poll_age_s=oldest,
            stale_vaults=tuple(sorted(stale)),
            pending_vaults=tuple(sorted(pending)),
            store_problem=self._store_problem,
            unsaved_vaults=sum(1 for w in self._watched.values() if w.unsaved or w.unsaved_removed),
        )

    # ------------------------------------- the watched set (what to watch: monitor/discovery.py)

    def _add(self, vaults: Iterable[VaultRef]) -> None:
        fresh = [v for v in vaults if v.key not in self._watched]
        for vault in fresh:
            checkpoint = self._checkpoints.pop(vault.key, None)
            watched = WatchedVault(vault=vault, added_at=self._clock.monotonic())
            if checkpoint is not None:
                watched.jobs = dict(checkpoint.jobs)
                watched.polled_at = watched.saved_at = checkpoint.polled_at
                watched.unsaved = {s.key: s for s in self._unsaved.pop(vault.key, [])}
                watched.running_jobs = _running(watched.jobs)
            self._watched[vault.key] = watched
            if self._metrics is not None:
                self._metrics.subscription_seen(vault.subscription_id)
            log.info("vault.watching", vault=vault.name, subscription=vault.subscription_id)
        now = self._clock.monotonic()
        for vault in fresh:
            self._planner.set_rate(
                vault.subscription_id, self._source.rate_per_s(vault.subscription_id)
            )
        running = [v for v in fresh if self._watched[v.key].has_running_jobs]
        idle = [v for v in fresh if not self._watched[v.key].has_running_jobs]
        # Paced: the first polls come as fast as each subscription's budget serves them.
        if running:
            self._planner.add_vaults(running, now, running=True, paced=True)
        if idle:
            self._planner.add_vaults(idle, now, running=False, paced=True)
        self.stats.vaults = len(self._watched)
        self._wake_dispatcher()

    async def _drop(self, vault: VaultRef, reason: str) -> None:
        if self._watched.pop(vault.key, None) is None:
            return
        self._planner.remove_vault(vault.key)
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
            self._add(last.vaults)

    # ------------------------------------------------------------------------------ dispatch

    def _wake_dispatcher(self) -> None:
        """Wake the sleeping dispatcher if some vault is now due before it would wake."""
        if self._wake is None:
            return
        due = self._planner.next_due()
        if due is not None and due.at < self._wake_at:
            self._wake.cancel()

    async def _dispatch_loop(self, polls: TaskGroup) -> None:
        while True:
            now = self._clock.monotonic()
            self._ticked_at = now
            vault = self._planner.take_due(now)
            if vault is None:
                due = self._planner.next_due()
                delay = self._settings.discovery.interval_s if due is None else due.at - now
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
                    with anyio.move_on_after(HEARTBEAT_S):
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
        started = self._clock.monotonic()
        vlog = log.bind(vault=vault.name, subscription=vault.subscription_id)
        first = watched.polled_at is None
        try:
            reads = await self._poll(watched)
        except ArmThrottled as exc:
            # The budget already paused the whole subscription; keep the vault first in line.
            self._measure(vault, "throttled", started)
            self.stats.throttled += 1
            self._planner.release(vault.key)
            self._planner.hold(vault.subscription_id, started + exc.retry_after_s)
            return
        except ArmNotFound as exc:
            self._measure(vault, "not_found", started)
            await self._drop(vault, f"404 {exc.code or 'NotFound'}")
            return
        except ArmForbidden as exc:
            watched.state = VaultState.FORBIDDEN
            self._measure(vault, "forbidden", started)
            self._fail(watched, vlog, exc, retry_s=FORBIDDEN_RETRY_S, started=started)
            return
        except (ArmError, ParseError, SinkError) as exc:
            # ForeignOriginError among them: the link was refused (nothing sent); the next
            # poll asks ARM afresh, on the normal backoff.
            watched.state = VaultState.FAILING
            self._measure(vault, "error", started)
            self._fail(
                watched, vlog, exc, retry_s=self._backoff_s(watched.failures), started=started
            )
            return
        except Exception as exc:  # a bug must not stop the other vaults
            vlog.exception("poll.crashed")
            watched.state = VaultState.FAILING
            self._measure(vault, "error", started)
            self._fail(
                watched, vlog, exc, retry_s=self._backoff_s(watched.failures), started=started
            )
            return
        self._measure(vault, "ok", started)
        watched.state, watched.ok_at = VaultState.OK, started
        watched.running_jobs = _running(watched.jobs)
        if watched.reported is not None:
            vlog.info("poll.recovered", after_failures=watched.failures)
        watched.failures, watched.reported = 0, None
        self.stats.polls += 1
        self._planner.set_rate(
            vault.subscription_id, self._source.rate_per_s(vault.subscription_id)
        )
        # A first poll reads the details of every finished job in the lookback: it says nothing
        # about what later polls cost, so it does not feed the planner's reads-per-poll estimate
        # (which would stretch every interval, and push back every vault not yet polled).
        self._planner.mark_polled(
            vault.key,
            started,
            running=watched.has_running_jobs,
            reads=None if first else float(reads),
        )

    def _measure(self, vault: VaultRef, result: str, started: float) -> None:
        if self._metrics is not None:
            duration_s = self._clock.monotonic() - started
            self._metrics.poll_finished(vault.subscription_id, result, duration_s)

    def _backoff_s(self, failures: int, cap_s: float = BACKOFF_CAP_S) -> float:
        """Seconds to wait after `failures` failures in a row: doubling, capped, jittered."""
        return backoff_s(failures, cap_s=cap_s) * self._rng.uniform(0.5, 1.0)

    def _fail(
        self,
        watched: WatchedVault,
        vlog: structlog.typing.FilteringBoundLogger,
        exc: Exception,
        *,
        retry_s: float,
        started: float,
    ) -> None:
        self.stats.failed_polls += 1
        watched.failures += 1
        problem = f"{type(exc).__name__}:{getattr(exc, 'code', None) or ''}"
        if problem != watched.reported:
            fields: dict[str, object] = {"error": str(exc), "retry_in_s": round(retry_s, 1)}
            if isinstance(exc, ArmError):
                fields.update(
                    status=exc.status,
                    code=exc.code,
                    request_id=exc.request_id,
                    correlation_id=exc.correlation_id,
                )
            vlog.warning("poll.failed", **fields)
            watched.reported = problem
        # The planner counts the next poll from `polled_at`: push it back by the retry delay.
        self._planner.mark_polled(watched.vault.key, started + retry_s)

    # ------------------------------------------------------------------------------ one poll

    def _lookback_floor(self, now: datetime) -> datetime:
        """The earliest job start any window reaches, in whole seconds as the $filter sends."""
        return (now - timedelta(seconds=self._settings.poll.lookback_s)).replace(microsecond=0)

    def _window_start(self, watched: WatchedVault, now: datetime) -> datetime:
        poll = self._settings.poll
        floor = self._lookback_floor(now)
        if watched.polled_at is None:
            return floor
        marks = [watched.polled_at]
        marks += [
            s.start_at
            for s in watched.jobs.values()
            if not s.status.is_terminal and s.start_at is not None
        ]
        # A held change is not applied yet: the window keeps its job in view.
        marks += [job.start_at for _, job in watched.held.values() if job.start_at is not None]
        start = max(floor, min(marks) - timedelta(seconds=poll.overlap_s))
        return start.replace(microsecond=0)  # the filter sends whole seconds

    async def _poll(self, watched: WatchedVault) -> int:
        """Poll one vault; returns the reads it cost (pages are counted as one).

        fetch (the list, then direct reads of tracked jobs it no longer shows) → diff → details
        of terminal changes → emit → checkpoint.
        """
        vault, clock = watched.vault, self._clock
        observed_at = clock.utcnow()
        window_start = self._window_start(watched, observed_at)
        jobs = await self._source.list_jobs(vault, window_start, observed_at + LIST_END_SLACK)
        reads = 1
        listed = {job.key for job in jobs}
        details: dict[JobKey, JobDetails | None] = {}  # None: emit without (details are gone)
        vanished: list[JobKey] = []
        unseen = [
            key
            for key, snap in watched.jobs.items()
            if not snap.status.is_terminal and key not in listed
        ]
        unseen += [key for key in watched.held if key not in listed and key not in watched.jobs]
        unreadable: set[JobKey] = set()
        for key in unseen:
            # A tracked running job (or a held change) left the list: read it directly.
            reads += 1
            held = watched.held.get(key)
            try:
                found = await self._source.get_job(vault, key.job_name)
            except ArmNotFound:
                if held is None:
                    vanished.append(key)
                    log.info("job.vanished", vault=vault.name, job_id=key.job_name)
                else:  # its terminal state was seen; the job is gone, so are its details
                    jobs.append(held[1])
                    details[key] = None
                continue
            except ArmThrottled:
                raise  # the whole subscription pauses; the next poll sees all of this again
            except ParseError as exc:
                # Its name was refused before sending (a checkpoint older than the check that
                # now skips such names): it can never be read, so it is forgotten.
                vanished.append(key)
                self._job_trouble(watched, key, "job.unreadable", exc)
                continue
            except Exception as exc:
                unreadable.add(key)  # still tracked as it was: the next poll reads it again
                self._job_trouble(watched, key, "job.read_failed", exc)
                continue
            details[key] = found
            jobs.append(found.job)
        changes = [
            c for c in diff_jobs(watched.jobs, jobs, observed_at) if c.job.key not in unreadable
        ]
        first_poll = watched.polled_at is None
        silent = first_poll and not self._settings.poll.backfill
        events: list[dict[str, object]] = []
        held_back: set[JobKey] = set()
        for change in changes:
            key = change.job.key
            if silent:
                continue
            if key not in details and self._wants_details(change, first_poll=first_poll):
                detail, cost, keep = await self._details(watched, change)
                reads += cost
                if keep:
                    held_back.add(key)
                    continue
                details[key] = detail
            watched.held.pop(key, None)
            try:
                events.append(
                    render_event(
                        change, vault=vault, details=details.get(key), emitted_at=clock.utcnow()
                    )
                )
            except Exception as exc:  # a job we cannot render is skipped, never the vault
                self._job_trouble(watched, key, "job.render_failed", exc)
        if held_back:
            changes = [c for c in changes if c.job.key not in held_back]
        after = apply(watched.jobs, changes)
        for key in vanished:
            after.pop(key, None)
        # Forget a finished job only once it started before the lookback floor, which only moves
        # forward: no later window (nor one after a restart, nor one a late-listed job widens)
        # can list it again, so it is never re-emitted as new.
        forget_before = self._lookback_floor(observed_at)
        removed = [
            key
            for key, snap in after.items()
            if snap.status.is_terminal
            and snap.start_at is not None
            and snap.start_at < forget_before
        ]
        for key in removed:
            del after[key]
        removed += vanished
        # Emit, then checkpoint; a stop request waits for both (bounded), never for one alone.
        with anyio.move_on_after(COMMIT_TIMEOUT_S, shield=True) as commit:
            if events:
                await self._sink.emit(events)
                self.stats.events += len(events)
                if self._metrics is not None:
                    self._metrics.events_emitted([EmittedEvent.of(e) for e in events])
            # Out: the vault's state moves on now, whatever the store does next.
            watched.jobs, watched.polled_at = after, observed_at
            # A job can change and leave the window in one poll (it ended after its start fell
            # behind the window): checkpoint only its removal, or the store refuses the save.
            for change in changes:
                snap = JobSnapshot.of(change.job)
                if snap.key in after:
                    watched.unsaved[snap.key] = snap
                    watched.unsaved_removed.discard(snap.key)
            for key in removed:
                watched.unsaved.pop(key, None)
                watched.unsaved_removed.add(key)
            if (
                watched.unsaved
                or watched.unsaved_removed
                or _refresh_due(watched.saved_at, observed_at)
            ):
                await self._checkpoint(watched, observed_at)
        if commit.cancelled_caught:
            raise SinkError(f"emitting and checkpointing took over {COMMIT_TIMEOUT_S:.0f}s")
        return reads

    async def _checkpoint(self, watched: WatchedVault, polled_at: datetime) -> None:
        """Store what the vault's state holds and the store does not; a failure is kept for
        the next poll to retry (never re-emitted), counted, and shown by /readyz."""
        try:
            await self._store.save(
                watched.vault.key,
                changed=list(watched.unsaved.values()),
                removed=list(watched.unsaved_removed),
                polled_at=polled_at,
            )
        except StoreError as exc:
            self.stats.checkpoint_failures += 1
            if self._metrics is not None:
                self._metrics.checkpoint_failed()
            if self._store_problem != str(exc):
                log.warning(
                    "checkpoint.failed",
                    vault=watched.vault.name,
                    error=str(exc),
                    unsaved_jobs=len(watched.unsaved) + len(watched.unsaved_removed),
                )
            self._store_problem = str(exc)
            return
        watched.saved_at = polled_at
        watched.unsaved, watched.unsaved_removed = {}, set()
        if self._store_problem is not None:
            log.info("checkpoint.recovered", vault=watched.vault.name)
            self._store_problem = None

    def _wants_details(self, change: JobStateChanged, *, first_poll: bool) -> bool:
        """Whether a change needs its job's details read: terminal, and on a vault's first
        poll only as `poll.backfill_details` says (a day of history is one read per job)."""
        poll = self._settings.poll
        if not (change.status.is_terminal and poll.detail_on_terminal):
            return False
        if not first_poll:
            return True
        if poll.backfill_details == "all":
            return True
        return poll.backfill_details == "not_succeeded" and change.status.outcome != "succeeded"

    async def _details(
        self, watched: WatchedVault, change: JobStateChanged
    ) -> tuple[JobDetails | None, int, bool]:
        """Read the details of a job that reached a terminal state.

        Returns the details (None: emit without), the reads spent, and whether to hold the
        change back for the next poll (a failure that may pass, within `detail_retry_s`).
        """
        vault, job = watched.vault, change.job
        retry_s = self._settings.poll.detail_retry_s
        reads = 0
        error: Exception | None = None
        for attempt in range(DETAIL_ATTEMPTS if retry_s > 0 else 1):
            if attempt:
                await self._clock.sleep(DETAIL_RETRY_DELAY_S * self._rng.uniform(0.5, 1.0))
            reads += 1
            try:
                return await self._source.get_job(vault, job.name), reads, False
            except ArmThrottled:
                raise  # nothing emitted yet: the next poll sees the same change again
            except ArmNotFound as exc:
                error = exc  # the job is gone: its details will not come back
                break
            except (ArmForbidden, ParseError) as exc:
                error = exc
                break
            except Exception as exc:  # 5xx, transport, a body that is not a job: may pass
                error = exc
        now = self._clock.monotonic()
        since = watched.held.get(job.key, (now, job))[0]
        if retry_s > 0 and isinstance(error, TRANSIENT_ARM_ERRORS) and now - since < retry_s:
            if job.key not in watched.held:
                log.info(
                    "details.retrying",
                    vault=vault.name,
                    job_id=job.name,
                    status=job.status.value,
                    error=str(error),
                    retry_for_s=retry_s,
                )
            watched.held[job.key] = (since, job)
            return None, reads, True
        log.warning(
            "details.gave_up",
            vault=vault.name,
            job_id=job.name,
            status=job.status.value,
            error=str(error),
            tried_for_s=round(now - since, 1),
        )
        return None, reads, False

    def _job_trouble(self, watched: WatchedVault, key: JobKey, event: str, exc: Exception) -> None:
        """Log one job's trouble once per job (not per poll); the vault goes on."""
        if key in watched.skipped:
            return
        watched.skipped.add(key)
        log.warning(
            event,
            vault=watched.vault.name,
            job_id=key.job_name,
            error=f"{type(exc).__name__}: {exc}",
        )


def _refresh_due(saved_at: datetime | None, now: datetime) -> bool:
    """Whether an unchanged vault's stored poll time is missing or due (CHECKPOINT_REFRESH_S)."""
    return saved_at is None or (now - saved_at).total_seconds() >= CHECKPOINT_REFRESH_S


def _running(jobs: dict[JobKey, JobSnapshot]) -> int:
    return sum(1 for s in jobs.values() if not s.status.is_terminal)


__all__ = ["JobSource", "PollScheduler", "PollStats", "WatchedVault"]
