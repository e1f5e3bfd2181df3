"""Typed, frozen settings: a dataclass per `[section]`, each key's default and bounds on its field.

Reading them is elsewhere: config_load.py reads the TOML file and the `BACKUP_MONITOR_*`
environment, config_parse.py validates the result into `Settings`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from monitor.config_fields import DAY_S, MIB, SECRET, bounds
from monitor.config_sinks import EventFormat as EventFormat  # re-exported: its old home
from monitor.config_sinks import (
    FileSinkSettings,
    OutboxSettings,
    SinkSettings,
    StdoutSinkSettings,
)

CloudName = Literal["AzureCloud", "AzureUSGovernment", "AzureChinaCloud"]
CredentialKind = Literal[
    "default", "managed_identity", "workload_identity", "client_secret", "azure_cli", "static"
]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
BackfillDetails = Literal["all", "not_succeeded", "none"]
BoundDetails = Literal["all", "not_succeeded"]
VaultKindName = Literal["recovery_services", "backup_vault"]
"""`core.vaults.VaultKind`'s values, as `[discovery] vault_kinds` takes them."""
JobsFrom = Literal["resource_graph", "listing"]

REDACTED = "***"


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudPreset:
    """The endpoints of one Azure cloud (reference e.3)."""

    arm_endpoint: str
    """Azure Resource Manager base URL, with a trailing slash."""
    authority: str
    """Microsoft Entra authority host."""

    @property
    def token_scope(self) -> str:
        """The ARM audience plus `/.default`."""
        return self.arm_endpoint.rstrip("/") + "/.default"


CLOUD_PRESETS: Mapping[CloudName, CloudPreset] = MappingProxyType(
    {
        "AzureCloud": CloudPreset(
            arm_endpoint="https://management.azure.com/",
            authority="https://login.microsoftonline.com",
        ),
        "AzureUSGovernment": CloudPreset(
            arm_endpoint="https://management.usgovcloudapi.net/",
            authority="https://login.microsoftonline.us",
        ),
        "AzureChinaCloud": CloudPreset(
            arm_endpoint="https://management.chinacloudapi.cn/",
            authority="https://login.chinacloudapi.cn",
        ),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialSettings:
    """One `[[azure.credentials]]` entry: a credential, its tenant and the subscriptions it
    watches. Several entries let one process watch several tenants (a managed-service provider's
    customers, without Azure Lighthouse); each has its own token cache and its own budgets."""

    name: str
    """Unique name of the entry (letters, digits, '-', '_'): in logs, metrics and errors."""
    credential: CredentialKind = "default"
    """Which azure-identity credential to use, as `azure.credential`."""
    tenant_id: str | None = None
    """Entra tenant (GUID or domain) the credential signs in to."""
    client_id: str | None = None
    """Application or user-assigned managed identity client id (GUID)."""
    client_secret: str | None = field(default=None, repr=False, metadata=SECRET)
    """Client secret for credential 'client_secret'; prefer `client_secret_env`."""
    client_secret_env: str | None = None
    """Name of the environment variable holding the client secret (read at start)."""
    static_token: str | None = field(default=None, repr=False, metadata=SECRET)
    """Fixed bearer token for credential 'static' (loopback endpoints only)."""
    subscriptions: tuple[str, ...] = ("*",)
    """Subscription ids (lower-cased GUIDs) this credential watches; ('*',) = every
    subscription it can list that no earlier entry watches."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureSettings:
    """`[azure]`: which cloud, which endpoint, which credential, which API versions."""

    cloud: CloudName = "AzureCloud"
    """Cloud preset that supplies the defaults of arm_endpoint, authority and token_scope."""
    arm_endpoint: str = CLOUD_PRESETS["AzureCloud"].arm_endpoint
    """ARM base URL (always ends with '/'); https, or http to a loopback host when allowed."""
    authority: str = CLOUD_PRESETS["AzureCloud"].authority
    """Microsoft Entra authority host used by the credential."""
    token_scope: str = CLOUD_PRESETS["AzureCloud"].token_scope
    """Scope requested for ARM tokens; defaults to the cloud's ARM audience + '/.default'."""
    credential: CredentialKind = "default"
    """Which azure-identity credential to use; 'static' is for the emulator and tests only."""
    tenant_id: str | None = None
    """Entra tenant (GUID or domain); required by 'client_secret'."""
    client_id: str | None = None
    """Application or user-assigned managed identity client id (GUID)."""
    client_secret: str | None = field(default=None, repr=False, metadata=SECRET)
    """Client secret for credential 'client_secret'; prefer BACKUP_MONITOR_AZURE__CLIENT_SECRET."""
    static_token: str | None = field(default=None, repr=False, metadata=SECRET)
    """Fixed bearer token for credential 'static' (loopback endpoints only)."""
    ca_bundle: Path | None = None
    """PEM file of extra CA certificates (checked when used): ARM calls trust them besides the
    system store; the token endpoint calls of azure-identity credentials trust only them."""
    allow_http_loopback: bool = False
    """Allow plain http for arm_endpoint and authority, and only when their host is loopback."""
    api_version: str = "2025-08-01"
    """api-version for Microsoft.RecoveryServices backupJobs calls."""
    vaults_api_version: str = "2025-08-01"
    """api-version for listing Microsoft.RecoveryServices vaults."""
    subscriptions_api_version: str = "2022-12-01"
    """api-version for listing subscriptions (Microsoft.Resources)."""
    dataprotection_api_version: str = "2025-09-01"
    """api-version for Microsoft.DataProtection calls: Backup vaults and their jobs."""
    resource_graph_api_version: str = "2024-04-01"
    """api-version for Azure Resource Graph queries (Microsoft.ResourceGraph/resources)."""
    request_timeout_s: float = field(default=30.0, metadata=bounds(1, 600))
    """Total timeout of one ARM request, in seconds."""
    max_list_pages: int = field(default=500, metadata=bounds(1, 100_000))
    """Most pages one list call (jobs, vaults, subscriptions) follows before it fails."""
    max_list_bytes: int = field(default=64 * MIB, metadata=bounds(MIB, 4096 * MIB))
    """Most bytes of answers one list call reads, over all its pages, before it fails."""
    max_response_bytes: int = field(default=32 * MIB, metadata=bounds(64 * 1024, 1024 * MIB))
    """Most bytes of one ARM answer; reading stops, and the call fails, past it."""
    credentials: tuple[CredentialSettings, ...] = ()
    """`[[azure.credentials]]`: several credentials, each with its tenant and subscriptions;
    empty: the one credential of `credential`, `tenant_id`, `client_id` and their kin."""

    @property
    def principals(self) -> tuple[CredentialSettings, ...]:
        """Every credential the process signs in with, in file order: `credentials`, or one
        named 'default' from this section's own credential keys (watching every subscription
        `[discovery]` selects)."""
        if self.credentials:
            return self.credentials
        return (
            CredentialSettings(
                name="default",
                credential=self.credential,
                tenant_id=self.tenant_id,
                client_id=self.client_id,
                client_secret=self.client_secret,
                static_token=self.static_token,
            ),
        )

    def signing_in(self, entry: CredentialSettings) -> AzureSettings:
        """These settings with `entry`'s credential keys in place of this section's (what
        `credentials.build_credential` reads). An entry's `client_secret_env` is not read here
        (settings stay pure): `principals.open_principals` puts the variable's value into
        `entry.client_secret` first."""
        return dataclasses.replace(
            self,
            credential=entry.credential,
            tenant_id=entry.tenant_id,
            client_id=entry.client_id,
            client_secret=entry.client_secret,
            static_token=entry.static_token,
            credentials=(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverySettings:
    """`[discovery]`: which vaults to watch and how often to look for new ones."""

    subscriptions: tuple[str, ...] = ("*",)
    """Subscription ids (lower-cased GUIDs) whose vaults are all watched; ('*',) = every visible
    subscription. Defaults to ('*',), or to () when `vaults` is given."""
    vaults: tuple[str, ...] = ()
    """Vault resource ids watched in addition to those found in `subscriptions`."""
    include: tuple[str, ...] = ()
    """fnmatch globs on vault name or resource id; if any, only matching vaults are watched."""
    exclude: tuple[str, ...] = ()
    """fnmatch globs on vault name or resource id; matching vaults are never watched."""
    vault_kinds: tuple[VaultKindName, ...] = ("recovery_services", "backup_vault")
    """Which kinds of vault subscriptions are searched for: 'recovery_services'
    (Microsoft.RecoveryServices/vaults) and 'backup_vault' (Microsoft.DataProtection/
    backupVaults). Vaults listed in `vaults` are watched whatever their kind."""
    interval_s: float = field(default=300.0, metadata=bounds(1, DAY_S))
    """Seconds between two rediscoveries of subscriptions and vaults."""
    startup_timeout_s: float = field(default=300.0, metadata=bounds(0, DAY_S))
    """Seconds the first discovery keeps retrying while ARM answers only with 5xx, 429 or
    transport failures; after that the daemon exits with code 3. 0: give up at the first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PollSettings:
    """`[poll]`: how often each vault's job list is read and how far back it looks."""

    active_interval_s: float = field(default=15.0, metadata=bounds(1, DAY_S))
    """Target seconds between polls of a vault with a running job (≤ idle_interval_s)."""
    idle_interval_s: float = field(default=60.0, metadata=bounds(1, DAY_S))
    """Target seconds between polls of a vault with no running job."""
    lookback_s: float = field(default=86400.0, metadata=bounds(60, 30 * DAY_S))
    """How far back the first poll of a vault looks, in seconds; at most the 30 days that
    Azure's own tools allow one job-list window (reference: Window limits)."""
    overlap_s: float = field(default=300.0, metadata=bounds(0, DAY_S))
    """Seconds subtracted from the window start so that late or long jobs are not missed."""
    max_concurrency: int = field(default=256, metadata=bounds(1, 4096))
    """Most vault polls in flight at once, over all subscriptions."""
    max_concurrency_per_subscription: int = field(default=8, metadata=bounds(1, 256))
    """Most polls of one subscription's vaults in flight at once (its budget paces them)."""
    backfill: bool = True
    """On first start, emit jobs already in the lookback window (false: record them silently)."""
    backfill_details: BackfillDetails = "not_succeeded"
    """Which finished jobs a vault's first poll reads the details of: 'all', 'not_succeeded'
    (failed, cancelled, with warnings, unknown: the ones whose errors matter) or 'none'."""
    detail_on_terminal: bool = True
    """Fetch a job's details once when it reaches a terminal state."""
    details_when_budget_binds: BoundDetails = "not_succeeded"
    """Which ended jobs get their details read while their subscription's read budget binds
    (it, not the intervals, decides how often vaults are polled): 'not_succeeded' (a Completed
    job's event goes out without errors, tasks and properties, so that its read polls a vault
    instead) or 'all'."""
    detail_retry_s: float = field(default=60.0, metadata=bounds(0, 3600))
    """Seconds a failed detail read is retried (in the poll, then on the next polls) before the
    terminal event goes out without details; 0: never retried."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupVaultSettings:
    """`[backup_vaults]`: how the jobs of Backup vaults (Microsoft.DataProtection) are read.

    Their ARM job list has no filter: every poll of it reads the vault's whole history. By
    default a Resource Graph query per batch of subscriptions finds the jobs of a window, each
    job it shows running is read from ARM until it ends, and a full ARM listing per vault is
    the backstop against Resource Graph's lag (docs/operations.md, "Backup vaults").
    """

    jobs_from: JobsFrom = "resource_graph"
    """'resource_graph' (the above), or 'listing': a full ARM listing on every poll (reads
    grow with each vault's history; no Resource Graph access needed)."""
    resource_graph_refresh_s: float = field(default=20.0, metadata=bounds(1, 3600))
    """Seconds one Resource Graph answer serves the polls of its subscriptions' vaults."""
    resource_graph_margin_s: float = field(default=900.0, metadata=bounds(0, DAY_S))
    """How late a Resource Graph row may appear and still be found: each query and each
    vault's list reach this far before the vault's window."""
    backstop_interval_s: float = field(default=3600.0, metadata=bounds(60, 7 * DAY_S))
    """Seconds between two full ARM listings of one vault (jittered); a vault's first poll
    in a process is one, and so is any poll while Resource Graph cannot be read."""
    subscriptions_per_query: int = field(default=300, metadata=bounds(1, 1000))
    """Most subscriptions one Resource Graph query names (Microsoft's guidance: about 300)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionSettings:
    """`[protection]`: what should have happened to each protected item (docs/events.md,
    "backup_item events"): missed scheduled runs, recovery-point age, protection changes and
    long-running jobs, from each vault's protected items and policies, read on a slow cadence
    through the same per-subscription budgets as the jobs."""

    enabled: bool = True
    """Read protected items and policies and emit `backup_item.*` and
    `backup_job.long_running` events."""
    items_interval_s: float = field(default=900.0, metadata=bounds(60, DAY_S))
    """Seconds between two rounds of a vault's protected items (and the jobs window they
    are checked against); a missed run is reported within its grace plus this."""
    policies_interval_s: float = field(default=3600.0, metadata=bounds(60, 7 * DAY_S))
    """Seconds between two reads of a vault's backup policies."""
    grace_s: float = field(default=3600.0, metadata=bounds(0, 7 * DAY_S))
    """How late a daily or weekly run may start before it counts as missed; also added to
    the longest gap between runs for the recovery-point age allowed."""
    grace_fraction: float = field(default=0.5, metadata=bounds(0.01, 10))
    """An hourly or log run's grace, as a fraction of its interval."""
    early_s: float = field(default=600.0, metadata=bounds(0, DAY_S))
    """A job that starts up to this long before a scheduled run (at most half the interval)
    still counts for it."""
    long_running_after_s: float = field(default=86400.0, metadata=bounds(0, 30 * DAY_S))
    """A running job is long-running after this many seconds; 0 = no absolute threshold."""
    long_running_factor: float = field(default=3.0, metadata=bounds(0, 1000))
    """... or after this many times the median duration of its item's recent jobs; 0 = off."""
    long_running_min_samples: int = field(default=5, metadata=bounds(1, 1000))
    """The fewest recent durations of an item the median needs."""
    recovery_point_metric: bool = False
    """Export `backup_monitor_item_last_recovery_point_timestamp_seconds`, one series per
    protected item (off: an estate of 10,000 items is 10,000 series)."""
    max_concurrency: int = field(default=4, metadata=bounds(1, 256))
    """Most vault rounds in flight at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockSettings:
    """`[clock]`: the daemon's time. Only for runs against the emulator's accelerated clock
    (`emulator --clock-speed`), whose three values these must equal: world time is
    `start + (unix time - anchor) * speed`, and every interval and timeout of the daemon is
    then in world seconds. Against Azure leave the section out."""

    speed: float = field(default=1.0, metadata=bounds(1, 100_000))
    """World seconds per real second; 1 = the real clock (start and anchor are ignored)."""
    start: str | None = None
    """The world time (ISO 8601 with an offset) at `anchor`."""
    anchor: float | None = field(default=None, metadata=bounds(0, 1e11))
    """The real Unix time at which the world time is `start`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSettings:
    """`[budget]`: how much of ARM's per-subscription read budget the monitor may spend."""

    read_fraction: float = 0.5
    """Fraction of the per-principal refill rate the monitor spends, in (0, 1]."""
    floor: int = field(default=50, metadata=bounds(0, 99_999))
    """When ARM's remaining-reads header falls under this, slow down (others share the bucket)."""
    reads_per_s: float = field(default=25.0, metadata=bounds(0.01, 1000))
    """ARM's per-principal refill rate, reads per second; lower it for hourly-model clouds."""
    bucket_size: int = field(default=250, metadata=bounds(1, 100_000))
    """ARM's per-principal bucket size, in reads (must exceed floor)."""
    spare_fraction: float = field(default=0.5, metadata=bounds(0, 0.9))
    """Most of a subscription's read rate spent polling idle vaults more often than
    poll.idle_interval_s (down to poll.active_interval_s) when the intervals leave it unspent,
    while its budget is calm; 0 turns it off."""
    spare_polls_per_s: float = field(default=10.0, metadata=bounds(0, 100_000))
    """Most extra polls per second that spare reads add over the whole process (they cost CPU),
    shared equally by the subscriptions."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsSettings:
    """`[events]`: the shape of emitted events and where they go."""

    format: EventFormat = "json"
    """'json' (schema v1 lines) or 'cloudevents' (CloudEvents 1.0 structured JSON)."""
    sink: Literal["stdout"] | Path = "stdout"
    """'stdout', or a file path to which event lines are appended."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSettings:
    """`[state]`: where checkpoints are kept."""

    path: Literal[":memory:"] | Path = Path(".state/monitor.sqlite")
    """SQLite checkpoint file, or ':memory:' (nothing survives a restart)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsSettings:
    """`[ops]`: the metrics and health endpoint."""

    listen: str = "127.0.0.1:9464"
    """host:port (IPv6 as [::1]:port) the ops server binds; port 0 picks a free port."""
    enabled: bool = True
    """Serve /metrics, /healthz and /readyz."""

    @property
    def host(self) -> str:
        """The host part of `listen`, without IPv6 brackets."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardSettings:
    """`[shard]`: this process's share of the estate, split by subscription."""

    index: int | None = field(default=None, metadata=bounds(0, 1023))
    """This shard's index in [0, count); unset = taken from the pod's ordinal (or 0)."""
    count: int = field(default=1, metadata=bounds(1, 1024))
    """Number of shards."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """`[log]`: diagnostics on stderr."""

    level: LogLevel = "info"
    """Lowest level written."""
    format: LogFormat = "auto"
    """'json', 'console', or 'auto' (console on a TTY, else JSON)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting of the monitor, validated; built by `parse_settings` or `load_settings`."""

    azure: AzureSettings = AzureSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    poll: PollSettings = PollSettings()
    budget: BudgetSettings = BudgetSettings()
    backup_vaults: BackupVaultSettings = BackupVaultSettings()
    protection: ProtectionSettings = ProtectionSettings()
    events: EventsSettings = EventsSettings()
    state: StateSettings = StateSettings()
    ops: OpsSettings = OpsSettings()
    shard: ShardSettings = ShardSettings()
    log: LogSettings = LogSettings()
    outbox: OutboxSettings = OutboxSettings()  # noqa: RUF009 - frozen, like the others
    clock: ClockSettings = ClockSettings()
    sinks: tuple[SinkSettings, ...] = ()
    """`[[sinks]]` as written; empty: the one `[events]` describes (see `delivery_sinks`)."""

    @property
    def delivery_sinks(self) -> tuple[SinkSettings, ...]:
        """The sinks events are delivered to: `[[sinks]]`, or else the single sink `[events]`
        describes, named `default`."""
        if self.sinks:
            return self.sinks
        events = self.events
        if events.sink == "stdout":
            return (StdoutSinkSettings(type="stdout", name="default", format=events.format),)
        return (
            FileSinkSettings(type="file", name="default", path=events.sink, format=events.format),
        )

    def redacted(self) -> dict[str, Any]:
        """A JSON-ready copy of the settings, safe to print: secrets that are set read '***'
        (a sink's URL among them: Slack and Teams webhook URLs are secrets)."""
        out: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if isinstance(value, tuple):
                out[section.name] = [_redacted_table(item) for item in value]
            else:
                out[section.name] = _redacted_table(value)
        return out


def _redacted_table(value: object) -> dict[str, object]:
    table: dict[str, object] = {}
    for f in dataclasses.fields(value):  # type: ignore[arg-type]
        item = getattr(value, f.name)
        if f.metadata.get("secret") and item is not None:
            item = REDACTED
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            item = _redacted_table(item)
        elif isinstance(item, Path):
            item = str(item)
        elif isinstance(item, tuple):
            item = [
                _redacted_table(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                for v in item
            ]
        elif isinstance(item, Mapping):
            item = dict(item)
        table[f.name] = item
    return table


SECTIONS: Mapping[str, type] = MappingProxyType(
    {
        "azure": AzureSettings,
        "discovery": DiscoverySettings,
        "poll": PollSettings,
        "budget": BudgetSettings,
        "backup_vaults": BackupVaultSettings,
        "protection": ProtectionSettings,
        "events": EventsSettings,
        "state": StateSettings,
        "ops": OpsSettings,
        "shard": ShardSettings,
        "log": LogSettings,
        "outbox": OutboxSettings,
        "clock": ClockSettings,
    }
)
"""Section name → its settings class, in file order."""

BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        f"{name}.{f.name}": (
            cast(float, f.metadata["minimum"]),
            cast(float, f.metadata["maximum"]),
        )
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if "minimum" in f.metadata
    }
)
"""Dotted key → its inclusive (minimum, maximum): every duration and count has one; ints for
integer keys. Some keys have a further rule against another key (active ≤ idle interval,
floor < bucket_size, shard index < count)."""


def section_keys(section: str) -> tuple[str, ...]:
    """The key names of one section, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(SECTIONS[section]))


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(listen: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port`; raises ValueError with the problem."""
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<port>\d{1,5})|(?P<host>[^:\[\]]+):(?P<p>\d{1,5})", listen
    )
    if not match:
        raise ValueError(f"must be host:port or [ipv6]:port, got {listen!r}")
    port = int(match["port"] or match["p"])
    if port > 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            raise ValueError(f"{match['v6']!r} is not an IPv6 address") from None
        return match["v6"], port
    host = match["host"]
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise ValueError(f"{host!r} is not a host name or IPv4 address")
    return host, port
