"""The simulated estate's clockwork: builds subscriptions, vaults and items, and runs their jobs.

Rules:
- The world is a pure function of its seed and the times it is advanced to: every protected item
  draws from its own random stream, seeded by (seed, item id), so the order or timing of requests
  never changes what happens.
- Nothing here knows about HTTP or JSON; `wire.py` renders these objects as ARM does.
- Every status change the world makes is appended to the ground-truth transition log.
- The objects it changes are in `estate.py`; the tables it draws from are in `catalogue.py`.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.emulator.backup_vaults import BackupVaultEstate
from monitor.emulator.catalogue import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    COMPLETED_WITH_WARNINGS,
    ERRORS,
    FAILED,
    LOCATIONS,
    PROFILES,
    TERMINAL,
    WORDS,
    Profile,
    Workload,
    guid,
    status_plan,
)
from monitor.emulator.estate import (
    ExpectedRun,
    Job,
    Operation,
    ProtectedItem,
    Subscription,
    Transition,
    Vault,
)
from monitor.emulator.protection import next_due, vault_policies

PROTECTED = "Protected"
PROTECTION_STATES = frozenset({PROTECTED, "ProtectionStopped", "ProtectionError"})
SUCCEEDED = frozenset({COMPLETED, COMPLETED_WITH_WARNINGS})
MAX_START_DELAY_S = 300.0  # a scheduled job starts up to this long after its due time


@dataclass(frozen=True, slots=True)
class _Due:
    """Heap entry: schedule part `part` of `item`'s policy is due."""

    item: ProtectedItem
    part: int


@dataclass(frozen=True, slots=True)
class _Start:
    """Heap entry: the job of a scheduled run starts, with the name drawn at its due time."""

    item: ProtectedItem
    part: int
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorldSettings:
    """Everything that shapes the estate; equal settings and times give an equal world.

    Attributes:
        timespan_duration_rate: share of jobs whose durations are written as .NET TimeSpan text
            ("00:20:23.0896697") instead of ISO 8601 ("PT1223.09S"), as real responses mix both.
        retention_s: jobs that ended longer ago than this are forgotten.
        operation_delay_s: how long a triggered backup's operation stays InProgress before its
            job exists (the real service lists a new job only after a few seconds).
        backup_vaults_per_subscription: Backup vaults (Microsoft.DataProtection) in each
            subscription, with their own random streams and transitions; 0 (the default) makes
            none and leaves the Recovery Services world exactly as without them.
        backup_vault_history_jobs: finished jobs each Backup vault already lists when the world
            starts, spread evenly over the 13 days before it (their own random stream; 0, the
            default, draws nothing). Backup vault retention is then at least 20 days.
        skip_rate: in the "policies" profile, the probability that a scheduled run makes no
            job, drawn from the item's own stream.
    """

    seed: int = 1
    subscriptions: int = 2
    vaults_per_subscription: int = 5
    profile: Profile = PROFILES["demo"]
    time_scale: float = 1.0
    timespan_duration_rate: float = 0.3
    retention_s: float = 7 * 86400.0
    operation_delay_s: float = 3.0
    tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    backup_vaults_per_subscription: int = 0
    backup_vault_history_jobs: int = 0
    skip_rate: float = 0.0


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _epoch(at: datetime) -> float:
    return at.timestamp()


class World:
    """The estate and its clockwork; call `advance(now)` before reading it.

    Args:
        settings: the shape of the estate.
        now: the moment the world is created; it already ran `profile.history_s` before it.

    Raises:
        ValueError: the "policies" profile with a `time_scale` other than 1 (its schedules are
            wall-clock times; speed the world up with a scaled clock instead), or a `skip_rate`
            outside [0, 1].
    """

    def __init__(self, settings: WorldSettings, now: datetime) -> None:
        if settings.profile.cadence == "policy" and settings.time_scale != 1:
            raise ValueError("the policies profile runs in world time: time_scale must be 1")
        if not 0 <= settings.skip_rate <= 1:
            raise ValueError(f"skip_rate must be between 0 and 1, got {settings.skip_rate}")
        self.settings = settings
        self.profile = settings.profile.scaled(settings.time_scale)
        self.tenant_id = settings.tenant_id
        self.subscriptions: dict[str, Subscription] = {}
        self.vaults: dict[str, Vault] = {}  # every vault ever created, by lower-cased id
        self.operations: dict[str, Operation] = {}
        self.transitions: list[Transition] = []
        self.expected: list[ExpectedRun] = []  # every scheduled run whose due time passed
        self.items: dict[str, ProtectedItem] = {}  # by lower-cased ARM id
        self._heap: list[tuple[datetime, int, object]] = []
        self._seq = 0
        self._now = now - timedelta(seconds=self.profile.history_s)
        self._trigger_rng = random.Random(_stable_seed(settings.seed, "triggers"))
        rng = random.Random(_stable_seed(settings.seed, "estate"))
        for s in range(settings.subscriptions):
            sub_id = guid(rng)
            sub = Subscription(id=sub_id, display_name=f"sub-{s:03d}")
            self.subscriptions[sub_id] = sub
            for v in range(settings.vaults_per_subscription):
                rg = f"rg-{rng.choice(WORDS)}-{v // 4:02d}"
                self.add_vault(
                    subscription_id=sub_id,
                    resource_group=rg,
                    name=f"rsv-{s:03d}-{v:04d}",
                    location=rng.choice(LOCATIONS),
                    at=self._now,
                )
        self.backup_vaults = BackupVaultEstate(
            seed=settings.seed,
            per_subscription=settings.backup_vaults_per_subscription,
            subscription_ids=list(self.subscriptions),
            profile=self.profile,
            retention_s=settings.retention_s,
            start=self._now,
            history_jobs=settings.backup_vault_history_jobs,
        )
        self.advance(now)

    # ----------------------------------------------------------------------- estate changes

    @property
    def now(self) -> datetime:
        """The latest moment the world has been advanced to."""
        return self._now

    def add_vault(
        self,
        *,
        subscription_id: str,
        resource_group: str,
        name: str,
        location: str,
        at: datetime | None = None,
    ) -> Vault:
        """Create a vault (and its subscription if new) whose items start running from `at`.

        Raises:
            ValueError: a vault with that id exists already.
        """
        at = at or self._now
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            sub = Subscription(
                id=subscription_id, display_name=f"sub-{len(self.subscriptions):03d}"
            )
            self.subscriptions[subscription_id] = sub
        rng = random.Random(_stable_seed(self.settings.seed, "vault", subscription_id, name))
        vault = Vault(
            subscription_id=subscription_id,
            resource_group=resource_group,
            name=name,
            location=location,
            provider_casing=rng.choice(
                ("Microsoft.RecoveryServices", "microsoft.recoveryservices")
            ),
        )
        if vault.key in self.vaults and not self.vaults[vault.key].deleted:
            raise ValueError(f"vault {vault.id} exists already")
        self.vaults[vault.key] = vault
        sub.vaults[vault.key] = vault
        low, high = self.profile.items_per_vault
        by_policy = self.profile.cadence == "policy"
        policies = vault_policies(vault.id) if by_policy else {}
        vault.policies = list(policies.values())
        for i in range(rng.randint(low, high)):
            item = self._make_item(vault, i, rng)
            vault.items.append(item)
            self.items[item.id.lower()] = item
            if not by_policy:
                self._push(at + timedelta(seconds=self._first_start_s(item)), item)
                continue
            match item.workload:
                case Workload.VM:
                    item.policy = policies[rng.choice(("vm_daily", "vm_weekly", "vm_hourly"))]
                case Workload.SQL:
                    item.policy = policies["sql"]
                case _:
                    item.policy = policies["files"]
            for part_index, part in enumerate(item.policy.parts):
                self._push(next_due(part.cadence, item.policy.zone, at), _Due(item, part_index))
        if self.profile.vault_job_every_s > 0:
            gap = rng.expovariate(1.0 / self.profile.vault_job_every_s)
            self._push(at + timedelta(seconds=gap), ("vaultjob", vault, rng))
        return vault

    def delete_vault(self, vault_id: str) -> Vault:
        """Delete a vault: ARM answers 404 for it from now on and its jobs stop changing.

        Raises:
            KeyError: no such live vault.
        """
        vault = self.vaults.get(vault_id.lower())
        if vault is None or vault.deleted:
            raise KeyError(vault_id)
        vault.deleted = True
        del self.subscriptions[vault.subscription_id].vaults[vault.key]
        return vault

    def set_forbidden(self, vault_id: str, forbidden: bool) -> Vault:
        """Make ARM answer 403 AuthorizationFailed for this vault (its jobs keep running).

        Raises:
            KeyError: no such vault.
        """
        vault = self.vaults.get(vault_id.lower())
        if vault is None:
            raise KeyError(vault_id)
        vault.forbidden = forbidden
        return vault

    def trigger_backup(self, vault: Vault, item: ProtectedItem) -> Operation:
        """Start an on-demand backup: an operation now, a running job `operation_delay_s` later."""
        op = Operation(id=guid(self._trigger_rng), vault=vault, item=item, start_at=self._now)
        self.operations[op.id.lower()] = op
        self._push(self._now + timedelta(seconds=self.settings.operation_delay_s), op)
        return op

    # ----------------------------------------------------------------------- clockwork

    def advance(self, now: datetime) -> None:
        """Apply every scheduled start and status change up to `now`, in time order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, what = heapq.heappop(heap)
            self._now = at
            if isinstance(what, Job):
                self._step(what, at)
            elif isinstance(what, ProtectedItem):
                self._start_scheduled(what, at)
            elif isinstance(what, Operation):
                self._resolve(what, at)
            elif isinstance(what, _Due):
                self._due(what, at)
            elif isinstance(what, _Start):
                self._start_run(what, at)
            elif isinstance(what, tuple):
                self._start_vault_job(what[1], what[2], at)
        if now > self._now:
            self._now = now
        self.backup_vaults.advance(now)

    def _push(self, at: datetime, what: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, what))

    def _record(self, job: Job, from_status: str | None, at: datetime) -> None:
        self.transitions.append(
            Transition(
                seq=len(self.transitions) + 1,
                vault_id=job.vault.id,
                job_id=job.name,
                job_type=job.job_type,
                operation=job.operation,
                from_status=from_status,
                to_status=job.status,
                at=at,
            )
        )

    def _step(self, job: Job, at: datetime) -> None:
        if job.vault.deleted or not job.plan:
            return
        if job.item is not None and job.item.hang:
            job.item.hung.append(job)  # stays InProgress until `set_hang(item, False)`
            return
        _, status = job.plan.pop(0)
        before = job.status
        job.status = status
        job.version += 1
        if status == CANCELLING:
            job.cancelling_at = at
        if status in TERMINAL:
            job.end_at = at
            self._follow(job, at)
        self._record(job, before, at)
        if job.plan:
            self._push(job.plan[0][0], job)
        elif job.end_at is not None:
            self._prune(job.vault, at)

    def _prune(self, vault: Vault, at: datetime) -> None:
        horizon = _epoch(at) - self.settings.retention_s
        drop = 0
        for job in vault.jobs:
            if job.end_at is None or _epoch(job.end_at) >= horizon:
                break
            drop += 1
        if drop:
            for job in vault.jobs[:drop]:
                del vault.jobs_by_name[job.name.lower()]
            del vault.jobs[:drop]
            del vault.job_starts[:drop]
            vault.pruned += drop

    def _follow(self, job: Job, at: datetime) -> None:
        """An item's backup state follows its backup jobs as they end."""
        item = job.item
        if item is None or not job.operation.startswith("Backup"):
            return
        item.last_backup_at = job.start_at
        item.last_backup_status = job.status
        if job.status in SUCCEEDED and job.operation != "Backup (Log)":
            item.last_recovery_point = at

    # ----------------------------------------------------------------------- item controls

    def item(self, item_id: str) -> ProtectedItem:
        """The protected item with this ARM id (any casing).

        Raises:
            KeyError: no such item.
        """
        return self.items[item_id.lower()]

    def set_skip(self, item: ProtectedItem, skip: bool) -> None:
        """Make the item's schedule stop (or resume) making jobs, silently."""
        item.skip = skip

    def set_hang(self, item: ProtectedItem, hang: bool) -> None:
        """Hold the item's jobs InProgress (True); False lets each finish, its remaining
        running time counted from now."""
        item.hang = hang
        if hang:
            return
        held, item.hung = item.hung, []
        for job in held:
            shift = self._now - job.plan[0][0]
            if shift.total_seconds() > 0:
                job.plan = [(t + shift, s) for t, s in job.plan]
            self._push(job.plan[0][0], job)

    def set_protection(self, item: ProtectedItem, state: str) -> None:
        """Change the item's protection state; its schedule makes runs only while Protected.

        Raises:
            ValueError: not one of PROTECTION_STATES.
        """
        if state not in PROTECTION_STATES:
            raise ValueError(f"state must be one of {', '.join(sorted(PROTECTION_STATES))}")
        item.protection_state = state

    def expected_since(self, cursor: int, limit: int = 10_000) -> list[ExpectedRun]:
        """Scheduled runs with `seq` greater than `cursor`, in due order."""
        return self.expected[cursor : cursor + limit]

    # ----------------------------------------------------------------------- schedules

    def _due(self, due: _Due, at: datetime) -> None:
        item = due.item
        if item.vault.deleted or item.policy is None:
            return
        policy = item.policy
        part = policy.parts[due.part]
        self._push(next_due(part.cadence, policy.zone, at), due)
        if item.protection_state != PROTECTED:
            return
        rng = item.rng
        draw, delay, name = rng.random(), rng.uniform(0, MAX_START_DELAY_S), guid(rng)
        skipped = (
            "skip_control" if item.skip else "skip_rate" if draw < self.settings.skip_rate else None
        )
        self.expected.append(
            ExpectedRun(
                seq=len(self.expected) + 1,
                item=item,
                policy_id=policy.id,
                due=at,
                kind=part.kind,
                job_id=None if skipped else name,
                skipped=skipped,
            )
        )
        if skipped is None:
            self._push(at + timedelta(seconds=delay), _Start(item, due.part, name))

    def _start_run(self, start: _Start, at: datetime) -> None:
        item = start.item
        if item.vault.deleted or item.policy is None:
            return
        part = item.policy.parts[start.part]
        self._start_job(
            vault=item.vault,
            item=item,
            rng=item.rng,
            at=at,
            operation=part.operation,
            duration_s=item.rng.uniform(*part.duration_s),
            user_triggered=False,
            name=start.name,
        )

    # ----------------------------------------------------------------------- items and jobs

    def _make_item(self, vault: Vault, index: int, rng: random.Random) -> ProtectedItem:
        if self.profile.cadence == "policy":
            workload = rng.choices((Workload.VM, Workload.SQL, Workload.FILES), (60, 20, 20))[0]
        else:
            workload = rng.choices(list(Workload), weights=(45, 15, 15, 13, 12))[0]
        word = rng.choice(WORDS)
        rg = vault.resource_group
        item_rng = random.Random(_stable_seed(self.settings.seed, "item", vault.key, index))
        extra: dict[str, str] = {}
        match workload:
            case Workload.VM:
                entity = f"vm-{word}-{index:02d}"
                container = f"IaasVMContainer;iaasvmcontainerv2;{rg};{entity}"
                name = f"VM;iaasvmcontainerv2;{rg};{entity}"
                job_type = "AzureIaaSVMJobV2" if rng.random() < 0.25 else "AzureIaaSVMJob"
                bmt = "AzureIaasVM"
                extra = {"containerName": f"iaasvmcontainerv2;{rg};{entity}"}
            case Workload.SQL:
                host = f"sqlvm-{word}-{index:02d}"
                entity = f"{word}db{index:02d}"
                container = f"VMAppContainer;Compute;{rg};{host}"
                name = f"SQLDataBase;mssqlserver;{entity}"
                job_type, bmt = "AzureWorkloadJob", "AzureWorkload"
                extra = {"workloadType": "SQLDataBase", "host": host}
            case Workload.FILES:
                account = f"st{word}{index:02d}{vault.name[-4:]}"
                entity = f"share-{word}"
                container = f"StorageContainer;Storage;{rg};{account}"
                name = f"AzureFileShare;{entity}"
                job_type, bmt = "AzureStorageJob", "AzureStorage"
                extra = {"storageAccountName": account, "storageAccountVersion": "Storage"}
            case Workload.MAB:
                server = f"srv-{word}-{index:02d}.contoso.local"
                entity = server
                container = f"Windows;{server}"
                name = f"FileFolder;{server}"
                job_type, bmt = "MabJob", "MAB"
                extra = {
                    "mabServerName": server,
                    "mabServerType": "Windows",
                    "workloadType": "FileFolder",
                }
            case Workload.DPM:
                server = f"dpm-{word}-{index:02d}.contoso.local"
                entity = f"{word}-volume-{index:02d}"
                container = f"DPMContainer;{server}"
                name = f"Volume;{entity}"
                job_type = "DpmJob"
                bmt = "DPM" if rng.random() < 0.6 else "AzureBackupServer"
                extra = {
                    "dpmServerName": server,
                    "containerName": server,
                    "containerType": "DPMContainer",
                    "workloadType": "FileFolder",
                }
        return ProtectedItem(
            vault=vault,
            workload=workload,
            entity=entity,
            container=container,
            name=name,
            job_type=job_type,
            backup_management_type=bmt,
            extra=extra,
            rng=item_rng,
            offset_s=item_rng.uniform(0, self.profile.period_s),
        )

    def _first_start_s(self, item: ProtectedItem) -> float:
        p = self.profile
        if p.cadence == "interval":
            return item.rng.uniform(0, p.gap_s[1])
        return item.offset_s

    def _start_scheduled(self, item: ProtectedItem, at: datetime) -> None:
        if item.vault.deleted:
            return
        p, rng = self.profile, item.rng
        operation = "Backup"
        if item.workload is Workload.SQL:
            due_full = _epoch(at) - item.last_full_at >= p.period_s * 0.99
            if p.cadence == "daily" and not due_full:
                operation = "Backup (Log)"
            else:
                operation = rng.choices(
                    ("Backup (Full)", "Backup (Differential)", "Backup (Log)"), (5, 2, 3)
                )[0]
            if operation == "Backup (Full)":
                item.last_full_at = _epoch(at)
        elif item.workload is Workload.VM and rng.random() < 0.04:
            operation = "Restore"
        duration = rng.uniform(*p.duration_s)
        if operation == "Backup (Log)":
            duration = duration / 10
        self._start_job(
            vault=item.vault,
            item=item,
            rng=rng,
            at=at,
            operation=operation,
            duration_s=duration,
            user_triggered=False,
        )
        if p.cadence == "interval":
            nxt = at + timedelta(seconds=rng.uniform(*p.gap_s))
        elif item.workload is Workload.SQL and p.log_backup_every_s > 0:
            nxt = at + timedelta(seconds=p.log_backup_every_s)
        else:
            nxt = at + timedelta(seconds=p.period_s)
        self._push(nxt, item)

    def _start_vault_job(self, vault: Vault, rng: random.Random, at: datetime) -> None:
        if vault.deleted:
            return
        self._start_job(
            vault=vault,
            item=None,
            rng=rng,
            at=at,
            operation="UpdateCustomerManagedKey",
            duration_s=rng.uniform(2.0, 20.0) / self.settings.time_scale,
            user_triggered=True,
        )
        gap = rng.expovariate(1.0 / self.profile.vault_job_every_s)
        self._push(at + timedelta(seconds=gap), ("vaultjob", vault, rng))

    def _resolve(self, op: Operation, at: datetime) -> None:
        if op.vault.deleted:
            return
        rng = random.Random(_stable_seed(self.settings.seed, "operation", op.id))
        op.job = self._start_job(
            vault=op.vault,
            item=op.item,
            rng=rng,
            at=at,
            operation="Backup",
            duration_s=rng.uniform(*self.profile.duration_s),
            user_triggered=True,
            outcome=COMPLETED,
        )

    def _start_job(
        self,
        *,
        vault: Vault,
        item: ProtectedItem | None,
        rng: random.Random,
        at: datetime,
        operation: str,
        duration_s: float,
        user_triggered: bool,
        outcome: str | None = None,
        name: str | None = None,
    ) -> Job:
        weights = self.profile.outcome_weights
        if outcome is None:
            outcome = rng.choices((COMPLETED, COMPLETED_WITH_WARNINGS, FAILED, CANCELLED), weights)[
                0
            ]
        workload = item.workload if item else None
        error = rng.choice(ERRORS[workload]) if outcome == FAILED else None
        plan = status_plan(at, duration_s, outcome, rng)
        job = Job(
            name=guid(rng) if name is None else name,
            vault=vault,
            item=item,
            job_type=item.job_type if item else "VaultJob",
            operation=operation,
            backup_management_type=item.backup_management_type if item else None,
            entity=item.entity if item else vault.name,
            extra=dict(item.extra) if item else {},
            start_at=at,
            duration_s=duration_s,
            plan=plan,
            outcome=outcome,
            error=error,
            timespan=rng.random() < self.settings.timespan_duration_rate,
            is_user_triggered=user_triggered,
            activity_id=f"{guid(rng)}-{at:%Y-%m-%dT%H:%M:%SZ}-Ibz"
            if rng.random() < 0.1
            else guid(rng),
            ordinal=vault.pruned + len(vault.jobs),
        )
        vault.jobs.append(job)
        vault.job_starts.append(_epoch(at))
        vault.jobs_by_name[job.name.lower()] = job
        self._record(job, None, at)
        self._push(plan[0][0], job)
        return job

    # ----------------------------------------------------------------------- queries

    def live_vault(self, vault_id: str) -> Vault | None:
        """The vault with this id (any casing), unless it does not exist or was deleted."""
        vault = self.vaults.get(vault_id.lower())
        return None if vault is None or vault.deleted else vault

    def jobs_in_window(
        self, vault: Vault, start_at: datetime | None, end_at: datetime | None
    ) -> tuple[int, int]:
        """Index range [lo, hi) of `vault.jobs` that started inside [start_at, end_at]."""
        lo = 0 if start_at is None else bisect.bisect_left(vault.job_starts, _epoch(start_at))
        end = self._now if end_at is None else end_at
        hi = bisect.bisect_right(vault.job_starts, _epoch(end))
        return lo, hi

    def transitions_since(self, cursor: int, limit: int = 10_000) -> list[Transition]:
        """Transitions with `seq` greater than `cursor`, oldest first."""
        return self.transitions[cursor : cursor + limit]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """A UTC-aware datetime; a convenience for tests and fixtures."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
