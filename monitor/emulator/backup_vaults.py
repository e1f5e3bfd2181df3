"""Backup vaults (Microsoft.DataProtection): their backup instances, jobs and wire shapes.

Opt-in: `WorldSettings.backup_vaults_per_subscription` (0, the default, makes none, and then
nothing here draws a random number, so the Recovery Services world is exactly as before).

Rules:
- Own random streams, seeded by (seed, "backup-vaults", ...): Recovery Services jobs never change
  because Backup vaults exist.
- Own clock heap, advanced to the same moments as the world's (`World.advance` calls
  `advance`), and own transition log (`/_emulator/transitions?kind=backup_vault`).
- Facts from shared/reference/azure-api.md §d and the spec examples (`specification/
  dataprotection/.../stable/2025-09-01/examples/JobCRUD/{ListJobs,GetJob}.json`): flat
  `AzureBackupJob` properties; `type` spelled `Microsoft.DataProtection/Backupvaults/backupJobs`;
  `activityID` and `sourceSubscriptionID` with a capital `ID`; TimeSpan durations (`00:00:00`
  while running); no `endTime` while running; `supportedActions` `[]`, then `[""]` once done.
- Two status vocabularies: the examples' `Started`/`Succeeded`/`Failed` and the doc string's
  `InProgress`/`Completed`/`CompletedWithWarnings`/`Failed`/`Cancelling`/`Cancelled`. Each vault
  speaks one of them, alternately, so any two vaults show both.
- The list is in start order, oldest first, as the ListJobs example is; the whole retained
  history comes back, page after page, through `nextLink` (the API has no `$filter`).
- Opt-in history seed (`history_jobs`): each vault starts with that many finished jobs spread
  evenly over the `HISTORY_SPAN_S` (13 days) before the estate's start, drawn from their own
  stream (seed, "backup-vaults", "history", vault), recorded in the transition log.
- Each job keeps its status history (`BvJob.history`), so `as_of` renders it as it was at an
  earlier moment (the Resource Graph endpoint's staleness, `resource_graph.py`).
- In the "policies" profile each instance's backups follow its Data Protection policy's
  repeating interval (`SCHEDULES`: every 4 hours for disks, daily for the rest, from
  2021-08-15T22:00:00Z, in UTC), and `backupPolicies` lists those policies; in the other
  profiles they run on the profile's cadence and no policy is listed.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.emulator.catalogue import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    COMPLETED_WITH_WARNINGS,
    FAILED,
    IN_PROGRESS,
    LOCATIONS,
    WORDS,
    Profile,
    guid,
    status_plan,
)

JSON = dict[str, Any]

VAULT_TYPE = "Microsoft.DataProtection/BackupVaults"  # as GetBackupVaultsInSubscription.json
JOB_TYPE = "Microsoft.DataProtection/Backupvaults/backupJobs"  # capital B, lower-case v

# Statuses. "examples": what the spec examples show; "doc": what the swagger's doc string lists.
STARTED, SUCCEEDED = "Started", "Succeeded"  # the examples' words; the others: catalogue.py
VOCABULARIES = ("examples", "doc")
RUNNING_STATUS = {"examples": STARTED, "doc": IN_PROGRESS}
TERMINAL = frozenset({SUCCEEDED, COMPLETED, COMPLETED_WITH_WARNINGS, FAILED, CANCELLED})
HISTORY_SPAN_S = 13 * 86400.0  # the history seed's jobs start in this span before the start
HISTORY_RETENTION_S = HISTORY_SPAN_S + 7 * 86400.0  # at least this retention with a history seed
INSTANCE_TYPE = "Microsoft.DataProtection/backupVaults/backupInstances"
POLICY_TYPE = "Microsoft.DataProtection/backupVaults/backupPolicies"
SCHEDULE_ANCHOR = datetime(2021, 8, 15, 22, 0, tzinfo=UTC)
# The "policies" profile's Data Protection schedules: (ISO 8601 duration, seconds) by kind.
SCHEDULES = {"disk": ("PT4H", 4 * 3600.0)}
DAILY = ("P1D", 86400.0)


def schedule_of(kind: str) -> tuple[str, float]:
    """The repeating interval of a datasource kind's policy: ISO duration and seconds."""
    return SCHEDULES.get(kind, DAILY)


def next_run(kind: str, after: datetime) -> datetime:
    """The first run of `kind`'s policy strictly after `after` (anchor + k x period)."""
    period = schedule_of(kind)[1]
    k = math.floor((after - SCHEDULE_ANCHOR).total_seconds() / period) + 1
    return SCHEDULE_ANCHOR + timedelta(seconds=k * period)


@dataclass(frozen=True, slots=True)
class Datasource:
    """One datasource type of a Backup vault: its ARM type and how its instances are named."""

    type: str
    kind: str  # disk, blob, pg, pgflex, mysqlflex, aks, adls


DATASOURCES = (
    Datasource("Microsoft.Compute/disks", "disk"),
    Datasource("Microsoft.Storage/storageAccounts/blobServices", "blob"),
    Datasource("Microsoft.DBforPostgreSQL/servers/databases", "pg"),
    Datasource("Microsoft.DBforPostgreSQL/flexibleServers", "pgflex"),
    Datasource("Microsoft.DBforMySQL/flexibleServers", "mysqlflex"),
    Datasource("Microsoft.ContainerService/managedClusters", "aks"),
    Datasource("Microsoft.Storage/storageAccounts/adlsBlobServices", "adls"),
)

_PERMISSIONS = (
    "UserErrorMissingRequiredPermissions",
    "The Backup vault's managed identity lacks a required role on the datasource.",
    "Grant the vault's identity the roles this datasource's backup needs.",
)
ERRORS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "disk": (
        (
            "UserErrorDiskSnapshotNotFound",
            "The snapshot of the disk could not be found.",
            "Check that the snapshot resource group exists.",
        ),
        _PERMISSIONS,
    ),
    "blob": (_PERMISSIONS,),
    "adls": (_PERMISSIONS,),
    "pg": (
        (
            "UserErrorServerStopped",
            "The database server is stopped.",
            "Start the server and retry the backup.",
        ),
        _PERMISSIONS,
    ),
    "pgflex": (
        (
            "UserErrorServerStopped",
            "The flexible server is stopped.",
            "Start the server and retry the backup.",
        ),
    ),
    "mysqlflex": (_PERMISSIONS,),
    "aks": (
        (
            "UserErrorBackupExtensionNotInstalled",
            "The backup extension is not installed on the cluster.",
            "Install the backup extension and enable trusted access.",
        ),
    ),
}


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(slots=True, kw_only=True, eq=False)
class BackupVault:
    """A Backup vault; its job list is append-only, in start order."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    vocabulary: str  # "examples" or "doc"
    instances: list[BackupInstance] = field(default_factory=list)
    jobs: list[BvJob] = field(default_factory=list)
    jobs_by_name: dict[str, BvJob] = field(default_factory=dict)  # lower-cased job name
    pruned: int = 0  # jobs dropped from the front by retention

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.DataProtection/backupVaults/{self.name}"
        )

    @property
    def key(self) -> str:
        return self.id.lower()


@dataclass(slots=True, kw_only=True, eq=False)
class BackupInstance:
    """One protected datasource of a Backup vault; it runs backups on the profile's cadence."""

    vault: BackupVault
    id: str  # the instance's guid
    datasource: Datasource
    data_source_id: str
    data_source_name: str
    data_source_set_name: str
    friendly_name: str
    resource_group: str
    policy: str
    rng: random.Random
    offset_s: float


@dataclass(slots=True, kw_only=True, eq=False)
class BvJob:
    """One Backup vault job and its planned life; `status` is what the API says now."""

    name: str
    vault: BackupVault
    instance: BackupInstance
    operation: str  # Backup, Restore
    start_at: datetime
    duration_s: float
    plan: list[tuple[datetime, str]]
    error: tuple[str, str, str] | None
    is_user_triggered: bool
    activity_id: str
    ordinal: int
    status: str
    end_at: datetime | None = None
    history: list[tuple[datetime, str]] = field(default_factory=list)  # (at, status), in order

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def as_of(self, at: datetime) -> BvJob | None:
        """This job as it was at `at`: None before it started, else its status then.

        The copy shares everything but `status` and `end_at`; render it with `job_json`.
        """
        if self.start_at > at:
            return None
        if self.end_at is not None and self.end_at <= at:
            return self
        status = self.status
        for when, then in reversed(self.history):
            if when <= at:
                status = then
                break
        if status == self.status and self.end_at is None:
            return self
        return replace(self, status=status, end_at=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class BvTransition:
    """One status change of a Backup vault job (ground truth, `vault_kind` `backup_vault`)."""

    seq: int
    vault_id: str
    job_id: str
    datasource_type: str
    operation: str
    from_status: str | None
    to_status: str
    at: datetime

    def as_json(self) -> JSON:
        return {
            "seq": self.seq,
            "vault_kind": "backup_vault",
            "vault_id": self.vault_id,
            "job_id": self.job_id,
            "job_type": self.datasource_type,
            "datasource_type": self.datasource_type,
            "operation": self.operation,
            "from": self.from_status,
            "to": self.to_status,
            "at": self.at,
        }


class BackupVaultEstate:
    """The Backup vaults of every subscription and their clockwork (separate from the world's).

    Args:
        seed: the world's seed.
        per_subscription: Backup vaults in each subscription (0: none, nothing is drawn).
        subscription_ids: the world's subscriptions, in creation order.
        profile: the world's (scaled) profile: cadence, durations, outcome weights.
        retention_s: finished jobs older than this are forgotten (at least
            `HISTORY_RETENTION_S` with a history seed, so that the seeded jobs stay listed).
        start: when the vaults start running (the world's history start).
        history_jobs: finished jobs each vault already has at `start` (0: none, nothing drawn).
    """

    def __init__(
        self,
        *,
        seed: int,
        per_subscription: int,
        subscription_ids: list[str],
        profile: Profile,
        retention_s: float,
        start: datetime,
        history_jobs: int = 0,
    ) -> None:
        self.profile = profile
        self.by_policy = profile.cadence == "policy"
        self.retention_s = (
            max(retention_s, HISTORY_RETENTION_S) if history_jobs > 0 else retention_s
        )
        self.seed = seed
        self.vaults: dict[str, BackupVault] = {}  # by lower-cased id
        self.by_subscription: dict[str, list[BackupVault]] = {}
        self.transitions: list[BvTransition] = []
        self._heap: list[tuple[datetime, int, BvJob | BackupInstance]] = []
        self._seq = 0
        self._instances = 0
        if per_subscription <= 0:
            return
        rng = random.Random(_stable_seed(seed, "backup-vaults", "estate"))
        number = 0
        for s, sub_id in enumerate(subscription_ids):
            for v in range(per_subscription):
                vault = BackupVault(
                    subscription_id=sub_id,
                    resource_group=f"rg-bv-{rng.choice(WORDS)}-{v // 4:02d}",
                    name=f"bv-{s:03d}-{v:04d}",
                    location=rng.choice(LOCATIONS),
                    # Alternate, so that any two vaults show both vocabularies.
                    vocabulary=VOCABULARIES[number % 2],
                )
                self.vaults[vault.key] = vault
                self.by_subscription.setdefault(sub_id.lower(), []).append(vault)
                self._make_instances(vault, rng, start)
                number += 1
        if history_jobs > 0:
            self._seed_history(history_jobs, start)

    def _make_instances(self, vault: BackupVault, rng: random.Random, start: datetime) -> None:
        low, high = self.profile.items_per_vault
        sub = vault.subscription_id
        for i in range(rng.randint(low, high)):
            # In turn over the estate: any seven instances cover every datasource type.
            ds = DATASOURCES[self._instances % len(DATASOURCES)]
            self._instances += 1
            word = rng.choice(WORDS)
            rg = f"rg-{word}-data"
            prefix = f"/subscriptions/{sub}/resourceGroups/{rg}/providers"
            match ds.kind:
                case "disk":
                    name = set_name = f"disk-{word}-{i:02d}"
                    ds_id = f"{prefix}/Microsoft.Compute/disks/{name}"
                    friendly = name
                case "blob" | "adls":
                    name = set_name = f"st{word}{i:02d}{vault.name[-4:]}"
                    ds_id = f"{prefix}/Microsoft.Storage/storageAccounts/{name}"
                    friendly = name
                case "pg":
                    set_name, name = f"pg-{word}-{i:02d}", f"{word}db{i:02d}"
                    ds_id = (
                        f"{prefix}/Microsoft.DBforPostgreSQL/servers/{set_name}/databases/{name}"
                    )
                    friendly = f"{set_name}\\{name}"
                case "pgflex":
                    name = set_name = f"pgflex-{word}-{i:02d}"
                    ds_id = f"{prefix}/Microsoft.DBforPostgreSQL/flexibleServers/{name}"
                    friendly = name
                case "mysqlflex":
                    name = set_name = f"mysql-{word}-{i:02d}"
                    ds_id = f"{prefix}/Microsoft.DBforMySQL/flexibleServers/{name}"
                    friendly = name
                case _:
                    name = set_name = f"aks-{word}-{i:02d}"
                    ds_id = f"{prefix}/Microsoft.ContainerService/managedClusters/{name}"
                    friendly = name
            item_rng = random.Random(_stable_seed(self.seed, "backup-vaults", vault.key, i))
            instance = BackupInstance(
                vault=vault,
                id=guid(item_rng),
                datasource=ds,
                data_source_id=ds_id,
                data_source_name=name,
                data_source_set_name=set_name,
                friendly_name=friendly,
                resource_group=rg,
                policy=f"policy-{ds.kind}-{'every4h' if ds.kind in SCHEDULES else 'daily'}"
                if self.by_policy
                else f"policy-{ds.kind}-daily",
                rng=item_rng,
                offset_s=item_rng.uniform(0, self.profile.period_s),
            )
            vault.instances.append(instance)
            if self.by_policy:
                self._push(next_run(ds.kind, start), instance)
                continue
            first = (
                item_rng.uniform(0, self.profile.gap_s[1])
                if self.profile.cadence == "interval"
                else instance.offset_s
            )
            self._push(start + timedelta(seconds=first), instance)

    def _seed_history(self, count: int, start: datetime) -> None:
        """`count` finished jobs per vault, evenly over the span before `start`, oldest first;
        their transitions enter the log in time order, before any live job's."""
        events: list[tuple[datetime, int, BvJob, str | None, str]] = []
        gap = HISTORY_SPAN_S / count
        for vault in self.vaults.values():
            rng = random.Random(_stable_seed(self.seed, "backup-vaults", "history", vault.key))
            for i in range(count):
                at = start - timedelta(seconds=HISTORY_SPAN_S - (i + 0.5) * gap)
                instance = vault.instances[i % len(vault.instances)]
                operation = "Restore" if rng.random() < 0.04 else "Backup"
                room = (start - at).total_seconds() * 0.9
                duration = min(rng.uniform(*self.profile.duration_s), room)
                outcome = self._draw_outcome(vault, rng)
                job = self._new_job(instance, at, operation, duration, outcome, rng)
                job.status = job.plan[-1][1]
                job.end_at = job.plan[-1][0]
                before: str | None = None
                for when, status in [(at, RUNNING_STATUS[vault.vocabulary]), *job.plan]:
                    job.history.append((when, status))
                    events.append((when, len(events), job, before, status))
                    before = status
                job.plan = []
                vault.jobs.append(job)
                vault.jobs_by_name[job.name.lower()] = job
        events.sort(key=lambda e: (e[0], e[1]))
        for at, _, job, before, status in events:
            self._append_transition(job, before, status, at)

    # ----------------------------------------------------------------------- clockwork

    def _push(self, at: datetime, what: BvJob | BackupInstance) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, what))

    def advance(self, now: datetime) -> None:
        """Apply every scheduled start and status change up to `now`, in time order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, what = heapq.heappop(heap)
            if isinstance(what, BvJob):
                self._step(what, at)
            else:
                self._start(what, at)

    def _record(self, job: BvJob, before: str | None, at: datetime) -> None:
        job.history.append((at, job.status))
        self._append_transition(job, before, job.status, at)

    def _append_transition(self, job: BvJob, before: str | None, status: str, at: datetime) -> None:
        self.transitions.append(
            BvTransition(
                seq=len(self.transitions) + 1,
                vault_id=job.vault.id,
                job_id=job.name,
                datasource_type=job.instance.datasource.type,
                operation=job.operation,
                from_status=before,
                to_status=status,
                at=at,
            )
        )

    def _draw_outcome(self, vault: BackupVault, rng: random.Random) -> str:
        weights = self.profile.outcome_weights
        if vault.vocabulary == "examples":
            # The examples' vocabulary: Started, then Succeeded or Failed.
            return rng.choices((SUCCEEDED, FAILED), (weights[0] + weights[1], weights[2]))[0]
        return rng.choices((COMPLETED, COMPLETED_WITH_WARNINGS, FAILED, CANCELLED), weights)[0]

    def _new_job(
        self,
        instance: BackupInstance,
        at: datetime,
        operation: str,
        duration: float,
        outcome: str,
        rng: random.Random,
    ) -> BvJob:
        """A running job of `instance` started at `at` (not yet in its vault's list)."""
        vault = instance.vault
        plan = status_plan(at, duration, outcome, rng)
        name = guid(rng)
        activity = guid(rng)
        if rng.random() < 0.1:  # as in the ListJobs example: not a bare GUID
            activity = (
                f"{activity}-{at:%a %b %d %Y %H:%M:%S} GMT+0000 (Coordinated Universal Time)-Ibz"
            )
        return BvJob(
            name=name,
            vault=vault,
            instance=instance,
            operation=operation,
            start_at=at,
            duration_s=duration,
            plan=plan,
            error=rng.choice(ERRORS[instance.datasource.kind]) if outcome == FAILED else None,
            is_user_triggered=rng.random() < 0.1,
            activity_id=activity,
            ordinal=vault.pruned + len(vault.jobs),
            status=RUNNING_STATUS[vault.vocabulary],
        )

    def _start(self, instance: BackupInstance, at: datetime) -> None:
        p, rng, vault = self.profile, instance.rng, instance.vault
        operation = "Restore" if rng.random() < 0.04 else "Backup"
        if self.by_policy:
            operation = "Backup"  # the policy's scheduled run
        duration = rng.uniform(*p.duration_s)
        job = self._new_job(instance, at, operation, duration, self._draw_outcome(vault, rng), rng)
        name, plan = job.name, job.plan
        vault.jobs.append(job)
        vault.jobs_by_name[name.lower()] = job
        self._record(job, None, at)
        self._push(plan[0][0], job)
        if self.by_policy:
            nxt = next_run(instance.datasource.kind, at)
        elif p.cadence == "interval":
            nxt = at + timedelta(seconds=rng.uniform(*p.gap_s))
        else:
            nxt = at + timedelta(seconds=p.period_s)
        self._push(nxt, instance)

    def _step(self, job: BvJob, at: datetime) -> None:
        _, status = job.plan.pop(0)
        before = job.status
        job.status = status
        if status in TERMINAL:
            job.end_at = at
        self._record(job, before, at)
        if job.plan:
            self._push(job.plan[0][0], job)
        else:
            self._prune(job.vault, at)

    def _prune(self, vault: BackupVault, at: datetime) -> None:
        horizon = at - timedelta(seconds=self.retention_s)
        drop = 0
        for job in vault.jobs:
            if job.end_at is None or job.end_at >= horizon:
                break
            drop += 1
        if drop:
            for job in vault.jobs[:drop]:
                del vault.jobs_by_name[job.name.lower()]
            del vault.jobs[:drop]
            vault.pruned += drop

    # ----------------------------------------------------------------------- queries

    def vault(self, vault_id: str) -> BackupVault | None:
        """The Backup vault with this id (any casing), or None."""
        return self.vaults.get(vault_id.lower())


# --------------------------------------------------------------------------- wire


def format_time(at: datetime) -> str:
    """ARM's timestamp form: UTC with seven fractional digits and `Z`."""
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond:06d}0Z"


def format_timespan(seconds: float) -> str:
    """A .NET TimeSpan (`00:02:11.9724387`; `1.02:03:04` past a day), as the service writes."""
    ticks = round(max(seconds, 0.0) * 10_000_000)
    whole, frac = divmod(ticks, 10_000_000)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    if frac:
        text += f".{frac:07d}"
    return f"{days}.{text}" if days else text


def vault_json(vault: BackupVault) -> JSON:
    """A Backup vault as `BackupVaults_GetInSubscription` and `BackupVaults_Get` return it."""
    return {
        "name": vault.name,
        "type": VAULT_TYPE,
        "id": (
            f"/subscriptions/{vault.subscription_id}/resourceGroups/{vault.resource_group}"
            f"/providers/Microsoft.DataProtection/BackupVaults/{vault.name}"
        ),
        "location": vault.location,
        "identity": {"type": "None"},
        "properties": {
            "bcdrSecurityLevel": "Good",
            "featureSettings": {"crossRegionRestoreSettings": {"state": "Disabled"}},
            "provisioningState": "Succeeded",
            "secureScore": "Adequate",
            "securitySettings": {
                "softDeleteSettings": {"retentionDurationInDays": 14, "state": "On"}
            },
            "storageSettings": [{"type": "LocallyRedundant", "datastoreType": "VaultStore"}],
        },
        "tags": {},
    }


def instance_json(instance: BackupInstance) -> JSON:
    """A backup instance as `BackupInstances_List` returns it.

    `policyInfo` names the policy its jobs name (`backupPolicies` lists it only in the
    "policies" profile, whose instances follow it).
    """
    vault = instance.vault
    ds = instance.datasource
    return {
        "id": f"{vault.id}/backupInstances/{instance.id}",
        "name": instance.id,
        "type": INSTANCE_TYPE,
        "properties": {
            "friendlyName": instance.friendly_name,
            "dataSourceInfo": {
                "objectType": "Datasource",
                "resourceID": instance.data_source_id,
                "resourceUri": instance.data_source_id,
                "datasourceType": ds.type,
                "resourceName": instance.data_source_name,
                "resourceType": ds.type,
                "resourceLocation": vault.location,
            },
            "policyInfo": {
                "policyId": f"{vault.id}/backupPolicies/{instance.policy}",
                "policyVersion": "",
            },
            "protectionStatus": {"status": "ProtectionConfigured"},
            "currentProtectionState": "ProtectionConfigured",
            "provisioningState": "Succeeded",
            "objectType": "BackupInstance",
        },
    }


def policies_json(vault: BackupVault) -> list[JSON]:
    """The vault's Data Protection policies (`BackupPolicies_List`), one per policy its
    instances use, each a schedule rule (`repeatingTimeIntervals`, `timeZone`) and a retention
    rule. Only for the "policies" profile's vaults: the caller decides."""
    rows: dict[str, JSON] = {}
    for instance in vault.instances:
        if instance.policy in rows:
            continue
        duration, _ = schedule_of(instance.datasource.kind)
        start = SCHEDULE_ANCHOR.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        store = {"dataStoreType": "OperationalStore", "objectType": "DataStoreInfoBase"}
        rows[instance.policy] = {
            "id": f"{vault.id}/backupPolicies/{instance.policy}",
            "name": instance.policy,
            "type": POLICY_TYPE,
            "properties": {
                "objectType": "BackupPolicy",
                "datasourceTypes": [instance.datasource.type],
                "policyRules": [
                    {
                        "name": "BackupDaily" if duration == "P1D" else "BackupHourly",
                        "objectType": "AzureBackupRule",
                        "backupParameters": {
                            "objectType": "AzureBackupParams",
                            "backupType": "Incremental",
                        },
                        "dataStore": store,
                        "trigger": {
                            "objectType": "ScheduleBasedTriggerContext",
                            "schedule": {
                                "repeatingTimeIntervals": [f"R/{start}/{duration}"],
                                "timeZone": "UTC",
                            },
                            "taggingCriteria": [
                                {
                                    "isDefault": True,
                                    "taggingPriority": 99,
                                    "tagInfo": {"id": "Default_", "tagName": "Default"},
                                }
                            ],
                        },
                    },
                    {
                        "name": "Default",
                        "objectType": "AzureRetentionRule",
                        "isDefault": True,
                        "lifecycles": [
                            {
                                "deleteAfter": {
                                    "objectType": "AbsoluteDeleteOption",
                                    "duration": "P7D",
                                },
                                "sourceDataStore": store,
                                "targetDataStoreCopySettings": [],
                            }
                        ],
                    },
                ],
            },
        }
    return list(rows.values())


def job_id_prefix(vault: BackupVault) -> str:
    """What every job id of `vault` starts with (its name follows)."""
    return (
        f"/subscriptions/{vault.subscription_id}/resourceGroups/{vault.resource_group}"
        f"/providers/Microsoft.DataProtection/Backupvaults/{vault.name}/backupJobs/"
    )


def job_resource_id(job: BvJob) -> str:
    """The job's id as the examples write it: `Backupvaults` (capital B, lower-case v)."""
    return job_id_prefix(job.vault) + job.name


def _error_details(job: BvJob) -> list[JSON]:
    if job.status != FAILED or job.error is None:
        return []
    code, message, action = job.error
    return [
        {
            "code": code,
            "message": message,
            "recommendedAction": [action],
            "isRetryable": False,
            "isUserError": True,
            "target": job.instance.data_source_name,
            "properties": {"ActivityId": job.activity_id},
            "innerError": {"code": code, "additionalInfo": {}},
        }
    ]


def _sub_tasks(job: BvJob, now: datetime) -> list[JSON]:
    running = RUNNING_STATUS[job.vault.vocabulary]
    done = SUCCEEDED if job.vault.vocabulary == "examples" else COMPLETED
    elapsed = ((job.end_at or now) - job.start_at).total_seconds()
    progress = 1.0 if job.end_at is not None else min(elapsed / job.duration_s, 0.99)
    names = ("Trigger Backup", "Transfer Data") if job.operation == "Backup" else ("Restore",)
    tasks: list[JSON] = []
    for i, name in enumerate(names):
        lo, hi = i / len(names), (i + 1) / len(names)
        if job.status == FAILED and i == len(names) - 1:
            status = FAILED
        elif job.status in (CANCELLING, CANCELLED) and progress < hi:
            status = CANCELLED if job.status == CANCELLED else running
        elif job.end_at is not None or progress >= hi:
            status = done
        else:
            status = running if progress >= lo else "NotStarted"
        tasks.append({"taskId": i + 1, "taskName": name, "taskStatus": status})
    return tasks


def job_json(job: BvJob, now: datetime, *, details: bool) -> JSON:
    """A job as `Jobs_List` (details=False) or `Jobs_Get` (details=True) returns it."""
    inst, vault = job.instance, job.vault
    running = job.end_at is None
    props: JSON = {
        "activityID": job.activity_id,
        "backupInstanceFriendlyName": inst.friendly_name,
        "backupInstanceId": f"{vault.id}/backupInstances/{inst.id}",
        "dataSourceId": inst.data_source_id,
        "dataSourceLocation": vault.location,
        "dataSourceName": inst.data_source_name,
        "dataSourceSetName": inst.data_source_set_name,
        "dataSourceType": inst.datasource.type,
        # The examples: "00:00:00" while running, the elapsed TimeSpan once done.
        "duration": format_timespan(
            0.0 if job.end_at is None else (job.end_at - job.start_at).total_seconds()
        ),
        "isUserTriggered": job.is_user_triggered,
        "operation": job.operation,
        "operationCategory": job.operation,
        "policyId": f"{vault.id}/backupPolicies/{inst.policy}",
        "policyName": inst.policy,
        "progressEnabled": False,
        "sourceResourceGroup": inst.resource_group,
        "sourceSubscriptionID": vault.subscription_id,
        "startTime": format_time(job.start_at),
        "status": job.status,
        "subscriptionId": vault.subscription_id,
        "supportedActions": [] if running else [""],
        "vaultName": vault.name,
    }
    if job.end_at is not None:
        props["endTime"] = format_time(job.end_at)
    errors = _error_details(job)
    if errors:
        props["errorDetails"] = errors
    if details:
        info: JSON = {
            "additionalDetails": {
                "PolicyRuleName": "BackupDaily",
                "RetentionTag": "Default",
                "TaskId": job.activity_id,
            },
            "subTasks": _sub_tasks(job, now),
        }
        if job.end_at is not None and job.status != FAILED:
            info["dataTransferredInBytes"] = float(1_048_576 * (1 + int(job.name[:4], 16) % 4096))
        props["extendedInfo"] = info
    return {"name": job.name, "type": JOB_TYPE, "id": job_resource_id(job), "properties": props}
