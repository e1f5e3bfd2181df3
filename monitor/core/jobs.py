"""Value types for vaults and backup jobs, parsed leniently from ARM payloads."""

# Rule: nothing here awaits, sleeps or reads the clock. Parsers take decoded JSON (dicts, lists,
# str, int, float, bool, None) and raise only ParseError. This is the hot path (thousands of
# 20-job pages per minute): plain dict access, module-level precompiled regexes, no copies.

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Final

from monitor.errors import ParseError

__all__ = [
    "MAX_SEGMENT_CHARS",
    "BackupJob",
    "JobAction",
    "JobDetails",
    "JobError",
    "JobKey",
    "JobStatus",
    "JobTask",
    "JobsPage",
    "SubscriptionsPage",
    "VaultRef",
    "VaultsPage",
    "build_jobs_filter",
    "check_path_segment",
    "check_subscription_id",
    "format_filter_time",
    "parse_arm_time",
    "parse_duration_s",
    "parse_job_details",
    "parse_jobs_page",
    "parse_subscriptions_page",
    "parse_vault_id",
    "parse_vaults_page",
]

# Years below this mean "unset": DateTime.MinValue (0001-01-01) and Backup's 2001-01-01.
SENTINEL_YEAR_BELOW: Final = 2002

# --------------------------------------------------------------------------------------------
# Identifiers that go into URL paths

MAX_SEGMENT_CHARS: Final = 260
"""The longest value accepted as one path segment. The names that reach our URLs are far shorter
(vault names 2–50 characters, resource groups 1–90, job names 36-character GUIDs); 260 leaves room
for any real one and bounds what a hostile page can put into a URL or a log line."""

# '/' and '\' split a path (some servers read '\' as '/'), '?' and '#' end it, '%' would be
# read as an escape by whatever decodes the path a second time, and C0 controls and DEL are
# never part of a name. ';' is allowed: Backup's container and item names hold it.
_UNSAFE_ASCII: Final = re.compile(r"[\x00-\x1f\x7f/\\?#%]")
# Beyond ASCII: C1 controls, format characters (bidi overrides and isolates, zero-width
# characters, the BOM: they make a name print as something it is not), lone surrogates (not
# encodable as UTF-8) and the line and paragraph separators. Letters of any script, right-to-left
# ones included, are allowed: the URL percent-encodes them.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_DOT_SEGMENTS: Final = frozenset({".", ".."})
_GUID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE
)


def check_path_segment(value: object, what: str, *, path: str = "") -> str:
    """Return `value` when it is safe as exactly one segment of an ARM URL path.

    Refused: a non-string; the empty string; more than MAX_SEGMENT_CHARS characters; `.` and
    `..`; leading or trailing whitespace; `/`, `\\`, `?`, `#`, `%`; control characters (C0, DEL,
    C1), format characters (Unicode category Cf: bidi overrides, zero-width characters), lone
    surrogates, U+2028 and U+2029; and any value whose NFKC form holds one of those characters or
    is a dot segment (full-width `／` or `．．`, which a normalising server would read as `/` or
    `..`). Everything else is allowed, letters of every script included: the URL
    percent-encodes it, so an accepted value is one segment however it is quoted.

    Args:
        value: the identifier as parsed (an ARM payload's field, a command-line argument).
        what: what it is, for the message: `"job name"`, `"vault name"`, `"resource group"`.
        path: the ParseError's path (a JSON path such as `name`, or an argument's name).

    Raises:
        ParseError: (named `path`) the value is not safe; the message names `what`, the problem
            and an excerpt of the value.
    """
    if type(value) is not str:
        raise ParseError(path, f"{what}: expected a string, got {type(value).__name__}")
    problem = _segment_problem(value)
    if problem is not None:
        raise ParseError(path, f"{what} {problem}: {_excerpt(value)}")
    return value


def check_subscription_id(value: object, *, path: str = "") -> str:
    """Return `value` when it is a subscription id: a GUID (any casing; returned as given).

    Raises:
        ParseError: (named `path`) not a string, or not a GUID.
    """
    if type(value) is not str or _GUID.fullmatch(value) is None:
        raise ParseError(path, f"subscription id must be a GUID, got {_excerpt(value)}")
    return value


def _segment_problem(value: str) -> str | None:
    """Why `value` is not one safe path segment, or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_SEGMENT_CHARS:
        return f"is {len(value)} characters long, more than {MAX_SEGMENT_CHARS}"
    if value in _DOT_SEGMENTS:
        return "is a dot segment"
    if value[0].isspace() or value[-1].isspace():
        return "has leading or trailing whitespace"
    bad = _UNSAFE_ASCII.search(value)
    if bad is not None:
        return f"holds {_char_name(bad.group())}"
    if value.isascii():
        return None  # the common case: GUIDs and ARM names
    for char in value:
        if char > "\x7f" and unicodedata.category(char) in _UNSAFE_CATEGORIES:
            return f"holds {_char_name(char)}"
    folded = unicodedata.normalize("NFKC", value)
    if folded in _DOT_SEGMENTS:
        return f"normalises (NFKC) to the dot segment {folded!r}"
    bad = _UNSAFE_ASCII.search(folded)
    if bad is not None:
        return f"normalises (NFKC) to a value that holds {_char_name(bad.group())}"
    return None


def _char_name(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X}), which a path segment cannot hold"


# --------------------------------------------------------------------------------------------
# Vaults


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultRef:
    """A Recovery Services vault.

    `id` is the resource id exactly as ARM or the configuration gave it; `key` is its lower-cased
    form, the identity to compare, hash and store (ARM mixes `/Subscriptions/` and
    `/subscriptions/`, `Microsoft.RecoveryServices` and `microsoft.recoveryservices`).
    """

    id: str
    key: str
    subscription_id: str
    resource_group: str
    name: str
    location: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultsPage:
    """One page of an ARM vault list: the vaults, the items skipped as malformed, the next link."""

    vaults: tuple[VaultRef, ...]
    skipped: tuple[ParseError, ...]
    next_link: str | None

    @property
    def has_next_page(self) -> bool:
        """True when ARM gave a `nextLink` to follow."""
        return self.next_link is not None


_VAULT_ID_SHAPE: Final = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name}"
)


def parse_vault_id(resource_id: str, *, location: str | None = None) -> VaultRef:
    """Parse a vault resource id, accepting any casing of its fixed segments.

    Args:
        resource_id: e.g. `/Subscriptions/{sub}/resourceGroups/{rg}/providers/
            microsoft.recoveryservices/vaults/{name}`; kept verbatim in `VaultRef.id`.
        location: the vault's region, when the caller knows it.

    Raises:
        ParseError: (path `resource_id`) the id is not a string or not a vault id: a fixed
            segment is wrong, the subscription id is not a GUID, or the resource group or the
            vault name is not one safe path segment (`check_path_segment`); the message names
            the segment that is wrong.
    """
    if not isinstance(resource_id, str):
        raise ParseError("resource_id", f"expected a string, got {type(resource_id).__name__}")
    parts = resource_id.split("/")
    if len(parts) != 9 or parts[0] != "":
        raise ParseError(
            "resource_id", f"expected {_VAULT_ID_SHAPE}, got {len(parts) - 1} segments"
        )
    _, subs, sub, rgs, rg, providers, namespace, vaults, name = parts
    for got, want in (
        (subs, "subscriptions"),
        (rgs, "resourcegroups"),
        (providers, "providers"),
        (namespace, "microsoft.recoveryservices"),
        (vaults, "vaults"),
    ):
        if got.lower() != want:
            raise ParseError("resource_id", f"expected segment {want!r}, got {_excerpt(got)}")
    check_subscription_id(sub, path="resource_id")
    check_path_segment(rg, "resource group", path="resource_id")
    check_path_segment(name, "vault name", path="resource_id")
    return VaultRef(
        id=resource_id,
        key=resource_id.lower(),
        subscription_id=sub,
        resource_group=rg,
        name=name,
        location=location,
    )


def parse_vaults_page(payload: object) -> VaultsPage:
    """Parse one page of `GET .../providers/Microsoft.RecoveryServices/vaults`.

    Items that are not vaults (bad id, wrong `type`) are skipped and reported in `skipped` with
    their JSON path; they never fail the page.

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is not a
            string.
    """
    items, next_link = _page_items(payload)
    vaults: list[VaultRef] = []
    skipped: list[ParseError] = []
    for index, item in enumerate(items):
        try:
            vaults.append(_parse_vault_item(item))
        except ParseError as exc:
            skipped.append(_at(f"value[{index}]", exc))
    return VaultsPage(vaults=tuple(vaults), skipped=tuple(skipped), next_link=next_link)


def _parse_vault_item(item: object) -> VaultRef:
    if not isinstance(item, dict):
        raise ParseError("", f"expected an object, got {type(item).__name__}")
    kind = item.get("type")
    if kind is not None and (
        not isinstance(kind, str) or kind.lower() != "microsoft.recoveryservices/vaults"
    ):
        raise ParseError("type", f"not a Recovery Services vault: {_excerpt(kind)}")
    location = _opt_str(item, "location")
    resource_id = item.get("id")
    if not isinstance(resource_id, str):
        raise ParseError("id", "missing or not a string")
    try:
        return parse_vault_id(resource_id, location=location)
    except ParseError as exc:
        raise ParseError("id", exc.problem) from None


# --------------------------------------------------------------------------------------------
# Subscriptions


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionsPage:
    """One page of `GET /subscriptions`: readable ids (lower-cased), skipped items, next link."""

    ids: tuple[str, ...]
    skipped: tuple[ParseError, ...]
    next_link: str | None

    @property
    def has_next_page(self) -> bool:
        """True when ARM gave a `nextLink` to follow."""
        return self.next_link is not None


# Warned and PastDue subscriptions are still readable; only these cannot be read.
_UNREADABLE_STATES: Final = frozenset({"disabled", "deleted"})


def parse_subscriptions_page(payload: object) -> SubscriptionsPage:
    """Parse one page of `GET /subscriptions`.

    An item's id is its `subscriptionId`, or, when that is absent or empty, the last segment of
    its `id` (`/subscriptions/{id}`). An item that is not an object, or whose id is not a GUID
    (`check_subscription_id`), is skipped and reported in `skipped` with its JSON path, e.g.
    `value[2].subscriptionId`. Disabled and Deleted subscriptions are left out without a word.

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is present
            and not a string.
    """
    items, next_link = _page_items(payload)
    ids: list[str] = []
    skipped: list[ParseError] = []
    for index, item in enumerate(items):
        try:
            sub = _parse_subscription_item(item)
        except ParseError as exc:
            skipped.append(_at(f"value[{index}]", exc))
            continue
        if sub is not None:
            ids.append(sub)
    return SubscriptionsPage(ids=tuple(ids), skipped=tuple(skipped), next_link=next_link)


def _parse_subscription_item(item: object) -> str | None:
    """The item's lower-cased subscription id; None for a subscription that cannot be read."""
    if not isinstance(item, dict):
        raise ParseError("", f"expected an object, got {type(item).__name__}")
    given = item.get("subscriptionId")
    if given is not None and given != "":
        sub = check_subscription_id(given, path="subscriptionId")
    else:
        whole = item.get("id")
        parts = whole.split("/") if isinstance(whole, str) else []
        if len(parts) != 3 or parts[0] != "" or parts[1].lower() != "subscriptions":
            raise ParseError("subscriptionId", "missing, and no /subscriptions/{id} in id")
        sub = check_subscription_id(parts[2], path="id")
    state = item.get("state")
    if isinstance(state, str) and state.lower() in _UNREADABLE_STATES:
        return None
    return sub.lower()


# --------------------------------------------------------------------------------------------
# Job identity, status and actions


@dataclass(frozen=True, slots=True, kw_only=True)
class JobKey:
    """The identity of a job: (lower-cased vault id, lower-cased job name)."""

    vault_key: str
    job_name: str


class JobStatus:
    """A job status: known values canonicalised to PascalCase, unknown values kept verbatim.

    Equality and hashing are case-insensitive, so `JobStatus.of("completed") == JobStatus.COMPLETED`
    and an unknown `"Paused"` equals `"paused"`. Known values are interned: `JobStatus.of(x) is
    JobStatus.FAILED` holds for every casing of "Failed". A JobStatus never equals a plain `str`
    (hashes could not agree); compare with `JobStatus.of(text)`, or `str(status)` for the text.
    Instances are immutable.
    """

    __slots__ = ("_folded", "value")

    value: str
    _folded: str

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
    def is_terminal(self) -> bool:
        """True for Completed, CompletedWithWarnings, Failed and Cancelled."""
        return self._folded in _OUTCOMES

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
_OUTCOMES: Final[dict[str, str]] = {
    "completed": "succeeded",
    "completedwithwarnings": "succeeded_with_warnings",
    "failed": "failed",
    "cancelled": "cancelled",
}


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


def parse_jobs_page(payload: object, vault: VaultRef) -> JobsPage:
    """Parse one page of `GET .../vaults/{v}/backupJobs`.

    A malformed item is skipped and reported in `skipped` as a ParseError whose path names it,
    e.g. `value[3].properties.status`; it never fails the page. Malformed includes a `name` that
    is not one safe URL path segment (`check_path_segment`: it would go into the details URL)
    and an `id` that is not under `{vault}/backupJobs/`. `next_link` is returned verbatim
    (absent, null or empty means None); it must be followed as given, never rebuilt.

    Raises:
        ParseError: the payload is not an object with a list `value`, or `nextLink` is present
            and not a string.
    """
    items, next_link = _page_items(payload)
    vault_key = vault.key
    jobs: list[BackupJob] = []
    skipped: list[ParseError] = []
    append = jobs.append
    for index, item in enumerate(items):
        try:
            append(_parse_job(item, vault_key))
        except ParseError as exc:
            skipped.append(_at(f"value[{index}]", exc))
    return JobsPage(jobs=tuple(jobs), skipped=tuple(skipped), next_link=next_link)


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
    errors: list[JobError] = []
    raw_errors = props.get("errorDetails")
    if raw_errors is not None:
        if not isinstance(raw_errors, list):
            skipped.append(ParseError("properties.errorDetails", "expected a list"))
        else:
            for index, entry in enumerate(raw_errors):
                try:
                    errors.append(_parse_error_info(entry))
                except ParseError as exc:
                    skipped.append(_at(f"properties.errorDetails[{index}]", exc))
    tasks: list[JobTask] = []
    bag: dict[str, str] = {}
    progress: float | None = None
    remaining_s: float | None = None
    dynamic_message: str | None = None
    ext = props.get("extendedInfo")
    if isinstance(ext, dict):
        raw_tasks = ext.get("tasksList")
        if isinstance(raw_tasks, list):
            for index, entry in enumerate(raw_tasks):
                try:
                    tasks.append(_parse_task(entry))
                except ParseError as exc:
                    skipped.append(_at(f"properties.extendedInfo.tasksList[{index}]", exc))
        elif raw_tasks is not None:
            skipped.append(ParseError("properties.extendedInfo.tasksList", "expected a list"))
        raw_bag = ext.get("propertyBag")
        if isinstance(raw_bag, dict):
            for name, value in raw_bag.items():
                if isinstance(value, str):
                    bag[name] = value
                elif value is not None:
                    skipped.append(
                        ParseError(
                            f"properties.extendedInfo.propertyBag[{_excerpt(name)}]", "not a string"
                        )
                    )
        progress = _opt_number(ext, "progressPercentage", "properties.extendedInfo.")
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


def _parse_job(item: object, vault_key: str) -> BackupJob:
    if type(item) is not dict:
        raise ParseError("", f"expected an object, got {type(item).__name__}")
    name = item.get("name")
    if type(name) is not str or not name:
        raise ParseError("name", "missing, empty or not a string")
    check_path_segment(name, "job name", path="name")  # it goes into the details URL
    resource_id = item.get("id")
    if type(resource_id) is not str:
        raise ParseError("id", "missing or not a string")
    prefix = vault_key + "/backupjobs/"
    if resource_id[: len(prefix)].lower() != prefix:
        raise ParseError("id", f"not a job of the vault {vault_key}: {_excerpt(resource_id)}")
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
    start_at = None if raw_start is None else _time_field(raw_start, "properties.startTime")
    raw_end = props.get("endTime")
    end_at = None if raw_end is None else _time_field(raw_end, "properties.endTime")
    duration_raw = props.get("duration")
    if duration_raw is not None and type(duration_raw) is not str:
        raise ParseError("properties.duration", "not a string")
    raw_actions = props.get("actionsInfo")
    actions: tuple[str, ...] = () if raw_actions is None else _actions(raw_actions)
    return BackupJob(
        key=JobKey(vault_key=vault_key, job_name=name.lower()),
        name=name,
        resource_id=resource_id,
        job_type=job_type,
        operation=operation,
        backup_management_type=_opt_str(props, "backupManagementType", "properties."),
        entity=_opt_str(props, "entityFriendlyName", "properties."),
        status=status,
        start_at=start_at,
        end_at=end_at,
        duration_raw=duration_raw,
        actions=actions,
        activity_id=_opt_str(props, "activityId", "properties."),
        properties=props,
    )


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
        message=_opt_str(entry, "errorString"),
        title=_opt_str(entry, "errorTitle"),
        recommendations=recs,
        additional_details=_opt_str(entry, "additionalDetails"),
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
        start_at=None if raw_start is None else _time_field(raw_start, "startTime"),
        end_at=None if raw_end is None else _time_field(raw_end, "endTime"),
        duration_s=parse_duration_s(duration) if isinstance(duration, str) else None,
        progress_percentage=_opt_number(entry, "progressPercentage"),
    )


# --------------------------------------------------------------------------------------------
# Field helpers


def _page_items(payload: object) -> tuple[list[object], str | None]:
    if not isinstance(payload, dict):
        raise ParseError("", f"expected an object, got {type(payload).__name__}")
    items = payload.get("value")
    if not isinstance(items, list):
        raise ParseError("value", "missing or not a list")
    return items, _next_link(payload.get("nextLink"))


def _next_link(link: object) -> str | None:
    if link is None or link == "":
        return None
    if not isinstance(link, str):
        raise ParseError("nextLink", "not a string")
    return link


def _excerpt(value: object) -> str:
    """A short repr for error messages: payload strings can be arbitrarily long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _at(prefix: str, exc: ParseError) -> ParseError:
    path = f"{prefix}.{exc.path}" if exc.path else prefix
    return ParseError(path, exc.problem)


def _opt_str(obj: dict[str, object], name: str, prefix: str = "") -> str | None:
    value = obj.get(name)
    if value is None or type(value) is str:
        return value
    raise ParseError(prefix + name, f"not a string: {type(value).__name__}")


def _opt_number(obj: dict[str, object], name: str, prefix: str = "") -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(prefix + name, "not a number")
    return float(value)


def _time_field(value: object, path: str) -> datetime | None:
    if type(value) is not str:
        raise ParseError(path, "not a string")
    return parse_arm_time(value, path=path)


# --------------------------------------------------------------------------------------------
# Times and durations


def parse_arm_time(text: str, *, path: str = "time") -> datetime | None:
    """Parse an ARM date-time into an aware UTC datetime; sentinel years (< 2002) give None.

    Accepts `Z` or a numeric offset and 0–7 fractional digits (the 7th is truncated); a time
    without an offset is taken as UTC, which is what ARM means.

    Raises:
        ParseError: (named `path`) the text is not an ISO 8601 date-time.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise ParseError(path, f"not an ISO 8601 date-time: {_excerpt(text)}") from None
    if parsed.year < SENTINEL_YEAR_BELOW:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    if parsed.utcoffset():
        return parsed.astimezone(UTC)
    return parsed if parsed.tzinfo is UTC else parsed.replace(tzinfo=UTC)


_NUM = r"(\d+(?:[.,]\d+)?)"
_ISO_DURATION: Final = re.compile(
    rf"([-+])?P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
    rf"(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?",
    re.ASCII | re.IGNORECASE,
)
_ISO_SECONDS: Final = re.compile(r"PT(\d{1,15}(?:\.\d{1,15})?)S", re.ASCII)
_TIMESPAN: Final = re.compile(
    r"(-)?(?:(\d{1,8})[.:])?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?",
    re.ASCII,
)


def parse_duration_s(text: str) -> float | None:
    """Parse an ARM duration into seconds: ISO 8601 or .NET TimeSpan text.

    ISO 8601: `PT12.4272909S`, `PT0S`, `P1DT2H`, `P4W`, with an optional sign; years and months
    are accepted only when zero (they have no fixed length). TimeSpan: `[-][d.]hh:mm:ss[.fffffff]`
    (e.g. `00:20:23.0896697`, `1.02:03:04.5`, `-00:00:01`), also with `d:` as the day separator.
    Never raises: anything else, including non-strings, gives None.
    """
    if type(text) is not str:
        return None
    match = _ISO_SECONDS.fullmatch(text)
    if match is not None:  # the common "PT12.4272909S"
        return float(match.group(1))
    match = _TIMESPAN.fullmatch(text)
    if match is not None:
        sign, days, hours, minutes, seconds, fraction = match.groups()
        h, m, s = int(hours), int(minutes), int(seconds)
        if h > 23 or m > 59 or s > 59:
            return None
        total = (int(days) * 86400 if days else 0) + h * 3600 + m * 60 + s
        value = total + int(fraction) / 10 ** len(fraction) if fraction else float(total)
        return -value if sign else value
    match = _ISO_DURATION.fullmatch(text)
    if match is None:
        return None
    sign, years, months, weeks, days, hours, minutes, seconds = match.groups()
    if (years and float(years.replace(",", "."))) or (months and float(months.replace(",", "."))):
        return None
    parts = ((weeks, 604800), (days, 86400), (hours, 3600), (minutes, 60), (seconds, 1))
    if not any(p for p, _ in parts) and years is None and months is None:
        return None  # "P", "PT" and "-P" carry no component.
    if text.endswith(("T", "t")):
        return None  # "P1DT": a T must be followed by a time component.
    value = 0.0
    for part, unit in parts:
        if part:
            value += float(part.replace(",", ".")) * unit
    if not math.isfinite(value):
        return None  # absurdly many digits
    return -value if sign == "-" else value


# --------------------------------------------------------------------------------------------
# $filter


def format_filter_time(moment: datetime) -> str:
    """Format an instant as ARM's `$filter` time: UTC, `yyyy-MM-dd hh:mm:ss AM|PM` (en-US).

    Built by hand so the process locale cannot change `%p`; midnight is `12:00:00 AM`.

    Raises:
        ValueError: `moment` is naive (the filter is in UTC; a naive time is ambiguous).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("format_filter_time needs an aware datetime")
    utc = moment.astimezone(UTC)
    hour12 = utc.hour % 12 or 12
    half = "AM" if utc.hour < 12 else "PM"
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{hour12:02d}:{utc.minute:02d}:{utc.second:02d} {half}"
    )


def build_jobs_filter(start_at: datetime, end_at: datetime) -> str:
    """Build the `$filter` value for a job window: `startTime eq '…' and endTime eq '…'`.

    The value is not URL-encoded; the HTTP layer encodes it once.

    Raises:
        ValueError: either instant is naive, or `end_at` is before `start_at`.
    """
    start_text, end_text = format_filter_time(start_at), format_filter_time(end_at)
    if end_at < start_at:
        raise ValueError("build_jobs_filter: end_at is before start_at")
    return f"startTime eq '{start_text}' and endTime eq '{end_text}'"
