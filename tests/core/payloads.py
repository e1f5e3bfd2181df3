"""Concrete ARM payloads for the core tests, one per job type and trap in reference/azure-api.md."""

from __future__ import annotations

import copy
from typing import Any

SUB = "00000000-0000-0000-0000-000000000001"
VAULT_ID = (
    f"/Subscriptions/{SUB}/resourceGroups/rg-backup/providers/Microsoft.RecoveryServices/vaults/v1"
)
VAULT_ID_LOWER_PROVIDER = (
    f"/subscriptions/{SUB}/resourceGroups/rg-backup/providers/microsoft.recoveryservices/vaults/v1"
)


def job_item(
    guid: str,
    job_type: str = "AzureIaaSVMJob",
    status: str = "InProgress",
    **properties: Any,
) -> dict[str, Any]:
    """A `backupJobs` list item with the base fields and `properties` overrides."""
    props: dict[str, Any] = {
        "jobType": job_type,
        "entityFriendlyName": "vm-web-01",
        "backupManagementType": "AzureIaasVM",
        "operation": "Backup",
        "status": status,
        "startTime": "2026-11-25T10:03:17.1234567Z",
        "activityId": "6e503ee3-0000-4b7c-9e80-2c4d8b8b6e3a",
    }
    props.update(properties)
    return {
        "id": f"{VAULT_ID}/backupJobs/{guid}",
        "name": guid,
        "type": "Microsoft.RecoveryServices/vaults/backupJobs",
        "properties": props,
    }


IAAS_COMPLETED = job_item(
    "7DDEAD57-0000-4000-8000-000000000001",
    status="Completed",
    duration="PT12.4272909S",
    actionsInfo=[],
    endTime="2026-11-25T10:23:40.2131264Z",
    virtualMachineVersion="Compute",
    isUserTriggered=False,
    errorDetails=[],
)
IAAS_V2_RUNNING = job_item(
    "7ddead57-0000-4000-8000-000000000002",
    job_type="AzureIaaSVMJobV2",
    duration="00:20:23.0896697",
    actionsInfo=[1],
    endTime="0001-01-01T00:00:00Z",
    containerName="iaasvmcontainerv2;rg;vm-web-01",
)
WORKLOAD_FAILED = job_item(
    "7ddead57-0000-4000-8000-000000000003",
    job_type="AzureWorkloadJob",
    status="Failed",
    operation="Backup (Full)",
    backupManagementType="AzureWorkload",
    entityFriendlyName="db1",
    workloadType="SQLDataBase",
    duration="00:03:13.6439467",
    actionsInfo=["Retriable"],
    endTime="2026-11-25T10:06:30Z",
    errorDetails=[
        {
            "errorCode": 510008,
            "errorTitle": "",
            "errorString": "The database is offline.",
            "recommendations": ["Bring the database online and retry."],
            "additionalDetails": "SQL error 945",
        }
    ],
)
STORAGE_WARNINGS = job_item(
    "7ddead57-0000-4000-8000-000000000004",
    job_type="AzureStorageJob",
    status="CompletedWithWarnings",
    backupManagementType="AzureStorage",
    entityFriendlyName="share1",
    storageAccountName="sa1",
    storageAccountVersion="Storage",
    endTime="2026-11-25T10:05:00+00:00",
)
MAB_CANCELLED = job_item(
    "7ddead57-0000-4000-8000-000000000005",
    job_type="MabJob",
    status="Cancelled",
    backupManagementType="MAB",
    mabServerName="server1",
    mabServerType="Windows",
    duration="1.02:03:04.5",
    endTime="2001-01-01T00:00:00Z",
)
DPM_CANCELLING = job_item(
    "7ddead57-0000-4000-8000-000000000006",
    job_type="DpmJob",
    status="Cancelling",
    backupManagementType="DPM",
    dpmServerName="dpm1",
    duration="P1DT2H",
    actionsInfo=[0, "Cancellable", 2],
)
VAULT_JOB = job_item(
    "7ddead57-0000-4000-8000-000000000007",
    job_type="VaultJob",
    status="completed",
    backupManagementType=None,
    entityFriendlyName=None,
    operation="UpdateCustomerManagedKey",
    duration="PT0S",
)
UNKNOWN_TYPE = job_item(
    "7ddead57-0000-4000-8000-000000000008",
    job_type="AzureFutureJob",
    status="Paused",
    operation="Replicate",
    backupManagementType="DefaultBackup",
    duration="P4W",
    actionsInfo=[7, "Frobnicate"],
    futureField={"nested": [1, 2]},
)

ALL_ITEMS = [
    IAAS_COMPLETED,
    IAAS_V2_RUNNING,
    WORKLOAD_FAILED,
    STORAGE_WARNINGS,
    MAB_CANCELLED,
    DPM_CANCELLING,
    VAULT_JOB,
    UNKNOWN_TYPE,
]

NEXT_LINK = (
    "https://management.azure.com/Subscriptions/"
    f"{SUB}/resourceGroups/rg-backup/providers/Microsoft.RecoveryServices/vaults/v1/backupJobs"
    "?api-version=2017-07-01&%24filter=startTime+eq+%272016-01-01+00%3a00%3a00+AM%27"
    "&%24skiptoken=%3c%3fxml+version%3d%221.0%22%3f%3e%3cContinuationToken%3e"
)


def page(*items: dict[str, Any], next_link: object = None) -> dict[str, Any]:
    """A `backupJobs` page holding deep copies of `items`."""
    body: dict[str, Any] = {"value": [copy.deepcopy(i) for i in items]}
    if next_link is not None:
        body["nextLink"] = next_link
    return body


IAAS_DETAILS: dict[str, Any] = job_item(
    "7ddead57-0000-4000-8000-000000000009",
    status="Failed",
    duration="PT20M23.0896697S",
    endTime="2026-11-25T10:23:40Z",
    actionsInfo=[2],
    errorDetails=[
        {
            "errorCode": 400026,
            "errorTitle": "Could not communicate with the VM agent",
            "errorString": "VM agent is unable to communicate with the Azure Backup Service.",
            "recommendations": ["Ensure the VM agent is running.", "Check network."],
        }
    ],
    extendedInfo={
        "tasksList": [
            {
                "taskId": "Take Snapshot",
                "startTime": "2026-11-25T10:03:18Z",
                "endTime": "2026-11-25T10:04:00Z",
                "duration": "PT42S",
                "status": "Completed",
                "progressPercentage": 100,
            },
            {
                "taskId": "Transfer data to vault",
                "startTime": "0001-01-01T00:00:00Z",
                "endTime": "0001-01-01T00:00:00Z",
                "duration": "PT0S",
                "status": "NotStarted",
            },
        ],
        "propertyBag": {"VM Name": "vm-web-01", "Backup Size": "2332 MB"},
        "internalPropertyBag": {"x": "y"},
        "progressPercentage": 42.5,
        "estimatedRemainingDuration": "00:05:00",
        "dynamicErrorMessage": "Snapshot failed.",
    },
)
