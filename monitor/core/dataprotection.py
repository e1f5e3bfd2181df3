"""Backup vault (Microsoft.DataProtection) jobs: list pages and job reads, parsed from ARM.

A Backup vault job is parsed into the same `BackupJob` snapshot as a Recovery Services job, so
the tracker, the diff and the event codec serve both kinds unchanged. The shape is the flat
`AzureBackupJobResource {id, name, type, properties: AzureBackupJob}` of the Data Protection
REST spec (Azure/azure-rest-api-specs, `specification/dataprotection/resource-manager/
Microsoft.DataProtection/DataProtection/`: `AzureBackupJobResource.tsp`, and the examples
`stable/2025-09-01/examples/JobCRUD/ListJobs.json` and `GetJob.json`); facts in
/work/shared/reference/azure-api.md §d. What this module relies on from there:

- `type` is `Microsoft.DataProtection/Backupvaults/backupJobs` (capital B, lowercase v), and
  the ids in the examples say `.../providers/Microsoft.DataProtection/Backupvaults/{vault}/
  backupJobs/{guid}`: both are compared case-insensitively. A missing `type` is accepted.
- Properties are flat, with no `jobType`: `activityID` and `sourceSubscriptionID` end in a
  capital `ID`; `activityID` need not be a GUID.
- `duration` is TimeSpan text in the examples (`00:02:11.9724387`, `00:00:00`) although the
  doc says ISO 8601; `wire.parse_duration_s` reads both.
- `status`: the doc lists InProgress, Completed, Failed, Cancelled, CompletedWithWarnings,
  Cancelling, Paused; the examples send `Started` and `Succeeded`. `job_status` maps both.
- `supportedActions` is a string list; the examples show `[]` and `[""]` (empty strings are
  dropped).
- `errorDetails` is a list of `UserFacingError {code, message, target, recommendedAction[],
  details[], innerError, isRetryable, isUserError, properties}`.
- `extendedInfo` has `additionalDetails` (string map), `subTasks[{taskId (int), taskName,
  taskStatus, taskProgress, additionalDetails}]` and restore/data-transfer fields.

Mapping onto `BackupJob` (decisions the event schema relies on):

- `job_type` is always `"AzureBackupJob"` (the swagger model's name; no Recovery Services
  `jobType` has it).
- `operation` is `properties.operation`, or `operationCategory` when `operation` is absent or
  empty, or `""` when both are.
- `entity` is `dataSourceName`, or `backupInstanceFriendlyName` when that is absent or empty.
- `backup_management_type` is always `"AzureBackupVault"` (it tells the kinds apart: Recovery
  Services sends AzureIaasVM, AzureWorkload, AzureStorage, MAB, DPM, ...); the datasource kind
  is in `datasource_type`.
- `status`: `Started` → InProgress, `Succeeded` → Completed; the other documented values by
  `JobStatus.of` (`Paused` is kept as a status that is neither known nor terminal); unknown
  values kept verbatim.
- `actions`: `supportedActions`, with `Invalid`, `Cancellable` and `Retriable` canonicalised
  (case-insensitive) and other non-empty strings kept verbatim.
- `properties` is the raw property object (every unknown field is kept there).

Rule: nothing here awaits, sleeps or reads the clock. Parsers take decoded JSON (dicts, lists,
str, int, float, bool, None) and raise only ParseError.
"""

from __future__ import annotations

from typing import Final

from monitor.core.jobs import (
    BackupJob,
    JobAction,
    JobDetails,
    JobError,
    JobKey,
    JobsPage,
    JobStatus,
    JobTask,
    job_identity,
    parse_entries,
    parse_page,
    string_bag,
)
from monitor.core.vaults import VaultRef
from monitor.core.wire import (
    excerpt,
    opt_number,
    opt_str,
    parse_duration_s,
    time_field,
)
from monitor.errors import ParseError

__all__ = [
    "BACKUP_VAULT_JOB_RESOURCE_TYPE",
    "BACKUP_VAULT_JOB_TYPE",
    "BACKUP_VAULT_MANAGEMENT_TYPE",
    "job_status",
    "parse_backup_vault_job",
    "parse_backup_vault_job_item",
    "parse_backup_vault_jobs_page",
]

BACKUP_VAULT_JOB_TYPE: Final = "AzureBackupJob"
BACKUP_VAULT_MANAGEMENT_TYPE: Final = "AzureBackupVault"
BACKUP_VAULT_JOB_RESOURCE_TYPE: Final = "Microsoft.DataProtection/Backupvaults/backupJobs"
_RESOURCE_TYPE_FOLDED: Final = BACKUP_VAULT_JOB_RESOURCE_TYPE.lower()

# The examples' vocabulary; everything else goes through JobStatus.of.
_EXTRA_STATUS: Final[dict[str, JobStatus]] = {
    "started": JobStatus.IN_PROGRESS,
    "succeeded": JobStatus.COMPLETED,
}
_ACTIONS: Final[dict[str, str]] = {a.value.lower(): a.value for a in JobAction}


def job_status(raw: str) -> JobStatus:
    """The status of a Backup vault job or sub-task, over both vocabularies.

    `Started` is InProgress and `Succeeded` is Completed (any casing); the documented values
    (InProgress, Completed, Failed, Cancelled, CompletedWithWarnings, Cancelling) are the known
    statuses; anything else, `Paused` included, is kept verbatim as `JobStatus.of` keeps it.
    """
    extra = _EXTRA_STATUS.get(raw.lower())
    return extra if extra is not None else JobStatus.of(raw)


def parse_backup_vault_jobs_page(payload: object, vault: VaultRef) -> JobsPage:
    """Parse one page of `GET .../backupVaults/{v}/backupJobs`.

    `vault.id` is the Backup vault's id (`.../providers/Microsoft.DataProtection/backupVaults/
    {v}`); only `vault.key` is used. A malformed item is skipped and reported in `skipped` as a
    ParseError whose path names it, e.g. `value[3].properties.status`; it never fails the page.
    Malformed includes a `name` that is not one safe URL path segment (`check_path_segment`),
    an `id` that is not under `{vault}/backupJobs/`, and a `type` that is not the job type.
    `next_link` is returned verbatim (absent, null or empty means None).

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is present
            and not a string.
    """
    return parse_page(payload, vault.key, _parse_job)


def parse_backup_vault_job(payload: object, vault: VaultRef) -> JobDetails:
    """Parse `GET .../backupVaults/{v}/backupJobs/{id}`.

    Errors come from `errorDetails` (`UserFacingError`: `code`, `message`, and
    `recommendedAction` as the recommendations); tasks from `extendedInfo.subTasks` (`taskName`,
    `taskStatus` through `job_status`, `taskProgress` when it is a number, `duration` when
    present); the property bag from `extendedInfo.additionalDetails`. Progress, the remaining
    time and the dynamic error message have no Backup vault counterpart and are None.
    Malformed error, task or bag entries are dropped and reported in `skipped` with their path.

    Raises:
        ParseError: the job itself is malformed (same rules as a list item); the path names
            the field, e.g. `properties.status`.
    """
    job = _parse_job(payload, vault.key)
    props = job.properties
    skipped: list[ParseError] = []
    errors = parse_entries(
        props.get("errorDetails"), "properties.errorDetails", _parse_error, skipped
    )
    tasks: list[JobTask] = []
    bag: dict[str, str] = {}
    ext = props.get("extendedInfo")
    if isinstance(ext, dict):
        path = "properties.extendedInfo"
        tasks = parse_entries(ext.get("subTasks"), f"{path}.subTasks", _parse_task, skipped)
        raw_bag = ext.get("additionalDetails")
        if isinstance(raw_bag, dict):
            bag = string_bag(raw_bag, f"{path}.additionalDetails", skipped)
        elif raw_bag is not None:
            skipped.append(ParseError(f"{path}.additionalDetails", "expected an object"))
    elif ext is not None:
        skipped.append(ParseError("properties.extendedInfo", "expected an object"))
    return JobDetails(
        job=job,
        errors=tuple(errors),
        tasks=tuple(tasks),
        property_bag=bag,
        progress_percentage=None,
        estimated_remaining_s=None,
        dynamic_error_message=None,
        skipped=tuple(skipped),
    )


def parse_backup_vault_job_item(raw: object, vault_key: str) -> BackupJob:
    """One Backup vault job object (a list item, a job read, or a Resource Graph row, which has
    the same `id`, `name`, `type` and `properties`) of the vault whose key is `vault_key`.

    Raises:
        ParseError: the item is malformed; the path names the field, e.g. `properties.status`.
    """
    return _parse_job(raw, vault_key)


def _parse_job(raw: object, vault_key: str) -> BackupJob:
    item, name, resource_id = job_identity(raw, vault_key)
    resource_type = item.get("type")
    if resource_type is not None and (
        type(resource_type) is not str or resource_type.lower() != _RESOURCE_TYPE_FOLDED
    ):
        raise ParseError("type", f"not {BACKUP_VAULT_JOB_RESOURCE_TYPE}: {excerpt(resource_type)}")
    props = item.get("properties")
    if type(props) is not dict:
        raise ParseError("properties", "missing or not an object")
    raw_status = props.get("status")
    if type(raw_status) is not str or not raw_status:
        raise ParseError("properties.status", "missing, empty or not a string")
    operation = opt_str(props, "operation", "properties.") or opt_str(
        props, "operationCategory", "properties."
    )
    datasource_name = opt_str(props, "dataSourceName", "properties.")
    friendly_name = opt_str(props, "backupInstanceFriendlyName", "properties.")
    raw_start = props.get("startTime")
    start_at = None if raw_start is None else time_field(raw_start, "properties.startTime")
    raw_end = props.get("endTime")
    end_at = None if raw_end is None else time_field(raw_end, "properties.endTime")
    duration_raw = props.get("duration")
    if duration_raw is not None and type(duration_raw) is not str:
        raise ParseError("properties.duration", "not a string")
    raw_actions = props.get("supportedActions")
    actions: tuple[str, ...] = () if raw_actions is None else _actions(raw_actions)
    activity_id = opt_str(props, "activityID", "properties.")
    if activity_id is None:
        activity_id = opt_str(props, "activityId", "properties.")
    return BackupJob(
        key=JobKey(vault_key=vault_key, job_name=name.lower()),
        name=name,
        resource_id=resource_id,
        job_type=BACKUP_VAULT_JOB_TYPE,
        operation=operation or "",
        backup_management_type=BACKUP_VAULT_MANAGEMENT_TYPE,
        entity=datasource_name or friendly_name,
        status=job_status(raw_status),
        start_at=start_at,
        end_at=end_at,
        duration_raw=duration_raw,
        actions=actions,
        activity_id=activity_id,
        properties=props,
        datasource_type=opt_str(props, "dataSourceType", "properties."),
        datasource_name=datasource_name,
        datasource_id=opt_str(props, "dataSourceId", "properties."),
        backup_instance=friendly_name,
        backup_instance_id=opt_str(props, "backupInstanceId", "properties."),
        policy_name=opt_str(props, "policyName", "properties."),
    )


def _actions(raw: object) -> tuple[str, ...]:
    if type(raw) is not list:
        raise ParseError("properties.supportedActions", "not a list")
    out: list[str] = []
    for index, entry in enumerate(raw):
        if type(entry) is not str:
            raise ParseError(f"properties.supportedActions[{index}]", "not a string")
        if entry:  # the examples send [""]
            out.append(_ACTIONS.get(entry.lower()) or entry)
    return tuple(out)


def _parse_error(entry: object) -> JobError:
    if not isinstance(entry, dict):
        raise ParseError("", "expected an object")
    code = opt_str(entry, "code")
    recommended = entry.get("recommendedAction")
    if recommended is None:
        recs: tuple[str, ...] = ()
    elif isinstance(recommended, list):
        recs = tuple(r for r in recommended if isinstance(r, str) and r)
    else:
        raise ParseError("recommendedAction", "not a list")
    return JobError(
        code=code or None,
        message=opt_str(entry, "message"),
        title=None,
        recommendations=recs,
        additional_details=opt_str(entry, "target") or None,
    )


def _parse_task(entry: object) -> JobTask:
    if not isinstance(entry, dict):
        raise ParseError("", "expected an object")
    name = entry.get("taskName")
    if not isinstance(name, str) or not name:
        raise ParseError("taskName", "missing, empty or not a string")
    raw_status = entry.get("taskStatus")
    if raw_status is not None and not isinstance(raw_status, str):
        raise ParseError("taskStatus", "not a string")
    duration = entry.get("duration")
    return JobTask(
        name=name,
        status=job_status(raw_status) if raw_status else None,
        start_at=None,
        end_at=None,
        duration_s=parse_duration_s(duration) if isinstance(duration, str) else None,
        progress_percentage=_progress(entry),
    )


def _progress(entry: dict[str, object]) -> float | None:
    raw = entry.get("taskProgress")  # a string in the spec; a number is taken too
    if isinstance(raw, str):
        try:
            value = float(raw.strip().removesuffix("%"))
        except ValueError:
            return None
        return value if 0.0 <= value <= 100.0 else None
    try:
        value_n = opt_number(entry, "taskProgress")
    except ParseError:
        return None
    return value_n if value_n is not None and 0.0 <= value_n <= 100.0 else None
