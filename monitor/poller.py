"""One poll of one vault: fetch → absorb → commit, around the pure step in `core/tracker.py`.

Rules:
- A poll's events and its vault's checkpoint commit together, in one transaction of the state
  store (its outbox); the sinks deliver from there (delivery.py). A commit that fails moves
  nothing: the vault's state stays as it was, so the next poll finds the same changes and
  commits them then (same `event_id`s). A crash at any moment repeats or loses nothing.
- The commit is shielded and bounded, so a clean stop never abandons it half-way.
- A poll without events still checkpoints when it is due; when that save fails, its changes
  are kept in `VaultJobs.unsaved` for the next poll to store.
- One job's trouble is that job's: a failed direct read or detail read, or a job that cannot be
  rendered, never fails the vault's poll. A terminal change whose details cannot be read is held
  back (not applied, so the next poll sees it again) for up to `poll.detail_retry_s`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol

import anyio
import structlog

from monitor.checkpoints import StateStore
from monitor.clock import Clock
from monitor.config import PollSettings
from monitor.core.cadence import backoff_s
from monitor.core.diff import JobStateChanged
from monitor.core.jobs import BackupJob, JobDetails, JobKey, KnownEnded
from monitor.core.tracker import Hold, PollStep, TrackRules, VaultJobs
from monitor.core.vaults import VaultRef
from monitor.discovery import VaultSource
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
from monitor.health import VaultState
from monitor.metrics import Metrics
from monitor.outbox import EventLine

log = structlog.get_logger("monitor.scheduler")


def _vault_log(vault: VaultRef) -> structlog.typing.FilteringBoundLogger:
    """`log` bound to `vault` (its name and subscription), for a line about it.

    Bound only when a line is written: a bind per poll was a visible share of a steady poll.
    """
    bound: structlog.typing.FilteringBoundLogger = log.bind(
        vault=vault.name, subscription=vault.subscription_id
    )
    return bound


BACKOFF_CAP_S = 300.0
FORBIDDEN_RETRY_S = 300.0

DETAIL_ATTEMPTS = 2  # detail reads within one poll before the change is held for the next
DETAIL_RETRY_DELAY_S = 1.0  # between them (jittered)
COMMIT_TIMEOUT_S = 30.0
CHECKPOINT_REFRESH_S = 300.0
"""A poll that changed nothing skips the checkpoint unless the stored poll time is this old.

The stored poll time only starts the first window after a restart; one that is older widens that
window (jobs already checkpointed are not emitted again) and never loses a change, while most
polls change nothing and would each cost a SQLite transaction."""


class JobSource(VaultSource, Protocol):
    """Where jobs come from: `ArmClient` in production; the vault reads are `VaultSource`'s."""

    async def list_jobs(
        self,
        vault: VaultRef,
        start_at: datetime,
        end_at: datetime,
        *,
        known: KnownEnded | None = None,
    ) -> list[BackupJob]:
        """The vault's jobs for the window; one that `known` gives ended with the status
        listed may be left out (it cannot change anything)."""
        ...

    async def get_job(self, vault: VaultRef, job_name: str) -> JobDetails: ...

    def forget_vault(self, vault_key: str) -> None:
        """The vault is no longer watched: whatever the source keeps of it goes."""
        ...


@dataclass(slots=True, eq=False)
class WatchedVault:
    """What the scheduler knows of one vault between polls."""

    vault: VaultRef
    known: VaultJobs = field(default_factory=VaultJobs)
    # Jobs whose trouble was logged once; immutable, so that every vault shares the empty one.
    skipped: frozenset[JobKey] = frozenset()
    failures: int = 0
    reported: str | None = None  # the last problem logged, so a repeat is not logged again
    state: VaultState = VaultState.PENDING
    added_at: float = 0.0  # monotonic time it started being watched
    ok_at: float | None = None  # monotonic start of its last successful poll in this process
    running_jobs: int = 0  # tracked jobs not in a terminal state, after the last poll
    held_back: int = 0  # events the last poll could not commit (they come again next poll)


@dataclass(slots=True)
class PollStats:
    """Counts a run keeps for its summary and for tests."""

    polls: int = 0
    failed_polls: int = 0
    events: int = 0
    throttled: int = 0
    vaults: int = 0
    checkpoint_failures: int = 0


class Ended(Enum):
    """How a poll ended, for the scheduler's planner."""

    OK = "ok"
    THROTTLED = "throttled"  # the subscription pauses for `retry_s`
    GONE = "gone"  # the vault is dropped (404)
    FAILED = "failed"  # the next poll comes after `retry_s`


@dataclass(frozen=True, slots=True)
class Attempt:
    """One poll's end: how, when it started (monotonic), and what the planner needs."""

    ended: Ended
    started: float
    reads: float | None = None  # OK: the reads it cost; None on a vault's first poll
    terminals: int = 0  # OK: terminal transitions it emitted (0 on a vault's first poll)
    retry_s: float = 0.0
    reason: str = ""  # GONE: why


def track_rules(poll: PollSettings, *, refresh_s: float = CHECKPOINT_REFRESH_S) -> TrackRules:
    """The poll step's rules from `[poll]`."""
    return TrackRules(
        lookback_s=poll.lookback_s,
        overlap_s=poll.overlap_s,
        backfill=poll.backfill,
        detail_on_terminal=poll.detail_on_terminal,
        backfill_details=poll.backfill_details,
        details_when_bound=poll.details_when_budget_binds,
        detail_retry_s=poll.detail_retry_s,
        refresh_s=refresh_s,
    )


class VaultPoller:
    """Polls one vault at a time for the scheduler: reads what the step asks, emits, saves.

    Args:
        source: the job reads.
        store: where each vault's known jobs are checkpointed, and its events committed.
        clock: time, sleeps and deadlines.
        rules: the poll step's rules (`track_rules`).
        rng: jitter of the in-poll detail retry.
        metrics: events and checkpoint failures are counted here (None: not measured).
        stats: the run's counts, where events and checkpoint failures are added.
    """

    def __init__(
        self,
        *,
        source: JobSource,
        store: StateStore,
        clock: Clock,
        rules: TrackRules,
        rng: random.Random,
        metrics: Metrics | None,
        stats: PollStats,
        item_of: Callable[[str, BackupJob], str | None] | None = None,
    ) -> None:
        self._source, self._store = source, store
        self._item_of = item_of
        self._clock, self._rules, self._rng, self._metrics = clock, rules, rng, metrics
        self._stats = stats
        self.store_problem: str | None = None  # the last checkpoint failure, until one succeeds

    async def attempt(self, watched: WatchedVault, *, bound: bool = False) -> Attempt:
        """Poll one vault and say how it ended; only the vault's own state changes here.

        `bound`: the subscription's read budget binds (`Planner.binds`), so ended jobs get
        their details read only as `[poll] details_when_budget_binds` says.

        One vault's failure never touches another: every error ends as an `Attempt`, a
        repeated problem is logged once, and a bug (any other exception) is logged with its
        traceback as `poll.crashed`.
        """
        vault = watched.vault
        started = self._clock.monotonic()
        first = watched.known.polled_at is None
        try:
            reads, terminals = await self.poll(watched, bound=bound)
        except ArmThrottled as exc:
            self._measure(vault, "throttled", started)
            self._stats.throttled += 1
            return Attempt(Ended.THROTTLED, started, retry_s=exc.retry_after_s)
        except ArmNotFound as exc:
            self._measure(vault, "not_found", started)
            return Attempt(Ended.GONE, started, reason=f"404 {exc.code or 'NotFound'}")
        except ArmForbidden as exc:
            watched.state = VaultState.FORBIDDEN
            self._measure(vault, "forbidden", started)
            return self._failed(watched, exc, retry_s=FORBIDDEN_RETRY_S, started=started)
        except Exception as exc:
            # ForeignOriginError is an ArmError: the link was refused (nothing sent); the next
            # poll asks ARM afresh, on the normal backoff. Anything else is a bug, which must
            # not stop the other vaults.
            if not isinstance(exc, ArmError | ParseError | SinkError):
                _vault_log(vault).exception("poll.crashed")
            watched.state = VaultState.FAILING
            self._measure(vault, "error", started)
            retry_s = backoff_s(watched.failures, cap_s=BACKOFF_CAP_S) * self._rng.uniform(0.5, 1)
            return self._failed(watched, exc, retry_s=retry_s, started=started)
        self._measure(vault, "ok", started)
        watched.state, watched.ok_at = VaultState.OK, started
        if watched.reported is not None:
            _vault_log(vault).info("poll.recovered", after_failures=watched.failures)
        watched.failures, watched.reported = 0, None
        self._stats.polls += 1
        if first:
            return Attempt(Ended.OK, started)
        return Attempt(Ended.OK, started, reads=float(reads), terminals=terminals)

    def _measure(self, vault: VaultRef, result: str, started: float) -> None:
        if self._metrics is not None:
            duration_s = self._clock.monotonic() - started
            self._metrics.poll_finished(vault.subscription_id, result, duration_s)

    def _failed(
        self,
        watched: WatchedVault,
        exc: Exception,
        *,
        retry_s: float,
        started: float,
    ) -> Attempt:
        self._stats.failed_polls += 1
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
            _vault_log(watched.vault).warning("poll.failed", **fields)
            watched.reported = problem
        return Attempt(Ended.FAILED, started, retry_s=retry_s)

    async def poll(self, watched: WatchedVault, *, bound: bool = False) -> tuple[int, int]:
        """Poll one vault; returns the reads it cost (pages are counted as one) and the
        terminal transitions it emitted. `bound`: as `attempt` says.

        Raises:
            ArmError, ParseError: the list (or a 429 on any read) failed; nothing moved.
            SinkError: the batch could not be written, or emit and save overran their time.
        """
        vault, clock, known = watched.vault, self._clock, watched.known
        step = PollStep(known, clock.utcnow(), self._rules)
        jobs = await self._source.list_jobs(
            vault, step.window_start, step.window_end, known=known.jobs.ended_status
        )
        reads = 1
        for key in step.listed(jobs):
            # A tracked running job (or a held change) left the list: read it directly.
            reads += 1
            try:
                found = await self._source.get_job(vault, key.job_name)
            except ArmNotFound:
                if step.gone(key):
                    log.info("job.vanished", vault=vault.name, job_id=key.job_name)
                continue
            except ArmThrottled:
                raise  # the whole subscription pauses; the next poll sees all of this again
            except ParseError as exc:
                # Its name was refused before sending (a checkpoint older than the check that
                # now skips such names): it can never be read, so it is forgotten.
                step.forget(key)
                self._job_trouble(watched, key, "job.unreadable", exc)
                continue
            except Exception as exc:
                step.failed(key)  # still tracked as it was: the next poll reads it again
                self._job_trouble(watched, key, "job.read_failed", exc)
                continue
            step.read(found)
        skipped = 0  # ended jobs left without details: the budget binds
        for change in step.changes():
            if step.wants_details(change, bound=bound):
                reads += await self._details(watched, step, change)
            elif bound and step.wants_details(change):
                skipped += 1
        outcome = step.finish()
        events: list[dict[str, object]] = []
        lines: list[EventLine] = []
        for change, details in outcome.emit:
            try:
                item_id = None if self._item_of is None else self._item_of(vault.key, change.job)
                event = render_event(
                    change,
                    vault=vault,
                    details=details,
                    emitted_at=clock.utcnow(),
                    protected_item_id=item_id,
                )
                lines.append(EventLine.of(event))
            except Exception as exc:  # a job we cannot render is skipped, never the vault
                self._job_trouble(watched, change.job.key, "job.render_failed", exc)
                continue
            events.append(event)
        after = known.after(outcome)
        if lines or after.save_due(outcome.observed_at, self._rules):
            # A stop request waits for the commit (bounded), never abandons it half-way: a
            # save under way in its thread finishes; one still waiting for the store's lock
            # is not started (then nothing is committed, and nothing moves).
            committed = False
            with anyio.CancelScope(
                deadline=clock.deadline_after(COMMIT_TIMEOUT_S), shield=True
            ) as commit:
                committed = await self._commit(watched, after, lines, outcome.observed_at)
            if commit.cancelled_caught and not committed:
                log.warning("checkpoint.timed_out", vault=vault.name, timeout_s=COMMIT_TIMEOUT_S)
            watched.held_back = 0 if committed else len(lines)
            if lines and not committed:
                return reads, 0  # nothing moves: the next poll commits the same changes
            if events:
                self._stats.events += len(events)
                if self._metrics is not None:
                    self._metrics.events_emitted(
                        [EmittedEvent.of(e) for e in events], backfill=known.polled_at is None
                    )
                    if skipped:
                        self._metrics.details_skipped(skipped)
        watched.known = after
        watched.running_jobs = after.running
        return reads, sum(1 for change, _ in outcome.emit if change.status.is_terminal)

    async def _commit(
        self, watched: WatchedVault, after: VaultJobs, lines: list[EventLine], now: datetime
    ) -> bool:
        """Commit the poll's events and what `after` holds that the store does not; True when
        the store took them. A failure is counted and shown by /readyz; without events, what
        was not stored stays in `after.unsaved` for the next poll."""
        point = after.save_point(now)
        try:
            await self._store.save(
                watched.vault.key,
                changed=list(after.unsaved.values()),
                removed=list(after.unsaved_removed),
                polled_at=point,
                events=lines,
                now=now,
            )
        except StoreError as exc:
            self._stats.checkpoint_failures += 1
            if self._metrics is not None:
                self._metrics.checkpoint_failed()
            if self.store_problem != str(exc):
                log.warning(
                    "checkpoint.failed",
                    vault=watched.vault.name,
                    error=str(exc),
                    events_held_back=len(lines),
                    unsaved_jobs=len(after.unsaved) + len(after.unsaved_removed),
                )
            self.store_problem = str(exc)
            return False
        after.saved(point)
        if self.store_problem is not None:
            log.info("checkpoint.recovered", vault=watched.vault.name)
            self.store_problem = None
        return True

    async def _details(self, watched: WatchedVault, step: PollStep, change: JobStateChanged) -> int:
        """Read the details of a job that reached a terminal state; returns the reads spent.

        A failure that may pass holds the change back for the next poll (within
        `detail_retry_s`); otherwise it goes out without details.
        """
        vault, job = watched.vault, change.job
        retry_s = self._rules.detail_retry_s
        reads = 0
        error: Exception | None = None
        for attempt in range(DETAIL_ATTEMPTS if retry_s > 0 else 1):
            if attempt:
                await self._clock.sleep(DETAIL_RETRY_DELAY_S * self._rng.uniform(0.5, 1.0))
            reads += 1
            try:
                step.detailed(change, await self._source.get_job(vault, job.name))
                return reads
            except ArmThrottled:
                raise  # nothing emitted yet: the next poll sees the same change again
            except (ArmNotFound, ArmForbidden, ParseError) as exc:
                error = exc  # gone, or refused: its details will not come back
                break
            except Exception as exc:  # 5xx, transport, a body that is not a job: may pass
                error = exc
        now = self._clock.monotonic()
        transient = isinstance(error, TRANSIENT_ARM_ERRORS)
        fields = {"vault": vault.name, "job_id": job.name, "status": job.status.value}
        match step.hold(change, now, transient=transient):
            case Hold.FIRST:
                log.info("details.retrying", **fields, error=str(error), retry_for_s=retry_s)
            case Hold.AGAIN:
                pass
            case Hold.GAVE_UP:
                tried_for_s = round(step.held_for_s(change, now), 1)
                log.warning("details.gave_up", **fields, error=str(error), tried_for_s=tried_for_s)
        return reads

    def _job_trouble(self, watched: WatchedVault, key: JobKey, event: str, exc: Exception) -> None:
        """Log one job's trouble once per job (not per poll); the vault goes on."""
        if key in watched.skipped:
            return
        watched.skipped = watched.skipped | {key}
        log.warning(
            event,
            vault=watched.vault.name,
            job_id=key.job_name,
            error=f"{type(exc).__name__}: {exc}",
        )


__all__ = [
    "CHECKPOINT_REFRESH_S",
    "Attempt",
    "Ended",
    "JobSource",
    "PollStats",
    "VaultPoller",
    "WatchedVault",
    "track_rules",
]
