"""Typed, frozen settings of `[outbox]` and of each `[[sinks]]` entry, with defaults and bounds.

Parsing them is in config_parse_sinks.py; `monitor.config.Settings` holds them. This module
imports nothing of ours, so config.py can. `[events] sink`/`format` without any `[[sinks]]`
stay the single default sink (named `default`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from monitor.config_fields import DAY_S, MIB, SECRET, bounds

__all__ = [
    "AlertmanagerSinkSettings",
    "AzureMonitorLogsSinkSettings",
    "EventFormat",
    "FileSinkSettings",
    "OutboxSettings",
    "SinkFilter",
    "SinkSettings",
    "SinkStart",
    "SinkType",
    "StdoutSinkSettings",
    "WebhookFormat",
    "WebhookSinkSettings",
]

EventFormat = Literal["json", "cloudevents"]
"""How the line sinks write events: schema v1 lines, or CloudEvents 1.0 structured JSON."""
SinkType = Literal["stdout", "file", "webhook", "alertmanager", "azure_monitor_logs"]
WebhookFormat = Literal["json", "cloudevents", "slack", "teams"]
SinkStart = Literal["now", "oldest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxSettings:
    """`[outbox]`: how much undelivered history the state file keeps for a sink that is behind."""

    max_age_s: float = field(default=7 * DAY_S, metadata=bounds(60, 90 * DAY_S))
    """Events older than this are removed even if a sink has not delivered them (counted in
    `backup_monitor_sink_dropped_total` and logged as `sink.dropped`)."""
    max_bytes: int = field(default=256 * MIB, metadata=bounds(MIB, 64 * 1024 * MIB))
    """Most bytes of event lines the outbox keeps; the oldest go first past it (counted, logged)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkFilter:
    """`[sinks.filter]`: which events a sink delivers; an empty list lets every value through.

    Every list that is set must match (AND across keys, OR within one). Values compare without
    regard to case. Events a filter holds back still move the sink's cursor.
    """

    events: tuple[str, ...] = ()
    """Event types (`backup_job.state_changed`)."""
    outcomes: tuple[str, ...] = ()
    """`job.outcome`: succeeded, succeeded_with_warnings, failed, cancelled; `none` matches the
    events of jobs not yet finished."""
    statuses: tuple[str, ...] = ()
    """`job.status`: InProgress, Completed, Failed, …"""
    job_types: tuple[str, ...] = ()
    """`job.type` (`AzureIaaSVMJob`, `AzureWorkloadJob`, …) or `job.operation` (`Backup`,
    `Restore`, `ConfigureBackup`, …)."""
    vaults: tuple[str, ...] = ()
    """Shell-style globs (`prod-*`) matched against the vault's name and its resource id."""
    subscriptions: tuple[str, ...] = ()
    """Subscription ids."""

    @property
    def passes_all(self) -> bool:
        """Whether the filter lets every event through."""
        return not (
            self.events
            or self.outcomes
            or self.statuses
            or self.job_types
            or self.vaults
            or self.subscriptions
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkSettings:
    """What every `[[sinks]]` entry has: its name, filter, batching and retry pacing."""

    type: SinkType
    name: str
    """Unique among the sinks; keys the sink's cursor in the state file and its metrics."""
    filter: SinkFilter = SinkFilter()
    start: SinkStart = "now"
    """Where a sink with no cursor yet begins: `now` (events committed from its first start
    on) or `oldest` (everything the outbox still holds). The default sink of a new state file
    begins at the start either way."""
    batch_max_events: int = field(default=100, metadata=bounds(1, 10_000))
    """Most events in one delivery."""
    linger_s: float = field(default=0.0, metadata=bounds(0, 60))
    """How long a delivery waits for more events to fill its batch."""
    timeout_s: float = field(default=10.0, metadata=bounds(0.1, 600))
    """Total time of one delivery request."""
    retry_initial_s: float = field(default=1.0, metadata=bounds(0.01, 3600))
    """First retry delay after a failed delivery; doubled on each failure, with jitter."""
    retry_max_s: float = field(default=60.0, metadata=bounds(0.01, DAY_S))
    """Longest retry delay (a destination's `Retry-After` may ask for more, up to a day): a
    receiver back from an outage gets its backlog within this long."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StdoutSinkSettings(SinkSettings):
    """`type = "stdout"`: JSON lines on standard output."""

    format: EventFormat = "json"
    batch_max_events: int = field(default=500, metadata=bounds(1, 10_000))


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSinkSettings(SinkSettings):
    """`type = "file"`: JSON lines appended to a file, fsynced before the cursor moves."""

    path: Path
    format: EventFormat = "json"
    batch_max_events: int = field(default=500, metadata=bounds(1, 10_000))


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSinkSettings(SinkSettings):
    """`type = "webhook"`: HTTP POSTs of batches; json, cloudevents, slack or teams."""

    url: str = field(metadata=SECRET)
    """The receiver; a secret (Slack and Teams put their key in it): never logged or shown."""
    format: WebhookFormat = "json"
    secret_env: str | None = None
    """Environment variable holding the HMAC-SHA256 key that signs each body."""
    linger_s: float = field(default=1.0, metadata=bounds(0, 60))
    portal_url: str = "https://portal.azure.com"
    """Base of the links to a vault in the Azure portal (slack and teams messages)."""
    ca_bundle: Path | None = None
    """PEM file of the CAs that verify the receiver, instead of the system's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertmanagerSinkSettings(SinkSettings):
    """`type = "alertmanager"`: `POST /api/v2/alerts` for failed, cancelled and warning jobs."""

    url: str
    """Alertmanager's base URL (`http://alertmanager:9093`)."""
    resolve_after_s: float = field(default=DAY_S, metadata=bounds(60, 90 * DAY_S))
    """`endsAt` of an alert: it resolves this long after the job ended, unless a later
    success of the same item resolves it first (`resolve_on_success`)."""
    resolve_on_success: bool = True
    """A succeeded job resolves the alerts of earlier failures of the same entity and operation."""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Extra labels on every alert (`team = "storage"`)."""
    generator_url: str = "https://portal.azure.com"
    """Base of each alert's `generatorURL`, a link to its vault."""
    ca_bundle: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureMonitorLogsSinkSettings(SinkSettings):
    """`type = "azure_monitor_logs"`: the Logs Ingestion API into a Log Analytics table."""

    endpoint: str
    """The data collection endpoint, or the rule's own logs ingestion endpoint."""
    rule_id: str
    """The data collection rule's immutable id (`dcr-…`)."""
    stream: str = "Custom-BackupJobMonitor_CL"
    """The rule's input stream."""
    audience: str | None = None
    """Token audience; default: that of `[azure] cloud` (`https://monitor.azure.com`, …)."""
    batch_max_events: int = field(default=500, metadata=bounds(1, 10_000))
    linger_s: float = field(default=2.0, metadata=bounds(0, 60))
