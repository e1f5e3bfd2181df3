"""The emulator's data tables: job statuses, names and locations, load profiles, job errors.

Nothing here changes at run time; `world.py` draws from these tables with its seeded streams.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

IN_PROGRESS = "InProgress"
CANCELLING = "Cancelling"
COMPLETED = "Completed"
COMPLETED_WITH_WARNINGS = "CompletedWithWarnings"
FAILED = "Failed"
CANCELLED = "Cancelled"
TERMINAL = frozenset({COMPLETED, COMPLETED_WITH_WARNINGS, FAILED, CANCELLED})


def guid(rng: random.Random) -> str:
    """A version 4 GUID drawn from `rng` (the world's ids are reproducible from its seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def status_plan(
    at: datetime, duration_s: float, outcome: str, rng: random.Random
) -> list[tuple[datetime, str]]:
    """When a job started at `at` reaches which status: its outcome at the end, or, for a
    cancelled one, Cancelling part-way and Cancelled a few seconds later."""
    if outcome != CANCELLED:
        return [(at + timedelta(seconds=duration_s), outcome)]
    cancel_at = at + timedelta(seconds=duration_s * rng.uniform(0.2, 0.8))
    return [(cancel_at, CANCELLING), (cancel_at + timedelta(seconds=rng.uniform(1, 6)), CANCELLED)]


LOCATIONS = (
    "westeurope",
    "northeurope",
    "eastus",
    "eastus2",
    "westus2",
    "uksouth",
    "southeastasia",
    "australiaeast",
)
WORDS = (
    "web",
    "api",
    "db",
    "etl",
    "cache",
    "auth",
    "files",
    "mail",
    "erp",
    "crm",
    "batch",
    "proxy",
)


class Workload(StrEnum):
    """What a protected item is; decides the job type and its fields."""

    VM = "vm"
    SQL = "sql"
    FILES = "files"
    MAB = "mab"
    DPM = "dpm"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """How busy the estate is and how long its jobs run, before `time_scale` divides every span.

    Attributes:
        items_per_vault: inclusive range of protected items per vault.
        cadence: "interval" starts each item's next job a random gap after the previous start;
            "daily" runs one scheduled backup per item per `period_s` at a fixed offset;
            "policy" runs each item's backups when its backup policy says (`protection.py`),
            in world time (`time_scale` must be 1).
        gap_s: for "interval", the range of the gap between two starts of one item.
        period_s: for "daily", the schedule period.
        duration_s: range of a backup's running time.
        log_backup_every_s: for "daily", SQL items also take a log backup this often (0 = never).
        history_s: how far into the past the world already ran when it is created.
        outcome_weights: relative weights of Completed, CompletedWithWarnings, Failed, Cancelled.
        vault_job_every_s: mean gap between vault-level jobs (CMK updates) per vault; 0 = never.
    """

    name: str
    items_per_vault: tuple[int, int]
    cadence: Literal["interval", "daily", "policy"]
    gap_s: tuple[float, float] = (0.0, 0.0)
    period_s: float = 86400.0
    duration_s: tuple[float, float]
    log_backup_every_s: float = 0.0
    history_s: float
    outcome_weights: tuple[float, float, float, float]
    vault_job_every_s: float = 0.0

    def scaled(self, time_scale: float) -> Profile:
        """This profile with every span divided by `time_scale` (60 runs a day in 24 minutes)."""
        k = 1.0 / time_scale
        return Profile(
            name=self.name,
            items_per_vault=self.items_per_vault,
            cadence=self.cadence,
            gap_s=(self.gap_s[0] * k, self.gap_s[1] * k),
            period_s=self.period_s * k,
            duration_s=(self.duration_s[0] * k, self.duration_s[1] * k),
            log_backup_every_s=self.log_backup_every_s * k,
            history_s=self.history_s * k,
            outcome_weights=self.outcome_weights,
            vault_job_every_s=self.vault_job_every_s * k,
        )


PROFILES: dict[str, Profile] = {
    # Short jobs so that a one-minute run shows dozens of transitions.
    "demo": Profile(
        name="demo",
        items_per_vault=(2, 3),
        cadence="interval",
        gap_s=(15.0, 75.0),
        duration_s=(4.0, 40.0),
        history_s=90.0,
        outcome_weights=(0.70, 0.10, 0.13, 0.07),
        vault_job_every_s=600.0,
    ),
    # Realistic daily schedules: one backup per item per day, SQL log backups hourly.
    "estate": Profile(
        name="estate",
        items_per_vault=(3, 10),
        cadence="daily",
        period_s=86400.0,
        duration_s=(300.0, 5400.0),
        log_backup_every_s=3600.0,
        history_s=86400.0,
        outcome_weights=(0.86, 0.06, 0.05, 0.03),
        vault_job_every_s=7 * 86400.0,
    ),
    # Items with backup policies in Windows zones; jobs are made by the schedules (issue 13).
    # Durations come from each policy's schedule parts; `duration_s` here is for on-demand
    # backups only.
    "policies": Profile(
        name="policies",
        items_per_vault=(3, 8),
        cadence="policy",
        duration_s=(1200.0, 5400.0),
        history_s=8 * 86400.0,
        outcome_weights=(0.86, 0.06, 0.05, 0.03),
        vault_job_every_s=7 * 86400.0,
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorSpec:
    """One error a failed job reports, in the superset of all job types' error shapes."""

    code: int
    title: str
    message: str
    recommendations: tuple[str, ...]


ERRORS: dict[Workload | None, tuple[ErrorSpec, ...]] = {
    Workload.VM: (
        ErrorSpec(
            code=400153,
            title="UserErrorVmNotFound",
            message="The virtual machine no longer exists.",
            recommendations=("Stop protection of the VM, or restore it from a recovery point.",),
        ),
        ErrorSpec(
            code=400138,
            title="UserErrorGuestAgentStatusUnavailable",
            message="VM Agent is unable to communicate with the Azure Backup Service.",
            recommendations=(
                "Ensure the VM agent is installed and running.",
                "Check outbound connectivity to Azure.",
            ),
        ),
        ErrorSpec(
            code=420017,
            title="ExtensionSnapshotFailedCOM",
            message="Snapshot operation failed due to COM+ error.",
            recommendations=("Restart the Windows service COM+ System Application.",),
        ),
    ),
    Workload.SQL: (
        ErrorSpec(
            code=510008,
            title="UserErrorSQLLogBackupFailed",
            message="Log backup failed because the database is in simple recovery model.",
            recommendations=("Switch the database to the full recovery model.",),
        ),
        ErrorSpec(
            code=510010,
            title="UserErrorSQLNoSysadminMembership",
            message="Azure Backup does not have sysadmin rights on the SQL instance.",
            recommendations=("Add NT SERVICE\\AzureWLBackupPluginSvc to the sysadmin role.",),
        ),
    ),
    Workload.FILES: (
        ErrorSpec(
            code=18056,
            title="StorageAccountNotFound",
            message="The storage account could not be found.",
            recommendations=("Check that the storage account exists.",),
        ),
    ),
    Workload.MAB: (
        ErrorSpec(
            code=100034,
            title="",
            message="The backup operation failed because the source volume is not accessible.",
            recommendations=("Check that the volume is online and try again.",),
        ),
    ),
    Workload.DPM: (
        ErrorSpec(
            code=30111,
            title="",
            message="The VSS application writer or the VSS provider is in a bad state.",
            recommendations=("Check the Windows event log for VSS errors.",),
        ),
    ),
    None: (
        ErrorSpec(
            code=100137,
            title="",
            message="The key vault key is not accessible with the vault's managed identity.",
            recommendations=("Grant the vault's identity get, wrapKey and unwrapKey.",),
        ),
    ),
}
