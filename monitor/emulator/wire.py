"""How ARM and Recovery Services write the world's objects on the wire, quirks included.

Quirks reproduced on purpose (see shared/reference/azure-api.md, sections b and f):
- job ids start `/Subscriptions/` and some vaults spell the provider in lower case;
- durations are ISO 8601 (`PT12.4272909S`) or .NET TimeSpan (`00:20:23.0896697`), per job;
- `actionsInfo` is a list of integers (1 = Cancellable, 2 = Retriable);
- running jobs have no `endTime` (VM, workload), or a sentinel `0001-01-01` (Azure Files) or
  `2001-01-01` (MAB, DPM, vault jobs);
- error bodies carry explicit nulls and a non-standard `innerError`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from monitor.emulator.catalogue import CANCELLED, CANCELLING, FAILED, IN_PROGRESS, ErrorSpec
from monitor.emulator.estate import Job, Operation, ProtectedItem, Subscription, Vault

JSON = dict[str, Any]

SENTINEL_0001 = "0001-01-01T00:00:00Z"
SENTINEL_2001 = "2001-01-01T00:00:00Z"
CANCELLABLE, RETRIABLE = 1, 2
CANCELLABLE_TYPES = frozenset(
    {"AzureIaaSVMJob", "AzureIaaSVMJobV2", "AzureWorkloadJob", "AzureStorageJob"}
)


def format_time(at: datetime) -> str:
    """ARM's timestamp form: UTC with seven fractional digits and `Z`."""
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond:06d}0Z"


def format_duration(seconds: float, *, timespan: bool) -> str:
    """A duration as ISO 8601 (`PT1H2M3.4S`) or as .NET TimeSpan text (`01:02:03.4000000`)."""
    seconds = max(seconds, 0.0)
    ticks = round(seconds * 10_000_000)
    whole, frac = divmod(ticks, 10_000_000)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if timespan:
        text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
        if frac:
            text += f".{frac:07d}"
        return f"{days}.{text}" if days else text
    sec_text = f"{secs}.{frac:07d}".rstrip("0").rstrip(".") if frac else str(secs)
    out = "P" + (f"{days}D" if days else "") + "T"
    if hours:
        out += f"{hours}H"
    if minutes:
        out += f"{minutes}M"
    if secs or frac or out.endswith("T"):
        out += f"{sec_text}S"
    return out


def vault_json(vault: Vault) -> JSON:
    """A vault as `Vaults_ListBySubscriptionId` returns it."""
    return {
        "location": vault.location,
        "name": vault.name,
        "etag": f"W/\"datetime'{vault.name}'\"",
        "tags": {},
        "identity": {"type": "None"},
        "properties": {
            "provisioningState": "Succeeded",
            "privateEndpointStateForBackup": "None",
            "privateEndpointStateForSiteRecovery": "None",
        },
        "id": vault.id,
        "type": "Microsoft.RecoveryServices/vaults",
        "sku": {"name": "RS0", "tier": "Standard"},
    }


def subscription_json(
    sub: Subscription, tenant_id: str, *, managed_by: tuple[str, ...] | None = None
) -> JSON:
    """A subscription as `GET /subscriptions` returns it.

    `tenant_id` is its home tenant (`tenantId` and `homeTenantId`, as ARM's 2020-01-01 and later
    versions write both); `managed_by` the tenants it is delegated to (Azure Lighthouse).
    """
    return {
        "id": f"/subscriptions/{sub.id}",
        "authorizationSource": "RoleBased",
        "managedByTenants": [{"tenantId": t} for t in managed_by or ()],
        "subscriptionId": sub.id,
        "tenantId": tenant_id,
        "homeTenantId": tenant_id,
        "displayName": sub.display_name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    }


def job_id(job: Job) -> str:
    """The job's resource id as the backup RP writes it: capital `S`, the vault's casing."""
    v = job.vault
    return (
        f"/Subscriptions/{v.subscription_id}/resourceGroups/{v.resource_group}"
        f"/providers/{v.provider_casing}/vaults/{v.name}/backupJobs/{job.name}"
    )


def _end_time(job: Job) -> str | None:
    if job.end_at is not None:
        return format_time(job.end_at)
    if job.job_type == "AzureStorageJob":
        return SENTINEL_0001
    if job.job_type in ("MabJob", "DpmJob", "VaultJob"):
        return SENTINEL_2001
    return None


def _elapsed_s(job: Job, now: datetime) -> float:
    end = job.end_at or now
    return (end - job.start_at).total_seconds()


def _properties(job: Job, now: datetime) -> JSON:
    props: JSON = {
        "jobType": job.job_type,
        "entityFriendlyName": job.entity,
        "operation": job.operation,
        "status": job.status,
        "startTime": format_time(job.start_at),
        "activityId": job.activity_id,
        "duration": format_duration(_elapsed_s(job, now), timespan=job.timespan),
    }
    if job.backup_management_type is not None:
        props["backupManagementType"] = job.backup_management_type
    end = _end_time(job)
    if end is not None:
        props["endTime"] = end
    if job.status == IN_PROGRESS and job.job_type in CANCELLABLE_TYPES:
        props["actionsInfo"] = [CANCELLABLE]
    elif job.status == FAILED:
        props["actionsInfo"] = [RETRIABLE]
    else:
        props["actionsInfo"] = []
    match job.job_type:
        case "AzureIaaSVMJob" | "AzureIaaSVMJobV2":
            props["virtualMachineVersion"] = "Compute"
            props["containerName"] = job.extra.get("containerName", "")
            if job.job_type == "AzureIaaSVMJob":
                props["isUserTriggered"] = job.is_user_triggered
        case "AzureStorageJob":
            props["storageAccountName"] = job.extra["storageAccountName"]
            props["storageAccountVersion"] = job.extra["storageAccountVersion"]
            props["isUserTriggered"] = job.is_user_triggered
        case "AzureWorkloadJob":
            props["workloadType"] = job.extra["workloadType"]
        case "MabJob":
            for key in ("mabServerName", "mabServerType", "workloadType"):
                props[key] = job.extra[key]
        case "DpmJob":
            for key in ("dpmServerName", "containerName", "containerType", "workloadType"):
                props[key] = job.extra[key]
    return props


def _reported_error(job: Job) -> ErrorSpec | None:
    """The error a job reports: its planned error only once it has failed, never before."""
    return job.error if job.status == FAILED else None


def _error_details(job: Job) -> list[JSON]:
    err = _reported_error(job)
    if err is None:
        return []
    match job.job_type:
        case "AzureIaaSVMJob" | "AzureIaaSVMJobV2":
            return [
                {
                    "errorCode": err.code,
                    "errorTitle": err.title,
                    "errorString": err.message,
                    "recommendations": list(err.recommendations),
                }
            ]
        case "AzureWorkloadJob":
            return [
                {
                    "errorCode": err.code,
                    "errorString": err.message,
                    "errorTitle": err.title,
                    "recommendations": list(err.recommendations),
                    "additionalDetails": None,
                }
            ]
        case "MabJob" | "DpmJob":
            return [{"errorString": err.message, "recommendations": list(err.recommendations)}]
        case _:
            return [
                {
                    "errorCode": err.code,
                    "errorString": err.message,
                    "recommendations": list(err.recommendations),
                }
            ]


TASKS: dict[str, tuple[str, ...]] = {
    "AzureIaaSVMJob": ("Take Snapshot", "Transfer data to vault"),
    "AzureIaaSVMJobV2": ("Take Snapshot", "Transfer data to vault"),
    "AzureWorkloadJob": ("Transfer data to vault",),
    "AzureStorageJob": ("Take Snapshot",),
    "MabJob": ("Prepare backup", "Transfer data to vault"),
    "DpmJob": ("Create recovery point", "Transfer data to cloud"),
}


def _task_status(job: Job, index: int, count: int, progress: float) -> tuple[str, float, float]:
    """A task's status and its share [start, end) of the job's planned time."""
    lo, hi = index / count, (index + 1) / count
    if job.status == IN_PROGRESS:
        if progress >= hi:
            return "Completed", lo, hi
        return ("InProgress" if progress >= lo else "NotStarted"), lo, hi
    if job.status == CANCELLING and progress < hi:
        return ("InProgress" if progress >= lo else "NotStarted"), lo, hi
    if job.status == CANCELLED and progress < hi:
        return ("Cancelled" if progress >= lo else "NotStarted"), lo, hi
    if job.status == FAILED and index == count - 1:
        return "Failed", lo, hi
    return "Completed", lo, hi


def _extended_info(job: Job, now: datetime) -> JSON:
    elapsed = _elapsed_s(job, now)
    progress = 1.0 if job.end_at is not None else min(elapsed / job.duration_s, 0.99)
    if job.status in (CANCELLING, CANCELLED) and job.cancelling_at is not None:
        progress = (job.cancelling_at - job.start_at).total_seconds() / job.duration_s
    bag = _property_bag(job, progress)
    if job.job_type == "VaultJob":
        return {"propertyBag": bag}
    names = TASKS.get(job.job_type, ("Backup",))
    tasks: list[JSON] = []
    for i, name in enumerate(names):
        status, lo, hi = _task_status(job, i, len(names), progress)
        task: JSON = {"taskId": name, "status": status}
        if job.job_type in ("AzureIaaSVMJob", "AzureIaaSVMJobV2", "MabJob", "DpmJob"):
            share = (hi - lo) * job.duration_s
            started = status != "NotStarted"
            done = status in ("Completed", "Failed", "Cancelled")
            start_s = lo * job.duration_s
            task["startTime"] = (
                format_time(job.start_at + timedelta(seconds=start_s)) if started else SENTINEL_0001
            )
            if status == "Cancelled":
                # A cancelled task stops when the job stops, not at its planned end.
                share = max(0.0, _elapsed_s(job, now) - start_s)
            task["endTime"] = (
                format_time(job.start_at + timedelta(seconds=start_s + share))
                if done
                else SENTINEL_0001
            )
            run_s = share if done else max(0.0, elapsed - start_s) if started else 0.0
            task["duration"] = format_duration(run_s, timespan=job.timespan)
            if job.job_type.startswith("AzureIaaSVM"):
                task["instanceId"] = f"{job.name}-{i}"
                task["progressPercentage"] = 100.0 if done else round(progress * 100, 1)
                task["taskExecutionDetails"] = ""
        tasks.append(task)
    info: JSON = {"tasksList": tasks, "propertyBag": bag}
    if job.job_type.startswith("AzureIaaSVM"):
        info["internalPropertyBag"] = {}
        info["progressPercentage"] = round(progress * 100, 1)
        if job.end_at is None:
            remaining = max(job.duration_s - elapsed, 0.0)
            info["estimatedRemainingDuration"] = format_duration(remaining, timespan=True)
    err = _reported_error(job)
    if err is not None:
        info["dynamicErrorMessage"] = err.message
    return info


def _property_bag(job: Job, progress: float) -> dict[str, str]:
    size_mb = int(progress * (500 + int(job.name[:4], 16) % 20000))
    match job.job_type:
        case "AzureIaaSVMJob" | "AzureIaaSVMJobV2":
            return {"VM Name": job.entity, "Backup Size": f"{size_mb} MB"}
        case "AzureWorkloadJob":
            return {
                "Protected Server": job.extra.get("host", ""),
                "Database Name": job.entity,
                "Backup Size": f"{size_mb} MB",
            }
        case "AzureStorageJob":
            return {
                "File Share Name": job.entity,
                "Storage Account Name": job.extra["storageAccountName"],
                "Data Transferred (in MB)": str(size_mb),
            }
        case "MabJob" | "DpmJob":
            return {"Data Transferred": f"{size_mb} MB", "Backup Type": "Incremental"}
        case _:
            return {"Vault Name": job.vault.name, "Key Version": "3"}


def job_json(job: Job, now: datetime, *, details: bool) -> JSON:
    """A job as `BackupJobs_List` (details=False) or `JobDetails_Get` (details=True) returns it.

    Terminal jobs never change again, so their renderings are cached on the job.
    """
    cached = job.detail_cache if details else job.list_cache
    if cached is not None:
        return cached
    props = _properties(job, now)
    if details:
        props["errorDetails"] = _error_details(job)
        props["extendedInfo"] = _extended_info(job, now)
    body: JSON = {
        "id": job_id(job),
        "name": job.name,
        "type": "Microsoft.RecoveryServices/vaults/backupJobs",
        "properties": props,
    }
    if job.is_terminal:
        if details:
            job.detail_cache = body
        else:
            job.list_cache = body
    return body


def operation_status_json(op: Operation, now: datetime) -> JSON:
    """The `OperationStatus` a trigger-backup's `Azure-AsyncOperation` URL returns."""
    body: JSON = {
        "id": op.id,
        "name": op.id,
        "status": op.status,
        "startTime": format_time(op.start_at),
        "endTime": format_time(op.job.start_at) if op.job else "0001-01-01T00:00:00.00000Z",
    }
    if op.job is not None:
        body["properties"] = {"objectType": "OperationStatusJobExtendedInfo", "jobId": op.job.name}
    return body


def error_json(code: str, message: str) -> JSON:
    """ARM's error body as the backup RP fills it: explicit nulls and an `innerError`."""
    return {
        "error": {
            "code": code,
            "message": message,
            "target": None,
            "details": None,
            "innerError": None,
        }
    }


ITEM_TYPE = "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems"


def _source_resource_id(vault: Vault, item: ProtectedItem) -> str:
    base = f"/subscriptions/{vault.subscription_id}/resourceGroups/{vault.resource_group}/providers"
    match item.workload.value:
        case "vm":
            return f"{base}/Microsoft.Compute/virtualMachines/{item.entity}"
        case "sql":
            return f"{base}/Microsoft.Compute/virtualMachines/{item.extra['host']}"
        case "files":
            return f"{base}/Microsoft.Storage/storageAccounts/{item.extra['storageAccountName']}"
        case _:
            return item.entity


def item_json(vault: Vault, item: ProtectedItem) -> JSON:
    """A `backupProtectedItems` row: the protected item of `vault`, as the backup RP writes it.

    `lastBackupTime`, `lastBackupStatus` and `lastRecoveryPoint` follow the item's backup jobs
    (the RP's sentinel `2001-01-01` before its first); `policyId`/`policyName` only while a
    policy is attached (the "policies" profile, not ProtectionStopped).
    """
    kinds = {
        "vm": ("Microsoft.Compute/virtualMachines", "VM"),
        "sql": ("AzureVmWorkloadSQLDatabase", "SQLDataBase"),
        "files": ("AzureFileShareProtectedItem", "AzureFileShare"),
        "mab": ("MabFileFolderProtectedItem", "FileFolder"),
        "dpm": ("DPMProtectedItem", "FileFolder"),
    }
    item_type, workload = kinds[item.workload.value]
    state = item.protection_state
    healthy = state == "Protected" and item.last_backup_status not in ("Failed",)
    props: JSON = {
        "protectedItemType": item_type,
        "friendlyName": item.entity,
        "containerName": item.container,
        "backupManagementType": item.backup_management_type,
        "workloadType": workload,
        "sourceResourceId": _source_resource_id(vault, item),
        "protectionState": state,
        "protectionStatus": "Healthy" if healthy else "Unhealthy",
        "healthStatus": "Passed" if healthy else "ActionRequired",
        "lastBackupTime": SENTINEL_2001
        if item.last_backup_at is None
        else format_time(item.last_backup_at),
    }
    if item.last_backup_status is not None:
        props["lastBackupStatus"] = item.last_backup_status
    if item.last_recovery_point is not None:
        props["lastRecoveryPoint"] = format_time(item.last_recovery_point)
    if item.policy is not None and state != "ProtectionStopped":
        props["policyId"] = item.policy.id
        props["policyName"] = item.policy.name
        if item.policy.properties.get("policyType") == "V2":
            props["policyType"] = "V2"
    if item.workload.value == "sql":
        props["serverName"] = item.extra["host"]
        props["parentName"] = "MSSQLSERVER"
        props["parentType"] = "AzureVmWorkloadSQLInstance"
    return {
        "id": item.id,
        "name": item.name,
        "type": ITEM_TYPE,
        "properties": props,
    }
