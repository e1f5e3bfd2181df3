"""What should have happened to one protected item, against what did: one evaluation step.

Each round the shell reads a vault's protected items, its policies, and the jobs that started
since `window_start` of each item; `evaluate` then decides, for one item, as follows.

**Scheduled.** An item is scheduled when its `protection_state` (without regard to case) is
Protected, ProtectionError, IRPending or ProtectionConfigured, and it has a policy with a
schedule. Only a scheduled item's runs are matched and reported.

**Runs, grace and deadline.** The expected runs are `core.schedule.expected_runs` of each part
of the policy's schedule (a run that two parts share, same instant and kind, counts once). A
run's grace is `WatchSettings.grace_s` for times of day (daily, weekly) and whole-day or
whole-week repeating intervals; `grace_fraction` × the part's interval for hourly windows, log
cadences and sub-day repeating intervals. Its deadline is its start plus its grace. A run may be
met from `min(early_s, interval / 2)` before its start up to its deadline, both included.

**Deciding.** A run is decided once its deadline is at or before `seen_until`. On first sight
(`state` None) every such run is decided without a word and `decided_through` becomes
`seen_until`. Later, the runs whose deadline is in `(state.decided_through, seen_until]` are
decided now, in the order of their deadlines (then start, then kind): each takes the earliest
(by start, then name) job of the item that no run took before, started in its window, whose
operation fits: LOG runs take operations that contain "log"; other runs take operations that
start with "backup" and do not contain "log", and the Backup vault's "ScheduledBackup",
"AdhocBackup" and "Backup" (all without regard to case); restores never count. A run that
takes no job is a `BackupMissed`, if the item is scheduled; when it is not (protection
stopped, no policy, no schedule), the run is decided without a report and is never reported
later. The jobs taken and still inside the next job window are remembered (`ItemState.used`),
so the decisions do not depend on how the timeline is cut into rounds. `decided_through`
becomes `seen_until` (it never moves back).

**Last run.** `last_run_missed` says whether the latest run decided this round (by deadline)
was missed; it stays as it was when no run was decided; it is False on first sight and while
the item is not scheduled.

**Recovery-point age (RPO).** For a scheduled item with a `lastRecoveryPoint` (Recovery
Services): the allowed age is the longest gap between consecutive expected runs of the policy's
non-log parts (all parts when it has only log parts), over `[now - 15 days, now + 1 day]`, plus
the grace of the run that ends the gap (with fewer than 2 runs: the longest part interval plus
its grace). Breached when `now - lastRecoveryPoint` exceeds it: one `RpoBreached` (first sight
included), then `RpoRestored` when fresh again. An item that is not scheduled keeps its flag,
without events.

**Protection.** A change of (`protection_state`, `health_status`) since the previous round,
compared without regard to case (ARM's casing of enum values varies between API versions), is
a `ProtectionChanged` with `seq = state.protection_seq + 1`; never on first sight. The state
keeps the values as last read.

**Long-running jobs.** The item's finished jobs (terminal, with a duration) add (name,
duration) to `durations` (one entry per name, oldest first, the newest `history` kept); its
running jobs are remembered in `running`. `long_running_jobs` takes the threshold as the least
of `after_s` (when above 0) and `factor` × the median of the durations (when `factor` is above
0 and there are at least `min_samples`); a running job past it whose name is not in `flagged`
is a `LongRunning` ("absolute" or "median": whichever gave the threshold). `flagged` keeps only
the names still running.

**Job window.** `window_start` is the earliest of: the start minus the early allowance of every
run whose deadline is after `decided_through`, the starts in `running`, and `decided_through`
itself. On first sight: `now` minus the largest grace minus `early_s`.

**Health.** UNPROTECTED when not scheduled, else MISSED when `last_run_missed`, else OVERDUE
when `rpo_breached`, else FRESH.

**Order.** Changes come protection first, then missed runs by their start, then RPO, then
long-running jobs.

The state it returns is what the shell stores (`ItemState.to_json`), in the same transaction as
the events; the same inputs give the same events with the same `event_id`s. Nothing here reads
the clock: `now` and `seen_until` are arguments.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, TypeAlias

from monitor.core.jobs import BackupJob
from monitor.core.packed_rows import packed_durations, packed_names, packed_starts
from monitor.core.protection import BackupPolicy, ProtectedItem
from monitor.core.schedule import (
    EveryMinutes,
    ExpectedRun,
    HourlyWindow,
    Repeating,
    RunKind,
    Schedule,
    SubSchedule,
    TimesOfDay,
    expected_runs,
)
from monitor.core.wire import excerpt
from monitor.errors import ParseError

__all__ = [
    "BackupMissed",
    "Evaluation",
    "ItemChange",
    "ItemHealth",
    "ItemState",
    "LongRunning",
    "LongRunningSettings",
    "ProtectionChanged",
    "RpoBreached",
    "RpoRestored",
    "WatchSettings",
    "evaluate",
    "item_event_id",
    "long_running_jobs",
    "window_start",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSettings:
    """How late a run may start, and how old a recovery point may be.

    Attributes:
        grace_s: a daily or weekly run's grace: its deadline is its start plus this.
        grace_fraction: an hourly-window or log run's grace, as a fraction of its interval.
        early_s: a job that starts up to this long before a run (at most half the run's
            interval) still counts for it.
    """

    grace_s: float = 3600.0
    grace_fraction: float = 0.5
    early_s: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LongRunningSettings:
    """When a running job is long-running.

    Attributes:
        after_s: the absolute threshold (seconds since the job started); 0 = none.
        factor: k in "k × the median duration of the item's recent finished jobs"; 0 = none.
        min_samples: the fewest recent durations the median needs.
        history: how many recent durations are kept per item.
    """

    after_s: float = 86400.0
    factor: float = 3.0
    min_samples: int = 5
    history: int = 20


class ItemHealth(StrEnum):
    """An item's state for the metrics, the first that holds."""

    UNPROTECTED = "unprotected"
    """Not protected (stopped, paused, suspended, invalid) or without a policy."""
    MISSED = "missed"
    """Its last decided run had no job."""
    OVERDUE = "overdue"
    """Its recovery point is older than allowed (an RPO breach)."""
    FRESH = "fresh"
    """None of the above."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemState:
    """What is remembered of one item between rounds and across restarts.

    Attributes:
        decided_through: runs whose deadline is at or before this are decided.
        protection_state, health_status: as last seen.
        protection_seq: how many protection changes were reported (names their event ids).
        rpo_breached: a breach was reported and not yet restored.
        last_run_missed: the latest decided run had no job.
        durations: (job name, seconds) of the item's recent finished jobs, oldest first, at
            most `LongRunningSettings.history`.
        flagged: names of running jobs already reported as long-running.
        running: (job name, start) of the item's jobs seen running in the last round, so that
            the next round's job window reaches back to them.
        used: names of jobs that met a decided run and started inside the next job window (a
            job meets at most one run, whichever round decides it).

    The four sequences are kept packed (`core.packed_rows`) when every name in one is a
    lower-case GUID, as ARM names jobs: read back, they give the same names and values (equal
    to the tuples given). A full `durations` is then ~0.5 KiB, not ~3.5 KiB.
    """

    decided_through: datetime
    protection_state: str | None
    health_status: str | None
    protection_seq: int = 0
    rpo_breached: bool = False
    last_run_missed: bool = False
    durations: Sequence[tuple[str, float]] = ()
    flagged: Sequence[str] = ()
    running: Sequence[tuple[str, datetime]] = ()
    used: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "durations", packed_durations(self.durations))
        object.__setattr__(self, "flagged", packed_names(self.flagged))
        object.__setattr__(self, "running", packed_starts(self.running))
        object.__setattr__(self, "used", packed_names(self.used))

    def to_json(self) -> dict[str, object]:
        """A JSON object that `from_json` reads back into an equal state.

        Times are UTC ISO 8601 with `Z` (microseconds when there are any).
        """
        return {
            "v": _STATE_VERSION,
            "decided_through": _json_time(self.decided_through),
            "protection_state": self.protection_state,
            "health_status": self.health_status,
            "protection_seq": self.protection_seq,
            "rpo_breached": self.rpo_breached,
            "last_run_missed": self.last_run_missed,
            "durations": [[name, seconds] for name, seconds in self.durations],
            "flagged": list(self.flagged),
            "running": [[name, _json_time(start)] for name, start in self.running],
            "used": list(self.used),
        }

    @classmethod
    def from_json(cls, value: object) -> ItemState:
        """Read a stored state back.

        Raises:
            ParseError: `value` is not a state `to_json` wrote; the path names the field.
        """
        if not isinstance(value, dict):
            raise ParseError("", f"expected an object, got {type(value).__name__}")
        if value.get("v") != _STATE_VERSION:
            raise ParseError("v", f"not state version {_STATE_VERSION}: {excerpt(value.get('v'))}")
        seq = value.get("protection_seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ParseError("protection_seq", f"not a count: {excerpt(seq)}")
        durations = tuple(
            (
                _json_str(entry[0], f"durations[{i}][0]"),
                _json_seconds(entry[1], f"durations[{i}][1]"),
            )
            for i, entry in enumerate(_json_pairs(value.get("durations"), "durations"))
        )
        running = tuple(
            (_json_str(entry[0], f"running[{i}][0]"), _read_time(entry[1], f"running[{i}][1]"))
            for i, entry in enumerate(_json_pairs(value.get("running"), "running"))
        )
        return cls(
            decided_through=_read_time(value.get("decided_through"), "decided_through"),
            protection_state=_shared(
                _json_opt_str(value.get("protection_state"), "protection_state")
            ),
            health_status=_shared(_json_opt_str(value.get("health_status"), "health_status")),
            protection_seq=seq,
            rpo_breached=_json_bool(value.get("rpo_breached"), "rpo_breached"),
            last_run_missed=_json_bool(value.get("last_run_missed"), "last_run_missed"),
            durations=durations,
            flagged=_json_names(value.get("flagged"), "flagged"),
            running=running,
            used=_json_names(value.get("used"), "used"),
        )


_STATE_VERSION: Final = 1


def _json_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _read_time(value: object, path: str) -> datetime:
    if not isinstance(value, str):
        raise ParseError(path, f"not a string: {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ParseError(path, f"not an ISO 8601 date-time: {excerpt(value)}") from None
    if parsed.utcoffset() is None:
        raise ParseError(path, f"no UTC offset: {excerpt(value)}")
    return parsed.astimezone(UTC)


def _json_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ParseError(path, f"not a string: {type(value).__name__}")
    return value


def _json_opt_str(value: object, path: str) -> str | None:
    return None if value is None else _json_str(value, path)


def _shared(value: str | None) -> str | None:
    """A restored state's protection state or health as the one string every item with it
    shares (as `core.protection` reads them), not a copy per item."""
    return None if value is None else sys.intern(value)


def _json_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ParseError(path, f"not a boolean: {excerpt(value)}")
    return value


def _json_seconds(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParseError(path, f"not a finite number: {excerpt(value)}")
    return float(value)


def _json_list(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise ParseError(path, f"not a list: {type(value).__name__}")
    return value


def _json_names(value: object, path: str) -> tuple[str, ...]:
    return tuple(
        _json_str(entry, f"{path}[{i}]") for i, entry in enumerate(_json_list(value, path))
    )


def _json_pairs(value: object, path: str) -> list[list[object]]:
    pairs: list[list[object]] = []
    for i, entry in enumerate(_json_list(value, path)):
        if not isinstance(entry, list) or len(entry) != 2:
            raise ParseError(f"{path}[{i}]", "not a pair")
        pairs.append(entry)
    return pairs


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupMissed:
    """A scheduled run passed its deadline with no job for the item."""

    item: ProtectedItem
    policy: BackupPolicy
    run: ExpectedRun
    deadline: datetime

    @property
    def event_id(self) -> str:
        """`item_event_id(item.id, "backup_missed", run.at ISO, run.kind)`."""
        return item_event_id(self.item.id, "backup_missed", _iso(self.run.at), self.run.kind.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RpoBreached:
    """The last recovery point became older than allowed.

    Attributes:
        last_recovery_point: the item's `lastRecoveryPoint`.
        allowed_s: the policy's longest gap between runs plus the grace.
        breached_at: `last_recovery_point + allowed_s`.
    """

    item: ProtectedItem
    last_recovery_point: datetime
    allowed_s: float
    breached_at: datetime

    @property
    def event_id(self) -> str:
        """`item_event_id(item.id, "rpo_breached", last_recovery_point ISO)`."""
        return item_event_id(self.item.id, "rpo_breached", _iso(self.last_recovery_point))


@dataclass(frozen=True, slots=True, kw_only=True)
class RpoRestored:
    """A fresh recovery point ended a breach."""

    item: ProtectedItem
    last_recovery_point: datetime
    allowed_s: float

    @property
    def event_id(self) -> str:
        """`item_event_id(item.id, "rpo_restored", last_recovery_point ISO)`."""
        return item_event_id(self.item.id, "rpo_restored", _iso(self.last_recovery_point))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionChanged:
    """`protection_state` or `health_status` changed (the new values are on `item`).

    Attributes:
        seq: the item's count of protection changes, this one included.
    """

    item: ProtectedItem
    previous_state: str | None
    previous_health: str | None
    seq: int

    @property
    def event_id(self) -> str:
        """`item_event_id(item.id, "protection_changed", str(seq))`."""
        return item_event_id(self.item.id, "protection_changed", str(self.seq))


@dataclass(frozen=True, slots=True, kw_only=True)
class LongRunning:
    """A running job passed its threshold.

    Attributes:
        job: the job as last listed (running).
        item: the item it belongs to, if known.
        elapsed_s: seconds since it started, at `now`.
        threshold_s: the threshold it passed.
        reason: "absolute" (`after_s`) or "median" (`factor` × `median_s`).
        median_s: the median of the item's recent durations; None with fewer than
            `min_samples`.
        samples: how many durations the median is of.
    """

    job: BackupJob
    item: ProtectedItem | None
    vault_key: str
    elapsed_s: float
    threshold_s: float
    reason: str
    median_s: float | None
    samples: int

    @property
    def event_id(self) -> str:
        """`item_event_id(vault_key + "/" + job.name, "long_running")`."""
        return item_event_id(f"{self.vault_key}/{self.job.name}", "long_running")


ItemChange: TypeAlias = BackupMissed | RpoBreached | RpoRestored | ProtectionChanged | LongRunning


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """One item's round: its changes in time order, its new state, its health."""

    changes: tuple[ItemChange, ...]
    state: ItemState
    health: ItemHealth


def item_event_id(subject: str, event: str, *parts: str) -> str:
    """32 hex chars of SHA-256 over `subject.lower() | event | part | ...` (UTF-8)."""
    text = "|".join((subject.lower(), event, *parts))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _iso(moment: datetime) -> str:
    """An instant as UTC ISO 8601 with seconds (`2026-03-29T01:00:00Z`), for event ids."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate(
    item: ProtectedItem,
    policy: BackupPolicy | None,
    state: ItemState | None,
    jobs: Sequence[BackupJob],
    *,
    seen_until: datetime,
    now: datetime,
    settings: WatchSettings,
    long_running: LongRunningSettings,
) -> Evaluation:
    """One round of one item (the rules are in the module's docstring).

    Args:
        item: the item as just read.
        policy: its policy (None: it has none, or it was not found among the vault's).
        state: its state after the previous round; None on first sight, when no protection
            change is reported and runs whose deadline is at or before `seen_until` are
            decided without a report.
        jobs: the item's jobs that started at or after `window_start(state, ...)`, any order.
        seen_until: every job of the item that started at or before this is in `jobs`.
        now: the moment of the round (for RPO age and elapsed times).
        settings: grace and early allowance of runs.
        long_running: when a running job is long-running.

    Raises:
        ValueError: `seen_until` or `now` is naive.
    """
    if seen_until.utcoffset() is None or now.utcoffset() is None:
        raise ValueError("evaluate needs aware datetimes")
    seen_until, now = seen_until.astimezone(UTC), now.astimezone(UTC)
    schedule = policy.schedule if policy is not None else None
    scheduled = _is_scheduled(item, schedule)
    changes: list[ItemChange] = []

    # Protection
    seq = 0 if state is None else state.protection_seq
    if state is not None and (
        _folded(item.protection_state) != _folded(state.protection_state)
        or _folded(item.health_status) != _folded(state.health_status)
    ):
        seq += 1
        changes.append(
            ProtectionChanged(
                item=item,
                previous_state=state.protection_state,
                previous_health=state.health_status,
                seq=seq,
            )
        )

    # Missed runs
    dated = sorted(
        (job for job in jobs if job.start_at is not None),
        key=lambda job: (job.start_at, job.name),
    )
    used: set[str] = set()
    missed: list[BackupMissed] = []
    if state is None:
        decided_through = seen_until
        last_run_missed = False
    else:
        decided_through = max(state.decided_through, seen_until)
        last_run_missed = state.last_run_missed if scheduled else False
        used = {name.lower() for name in state.used}
        if schedule is not None and seen_until > state.decided_through:
            runs = _timed_runs(schedule, settings, state.decided_through, seen_until)
            decided = [run for run in runs if state.decided_through < run.deadline <= seen_until]
            for run in decided:
                job = _take(run, dated, used) if scheduled else None
                if job is None and scheduled and policy is not None:
                    missed.append(
                        BackupMissed(item=item, policy=policy, run=run.run, deadline=run.deadline)
                    )
            if decided:
                last = decided[-1]
                last_run_missed = scheduled and bool(missed) and missed[-1].run == last.run
    missed.sort(key=lambda change: (change.run.at, change.run.kind.value))
    changes.extend(missed)

    # Recovery-point age
    rpo_breached = False if state is None else state.rpo_breached
    lrp = item.last_recovery_point
    if scheduled and schedule is not None and lrp is not None:
        allowed = _allowed_age(schedule, settings, now)
        if allowed is not None:
            breached = now - lrp > allowed
            allowed_s = allowed.total_seconds()
            if breached and not rpo_breached:
                changes.append(
                    RpoBreached(
                        item=item,
                        last_recovery_point=lrp,
                        allowed_s=allowed_s,
                        breached_at=lrp + allowed,
                    )
                )
            elif not breached and rpo_breached:
                changes.append(RpoRestored(item=item, last_recovery_point=lrp, allowed_s=allowed_s))
            rpo_breached = breached

    # Long-running jobs
    previous = () if state is None else state.durations
    durations = _durations(previous, dated, long_running.history)
    running = tuple(
        (job.name, job.start_at)
        for job in dated
        if job.start_at is not None and not job.status.is_terminal
    )
    flagged_before = () if state is None else state.flagged
    slow, flagged = long_running_jobs(
        dated,
        item=item,
        vault_key=item.vault_key,
        durations=[seconds for _, seconds in durations],
        flagged=flagged_before,
        now=now,
        settings=long_running,
    )
    changes.extend(slow)

    new_state = ItemState(
        decided_through=decided_through,
        protection_state=item.protection_state,
        health_status=item.health_status,
        protection_seq=seq,
        rpo_breached=rpo_breached,
        last_run_missed=last_run_missed if scheduled else False,
        durations=durations,
        flagged=flagged,
        running=running,
    )
    if used:
        start = window_start(new_state, policy, now=now, settings=settings)
        keep = tuple(
            job.name
            for job in dated
            if job.name.lower() in used and job.start_at is not None and job.start_at >= start
        )
        new_state = replace(new_state, used=keep)
    if not scheduled:
        health = ItemHealth.UNPROTECTED
    elif new_state.last_run_missed:
        health = ItemHealth.MISSED
    elif rpo_breached:
        health = ItemHealth.OVERDUE
    else:
        health = ItemHealth.FRESH
    return Evaluation(changes=tuple(changes), state=new_state, health=health)


def window_start(
    state: ItemState | None,
    policy: BackupPolicy | None,
    *,
    now: datetime,
    settings: WatchSettings,
) -> datetime:
    """The earliest job start the next `evaluate` of the item needs (see the module docstring).

    Raises:
        ValueError: `now` is naive.
    """
    if now.utcoffset() is None:
        raise ValueError("window_start needs an aware datetime")
    now = now.astimezone(UTC)
    schedule = policy.schedule if policy is not None else None
    parts = schedule.parts if schedule is not None else ()
    largest_grace = max(
        (_grace(part, settings) for part in parts), default=timedelta(seconds=settings.grace_s)
    )
    if state is None:
        return now - largest_grace - timedelta(seconds=settings.early_s)
    through = state.decided_through
    earliest = through
    if schedule is not None and parts:
        runs = _timed_runs(
            schedule, settings, through, max(now, through) + timedelta(seconds=settings.early_s)
        )
        for run in runs:
            if run.deadline > through:
                earliest = min(earliest, run.run.at - run.early)
    for _, start in state.running:
        earliest = min(earliest, start)
    return earliest


def long_running_jobs(
    jobs: Sequence[BackupJob],
    *,
    item: ProtectedItem | None,
    vault_key: str,
    durations: Sequence[float],
    flagged: Sequence[str],
    now: datetime,
    settings: LongRunningSettings,
) -> tuple[tuple[LongRunning, ...], tuple[str, ...]]:
    """The running jobs among `jobs` past their threshold and not in `flagged`, and the new
    flagged names (the running ones of `flagged` that `jobs` still shows, plus the new ones).

    The threshold is the least of `after_s` (when above 0) and `factor` × the median of
    `durations` (when `factor` is above 0 and there are at least `min_samples`); with neither,
    no job is long-running. Names are compared without regard to case.
    """
    samples = len(durations)
    median = statistics.median(durations) if durations else None
    median_s = median if samples >= settings.min_samples else None
    candidates: list[tuple[float, str]] = []
    if settings.after_s > 0:
        candidates.append((settings.after_s, "absolute"))
    if settings.factor > 0 and median_s is not None:
        candidates.append((settings.factor * median_s, "median"))
    threshold = min(candidates, default=None)
    running = [job for job in jobs if not job.status.is_terminal and job.start_at is not None]
    running_names = {job.name.lower() for job in running}
    kept = [name for name in flagged if name.lower() in running_names]
    known = {name.lower() for name in kept}
    found: list[LongRunning] = []
    for job in sorted(running, key=lambda job: (job.start_at, job.name)):
        assert job.start_at is not None
        elapsed = (now - job.start_at).total_seconds()
        if threshold is None or elapsed <= threshold[0] or job.name.lower() in known:
            continue
        known.add(job.name.lower())
        kept.append(job.name)
        found.append(
            LongRunning(
                job=job,
                item=item,
                vault_key=vault_key,
                elapsed_s=elapsed,
                threshold_s=threshold[0],
                reason=threshold[1],
                median_s=median_s,
                samples=samples,
            )
        )
    return tuple(found), tuple(kept)


# --------------------------------------------------------------------------------------------
# Helpers

_SCHEDULED_STATES: Final = frozenset(
    {"protected", "protectionerror", "irpending", "protectionconfigured"}
)
_BACKUP_VAULT_OPERATIONS: Final = frozenset({"scheduledbackup", "adhocbackup", "backup"})
_RPO_BEFORE: Final = timedelta(days=15)
_RPO_AFTER: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class _TimedRun:
    """An expected run with its deadline and how early a job may start for it."""

    run: ExpectedRun
    deadline: datetime
    early: timedelta
    grace: timedelta


def _folded(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def _is_scheduled(item: ProtectedItem, schedule: Schedule | None) -> bool:
    state = item.protection_state
    return (
        state is not None
        and state.casefold() in _SCHEDULED_STATES
        and schedule is not None
        and bool(schedule.parts)
    )


def _grace(part: SubSchedule, settings: WatchSettings) -> timedelta:
    cadence = part.cadence
    if isinstance(cadence, TimesOfDay) or (
        isinstance(cadence, Repeating) and cadence.on_the_wall_clock
    ):
        return timedelta(seconds=settings.grace_s)
    assert isinstance(cadence, HourlyWindow | EveryMinutes | Repeating)
    return part.interval * settings.grace_fraction


def _early(part: SubSchedule, settings: WatchSettings) -> timedelta:
    return min(timedelta(seconds=settings.early_s), part.interval / 2)


def _timed_runs(
    schedule: Schedule, settings: WatchSettings, after: datetime, until: datetime
) -> list[_TimedRun]:
    """The runs whose deadline is after `after` and whose start is at or before `until`, in
    deadline order (then start, then kind); a run two parts share counts once."""
    found: dict[tuple[datetime, RunKind], _TimedRun] = {}
    for part in schedule.parts:
        grace, early = _grace(part, settings), _early(part, settings)
        one = Schedule(time_zone=schedule.time_zone, zone=schedule.zone, parts=(part,))
        for run in expected_runs(one, after - grace, until + timedelta(microseconds=1)):
            deadline = run.at + grace
            if deadline <= after:
                continue
            key = (run.at, run.kind)
            if key not in found or found[key].grace < grace:
                found[key] = _TimedRun(run, deadline, early, grace)
    return sorted(found.values(), key=lambda r: (r.deadline, r.run.at, r.run.kind.value))


def _fits(run: ExpectedRun, operation: str) -> bool:
    text = operation.casefold()
    if run.kind is RunKind.LOG:
        return "log" in text
    if "log" in text:
        return False
    return text.startswith("backup") or text in _BACKUP_VAULT_OPERATIONS


def _take(run: _TimedRun, jobs: Sequence[BackupJob], used: set[str]) -> BackupJob | None:
    """The earliest job no run took that fits `run`; it is marked taken in `used`."""
    opens = run.run.at - run.early
    for job in jobs:
        start = job.start_at
        assert start is not None
        if start < opens:
            continue
        if start > run.deadline:
            break
        if job.name.lower() in used or not _fits(run.run, job.operation):
            continue
        used.add(job.name.lower())
        return job
    return None


def _allowed_age(schedule: Schedule, settings: WatchSettings, now: datetime) -> timedelta | None:
    """The longest gap between consecutive non-log runs plus the grace of the run ending it."""
    parts = [part for part in schedule.parts if part.kind is not RunKind.LOG] or list(
        schedule.parts
    )
    if not parts:
        return None
    timed: list[tuple[datetime, timedelta]] = []
    for part in parts:
        one = Schedule(time_zone=schedule.time_zone, zone=schedule.zone, parts=(part,))
        grace = _grace(part, settings)
        timed.extend(
            (run.at, grace) for run in expected_runs(one, now - _RPO_BEFORE, now + _RPO_AFTER)
        )
    timed.sort()
    if len(timed) < 2:
        return max(part.interval + _grace(part, settings) for part in parts)
    return max(
        (later - earlier) + grace for (earlier, _), (later, grace) in itertools.pairwise(timed)
    )


def _durations(
    previous: Sequence[tuple[str, float]], jobs: Sequence[BackupJob], history: int
) -> tuple[tuple[str, float], ...]:
    known = {name.lower() for name, _ in previous}
    added: list[tuple[str, float]] = []
    for job in jobs:
        if not job.status.is_terminal or job.name.lower() in known:
            continue
        seconds = job.duration_s
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            continue
        known.add(job.name.lower())
        added.append((job.name, seconds))
    merged = (*previous, *added)
    return merged[-history:] if history > 0 else ()
