"""The pure poll step: given what is known of a vault and what one poll saw, what to emit and keep.

One poll of a vault is fetch → absorb → emit → save. This module decides everything in it that
needs no I/O: the listing window, which tracked jobs to read directly, the changes, which of them
need their details, which to hold back while details cannot be read, which jobs to forget, and
what the checkpoint must still store. The scheduler's shell (`monitor/poller.py`) only fetches,
emits and saves, in the order a `PollStep` asks.

Invariants (property-tested in tests/core/test_tracker.py):
- a status is emitted once per job: what was emitted is applied to `VaultJobs.jobs` at once, and a
  finished job is forgotten only when no later window can list it again;
- no terminal transition inside the lookback is lost: a tracked running job keeps the window open
  (or is read directly once it left the list), and a change is applied only once it is emitted.
"""

# Rule: nothing here awaits, sleeps or reads the clock; `now` (wall) and `mono` (monotonic)
# are arguments.

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Final, Literal

from monitor.core.diff import JobSnapshot, JobStateChanged, JobTable, diff_jobs
from monitor.core.jobs import BackupJob, JobDetails, JobKey

__all__ = [
    "LIST_END_SLACK",
    "Hold",
    "Outcome",
    "PollStep",
    "TrackRules",
    "VaultCheckpoint",
    "VaultJobs",
]

LIST_END_SLACK = timedelta(minutes=5)  # the window's end lies past now: clocks differ a little
_NOTHING_REMOVED: Final[frozenset[JobKey]] = frozenset()  # one shared: an empty set is 216 bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackRules:
    """The `[poll]` settings the poll step follows (built by the shell from `PollSettings`).

    Attributes:
        lookback_s: how far back a first window reaches; also the forget floor.
        overlap_s: subtracted from a later window's start.
        backfill: whether a vault's first poll emits what it finds (else records it silently).
        detail_on_terminal: whether terminal changes get their details read.
        backfill_details: which finished jobs a first poll reads details of.
        details_when_bound: which ended jobs get details while the subscription's budget
            binds (`PollStep.wants_details(bound=True)`).
        detail_retry_s: how long a change is held back while its details cannot be read.
        refresh_s: how old a stored poll time may grow before an unchanged poll saves anyway.
    """

    lookback_s: float
    overlap_s: float
    backfill: bool = True
    detail_on_terminal: bool = True
    backfill_details: Literal["all", "not_succeeded", "none"] = "not_succeeded"
    details_when_bound: Literal["all", "not_succeeded"] = "not_succeeded"
    detail_retry_s: float = 60.0
    refresh_s: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultCheckpoint:
    """Everything remembered about one vault across restarts.

    Attributes:
        vault_key: the vault's lower-cased resource id (`VaultRef.key`).
        jobs: the last known snapshot of every tracked job, by key.
        polled_at: the observed time of the last successful poll; None if never recorded.
    """

    vault_key: str
    jobs: Mapping[JobKey, JobSnapshot]
    polled_at: datetime | None


@dataclass(frozen=True, slots=True)
class Held:
    """A terminal change held back while its details cannot be read."""

    since: float  # monotonic time of the first failed detail read
    job: BackupJob  # as last seen: its start keeps the window open; a vanished one is emitted


@dataclass(slots=True, eq=False)
class VaultJobs:
    """What is known of one vault's jobs between polls, and what the store does not hold yet."""

    jobs: JobTable = field(default_factory=JobTable)  # an ended job in 44 bytes (`JobTable`)
    polled_at: datetime | None = None  # observed time of the last successful poll
    saved_at: datetime | None = None  # the poll time the checkpoint store holds
    # What `jobs` holds and the store does not yet: rolled forward at start, or a failed save's.
    unsaved: dict[JobKey, JobSnapshot] = field(default_factory=dict)
    unsaved_removed: frozenset[JobKey] = _NOTHING_REMOVED
    held: dict[JobKey, Held] = field(default_factory=dict)
    # The highest lookback floor a poll of this process used: no window reaches below it, so a
    # wall clock stepped back cannot bring back a job already forgotten.
    floor: datetime | None = None

    @classmethod
    def restored(
        cls, checkpoint: VaultCheckpoint, unsaved: Iterable[JobSnapshot] = ()
    ) -> VaultJobs:
        """The state a checkpoint (rolled forward: `unsaved` are the snapshots it added) holds."""
        return cls(
            jobs=JobTable.of(checkpoint.jobs),
            polled_at=checkpoint.polled_at,
            saved_at=checkpoint.polled_at,
            unsaved={s.key: s for s in unsaved},
        )

    @property
    def running(self) -> int:
        """Tracked jobs not in a terminal state."""
        return sum(1 for _ in self.jobs.running())

    @property
    def has_unsaved(self) -> bool:
        """Whether the store lacks some of what `jobs` holds."""
        return bool(self.unsaved or self.unsaved_removed)

    def save_due(self, now: datetime, rules: TrackRules) -> bool:
        """Whether the poll observed at `now` must checkpoint: something unsaved, or the stored
        poll time is missing or `refresh_s` old (it starts the first window after a restart;
        an older one only widens it, so most unchanged polls skip a SQLite transaction)."""
        if self.has_unsaved or self.saved_at is None:
            return True
        return (now - self.saved_at).total_seconds() >= rules.refresh_s

    def save_point(self, now: datetime) -> datetime:
        """The poll time to store for a poll observed at `now`: `now`, or the start of the
        earliest held change if older. Held changes live in memory only, and a restart's first
        window starts from the stored time: it must still list what was held back."""
        starts = [h.job.start_at for h in self.held.values() if h.job.start_at is not None]
        return min([now, *starts])

    def saved(self, polled_at: datetime) -> None:
        """The store took everything unsaved, with this poll time."""
        self.saved_at = polled_at
        self.unsaved, self.unsaved_removed = {}, _NOTHING_REMOVED

    def after(self, outcome: Outcome) -> VaultJobs:
        """A copy of this state moved on by `outcome`; this one is left as it is (the copy
        shares `held`, which the poll step already brought up to date)."""
        copy = dataclasses.replace(self, unsaved=dict(self.unsaved))
        copy.moved_on(outcome)
        return copy

    def moved_on(self, outcome: Outcome) -> None:
        """A poll's events are out: its state becomes what is known, and what to save."""
        self.jobs, self.polled_at = outcome.jobs, outcome.observed_at
        self.floor = outcome.floor
        # A job can change and leave the window in one poll (it ended after its start fell
        # behind the window): checkpoint only its removal, or the store refuses the save.
        removed = self.unsaved_removed  # immutable: copies share it until it changes
        for change in outcome.applied:
            snap = JobSnapshot.of(change.job)
            if snap.key in outcome.jobs:
                self.unsaved[snap.key] = snap
                if snap.key in removed:
                    removed = removed - {snap.key}
        for key in outcome.removed:
            self.unsaved.pop(key, None)
        if outcome.removed:
            removed = removed.union(outcome.removed)
        self.unsaved_removed = removed or _NOTHING_REMOVED


def lookback_floor(now: datetime, rules: TrackRules) -> datetime:
    """The earliest job start any window reaches, in whole seconds as the $filter sends."""
    return (now - timedelta(seconds=rules.lookback_s)).replace(microsecond=0)


class Hold(Enum):
    """What `PollStep.hold` decided for a change whose details could not be read."""

    FIRST = "first"  # held back for the next poll, for the first time
    AGAIN = "again"  # still held back
    GAVE_UP = "gave_up"  # emitted without details


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one poll decided, ready to emit and then to apply with `VaultJobs.moved_on`.

    Attributes:
        observed_at: the poll's observed time.
        emit: the changes to emit with their details (None: without), in listing order.
        applied: every change the new state includes (emitted, or recorded silently).
        jobs: the vault's jobs after the poll.
        removed: keys dropped from what is known (forgotten or vanished).
        floor: the forget floor this poll used (`VaultJobs.floor` after it).
    """

    observed_at: datetime
    emit: tuple[tuple[JobStateChanged, JobDetails | None], ...]
    applied: tuple[JobStateChanged, ...]
    jobs: JobTable
    removed: tuple[JobKey, ...]
    floor: datetime


class PollStep:
    """One poll of one vault, decided step by step while the shell fetches what it asks for.

    Order: `window_start`/`window_end` → `listed(jobs)` returns the jobs to read directly → for
    each, `read`, `gone`, `forget` or `failed` → `changes()` → for each change that
    `wants_details`, `detailed` or `hold` → `finish()`. The step changes `known.held` as it
    goes; everything else waits for `VaultJobs.moved_on(outcome)` once the events are out.
    """

    __slots__ = (
        "_changes",
        "_details",
        "_floor",
        "_held_back",
        "_jobs",
        "_known",
        "_provisional",
        "_rules",
        "_unreadable",
        "_vanished",
        "now",
        "window_end",
        "window_start",
    )

    def __init__(self, known: VaultJobs, now: datetime, rules: TrackRules) -> None:
        self._known, self._rules, self.now = known, rules, now
        floor = lookback_floor(now, rules)
        self._floor = floor if known.floor is None else max(floor, known.floor)
        self.window_start = _window_start(known, self._floor, rules)
        self.window_end = now + LIST_END_SLACK
        self._jobs: list[BackupJob] = []
        self._details: dict[JobKey, JobDetails | None] = {}  # None: emit without (gone)
        self._vanished: list[JobKey] = []
        self._unreadable: set[JobKey] = set()
        self._provisional: set[JobKey] = set()
        self._held_back: set[JobKey] = set()
        self._changes: list[JobStateChanged] | None = None

    @property
    def first_poll(self) -> bool:
        """Whether the vault was never polled successfully before."""
        return self._known.polled_at is None

    def listed(self, jobs: Sequence[BackupJob]) -> list[JobKey]:
        """Take the listing; returns the keys to read directly: tracked running jobs and held
        changes that the list no longer shows, then the provisional jobs it shows running.

        A source may list more than the window (a Backup vault's full listing, or a Resource
        Graph answer that reaches further back): a job that started before the lookback floor
        and is not known is left out, since it may have been forgotten already. A provisional
        job (`BackupJob.provisional`: from an index that may lag) that is not terminal counts
        only once a direct read confirms it: a failed read keeps the job as it was, a 404
        drops the row. A provisional row that shows a job known to have ended as running is
        stale: it is dropped unread.
        """
        known, floor = self._known, self._floor

        def kept(job: BackupJob) -> bool:
            status = known.jobs.status_of(job.key)
            if status is None:
                return job.start_at is None or job.start_at >= floor
            # A job known to have ended cannot change: a provisional row of it that is not
            # terminal is stale, and is not even worth a confirming read.
            return not (job.provisional and status.is_terminal and not job.status.is_terminal)

        self._jobs = [job for job in jobs if kept(job)]
        listed = {job.key for job in self._jobs}
        unseen = [snap.key for snap in known.jobs.running() if snap.key not in listed]
        unseen += [key for key in known.held if key not in listed and key not in known.jobs]
        confirm = dict.fromkeys(
            job.key for job in self._jobs if job.provisional and not job.status.is_terminal
        )
        self._provisional = set(confirm)
        return unseen + list(confirm)

    def read(self, details: JobDetails) -> None:
        """A direct read found the job."""
        self._details[details.job.key] = details
        self._jobs.append(details.job)

    def gone(self, key: JobKey) -> bool:
        """A direct read answered 404. Returns True when the job vanished unseen (it is
        forgotten); False when its held terminal change goes out without details."""
        if key in self._provisional:  # the index's row is stale: the job is gone
            self._jobs = [job for job in self._jobs if job.key != key]
        held = self._known.held.get(key)
        if held is None:
            if key in self._known.jobs or key not in self._provisional:
                self._vanished.append(key)
            return True
        self._jobs.append(held.job)
        self._details[key] = None
        return False

    def forget(self, key: JobKey) -> None:
        """The job can never be read (its name is refused before sending): forget it."""
        self._jobs = [job for job in self._jobs if job.key != key]
        self._vanished.append(key)

    def failed(self, key: JobKey) -> None:
        """A direct read failed: the job stays as it was, and the next poll reads it again."""
        self._unreadable.add(key)

    def changes(self) -> list[JobStateChanged]:
        """The changes this poll saw, in listing order (direct reads last)."""
        if self._changes is None:
            self._changes = [
                c
                for c in diff_jobs(self._known.jobs, self._jobs, self.now)
                if c.job.key not in self._unreadable
            ]
        return self._changes

    @property
    def silent(self) -> bool:
        """Whether this poll records its changes without emitting them (a first poll, without
        backfill)."""
        return self.first_poll and not self._rules.backfill

    def wants_details(self, change: JobStateChanged, *, bound: bool = False) -> bool:
        """Whether the shell should read this change's details: terminal, not read already, on
        a vault's first poll only as `backfill_details` says (a day of history is one read per
        job), and while the subscription's budget binds (`bound`) only as `details_when_bound`
        says (each read spent on a success's details is one poll fewer of some vault)."""
        rules = self._rules
        if self.silent or change.job.key in self._details:
            return False
        if not (change.status.is_terminal and rules.detail_on_terminal):
            return False
        succeeded = change.status.outcome == "succeeded"
        if self.first_poll:
            if rules.backfill_details != "all":
                return rules.backfill_details == "not_succeeded" and not succeeded
            return True
        return not (bound and succeeded and rules.details_when_bound == "not_succeeded")

    def detailed(self, change: JobStateChanged, details: JobDetails | None) -> None:
        """The details read for a change (None: it goes out without)."""
        self._details[change.job.key] = details

    def hold(self, change: JobStateChanged, mono: float, *, transient: bool) -> Hold:
        """Its details could not be read: hold the change back for the next poll while the
        failure may pass (`transient`) and `detail_retry_s` has not run out since the first."""
        held = self._known.held.get(change.job.key)
        since = mono if held is None else held.since
        if (
            self._rules.detail_retry_s > 0
            and transient
            and mono - since < self._rules.detail_retry_s
        ):
            self._known.held[change.job.key] = Held(since, change.job)
            self._held_back.add(change.job.key)
            return Hold.FIRST if held is None else Hold.AGAIN
        self._details[change.job.key] = None
        return Hold.GAVE_UP

    def held_for_s(self, change: JobStateChanged, mono: float) -> float:
        """Seconds since the first failed detail read of a change (0 if none failed before)."""
        held = self._known.held.get(change.job.key)
        return 0.0 if held is None else mono - held.since

    def finish(self) -> Outcome:
        """What to emit, and the state after it."""
        known, changes = self._known, self.changes()
        emit: list[tuple[JobStateChanged, JobDetails | None]] = []
        if not self.silent:
            for change in changes:
                key = change.job.key
                if key in self._held_back:
                    continue
                known.held.pop(key, None)
                emit.append((change, self._details.get(key)))
        applied = [c for c in changes if c.job.key not in self._held_back]
        after = known.jobs
        if applied or self._vanished:
            after = after.replaced([JobSnapshot.of(c.job) for c in applied], self._vanished)
        # Forget a finished job only once it started before the lookback floor, which only
        # moves forward (`VaultJobs.floor`): no later window (nor one after a restart, nor one
        # a late-listed job widens) can list it again, so it is never re-emitted as new.
        floor = self._floor
        removed = after.ended_before(floor)
        if removed:
            after = after.replaced((), removed)
        return Outcome(
            observed_at=self.now,
            emit=tuple(emit),
            applied=tuple(applied),
            jobs=after,
            removed=(*removed, *self._vanished),
            floor=floor,
        )


def _window_start(known: VaultJobs, floor: datetime, rules: TrackRules) -> datetime:
    if known.polled_at is None:
        return floor
    marks = [known.polled_at]
    marks += [s.start_at for s in known.jobs.running() if s.start_at is not None]
    # A held change is not applied yet: the window keeps its job in view.
    marks += [h.job.start_at for h in known.held.values() if h.job.start_at is not None]
    start = max(floor, min(marks) - timedelta(seconds=rules.overlap_s))
    return start.replace(microsecond=0)  # the filter sends whole seconds
