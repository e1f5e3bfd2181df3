"""The estate's objects: subscriptions, vaults, protected items, jobs, operations, transitions.

Plain records; `world.py` creates and changes them, `wire.py` renders them as ARM does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

from monitor.emulator.catalogue import IN_PROGRESS, TERMINAL, ErrorSpec, Workload
from monitor.emulator.protection import Policy


@dataclass(slots=True, kw_only=True)
class Subscription:
    """A subscription and its vaults (deleted vaults are removed from `vaults`)."""

    id: str
    display_name: str
    vaults: dict[str, Vault] = field(default_factory=dict)  # by lower-cased vault id


@dataclass(slots=True, kw_only=True, eq=False)
class Vault:
    """A Recovery Services vault; its job list is append-only and sorted by start time."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    provider_casing: str  # how job ids spell the provider ("Microsoft.RecoveryServices" or lower)
    items: list[ProtectedItem] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    job_starts: list[float] = field(default_factory=list)  # epoch seconds, parallel to jobs
    jobs_by_name: dict[str, Job] = field(default_factory=dict)  # lower-cased job name
    pruned: int = 0  # jobs dropped from the front of `jobs` by retention
    policies: list[Policy] = field(default_factory=list)  # only in the "policies" profile
    deleted: bool = False
    forbidden: bool = False

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.RecoveryServices/vaults/{self.name}"
        )

    @property
    def key(self) -> str:
        return self.id.lower()


@dataclass(slots=True, kw_only=True, eq=False)
class ProtectedItem:
    """A protected VM, database, file share or server; it runs backups on a schedule."""

    vault: Vault
    workload: Workload
    entity: str
    container: str
    name: str
    job_type: str
    backup_management_type: str
    extra: dict[str, str]  # type-specific fields (server names, storage account, workload type)
    rng: random.Random
    offset_s: float  # schedule offset inside the period, for daily cadence
    last_full_at: float = 0.0
    policy: Policy | None = None  # only in the "policies" profile
    protection_state: str = "Protected"
    skip: bool = False  # the schedule makes no jobs (POST /_emulator/items/skip)
    hang: bool = False  # its jobs stay InProgress (POST /_emulator/items/hang)
    hung: list[Job] = field(default_factory=list)  # jobs held back while hung
    last_backup_at: datetime | None = None  # start of the latest backup job that ended
    last_backup_status: str | None = None
    last_recovery_point: datetime | None = None  # end of the latest succeeded non-log backup

    @property
    def id(self) -> str:
        return (
            f"{self.vault.id}/backupFabrics/Azure/protectionContainers/{self.container}"
            f"/protectedItems/{self.name}"
        )


@dataclass(slots=True, kw_only=True, eq=False)
class Job:
    """One backup job and its planned life; `status` is what the API says now."""

    name: str
    vault: Vault
    item: ProtectedItem | None
    job_type: str
    operation: str
    backup_management_type: str | None
    entity: str
    extra: dict[str, str]
    start_at: datetime
    duration_s: float  # planned running time
    plan: list[tuple[datetime, str]]  # remaining (at, status) steps
    outcome: str
    error: ErrorSpec | None
    timespan: bool  # write durations as .NET TimeSpan text
    is_user_triggered: bool
    activity_id: str
    ordinal: int = 0
    status: str = IN_PROGRESS
    end_at: datetime | None = None
    cancelling_at: datetime | None = None
    version: int = 0  # bumped on every change
    list_cache: dict[str, object] | None = None  # wire rendering, kept once terminal
    detail_cache: dict[str, object] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One status change the world made: the ground truth the monitor is judged against."""

    seq: int
    vault_id: str
    job_id: str
    job_type: str
    operation: str
    from_status: str | None
    to_status: str
    at: datetime


@dataclass(slots=True, kw_only=True)
class ExpectedRun:
    """One scheduled run whose due time passed: the ground truth of missed backups.

    Attributes:
        job_id: the name of the job the run made (it starts up to 300 s after `due`), or None.
        skipped: why no job was made: "skip_rate" (the seeded draw) or "skip_control".
    """

    seq: int
    item: ProtectedItem
    policy_id: str
    due: datetime
    kind: str
    job_id: str | None
    skipped: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "item_id": self.item.id,
            "vault_id": self.item.vault.id,
            "policy_id": self.policy_id,
            "due": self.due,
            "kind": self.kind,
            "job_id": self.job_id,
            "skipped": self.skipped,
        }


@dataclass(slots=True, kw_only=True, eq=False)
class Operation:
    """A triggered backup's async operation; resolves to a job after `operation_delay_s`."""

    id: str
    vault: Vault
    item: ProtectedItem
    start_at: datetime
    job: Job | None = None

    @property
    def status(self) -> str:
        return "Succeeded" if self.job is not None else IN_PROGRESS
