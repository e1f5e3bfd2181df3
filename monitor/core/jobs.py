"""Backup jobs: their identity, status and actions, list pages and details, parsed from ARM."""

# Rule: nothing here awaits, sleeps or reads the clock. Parsers take decoded JSON (dicts, lists,
# str, int, float, bool, None) and raise only ParseError. This is the hot path (thousands of
# 20-job pages per minute): plain dict access, module-level tables, no copies.

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Final, TypeAlias, TypeVar

from monitor.core.ids import check_path_segment
from monitor.core.vaults import VaultRef
from monitor.core.wire import (
    excerpt,
    nested,
    opt_number,
    opt_str,
    page_items,
    parse_duration_s,
    time_field,
)
from monitor.errors import ParseError

__all__ = [
    "BackupJob",
    "JobAction",
    "JobDetails",
    "JobError",
    "JobKey",
    "JobStatus",
    "JobTask",
    "JobsPage",
    "KnownEnded",
    "job_identity",
    "jobs_of",
    "listed_jobs",
    "parse_entries",
    "parse_job_details",
    "parse_jobs_page",
    "parse_page",
    "string_bag",
]

_E = TypeVar("_E")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobKey:
    """The identity of a job: (lower-cased vault id, lower-cased job name)."""

    vault_key: str
    job_name: str


_OUTCOMES: Final[dict[str, str]] = {
    "completed": "succeeded",
    "completedwithwarnings": "succeeded_with_warnings",
    "failed": "failed",
    "cancelled": "cancelled",
}


class JobStatus:
    """A job status: known values canonicalised to PascalCase, unknown values kept verbatim.

    Equality and hashing are case-insensitive, so `JobStatus.of("completed") == JobStatus.COMPLETED`
    and an unknown `"Paused"` equals `"paused"`. Known values are interned: `JobStatus.of(x) is
    JobStatus.FAILED` holds for every casing of "Failed". A JobStatus never equals a plain `str`
    (hashes could not agree); compare with `JobStatus.of(text)`, or `str(status)` for the text.
    Instances are immutable.
    """

    __slots__ = ("_folded", "is_terminal", "value")

    value: str
    _folded: str
    is_terminal: bool
    """True for Completed, CompletedWithWarnings, Failed and Cancelled. Set once (the poll
    step asks it of every tracked job on every poll: a slot, not a property call)."""

    INVALID: ClassVar[JobStatus]
    IN_PROGRESS: ClassVar[JobStatus]
    CANCELLING: ClassVar[JobStatus]
    COMPLETED: ClassVar[JobStatus]
    COMPLETED_WITH_WARNINGS: ClassVar[JobStatus]
    FAILED: ClassVar[JobStatus]
    CANCELLED: ClassVar[JobStatus]

    def __init__(self, value: str) -> None:
        """Wrap `value` verbatim; prefer `JobStatus.of`, which canonicalises known values."""
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "_folded", value.lower())
        object.__setattr__(self, "is_terminal", self._folded in _OUTCOMES)

    @classmethod
    def of(cls, raw: str) -> JobStatus:
        """Return the interned known status matching `raw` case-insensitively, else a new one."""
        known = _KNOWN_STATUS.get(raw)
        if known is None:
            known = _KNOWN_STATUS_FOLDED.get(raw.lower())
        return known if known is not None else cls(raw)

    @property
    def is_known(self) -> bool:
        """True for the values of the swagger `JobStatus` enum."""
        return self._folded in _KNOWN_STATUS_FOLDED

    @property
    def outcome(self) -> str | None:
        """`succeeded`, `succeeded_with_warnings`, `failed`, `cancelled`, or None if not final."""
        return _OUTCOMES.get(self._folded)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"JobStatus is immutable; cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JobStatus):
            return self._folded == other._folded
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._folded)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"JobStatus({self.value!r})"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (JobStatus.of, (self.value,))


JobStatus.INVALID = JobStatus("Invalid")
JobStatus.IN_PROGRESS = JobStatus("InProgress")
JobStatus.CANCELLING = JobStatus("Cancelling")
JobStatus.COMPLETED = JobStatus("Completed")
JobStatus.COMPLETED_WITH_WARNINGS = JobStatus("CompletedWithWarnings")
JobStatus.FAILED = JobStatus("Failed")
JobStatus.CANCELLED = JobStatus("Cancelled")

_KNOWN_STATUS: Final[dict[str, JobStatus]] = {
    s.value: s
    for s in (
        JobStatus.INVALID,
        JobStatus.IN_PROGRESS,
        JobStatus.CANCELLING,
        JobStatus.COMPLETED,
        JobStatus.COMPLETED_WITH_WARNINGS,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    )
}
_KNOWN_STATUS_FOLDED: Final[dict[str, JobStatus]] = {k.lower(): v for k, v in _KNOWN_STATUS.items()}


class JobAction(StrEnum):
    """`JobSupportedAction`: ARM sends these as ints (`[1]`) although the swagger says strings."""

    INVALID = "Invalid"
    CANCELLABLE = "Cancellable"
    RETRIABLE = "Retriable"


_ACTIONS: Final[dict[object, str]] = {
    0: JobAction.INVALID,
    1: JobAction.CANCELLABLE,
    2: JobAction.RETRIABLE,
    "invalid": JobAction.INVALID,
    "cancellable": JobAction.CANCELLABLE,
    "retriable": JobAction.RETRIABLE,
    "0": JobAction.INVALID,
    "1": JobAction.CANCELLABLE,
    "2": JobAction.RETRIABLE,
}

# --------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupJob:
    """One backup job as a `backupJobs` list item (or the job part of a details response) gives it.

    Attributes:
        key: the job's identity.
        name: the job GUID as given.
        resource_id: the job's ARM id as given (may start `/Subscriptions/`).
        job_type: `properties.jobType`, kept verbatim even when unknown.
        operation: free text, e.g. `"Backup (Full)"`; `""` when absent.
        status: canonical for known values, verbatim otherwise.
        start_at, end_at: UTC; None when absent or a sentinel (years before 2002).
        duration_raw: `properties.duration` verbatim; `duration_s` gives it in seconds.
        actions: `actionsInfo` as `JobAction` values; unknown entries kept as strings.
        properties: the raw `properties` object, for type-specific fields; excluded from equality.
        datasource_type, datasource_name, datasource_id, backup_instance, backup_instance_id,
            policy_name: Backup vault (Microsoft.DataProtection) jobs only, from `dataSourceType`,
            `dataSourceName`, `dataSourceId`, `backupInstanceFriendlyName`, `backupInstanceId`
            and `policyName` (see monitor.core.dataprotection); None for Recovery Services jobs.
        provisional: the job came from an index that may lag (Resource Graph), not from ARM:
            while it is not terminal, the poll step reads it from ARM before it counts (a
            stale row must never undo a newer status). Excluded from equality.
    """

    key: JobKey
    name: str
    resource_id: str
    job_type: str
    operation: str
    backup_management_type: str | None
    entity: str | None
    status: JobStatus
    start_at: datetime | None
    end_at: datetime | None
    duration_raw: str | None
    actions: tuple[str, ...]
    activity_id: str | None
    properties: Mapping[str, object] = field(compare=False, repr=False)
    datasource_type: str | None = None
    datasource_name: str | None = None
    datasource_id: str | None = None
    backup_instance: str | None = None
    backup_instance_id: str | None = None
    policy_name: str | None = None
    provisional: bool = field(default=False, compare=False)

    @property
    def duration_s(self) -> float | None:
        """`duration_raw` in seconds (ISO 8601 or TimeSpan); None when absent or unparseable."""
        # Parsed on access, not per list item: only jobs that change state ever need it.
        return None if self.duration_raw is None else parse_duration_s(self.duration_raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsPage:
    """One page of `backupJobs`: parsed jobs, malformed items skipped, and the verbatim nextLink."""

    jobs: tuple[BackupJob, ...]
    skipped: tuple[ParseError, ...]
    next_link: str | None
    # The lower-cased names of the items left out as known (`parse_jobs_page`'s `known`).
    unchanged: tuple[str, ...] = ()

    @property
    def has_next_page(self) -> bool:
        """True when ARM gave a `nextLink` to follow."""
        return self.next_link is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobError:
    """One entry of `errorDetails`, normalised over every `*ErrorInfo` shape.

    `code` is `errorCode` as a string (AzureIaaSVMErrorInfo sends an int); `message` is
    `errorString`; `title` is `errorTitle`; `additional_details` comes from AzureWorkloadErrorInfo.
    """

    code: str | None
    message: str | None
    title: str | None
    recommendations: tuple[str, ...]
    additional_details: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobTask:
    """One entry of `extendedInfo.tasksList` (`name` is its `taskId`)."""

    name: str
    status: JobStatus | None
    start_at: datetime | None
    end_at: datetime | None
    duration_s: float | None
    progress_percentage: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDetails:
    """A job from `GET backupJobs/{id}`: the job plus its errors, tasks and extended info.

    Malformed error or task entries are dropped and reported in `skipped` with their JSON path.
    """

    job: BackupJob
    errors: tuple[JobError, ...]
    tasks: tuple[JobTask, ...]
    property_bag: Mapping[str, str] = field(hash=False)
    progress_percentage: float | None
    estimated_remaining_s: float | None
    dynamic_error_message: str | None
    skipped: tuple[ParseError, ...] = ()


KnownEnded: TypeAlias = Callable[[str], "JobStatus | None"]
"""What a caller knows of a vault's ended jobs: the terminal status it tracks for a lower-cased
job name (a canonical `JobStatus` object), or None (`core.diff.JobTable.ended_status`). One
must answer the same for as long as it lives (a bound method of an immutable table): two equal
ones are taken as the same knowledge (`arm_quiet_pages`)."""


def parse_jobs_page(payload: object, vault: VaultRef, known: KnownEnded | None = None) -> JobsPage:
    """Parse one page of `GET .../vaults/{v}/backupJobs`.

    A malformed item is skipped and reported in `skipped` as a ParseError whose path names it,
    e.g. `value[3].properties.status`; it never fails the page. Malformed includes a `name` that
    is not one safe URL path segment (`check_path_segment`: it would go into the details URL)
    and an `id` that is not under `{vault}/backupJobs/`. `next_link` is returned verbatim
    (absent, null or empty means None); it must be followed as given, never rebuilt.

    `known`: an item of a job that `known` says ended with exactly the status the item lists
    (its canonical spelling), with an ASCII name and an id under the vault's, is not parsed: its
    lower-cased name goes to `unchanged` instead of a job to `jobs`. Nothing of such a job is
    new to the caller, and the steady poll's pages are mostly such jobs. Its other fields are
    not checked, so a malformed one is not reported. `listed_jobs` joins such pages.

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is present
            and not a string.
    """
    return parse_page(payload, vault.key, _parse_job, known)


def parse_page(
    payload: object,
    vault_key: str,
    parse_item: Callable[[object, str], BackupJob],
    known: KnownEnded | None = None,
) -> JobsPage:
    """One page of jobs of either kind of vault: each item through `parse_item`; one that
    raises ParseError is skipped and reported under its `value[i]` path. `known`: as
    `parse_jobs_page` says (for statuses spelt as Recovery Services spells them).

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is present
            and not a string.
    """
    items, next_link = page_items(payload)
    jobs: list[BackupJob] = []
    skipped: list[ParseError] = []
    unchanged: list[str] = []
    append = jobs.append
    prefix = vault_key + "/backupjobs/"
    cut = len(prefix)
    for index, item in enumerate(items):
        # A job `known` says ended with the status listed is named, not parsed. Inline (it runs
        # for nearly every item of a steady poll): the name must be ASCII, as lower-casing ASCII
        # changes letters only, so it is as safe a path segment as the known name it matches,
        # which was checked when that job was first parsed; the id must be under the vault's.
        if known is not None and type(item) is dict:
            name, props = item.get("name"), item.get("properties")
            if type(name) is str and type(props) is dict:
                raw_status = props.get("status")
                if type(raw_status) is str and name.isascii():
                    lower = name.lower()
                    status = known(lower)
                    if status is not None and _KNOWN_STATUS.get(raw_status) is status:
                        resource_id = item.get("id")
                        if type(resource_id) is str and resource_id[:cut].lower() == prefix:
                            unchanged.append(lower)
                            continue
        try:
            append(parse_item(item, vault_key))
        except ParseError as exc:
            skipped.append(nested(f"value[{index}]", exc))
    return JobsPage(
        jobs=tuple(jobs), skipped=tuple(skipped), next_link=next_link, unchanged=tuple(unchanged)
    )


def jobs_of(pages: Sequence[JobsPage]) -> list[BackupJob]:
    """The jobs of a listing's pages, in order."""
    return [job for page in pages for job in page.jobs]


def listed_jobs(pages: Sequence[JobsPage], reparse: Callable[[int], JobsPage]) -> list[BackupJob]:
    """The jobs of one listing's pages, in order, each page parsed with a `known`.

    A listing can show a job twice (a page boundary moves while it is read): if a job left out
    as unchanged is also among the parsed jobs (listed again with another status), every page
    is parsed again without `known` (`reparse(i)`: page i), so that the listing reads as a
    full parse reads it (`core.diff.diff_jobs` keeps a job's last occurrence in its first
    one's place).
    """
    jobs = jobs_of(pages)
    left_out = {name for page in pages for name in page.unchanged}
    if left_out and any(job.key.job_name in left_out for job in jobs):
        return [job for index in range(len(pages)) for job in reparse(index).jobs]
    return jobs


def job_identity(item: object, vault_key: str) -> tuple[dict[str, object], str, str]:
    """The checks every job item passes, of either kind of vault: an object whose `name` is one
    safe URL path segment (it goes into the job's URL) and whose `id` is under
    `{vault}/backupJobs/`; returns (the item, its name, its id).

    Raises:
        ParseError: which check failed, under the field's path.
    """
    if type(item) is not dict:
        raise ParseError("", f"expected an object, got {type(item).__name__}")
    name = item.get("name")
    if type(name) is not str or not name:
        raise ParseError("name", "missing, empty or not a string")
    check_path_segment(name, "job name", path="name")
    resource_id = item.get("id")
    if type(resource_id) is not str:
        raise ParseError("id", "missing or not a string")
    prefix = vault_key + "/backupjobs/"
    if resource_id[: len(prefix)].lower() != prefix:
        raise ParseError("id", f"not a job of the vault {vault_key}: {excerpt(resource_id)}")
    return item, name, resource_id


def parse_entries(
    raw: object, path: str, parse: Callable[[object], _E], skipped: list[ParseError]
) -> list[_E]:
    """The entries of a list field (`errorDetails`, the tasks) through `parse`; a malformed
    entry, or a field that is not a list, is reported in `skipped` under its path."""
    entries: list[_E] = []
    if isinstance(raw, list):
        for index, entry in enumerate(raw):
            try:
                entries.append(parse(entry))
            except ParseError as exc:
                skipped.append(nested(f"{path}[{index}]", exc))
    elif raw is not None:
        skipped.append(ParseError(path, "expected a list"))
    return entries


def string_bag(raw: dict[str, object], path: str, skipped: list[ParseError]) -> dict[str, str]:
    """The string values of an object (a property bag); any other non-null value is reported
    in `skipped` under `path[name]`."""
    bag: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, str):
            bag[name] = value
        elif value is not None:
            skipped.append(ParseError(f"{path}[{excerpt(name)}]", "not a string"))
    return bag


def parse_job_details(payload: object, vault: VaultRef) -> JobDetails:
    """Parse `GET .../vaults/{v}/backupJobs/{id}` for any job type.

    Errors from every `*ErrorInfo` shape are normalised into `JobError`; tasks, the property bag,
    progress, the estimated remaining time (TimeSpan, ISO 8601 or free text → None) and the
    dynamic error message come from `extendedInfo` when present.

    Raises:
        ParseError: the job itself is malformed (same rules as a list item); the path names
            the field, e.g. `properties.status`.
    """
    job = _parse_job(payload, vault.key)
    props = job.properties
    skipped: list[ParseError] = []
    errors = parse_entries(
        props.get("errorDetails"), "properties.errorDetails", _parse_error_info, skipped
    )
    tasks: list[JobTask] = []
    bag: dict[str, str] = {}
    progress: float | None = None
    remaining_s: float | None = None
    dynamic_message: str | None = None
    ext = props.get("extendedInfo")
    if isinstance(ext, dict):
        path = "properties.extendedInfo"
        tasks = parse_entries(ext.get("tasksList"), f"{path}.tasksList", _parse_task, skipped)
        raw_bag = ext.get("propertyBag")
        if isinstance(raw_bag, dict):
            bag = string_bag(raw_bag, f"{path}.propertyBag", skipped)
        progress = opt_number(ext, "progressPercentage", "properties.extendedInfo.")
        remaining = ext.get("estimatedRemainingDuration")
        remaining_s = parse_duration_s(remaining) if isinstance(remaining, str) else None
        message = ext.get("dynamicErrorMessage")
        dynamic_message = message if isinstance(message, str) and message else None
    elif ext is not None:
        skipped.append(ParseError("properties.extendedInfo", "expected an object"))
    return JobDetails(
        job=job,
        errors=tuple(errors),
        tasks=tuple(tasks),
        property_bag=bag,
        progress_percentage=progress,
        estimated_remaining_s=remaining_s,
        dynamic_error_message=dynamic_message,
        skipped=tuple(skipped),
    )


def _parse_job(raw: object, vault_key: str) -> BackupJob:
    item, name, resource_id = job_identity(raw, vault_key)
    props = item.get("properties")
    if type(props) is not dict:
        raise ParseError("properties", "missing or not an object")
    raw_status = props.get("status")
    if type(raw_status) is not str or not raw_status:
        raise ParseError("properties.status", "missing, empty or not a string")
    status = _KNOWN_STATUS.get(raw_status) or JobStatus.of(raw_status)  # fast path first
    job_type = props.get("jobType")
    if type(job_type) is not str or not job_type:
        raise ParseError("properties.jobType", "missing, empty or not a string")
    operation = props.get("operation")
    if operation is None:
        operation = ""
    elif type(operation) is not str:
        raise ParseError("properties.operation", "not a string")
    raw_start = props.get("startTime")
    start_at = None if raw_start is None else time_field(raw_start, "properties.startTime")
    raw_end = props.get("endTime")
    end_at = None if raw_end is None else time_field(raw_end, "properties.endTime")
    duration_raw = props.get("duration")
    if duration_raw is not None and type(duration_raw) is not str:
        raise ParseError("properties.duration", "not a string")
    raw_actions = props.get("actionsInfo")
    actions: tuple[str, ...] = () if raw_actions is None else _actions(raw_actions)
    key = _new(JobKey)
    _SET_KEY_VAULT(key, vault_key)
    _SET_KEY_NAME(key, name.lower())
    # BackupJob's fields in declaration order (`_JOB_SETTERS`); the Backup vault fields are
    # None and `provisional` False, their defaults.
    values = (
        key,
        name,
        resource_id,
        job_type,
        operation,
        opt_str(props, "backupManagementType", "properties."),
        opt_str(props, "entityFriendlyName", "properties."),
        status,
        start_at,
        end_at,
        duration_raw,
        actions,
        opt_str(props, "activityId", "properties."),
        props,
        None,
        None,
        None,
        None,
        None,
        None,
        False,
    )
    job = _new(BackupJob)
    for setter, value in zip(_JOB_SETTERS, values, strict=True):
        setter(job, value)
    return job


# The hot path builds JobKey and BackupJob through their slots' descriptors: a frozen
# dataclass's __init__ sets each field through object.__setattr__, which was a third of a
# job's parse. Same objects (neither class has a __post_init__); the classes stay frozen.
_new = object.__new__
_JOB_FIELDS: Final = (
    "key",
    "name",
    "resource_id",
    "job_type",
    "operation",
    "backup_management_type",
    "entity",
    "status",
    "start_at",
    "end_at",
    "duration_raw",
    "actions",
    "activity_id",
    "properties",
    "datasource_type",
    "datasource_name",
    "datasource_id",
    "backup_instance",
    "backup_instance_id",
    "policy_name",
    "provisional",
)
assert tuple(f.name for f in fields(BackupJob)) == _JOB_FIELDS, "update _parse_job's values"
assert not hasattr(BackupJob, "__post_init__")
assert not hasattr(JobKey, "__post_init__")
assert tuple(f.name for f in fields(JobKey)) == ("vault_key", "job_name")
_JOB_SETTERS: Final = tuple(BackupJob.__dict__[name].__set__ for name in _JOB_FIELDS)
_SET_KEY_VAULT: Final = JobKey.__dict__["vault_key"].__set__
_SET_KEY_NAME: Final = JobKey.__dict__["job_name"].__set__


def _actions(raw: object) -> tuple[str, ...]:
    if type(raw) is not list:
        raise ParseError("properties.actionsInfo", "not a list")
    out: list[str] = []
    for index, entry in enumerate(raw):
        kind = type(entry)
        if kind is int:
            out.append(_ACTIONS.get(entry) or str(entry))
        elif kind is str:
            out.append(_ACTIONS.get(entry.lower()) or entry)
        else:
            raise ParseError(f"properties.actionsInfo[{index}]", "not an int or a string")
    return tuple(out)


def _parse_error_info(entry: object) -> JobError:
    if not isinstance(entry, dict):
        raise ParseError("", "expected an object")
    code = entry.get("errorCode")
    if isinstance(code, bool) or not isinstance(code, int | str | None):
        raise ParseError("errorCode", "not an int or a string")
    recommendations = entry.get("recommendations")
    if recommendations is None:
        recs: tuple[str, ...] = ()
    elif isinstance(recommendations, list):
        recs = tuple(r for r in recommendations if isinstance(r, str))
    else:
        raise ParseError("recommendations", "not a list")
    return JobError(
        code=None if code is None or code == "" else str(code),
        message=opt_str(entry, "errorString"),
        title=opt_str(entry, "errorTitle"),
        recommendations=recs,
        additional_details=opt_str(entry, "additionalDetails"),
    )


def _parse_task(entry: object) -> JobTask:
    if not isinstance(entry, dict):
        raise ParseError("", "expected an object")
    name = entry.get("taskId")
    if not isinstance(name, str):
        raise ParseError("taskId", "missing or not a string")
    raw_status = entry.get("status")
    if raw_status is not None and not isinstance(raw_status, str):
        raise ParseError("status", "not a string")
    raw_start, raw_end = entry.get("startTime"), entry.get("endTime")
    duration = entry.get("duration")
    return JobTask(
        name=name,
        status=JobStatus.of(raw_status) if raw_status else None,
        start_at=None if raw_start is None else time_field(raw_start, "startTime"),
        end_at=None if raw_end is None else time_field(raw_end, "endTime"),
        duration_s=parse_duration_s(duration) if isinstance(duration, str) else None,
        progress_percentage=opt_number(entry, "progressPercentage"),
    )
