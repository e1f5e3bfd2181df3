"""The Alertmanager sink: bad job outcomes, missed runs, stale recovery points, stopped protection
and long-running jobs as alerts (`POST /api/v2/alerts`)."""

# Rules:
# - Events become alerts through `ALERT_MAPPERS`, one pure function per event type; an event of
#   a type with no mapper (or of another schema version) passes through without a request.
# - An alert's identity in Alertmanager is its label set: labels hold only what names the item
#   and the outcome (never a job id or a time), so a repeat of a job's failure, or a re-post of
#   the same batch, updates one alert. Everything else is an annotation.
# - A condition that lasts until an event says it ended (an RPO breach, stopped protection, a
#   long-running job) is posted with `endsAt` `HOLD_S` ahead, and resolved by that event on the
#   same label set: Alertmanager holds it, not this process, so the sink's restarts change
#   nothing. The labels of an item event are those a job event of the item can rebuild
#   (`job.protected_item_id`), so that a success can resolve a missed run.
# - One batch is one POST (or none); `monitor.sink_http.post` maps the answer to DeliveryError.
# - The URL (it may hold credentials) is never logged or quoted: errors name the sink.

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Final
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from monitor.clock import Clock
from monitor.config_sinks import AlertmanagerSinkSettings
from monitor.errors import ConfigError, DeliveryError
from monitor.events import (
    BACKUP_MISSED_EVENT_TYPE,
    EVENT_SCHEMA_VERSION,
    EVENT_TYPE,
    LONG_RUNNING_EVENT_TYPE,
    PROTECTION_CHANGED_EVENT_TYPE,
    RPO_BREACHED_EVENT_TYPE,
    RPO_RESTORED_EVENT_TYPE,
    format_event_time,
    protection_verdict,
)
from monitor.outbox import OutboxEvent
from monitor.sink_http import post

__all__ = [
    "ALERT_MAPPERS",
    "ALERT_NAMES",
    "BACKUP_MISSED",
    "HOLD_S",
    "JOB_LONG_RUNNING",
    "OWN_LABELS",
    "PROTECTION_ERROR",
    "PROTECTION_STOPPED",
    "RPO_BREACHED",
    "Alert",
    "AlertOptions",
    "AlertmanagerSink",
    "alerts_of",
    "backup_missed_alerts",
    "job_state_alerts",
    "long_running_alerts",
    "portal_link",
    "protection_alerts",
    "rpo_alerts",
]

ALERT_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "failed": "BackupJobFailed",
        "cancelled": "BackupJobCancelled",
        "succeeded_with_warnings": "BackupJobCompletedWithWarnings",
    }
)
"""The `alertname` of a job's bad outcome (`job.outcome`)."""

RESOLVED_BY: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "succeeded": ("failed", "cancelled", "succeeded_with_warnings"),
        "succeeded_with_warnings": ("failed", "cancelled"),
    }
)
"""With `resolve_on_success`: the bad outcomes of the same item a job's outcome resolves. A job
completed with warnings did back the item up: it resolves failures and cancellations (and fires
its own warning alert); only a clean success resolves a warning."""

BACKUP_MISSED: Final = "BackupMissed"
"""A scheduled run passed its deadline with no job (`backup_item.backup_missed`)."""
RPO_BREACHED: Final = "BackupRpoBreached"
"""An item's last recovery point is older than allowed, until `backup_item.rpo_restored`."""
PROTECTION_STOPPED: Final = "BackupProtectionStopped"
"""An item's protection is stopped, paused or suspended, until it is protected again."""
PROTECTION_ERROR: Final = "BackupProtectionError"
"""An item's protection is in error or its health is not healthy, until it is again."""
JOB_LONG_RUNNING: Final = "BackupJobLongRunning"
"""A running job passed its threshold (`backup_job.long_running`), until the job ends."""

HOLD_S: Final = 365 * 86_400.0
"""How far ahead `endsAt` is for a condition that lasts until an event ends it: a year, so an
alert whose ending event never comes (the item was deleted) still resolves some day."""

OWN_LABELS: Final = (
    "alertname",
    "subscription_id",
    "resource_group",
    "vault",
    "vault_kind",
    "entity",
    "job_type",
    "datasource_type",
    "operation",
    "outcome",
    "protected_item",
)
"""The labels the sink sets; `labels` from the settings may not use these names."""

_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ALERTS_PATH: Final = "/api/v2/alerts"
_FIRED_MEMORY: Final = 10_000  # label sets whose last firing time this process remembers


@dataclass(frozen=True, slots=True)
class Alert:
    """One postableAlert of Alertmanager's API v2.

    `labels` never hold an empty value (Alertmanager drops those: an empty value is an absent
    label). A resolving alert has `starts_at == ends_at`, the moment it resolved.
    """

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime
    generator_url: str | None = None

    @property
    def resolving(self) -> bool:
        """Whether this alert only resolves its label set (it never fired by itself)."""
        return self.starts_at == self.ends_at

    def to_json(self) -> dict[str, object]:
        """The JSON object Alertmanager's `POST /api/v2/alerts` takes."""
        body: dict[str, object] = {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": format_event_time(self.starts_at),
            "endsAt": format_event_time(self.ends_at),
        }
        if self.generator_url is not None:
            body["generatorURL"] = self.generator_url
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertOptions:
    """What the mapping of events to alerts takes from the sink's settings."""

    resolve_after_s: float
    resolve_on_success: bool = True
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Extra labels (validated: names not ours, valid and not empty values)."""
    generator_url: str = "https://portal.azure.com"

    @classmethod
    def of(cls, settings: AlertmanagerSinkSettings) -> AlertOptions:
        """The options of `settings`, checked.

        Raises:
            ConfigError: an extra label's name is invalid or one of `OWN_LABELS`, its value is
                empty, or `generator_url` is not an http(s) URL.
        """
        key = f"sinks.{settings.name}"
        for name, value in settings.labels.items():
            where = f"{key}.labels.{name}"
            if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
                raise ConfigError(
                    where, "not a valid Alertmanager label name (want [a-zA-Z_][a-zA-Z0-9_]*)"
                )
            if name.startswith("__"):
                raise ConfigError(where, "label names starting with __ are reserved")
            if name in OWN_LABELS:
                raise ConfigError(
                    where, f"the sink sets this label itself (its own: {', '.join(OWN_LABELS)})"
                )
            if not isinstance(value, str) or not value:
                raise ConfigError(where, "must be a non-empty string (Alertmanager drops empty)")
        base = urlsplit(settings.generator_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ConfigError(f"{key}.generator_url", "must be an http:// or https:// URL")
        return cls(
            resolve_after_s=settings.resolve_after_s,
            resolve_on_success=settings.resolve_on_success,
            labels=MappingProxyType(dict(settings.labels)),
            generator_url=settings.generator_url,
        )


AlertMapper = Callable[[Mapping[str, Any], AlertOptions], list[Alert]]
"""Maps one schema v1 event of its type to the alerts it posts (none, one or several).

Raises KeyError, TypeError or ValueError for an event without the shape of its type."""


def portal_link(base: str, vault_id: str) -> str:
    """A link to the vault `vault_id` in the Azure portal whose address is `base`."""
    return f"{base.rstrip('/')}/#@/resource{quote(vault_id, safe='/')}/overview"


def _put(into: dict[str, str], key: str, value: object) -> None:
    """Set `key` when `value` is known: not None, not empty."""
    if value is None:
        return
    text = value if isinstance(value, str) else str(value)
    if text:
        into[key] = text


def _time(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"not a time: {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"a time without its zone: {text!r}")
    return moment


def _item_labels(event: Mapping[str, Any]) -> dict[str, str]:
    """The labels naming a job's item: vault and its kind, entity, job type, datasource type
    (Backup vault jobs) and operation.

    `vault_kind` and `datasource_type` are functions of the item (a vault has one kind, a
    datasource one type), so they add no alerts. An event written before Backup vaults has no
    `vault.kind`: its vault is a Recovery Services vault, and its labels say so.
    """
    job, vault = event["job"], event["vault"]
    labels: dict[str, str] = {}
    _put(labels, "subscription_id", vault["subscription_id"])
    _put(labels, "resource_group", vault["resource_group"])
    _put(labels, "vault", vault["name"])
    _put(labels, "vault_kind", vault.get("kind") or "recovery_services")
    _put(labels, "entity", job["entity"])
    _put(labels, "job_type", job["type"])
    _put(labels, "datasource_type", job.get("datasource_type"))
    _put(labels, "operation", job["operation"])
    return labels


def _labels(
    item: Mapping[str, str], outcome: str, options: AlertOptions
) -> MappingProxyType[str, str]:
    return _named(ALERT_NAMES[outcome], {**item, "outcome": outcome}, options)


def _named(
    alertname: str, labels: Mapping[str, str], options: AlertOptions
) -> MappingProxyType[str, str]:
    # Extra labels never override ours (AlertOptions.of refuses their names anyway).
    return MappingProxyType({**options.labels, "alertname": alertname, **labels})


def _protected_item_labels(vault: Mapping[str, Any], item_id: str) -> dict[str, str]:
    """The labels naming a protected item: its vault and its lower-cased id (ARM ids are
    case-insensitive; an item event and a job event of the item may spell them apart)."""
    labels: dict[str, str] = {}
    _put(labels, "subscription_id", vault["subscription_id"])
    _put(labels, "resource_group", vault["resource_group"])
    _put(labels, "vault", vault["name"])
    _put(labels, "vault_kind", vault.get("kind") or "recovery_services")
    _put(labels, "protected_item", item_id.lower())
    return labels


def _annotations(event: Mapping[str, Any], outcome: str) -> dict[str, str]:
    job, vault = event["job"], event["vault"]
    errors = job.get("errors") or []
    first = errors[0] if errors else {}
    operation = job["operation"] or job["type"]
    entity = job["entity"] or "an item"
    verb = {"failed": "failed", "cancelled": "was cancelled"}.get(
        outcome, "completed with warnings"
    )
    summary = f"{operation} of {entity} {verb} in vault {vault['name']}"
    description = (
        f"Azure Backup job {job['id']} ({job['type']}, {operation}) of {entity} in vault "
        f"{vault['name']} (resource group {vault['resource_group']}, subscription "
        f"{vault['subscription_id']}) ended {job['status']}"
    )
    if job["end_time"]:
        description += f" at {job['end_time']}"
    if first.get("code") or first.get("message"):
        parts = (first.get("code"), first.get("message"))
        description += ": " + ": ".join(str(part) for part in parts if part)
    if len(errors) > 1:
        description += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    annotations: dict[str, str] = {"summary": summary, "description": description}
    _put(annotations, "error_code", first.get("code"))
    _put(annotations, "error_message", first.get("message"))
    _put(annotations, "recommendation", " ".join(first.get("recommendations") or ()))
    _put(annotations, "job_id", job["id"])
    _put(annotations, "job_resource_id", job["resource_id"])
    _put(annotations, "vault_id", vault["id"])
    _put(annotations, "datasource_id", job.get("datasource_id"))
    _put(annotations, "backup_instance", job.get("backup_instance"))
    _put(annotations, "backup_instance_id", job.get("backup_instance_id"))
    _put(annotations, "policy_name", job.get("policy_name"))
    _put(annotations, "start_time", job["start_time"])
    _put(annotations, "end_time", job["end_time"])
    _put(annotations, "duration_s", job["duration_s"])
    _put(annotations, "event_id", event["event_id"])
    return annotations


def job_state_alerts(event: Mapping[str, Any], options: AlertOptions) -> list[Alert]:
    """The alerts of one `backup_job.state_changed` event.

    A failed, cancelled or warning outcome fires one alert from the job's end (else the event's
    time) until `resolve_after_s` later. With `resolve_on_success`, a success posts a resolving
    alert (`endsAt` = its end) for each bad outcome `RESOLVED_BY` names, on the same item's
    labels, and, when the job names its protected item (`job.protected_item_id`), one for the
    item's `BackupMissed`. Every terminal event resolves `BackupJobLongRunning` on the job's
    item labels, at the event's time. Any other event (not terminal) has no alerts.
    """
    job, vault = event["job"], event["vault"]
    outcome = job["outcome"]
    if outcome is None:
        return []
    at = _time(job["end_time"] or event["time"])
    item = _item_labels(event)
    link = portal_link(options.generator_url, vault["id"])
    resolved = {
        "summary": f"resolved by the {outcome} job {job['id']}",
        "job_id": str(job["id"]),
        "event_id": str(event["event_id"]),
    }
    # The end of a long-running job, whatever its outcome; at the event's time, which is on
    # the monitor's clock like the long-running alert's start (the job's end is on ARM's).
    emitted = _time(event["time"])
    alerts = [Alert(_named(JOB_LONG_RUNNING, item, options), resolved, emitted, emitted, link)]
    if options.resolve_on_success:
        for bad in RESOLVED_BY.get(outcome, ()):
            alerts.append(Alert(_labels(item, bad, options), resolved, at, at, link))
        protected_item = job.get("protected_item_id")
        if outcome in RESOLVED_BY and isinstance(protected_item, str) and protected_item:
            # A job of the item that backed it up: its missed run, if any, is over.
            labels = _protected_item_labels(vault, protected_item)
            alerts.append(Alert(_named(BACKUP_MISSED, labels, options), resolved, at, at, link))
    if outcome in ALERT_NAMES:
        ends = at + timedelta(seconds=options.resolve_after_s)
        annotations = _annotations(event, outcome)
        alerts.append(
            Alert(_labels(item, outcome, options), MappingProxyType(annotations), at, ends, link)
        )
    return alerts


def _item_annotations(event: Mapping[str, Any], summary: str) -> dict[str, str]:
    item, vault = event["item"], event["vault"]
    annotations: dict[str, str] = {"summary": summary}
    _put(annotations, "item_id", item["id"])
    _put(annotations, "item_name", item["name"])
    _put(annotations, "entity", item["friendly_name"])
    _put(annotations, "datasource_type", item["datasource_type"])
    _put(annotations, "datasource_id", item["datasource_id"])
    _put(annotations, "policy_name", item["policy_name"])
    _put(annotations, "protection_state", item["protection_state"])
    _put(annotations, "health_status", item["health_status"])
    _put(annotations, "last_recovery_point", item["last_recovery_point"])
    _put(annotations, "vault_id", vault["id"])
    _put(annotations, "event_id", event["event_id"])
    return annotations


def _item_name(item: Mapping[str, Any]) -> str:
    return str(item["friendly_name"] or item["name"])


def _item_alert(
    event: Mapping[str, Any],
    alertname: str,
    annotations: Mapping[str, str],
    starts_at: datetime,
    ends_at: datetime,
    options: AlertOptions,
) -> Alert:
    vault = event["vault"]
    labels = _named(alertname, _protected_item_labels(vault, event["item"]["id"]), options)
    link = portal_link(options.generator_url, vault["id"])
    return Alert(labels, MappingProxyType(dict(annotations)), starts_at, ends_at, link)


def backup_missed_alerts(event: Mapping[str, Any], options: AlertOptions) -> list[Alert]:
    """The alert of one `backup_item.backup_missed` event: `BackupMissed` fires from the run's
    deadline until `resolve_after_s` later, unless a success of the item resolves it first
    (see `job_state_alerts`)."""
    run, vault = event["expected_run"], event["vault"]
    deadline = _time(run["deadline"])
    name = _item_name(event["item"])
    annotations = _item_annotations(
        event, f"The {run['kind']} run of {name} due at {run['due_time']} did not start"
    )
    annotations["description"] = (
        f"No job of {name} started for the {run['kind']} run that policy {run['policy_name']} "
        f"(zone {run['time_zone'] or 'unknown'}) scheduled at {run['due_time']}, by its "
        f"deadline {run['deadline']}, in vault {vault['name']} (resource group "
        f"{vault['resource_group']}, subscription {vault['subscription_id']})"
    )
    _put(annotations, "due_time", run["due_time"])
    _put(annotations, "deadline", run["deadline"])
    _put(annotations, "run_kind", run["kind"])
    _put(annotations, "time_zone", run["time_zone"])
    ends = deadline + timedelta(seconds=options.resolve_after_s)
    return [_item_alert(event, BACKUP_MISSED, annotations, deadline, ends, options)]


def rpo_alerts(event: Mapping[str, Any], options: AlertOptions) -> list[Alert]:
    """The alert of a `backup_item.rpo_breached` or `backup_item.rpo_restored` event.

    A breach fires `BackupRpoBreached` from `rpo.breached_at`, held (`HOLD_S`) until the item's
    restore resolves it at the restore event's time.
    """
    rpo = event["rpo"]
    name = _item_name(event["item"])
    emitted = _time(event["time"])
    if event["event"] == RPO_RESTORED_EVENT_TYPE:
        annotations = _item_annotations(
            event, f"The recovery point of {name} is fresh again ({rpo['last_recovery_point']})"
        )
        return [_item_alert(event, RPO_BREACHED, annotations, emitted, emitted, options)]
    breached = _time(rpo["breached_at"])
    annotations = _item_annotations(
        event, f"The last recovery point of {name} is older than allowed"
    )
    annotations["description"] = (
        f"The last recovery point of {name} ({rpo['last_recovery_point']}) is "
        f"{rpo['age_s']} s old; at most {rpo['allowed_s']} s is allowed (since "
        f"{rpo['breached_at']}), in vault {event['vault']['name']}"
    )
    _put(annotations, "allowed_s", rpo["allowed_s"])
    _put(annotations, "age_s", rpo["age_s"])
    _put(annotations, "breached_at", rpo["breached_at"])
    ends = breached + timedelta(seconds=HOLD_S)
    return [_item_alert(event, RPO_BREACHED, annotations, breached, ends, options)]


def protection_alerts(event: Mapping[str, Any], options: AlertOptions) -> list[Alert]:
    """The alerts of one `backup_item.protection_changed` event.

    `BackupProtectionStopped` fires while the item is stopped, `BackupProtectionError` while it
    is in error (`monitor.events.protection_verdict`). Each fires from the event's time, held
    (`HOLD_S`) until an event of the item says it is over, which resolves it at that event's
    time. A state or health that is null decides nothing.
    """
    protection = event["protection"]
    name = _item_name(event["item"])
    at = _time(event["time"])
    stopped, error = protection_verdict(protection["state"], protection["health"])
    was = (
        f"{protection['previous_state'] or 'unknown'}/{protection['previous_health'] or 'unknown'}"
    )
    now_is = f"{protection['state'] or 'unknown'}/{protection['health'] or 'unknown'}"
    alerts: list[Alert] = []
    for alertname, firing, what in (
        (PROTECTION_STOPPED, stopped, "is not protected"),
        (PROTECTION_ERROR, error, "is in error"),
    ):
        if firing is None:
            continue
        if firing:
            annotations = _item_annotations(event, f"The protection of {name} {what}: {now_is}")
            annotations["description"] = (
                f"The protection state/health of {name} changed from {was} to {now_is} in "
                f"vault {event['vault']['name']}"
            )
            _put(annotations, "previous_state", protection["previous_state"])
            _put(annotations, "previous_health", protection["previous_health"])
            ends = at + timedelta(seconds=HOLD_S)
        else:
            annotations = _item_annotations(event, f"The protection of {name} is back: {now_is}")
            ends = at
        alerts.append(_item_alert(event, alertname, annotations, at, ends, options))
    return alerts


def long_running_alerts(event: Mapping[str, Any], options: AlertOptions) -> list[Alert]:
    """The alert of one `backup_job.long_running` event: `BackupJobLongRunning` fires on the
    job's item labels (those of its failures) from the event's time, held (`HOLD_S`) until the
    job's terminal event resolves it (see `job_state_alerts`)."""
    job, vault, why = event["job"], event["vault"], event["long_running"]
    at = _time(event["time"])
    operation = job["operation"] or job["type"]
    entity = job["entity"] or "an item"
    annotations: dict[str, str] = {
        "summary": f"{operation} of {entity} has run for {why['elapsed_s']} s in vault "
        f"{vault['name']}",
        "description": (
            f"Azure Backup job {job['id']} ({job['type']}, {operation}) of {entity} in vault "
            f"{vault['name']} started at {job['start_time']} and is still {job['status']} after "
            f"{why['elapsed_s']} s; its threshold is {why['threshold_s']} s ({why['reason']})"
        ),
    }
    _put(annotations, "job_id", job["id"])
    _put(annotations, "job_resource_id", job["resource_id"])
    _put(annotations, "start_time", job["start_time"])
    _put(annotations, "elapsed_s", why["elapsed_s"])
    _put(annotations, "threshold_s", why["threshold_s"])
    _put(annotations, "reason", why["reason"])
    _put(annotations, "median_s", why["median_s"])
    _put(annotations, "protected_item_id", job.get("protected_item_id"))
    _put(annotations, "vault_id", vault["id"])
    _put(annotations, "event_id", event["event_id"])
    labels = _named(JOB_LONG_RUNNING, _item_labels(event), options)
    link = portal_link(options.generator_url, vault["id"])
    ends = at + timedelta(seconds=HOLD_S)
    return [Alert(labels, MappingProxyType(annotations), at, ends, link)]


ALERT_MAPPERS: Final[Mapping[str, AlertMapper]] = MappingProxyType(
    {
        EVENT_TYPE: job_state_alerts,
        LONG_RUNNING_EVENT_TYPE: long_running_alerts,
        BACKUP_MISSED_EVENT_TYPE: backup_missed_alerts,
        RPO_BREACHED_EVENT_TYPE: rpo_alerts,
        RPO_RESTORED_EVENT_TYPE: rpo_alerts,
        PROTECTION_CHANGED_EVENT_TYPE: protection_alerts,
    }
)
"""Event type → its mapper. Types not here pass through the sink without a request."""


def alerts_of(event: Mapping[str, Any], options: AlertOptions) -> list[Alert]:
    """The alerts one schema v1 event posts; [] for another version or an unmapped type.

    Raises:
        KeyError, TypeError, ValueError: the event does not have the shape of its type.
    """
    if event.get("schema_version") != EVENT_SCHEMA_VERSION:
        return []
    mapper = ALERT_MAPPERS.get(str(event.get("event")))
    return [] if mapper is None else mapper(event, options)


def _fingerprint(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class AlertmanagerSink:
    """Posts the alerts of each batch to an Alertmanager in one request.

    Re-posting a batch is idempotent: Alertmanager keys an alert by its label set and merges a
    repeat into the alert it holds. The session is shared and belongs to the caller.
    """

    kind: ClassVar[str] = "alertmanager"

    def __init__(
        self,
        settings: AlertmanagerSinkSettings,
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
    ) -> None:
        """Check `settings` and keep the session.

        Raises:
            ConfigError: `url` is not an http(s) URL, or an extra label or `generator_url` is
                invalid (see `AlertOptions.of`); the message names the key, never the URL.
        """
        base = urlsplit(settings.url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ConfigError(f"sinks.{settings.name}.url", "must be an http:// or https:// URL")
        self._settings = settings
        self._options = AlertOptions.of(settings)
        self._session = session
        self._clock = clock
        self._endpoint = settings.url.rstrip("/") + _ALERTS_PATH
        self._what = f"alertmanager {settings.name}"
        # Label set → the latest start of an alert this process posted for it: a success older
        # than a failure already posted (a later batch of the same poll) must not resolve it.
        self._fired: OrderedDict[tuple[tuple[str, str], ...], datetime] = OrderedDict()

    @property
    def name(self) -> str:
        """The sink's name (`[[sinks]] name`)."""
        return self._settings.name

    async def deliver(self, batch: Sequence[OutboxEvent]) -> None:
        """Post the alerts of `batch` in one request; none when it has no alerts.

        Within the request alerts go in time order (their `startsAt`, stable), so Alertmanager
        keeps the latest state of each label set whatever order the events came in; a resolving
        alert older than the latest firing of its label set is left out.

        Raises:
            DeliveryError: the POST failed (retryable or permanent, by `sink_http.post`), or an
                event at index `delivered` has not the shape of its type (permanent; the alerts
                of the events before it were posted).
        """
        alerts: list[Alert] = []
        bad: DeliveryError | None = None
        for index, item in enumerate(batch):
            try:
                alerts += alerts_of(item.event, self._options)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                bad = DeliveryError(
                    f"{self._what}: event {item.event_id} (outbox seq {item.seq}) cannot become "
                    f"an alert: {type(exc).__name__}: {exc}",
                    delivered=index,
                    permanent=True,
                )
                break
        alerts.sort(key=lambda a: a.starts_at)
        latest = {
            _fingerprint(a.labels): a.starts_at for a in alerts if not a.resolving
        }  # dict keeps the last: the latest, after the sort
        posted = [a for a in alerts if not a.resolving or self._still_resolves(a, latest)]
        if posted:
            body = orjson.dumps([a.to_json() for a in posted])
            key = hashlib.sha256(b"\n".join(e.event_id.encode() for e in batch)).hexdigest()
            await post(
                self._session,
                self._endpoint,
                body,
                headers={"Content-Type": "application/json", "Idempotency-Key": key[:32]},
                timeout_s=self._settings.timeout_s,
                now=self._clock.utcnow(),
                what=self._what,
            )
            for fingerprint, starts_at in latest.items():
                self._remember(fingerprint, starts_at)
        if bad is not None:
            raise bad

    def _still_resolves(
        self, alert: Alert, in_batch: Mapping[tuple[tuple[str, str], ...], datetime]
    ) -> bool:
        fingerprint = _fingerprint(alert.labels)
        fired = max(
            (t for t in (in_batch.get(fingerprint), self._fired.get(fingerprint)) if t),
            default=None,
        )
        return fired is None or fired <= alert.ends_at

    def _remember(self, fingerprint: tuple[tuple[str, str], ...], starts_at: datetime) -> None:
        known = self._fired.get(fingerprint)
        if known is None or known < starts_at:
            self._fired[fingerprint] = starts_at
        self._fired.move_to_end(fingerprint)
        while len(self._fired) > _FIRED_MEMORY:
            self._fired.popitem(last=False)

    async def delivered_ids(self) -> set[str]:
        """Always empty: Alertmanager holds alerts, not event ids (re-posting is idempotent)."""
        return set()

    async def aclose(self) -> None:
        """Nothing to release: the session is the caller's."""
