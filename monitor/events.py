"""The one codec of the public event contract: schema v1 events, their wire form and read-back."""

# Rules:
# - The event is a public contract (DESIGN §5, docs/events.md, schema/backup_job_event.v1.json):
#   keys in the order written here, times as `YYYY-MM-DDTHH:MM:SS.mmmZ`, nothing else.
# - This is the only module that knows the wire schema. Sinks write the bytes `encode_events`
#   makes (the outbox keeps each event's line); the file sink reads events back through
#   `read_recent_events`; metrics count `EmittedEvent`s.
# - Nothing here logs, awaits or reads the clock; the only I/O is reading the shipped schemas
#   and `read_recent_events`' synchronous read of a file's end (sinks run it in a thread).

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final, assert_never

import orjson

from monitor.config import EventFormat
from monitor.core.diff import JobStateChanged, event_id
from monitor.core.item_watch import (
    BackupMissed,
    ItemChange,
    LongRunning,
    ProtectionChanged,
    RpoBreached,
    RpoRestored,
)
from monitor.core.jobs import BackupJob, JobDetails, JobStatus
from monitor.core.protection import ProtectedItem
from monitor.core.vaults import VaultRef
from monitor.errors import SinkError

__all__ = [
    "BACKUP_MISSED_EVENT_TYPE",
    "ERROR_STATES",
    "EVENT_SCHEMA_VERSION",
    "EVENT_TYPE",
    "EVENT_TYPES",
    "HEALTHY_STATUSES",
    "ITEM_EVENT_TYPES",
    "JOB_EVENT_TYPES",
    "LONG_RUNNING_EVENT_TYPE",
    "PROTECTED_STATES",
    "PROTECTION_CHANGED_EVENT_TYPE",
    "RECOVERY_BYTES",
    "RPO_BREACHED_EVENT_TYPE",
    "RPO_RESTORED_EVENT_TYPE",
    "EmittedEvent",
    "cloudevent_schema",
    "decode_events",
    "encode_events",
    "event_id_of",
    "event_schema",
    "format_event_time",
    "protection_verdict",
    "read_recent_events",
    "render_change",
    "render_event",
    "render_item",
    "render_item_event",
    "render_job",
    "render_long_running",
    "render_vault",
    "to_cloudevent",
]

EVENT_SCHEMA_VERSION: Final = 1
EVENT_TYPE: Final = "backup_job.state_changed"
"""A job's state change (`render_event`)."""
BACKUP_MISSED_EVENT_TYPE: Final = "backup_item.backup_missed"
RPO_BREACHED_EVENT_TYPE: Final = "backup_item.rpo_breached"
RPO_RESTORED_EVENT_TYPE: Final = "backup_item.rpo_restored"
PROTECTION_CHANGED_EVENT_TYPE: Final = "backup_item.protection_changed"
ITEM_EVENT_TYPES: Final = (
    BACKUP_MISSED_EVENT_TYPE,
    RPO_BREACHED_EVENT_TYPE,
    RPO_RESTORED_EVENT_TYPE,
    PROTECTION_CHANGED_EVENT_TYPE,
)
"""The `backup_item.*` types (`render_item_event`): events about a protected item, no job."""
LONG_RUNNING_EVENT_TYPE: Final = "backup_job.long_running"
"""A running job past its threshold (`render_long_running`)."""
JOB_EVENT_TYPES: Final = (EVENT_TYPE, LONG_RUNNING_EVENT_TYPE)
"""The `backup_job.*` types: events with a `job` object."""
EVENT_TYPES: Final = (*JOB_EVENT_TYPES, *ITEM_EVENT_TYPES)
"""Every type of schema v1 event the monitor writes."""

PROTECTED_STATES: Final = frozenset(
    {"protected", "irpending", "protectionconfigured", "configuringprotection"}
)
"""Protection states (case-folded) that are protected: Recovery Services `Protected` and
`IRPending` (the first backup is pending), Backup vault `ProtectionConfigured` and
`ConfiguringProtection`."""
ERROR_STATES: Final = frozenset({"protectionerror", "configuringprotectionfailed"})
"""Protection states (case-folded) that are an error, not a stop."""
HEALTHY_STATUSES: Final = frozenset(
    {"passed", "actionsuggested", "healthy", "protectionconfigured", "configuringprotection"}
)
"""Health statuses (case-folded) that are healthy: Recovery Services `Passed` and
`ActionSuggested`, Backup vault `ProtectionConfigured` and `ConfiguringProtection`."""

_SCHEMA_DIR: Final = "schema"
_EVENT_SCHEMA_FILE: Final = "backup_job_event.v1.json"
_CLOUDEVENT_SCHEMA_FILE: Final = "backup_job_cloudevent.v1.json"
_LINE: Final = orjson.OPT_APPEND_NEWLINE
RECOVERY_BYTES: Final = 4 * 1024 * 1024
"""How much of an events file's end is read back at start (see `OutboxSink.delivered_ids`): the
batches of the polls in flight at a crash are the last lines written, and far smaller."""


# --------------------------------------------------------------------------------------------
# Rendering


def format_event_time(moment: datetime) -> str:
    """An instant as the event's time format: UTC, milliseconds (truncated), `Z`.

    Raises:
        ValueError: `moment` is naive.
    """
    return _format(_truncated_utc(moment))


def render_job(
    job: BackupJob,
    *,
    details: JobDetails | None = None,
    previous_status: JobStatus | None = None,
    protected_item_id: str | None = None,
) -> dict[str, object]:
    """Render a job as the event's `job` object (schema v1, `$defs/job`; see docs/events.md).

    `details`, when given, adds `errors`, `tasks` and `properties` (all three or none);
    the Backup vault fields (`datasource_type` ... `policy_name`) are always written, null for a
    Recovery Services job and wherever ARM gives none; so is `protected_item_id`, the id of the
    protected item the job belongs to where the caller knows it (null otherwise);
    `previous_status` is written canonically, or null. Known statuses are written in their
    canonical casing; times as `YYYY-MM-DDTHH:MM:SS.mmmZ`, durations in seconds (ms precision).

    Raises:
        ValueError: `details` is about another job.
    """
    if details is not None and details.job.key != job.key:
        raise ValueError(f"render_job: details of {details.job.key} for job {job.key}")
    status = JobStatus.of(job.status.value)
    start = None if job.start_at is None else _truncated_utc(job.start_at)
    end = None if job.end_at is None else _truncated_utc(job.end_at)
    job_out: dict[str, object] = {
        "id": job.name,
        "resource_id": job.resource_id,
        "type": job.job_type,
        "operation": job.operation,
        "backup_management_type": job.backup_management_type,
        "entity": job.entity,
        "status": status.value,
        "previous_status": (
            None if previous_status is None else JobStatus.of(previous_status.value).value
        ),
        "outcome": status.outcome,
        "start_time": None if start is None else _format(start),
        "end_time": None if end is None else _format(end),
        "duration_s": _seconds(job.duration_s),
        # Backup vault jobs only; null for Recovery Services jobs (always written, like entity).
        "datasource_type": job.datasource_type,
        "datasource_name": job.datasource_name,
        "datasource_id": job.datasource_id,
        "backup_instance": job.backup_instance,
        "backup_instance_id": job.backup_instance_id,
        "policy_name": job.policy_name,
        "protected_item_id": protected_item_id,
    }
    if details is not None:
        job_out["errors"] = [
            {"code": e.code, "message": e.message, "recommendations": list(e.recommendations)}
            for e in details.errors
        ]
        job_out["tasks"] = [
            {
                "name": t.name,
                "status": None if t.status is None else JobStatus.of(t.status.value).value,
                "duration_s": _seconds(t.duration_s),
            }
            for t in details.tasks
        ]
        job_out["properties"] = dict(details.property_bag)
    return job_out


def render_vault(vault: VaultRef) -> dict[str, object]:
    """Render a vault as the event's `vault` object (schema v1, `$defs/vault`): `kind`
    (`recovery_services` or `backup_vault`) and `tenant_id` (None: not known) after the fields
    every v1 event has."""
    return {
        "id": vault.id,
        "name": vault.name,
        "resource_group": vault.resource_group,
        "subscription_id": vault.subscription_id,
        "location": vault.location,
        "kind": vault.kind.value,
        "tenant_id": vault.tenant_id,
    }


def render_event(
    change: JobStateChanged,
    *,
    vault: VaultRef,
    details: JobDetails | None,
    emitted_at: datetime,
    protected_item_id: str | None = None,
) -> dict[str, object]:
    """Render one state change as a schema v1 event (see docs/events.md).

    Base job fields come from `change.job` (the list item that produced the change); `details`,
    when the job's details were fetched, adds `errors`, `tasks` and `properties`. Those three
    keys are omitted when `details` is None, so consumers can tell "not fetched" from "none".
    `protected_item_id` is written as `job.protected_item_id` (null when not known).
    `detection_lag_s` is `time − end_time` for a terminal status, `time − start_time` for a first
    sighting of a non-terminal one, computed on the millisecond values written, and omitted
    otherwise or when that time is unknown.

    Raises:
        ValueError: `vault` is not the change's vault, `details` is about another job, or
            `emitted_at` is naive.
    """
    job = change.job
    if vault.key != change.vault_key:
        raise ValueError(f"render_event: vault {vault.key!r} is not {change.vault_key!r}")
    if details is not None and details.job.key != job.key:
        raise ValueError(f"render_event: details of {details.job.key} for job {job.key}")
    status = JobStatus.of(job.status.value)  # canonical casing for known statuses
    previous = change.previous_status
    emitted = _truncated_utc(emitted_at)
    start = None if job.start_at is None else _truncated_utc(job.start_at)
    end = None if job.end_at is None else _truncated_utc(job.end_at)
    job_out = render_job(
        job, details=details, previous_status=previous, protected_item_id=protected_item_id
    )

    event: dict[str, object] = {
        "schema_version": EVENT_SCHEMA_VERSION,
        "event": EVENT_TYPE,
        # The same hash as change.event_id, over the canonical status text that is emitted.
        "event_id": event_id(change.vault_key, job.name, status.value),
        "time": _format(emitted),
        "job": job_out,
        "vault": render_vault(vault),
    }
    reached = end if status.is_terminal else start if previous is None else None
    if reached is not None:
        event["detection_lag_s"] = round((emitted - reached).total_seconds(), 3)
    return event


def render_item(item: ProtectedItem) -> dict[str, object]:
    """Render a protected item (or backup instance) as the event's `item` object (schema v1,
    `$defs/item`): its fields as read, times in the event format, null where unknown."""
    return {
        "id": item.id,
        "name": item.name,
        "friendly_name": item.friendly_name,
        "datasource_type": item.datasource_type,
        "datasource_id": item.datasource_id,
        "backup_management_type": item.backup_management_type,
        "policy_id": item.policy_id,
        "policy_name": item.policy_name,
        "protection_state": item.protection_state,
        "health_status": item.health_status,
        "last_backup_time": _format_or_none(item.last_backup_time),
        "last_recovery_point": _format_or_none(item.last_recovery_point),
    }


def render_item_event(
    change: BackupMissed | RpoBreached | RpoRestored | ProtectionChanged,
    *,
    vault: VaultRef,
    emitted_at: datetime,
) -> dict[str, object]:
    """Render one change of a protected item as a `backup_item.*` schema v1 event.

    The envelope is a job event's (`schema_version`, `event`, `event_id` = `change.event_id`,
    `time`, ..., `vault`), with `item` where a job event has `job` and, after it, the object of
    its type: `expected_run` (backup_missed), `rpo` (rpo_breached, rpo_restored) or `protection`
    (protection_changed). `detection_lag_s` (`time − expected_run.deadline` for a missed run,
    `time − rpo.breached_at` for a breach) is computed on the millisecond values written;
    restored and protection events have none. See docs/events.md.

    Raises:
        ValueError: `vault` is not the item's vault, or a time (`emitted_at` included) is naive.
    """
    item = change.item
    if vault.key != item.vault_key:
        raise ValueError(f"render_item_event: vault {vault.key!r} is not {item.vault_key!r}")
    emitted = _truncated_utc(emitted_at)
    event_type: str
    body: dict[str, object]
    reached: datetime | None = None
    match change:
        case BackupMissed(policy=policy, run=run, deadline=deadline):
            event_type = BACKUP_MISSED_EVENT_TYPE
            reached = _truncated_utc(deadline)
            schedule = policy.schedule
            body = {
                "expected_run": {
                    "due_time": format_event_time(run.at),
                    "deadline": _format(reached),
                    "kind": run.kind.value,
                    "policy_id": policy.id,
                    "policy_name": policy.name,
                    "time_zone": None if schedule is None else schedule.time_zone,
                }
            }
        case RpoBreached(last_recovery_point=point, allowed_s=allowed_s, breached_at=breached):
            event_type = RPO_BREACHED_EVENT_TYPE
            reached = _truncated_utc(breached)
            body = {"rpo": _rpo(point, allowed_s, emitted, breached_at=reached)}
        case RpoRestored(last_recovery_point=point, allowed_s=allowed_s):
            event_type = RPO_RESTORED_EVENT_TYPE
            body = {"rpo": _rpo(point, allowed_s, emitted, breached_at=None)}
        case ProtectionChanged():
            event_type = PROTECTION_CHANGED_EVENT_TYPE
            body = {
                "protection": {
                    "state": item.protection_state,
                    "previous_state": change.previous_state,
                    "health": item.health_status,
                    "previous_health": change.previous_health,
                }
            }
        case _:  # pragma: no cover - the union is closed
            assert_never(change)
    event: dict[str, object] = {
        "schema_version": EVENT_SCHEMA_VERSION,
        "event": event_type,
        "event_id": change.event_id,
        "time": _format(emitted),
        "item": render_item(item),
        **body,
        "vault": render_vault(vault),
    }
    if reached is not None:
        event["detection_lag_s"] = round((emitted - reached).total_seconds(), 3)
    return event


def render_long_running(
    change: LongRunning, *, vault: VaultRef, emitted_at: datetime
) -> dict[str, object]:
    """Render a long-running job as a `backup_job.long_running` schema v1 event.

    `job` is the job as last listed (`render_job`, its `protected_item_id` the item's id when
    the item is known), `item` the item (`render_item`) or null, and `long_running` why it is
    long-running: `elapsed_s`, `threshold_s`, `reason`, `median_s` and `samples`. The event has
    no `detection_lag_s`. See docs/events.md.

    Raises:
        ValueError: `vault` is not the job's vault, or `emitted_at` is naive.
    """
    if vault.key != change.vault_key:
        raise ValueError(f"render_long_running: vault {vault.key!r} is not {change.vault_key!r}")
    item = change.item
    return {
        "schema_version": EVENT_SCHEMA_VERSION,
        "event": LONG_RUNNING_EVENT_TYPE,
        "event_id": change.event_id,
        "time": format_event_time(emitted_at),
        "job": render_job(change.job, protected_item_id=None if item is None else item.id),
        "item": None if item is None else render_item(item),
        "long_running": {
            "elapsed_s": _seconds(change.elapsed_s),
            "threshold_s": _seconds(change.threshold_s),
            "reason": change.reason,
            "median_s": _seconds(change.median_s),
            "samples": change.samples,
        },
        "vault": render_vault(vault),
    }


def render_change(
    change: ItemChange, *, vault: VaultRef, emitted_at: datetime
) -> dict[str, object]:
    """Render any change of `core.item_watch.evaluate` as its schema v1 event:
    `render_long_running` for a `LongRunning`, `render_item_event` for the others.

    Raises:
        ValueError: as those two do.
    """
    if isinstance(change, LongRunning):
        return render_long_running(change, vault=vault, emitted_at=emitted_at)
    return render_item_event(change, vault=vault, emitted_at=emitted_at)


def protection_verdict(state: object, health: object) -> tuple[bool | None, bool | None]:
    """What a `protection` object's `state` and `health` say: (stopped, in error), each None
    where they do not say (null values).

    Stopped: the state is neither protected (`PROTECTED_STATES`) nor an error
    (`ERROR_STATES`). In error: the state is an error, or the item is not stopped and its health
    is not healthy (`HEALTHY_STATUSES`). Case is ignored; an unknown state counts as stopped, an
    unknown health as unhealthy.
    """
    folded_state = state.casefold() if isinstance(state, str) and state else None
    folded_health = health.casefold() if isinstance(health, str) and health else None
    stopped = (
        None
        if folded_state is None
        else folded_state not in PROTECTED_STATES and folded_state not in ERROR_STATES
    )
    error: bool | None
    if folded_state in ERROR_STATES:
        error = True
    elif stopped:
        error = False  # a stopped item's health says nothing more
    elif folded_health is not None:
        error = folded_health not in HEALTHY_STATUSES
    else:
        error = None if folded_state is None else False
    return stopped, error


def _rpo(
    point: datetime, allowed_s: float, emitted: datetime, *, breached_at: datetime | None
) -> dict[str, object]:
    last = _truncated_utc(point)
    return {
        "last_recovery_point": _format(last),
        "allowed_s": _seconds(allowed_s),
        "age_s": round((emitted - last).total_seconds(), 3),
        "breached_at": None if breached_at is None else _format(breached_at),
    }


def _format_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _format(_truncated_utc(moment))


def to_cloudevent(event: Mapping[str, object]) -> dict[str, object]:
    """Wrap a schema v1 event as a CloudEvents 1.0 structured-mode JSON event.

    `id` is the event_id, `source` the vault id, `subject` the job id (`backup_job.*` events)
    or the item id (`backup_item.*` events), `type` and `time` the event's own; the event itself
    is `data` (`datacontenttype: application/json`).

    Raises:
        ValueError: `event` is not a rendered schema v1 event.
    """
    vault = event.get("vault")
    subject = event.get("job") if event.get("event") not in ITEM_EVENT_TYPES else event.get("item")
    if not isinstance(subject, Mapping) or not isinstance(vault, Mapping):
        raise ValueError("to_cloudevent: not a schema v1 event (no job, item or vault object)")
    return {
        "specversion": "1.0",
        "id": event["event_id"],
        "source": vault["id"],
        "subject": subject["id"],
        "type": event["event"],
        "time": event["time"],
        "datacontenttype": "application/json",
        "data": event,
    }


def encode_events(events: Sequence[Mapping[str, object]], *, format: EventFormat = "json") -> bytes:
    """Serialise events as JSON lines (`\\n`-terminated UTF-8), optionally as CloudEvents.

    Raises:
        SinkError: an event holds a value JSON cannot represent (or is not a v1 event, for
            cloudevents); nothing of the batch should be written.
    """
    try:
        if format == "cloudevents":
            return b"".join(orjson.dumps(to_cloudevent(e), option=_LINE) for e in events)
        return b"".join(orjson.dumps(e, option=_LINE) for e in events)
    except (TypeError, ValueError, KeyError) as exc:
        raise SinkError(f"cannot serialise an event: {exc}") from exc


def _truncated_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"event times must be timezone-aware, got naive {moment.isoformat()}")
    utc = moment.astimezone(UTC)
    return utc - timedelta(microseconds=utc.microsecond % 1000)


def _format(utc: datetime) -> str:
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------------------------------------
# Schemas


def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a schema v1 event, as shipped in the package."""
    return _read_schema(_EVENT_SCHEMA_FILE)


def cloudevent_schema() -> dict[str, Any]:
    """The JSON Schema of the CloudEvents envelope; its `data` refers to `event_schema()`'s $id."""
    return _read_schema(_CLOUDEVENT_SCHEMA_FILE)


def _read_schema(name: str) -> dict[str, Any]:
    data = (
        resources.files(__package__ or "monitor").joinpath(_SCHEMA_DIR).joinpath(name).read_bytes()
    )
    schema = orjson.loads(data)
    if not isinstance(schema, dict):  # pragma: no cover - the shipped files are objects
        raise TypeError(f"{name} is not a JSON object")
    return schema


# --------------------------------------------------------------------------------------------
# Read-back


@dataclass(frozen=True, slots=True, kw_only=True)
class EmittedEvent:
    """What the metrics count of one emitted event: its type, the status it reports and its lag.

    Attributes:
        status: the job's status as written (canonical casing for known statuses).
        detection_lag_s: the event's `detection_lag_s`; None where the event has none.
        event: the event's type (`EVENT_TYPE` for a job's state change).
    """

    status: JobStatus
    detection_lag_s: float | None = None
    event: str = EVENT_TYPE

    @property
    def is_state_change(self) -> bool:
        """Whether it is a job's state change (the events the status metrics count)."""
        return self.event == EVENT_TYPE

    @classmethod
    def of(cls, event: Mapping[str, object]) -> EmittedEvent:
        """What a rendered event reports. An event of another type than `EVENT_TYPE` (an item
        event, a long-running job) reports its type, its lag and the empty, unknown status; a
        state change without a job status reports the unknown status and no lag."""
        kind = event.get("event", EVENT_TYPE)
        kind = kind if isinstance(kind, str) else ""
        lag = event.get("detection_lag_s")
        lag_s = float(lag) if isinstance(lag, int | float) and not isinstance(lag, bool) else None
        if kind != EVENT_TYPE:
            return cls(status=JobStatus.of(""), detection_lag_s=lag_s, event=kind)
        job = event.get("job")
        raw = job.get("status") if isinstance(job, Mapping) else None
        if not isinstance(raw, str):
            return cls(status=JobStatus.of(""))
        return cls(status=JobStatus.of(raw), detection_lag_s=lag_s)


def event_id_of(event: Mapping[str, object]) -> str | None:
    """An event's `event_id`; None when it has none."""
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def read_recent_events(path: Path | str, max_bytes: int = RECOVERY_BYTES) -> list[dict[str, Any]]:
    """The events in the last `max_bytes` of a JSON-lines file, oldest first.

    CloudEvents are unwrapped to their `data`. Lines that are not events (a line cut by the start
    of the window or by a crash mid-write, a line some other writer added) are skipped.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        file.seek(start)
        lines = file.read().split(b"\n")
    if start > 0:
        lines = lines[1:]  # most likely a part of a line
    return decode_events(lines)


def decode_events(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The schema v1 events of every type (`EVENT_TYPES`) among JSON lines, CloudEvents
    unwrapped; other lines skipped."""
    events: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and value.get("specversion") and "data" in value:
            value = value["data"]
        if isinstance(value, dict) and value.get("event") in EVENT_TYPES:
            events.append(value)
    return events
