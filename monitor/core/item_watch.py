"""What should have happened to one protected item, against what did: one evaluation step.

Each round the shell reads a vault's protected items, its policies, and the jobs that started
since the oldest undecided moment; `evaluate` then decides, for one item:

- **missed runs**: every expected run (`core.schedule.expected_runs` of the item's policy)
  whose deadline (its start plus a grace) is inside `(state.decided_through, seen_until]` and
  that no job of the item started for, from `early_s` before the run up to its deadline, each
  job counting for at most one run; only while the item is protected and has a policy;
- **recovery-point age (RPO)**: breached when `lastRecoveryPoint` is older than the policy's
  longest gap between runs plus the grace; restored when it is fresh again;
- **protection**: a change of `protection_state` or `health_status` since the last round;
- **long-running jobs**: a running job of the item past `LongRunningSettings`' threshold, once.

The state it returns is what the shell stores (`ItemState.to_json`), in the same transaction as
the events; the same inputs give the same events with the same `event_id`s. Nothing here reads
the clock: `now` and `seen_until` are arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeAlias

from monitor.core.jobs import BackupJob
from monitor.core.protection import BackupPolicy, ProtectedItem
from monitor.core.schedule import ExpectedRun

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
    """

    decided_through: datetime
    protection_state: str | None
    health_status: str | None
    protection_seq: int = 0
    rpo_breached: bool = False
    last_run_missed: bool = False
    durations: tuple[tuple[str, float], ...] = ()
    flagged: tuple[str, ...] = ()
    running: tuple[tuple[str, datetime], ...] = ()

    def to_json(self) -> dict[str, object]:
        """A JSON object that `from_json` reads back into an equal state."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, value: object) -> ItemState:
        """Read a stored state back.

        Raises:
            ParseError: `value` is not a state `to_json` wrote.
        """
        raise NotImplementedError


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
    """One round of one item.

    Args:
        item: the item as just read.
        policy: its policy (None: it has none, or it was not found among the vault's).
        state: its state after the previous round; None on first sight, when no protection
            change is reported and runs whose deadline is at or before `seen_until` are
            decided without a report.
        jobs: the item's jobs that started at or after `window_start(state, ...)`, any order.
        seen_until: every job of the item that started at or before this is in `jobs`.
        now: the moment of the round (for RPO age and elapsed times).
    """
    raise NotImplementedError


def window_start(
    state: ItemState | None,
    policy: BackupPolicy | None,
    *,
    now: datetime,
    settings: WatchSettings,
) -> datetime:
    """The earliest job start the next `evaluate` of the item needs."""
    raise NotImplementedError


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
    flagged names (the running ones of `flagged` that `jobs` still shows, plus the new ones)."""
    raise NotImplementedError
