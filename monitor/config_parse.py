"""`parse_settings`: a TOML-shaped mapping validated into `Settings`, one section at a time.

Each `_parse_<section>` reads its keys through a `SectionReader` (config_reader.py), so an absent
key takes its field's default; a reader call passes `default=` only for a derived default (one
that depends on another key), and says so in a comment (tests/test_config.py lists the keys).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import cast, get_args
from urllib.parse import urlsplit

from monitor.config import (
    CLOUD_PRESETS,
    SECTIONS,
    AzureSettings,
    BackfillDetails,
    BackupVaultSettings,
    BoundDetails,
    BudgetSettings,
    ClockSettings,
    CloudName,
    CredentialKind,
    CredentialSettings,
    DiscoverySettings,
    EventFormat,
    EventsSettings,
    JobsFrom,
    LogFormat,
    LogLevel,
    LogSettings,
    OpsSettings,
    PollSettings,
    ProtectionSettings,
    Settings,
    ShardSettings,
    StateSettings,
    VaultKindName,
    is_loopback_host,
    split_listen,
)
from monitor.config_parse_sinks import parse_sinks
from monitor.config_reader import SectionReader, figure, section_table, shown, suggest
from monitor.config_sinks import OutboxSettings
from monitor.core.vaults import parse_vault_id
from monitor.errors import ConfigError, ParseError

# Rule: pure; nothing here reads a file, os.environ or the clock.


def parse_settings(mapping: Mapping[str, object]) -> Settings:
    """Validate a TOML-shaped mapping (section → key → value) into `Settings`; pure.

    Missing sections and keys take their defaults.

    Raises:
        ConfigError: an unknown section or key, a wrong type, a value out of range, a bad enum
            value or an inconsistent combination; `key` is the dotted key path.
    """
    for name in mapping:
        if name not in SECTIONS and name != "sinks":
            known = [*SECTIONS, "sinks"]
            raise ConfigError(shown(name), "unknown section" + suggest(str(name), known))
    tables = {name: section_table(name, mapping.get(name)) for name in SECTIONS}
    azure = _parse_azure(tables["azure"])
    return Settings(
        azure=azure,
        discovery=_parse_discovery(tables["discovery"]),
        poll=_parse_poll(tables["poll"]),
        budget=_parse_budget(tables["budget"]),
        backup_vaults=_parse_backup_vaults(tables["backup_vaults"]),
        protection=_parse_protection(tables["protection"]),
        clock=_parse_clock(tables["clock"]),
        events=_parse_events(tables["events"]),
        state=_parse_state(tables["state"]),
        ops=_parse_ops(tables["ops"]),
        shard=_parse_shard(tables["shard"]),
        log=_parse_log(tables["log"]),
        outbox=_parse_outbox(tables["outbox"]),
        sinks=parse_sinks(mapping.get("sinks"), tables["events"]),
    )


_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.I)
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_VAULT_ID = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/[^/]+/providers/"
    r"(Microsoft\.RecoveryServices/vaults|Microsoft\.DataProtection/backupVaults)/[^/]+/?",
    re.IGNORECASE,
)
_VAULT_ID_SHAPE = (
    "/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.RecoveryServices/vaults/<name> "
    "or .../providers/Microsoft.DataProtection/backupVaults/<name>"
)


def _check_url(r: SectionReader, key: str, url: str, *, allow_http_loopback: bool) -> str:
    """Validate an endpoint URL; returns it unchanged."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise r.error(key, f"must be an absolute http(s) URL, got {url!r} ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise r.error(key, "must not contain user info")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.error(key, f"must be an absolute http(s) URL, got {url!r}")
    if parts.query or parts.fragment:
        raise r.error(key, f"must not have a query or fragment, got {url!r}")
    if parts.scheme == "http":
        if not is_loopback_host(parts.hostname):
            raise r.error(key, f"plain http is only allowed to a loopback host, got {url!r}")
        if not allow_http_loopback:
            raise r.error(key, f"plain http requires azure.allow_http_loopback = true, got {url!r}")
    return url


def _parse_azure(table: Mapping[str, object]) -> AzureSettings:
    r = SectionReader("azure", table)
    cloud = r.choice("cloud", get_args(CloudName))
    preset = CLOUD_PRESETS[cloud]
    allow_http = r.boolean("allow_http_loopback")
    # Derived defaults: arm_endpoint, authority and token_scope come from the chosen cloud's
    # preset (the fields' defaults are AzureCloud's).
    arm = r.text("arm_endpoint", default=preset.arm_endpoint)
    arm = _check_url(r, "arm_endpoint", arm, allow_http_loopback=allow_http)
    if not arm.endswith("/"):
        arm += "/"
    authority = r.text("authority", default=preset.authority)
    authority = _check_url(r, "authority", authority, allow_http_loopback=allow_http)
    keys = _credential_keys(r)
    credentials = _parse_credentials(table.get("credentials"), arm)
    if credentials:
        for key in _CREDENTIAL_KEYS:
            if key in table:
                raise r.error(key, "set it in each [[azure.credentials]] entry, not beside them")
    ca_bundle = r.optional_text("ca_bundle")
    versions = {}
    for key in (
        "api_version",
        "vaults_api_version",
        "subscriptions_api_version",
        "dataprotection_api_version",
        "resource_graph_api_version",
    ):
        versions[key] = r.text(key)
        if not _API_VERSION.fullmatch(versions[key]):
            raise r.error(
                key, f"must look like 2025-08-01 or 2025-08-01-preview, got {versions[key]!r}"
            )
    settings = AzureSettings(
        cloud=cloud,
        arm_endpoint=arm,
        authority=authority,
        token_scope=r.text("token_scope", default=preset.token_scope),
        credential=keys.credential,
        tenant_id=keys.tenant_id,
        client_id=keys.client_id,
        client_secret=keys.client_secret,
        static_token=keys.static_token,
        credentials=credentials,
        ca_bundle=Path(ca_bundle) if ca_bundle is not None else None,
        allow_http_loopback=allow_http,
        api_version=versions["api_version"],
        vaults_api_version=versions["vaults_api_version"],
        subscriptions_api_version=versions["subscriptions_api_version"],
        dataprotection_api_version=versions["dataprotection_api_version"],
        resource_graph_api_version=versions["resource_graph_api_version"],
        request_timeout_s=r.seconds("request_timeout_s"),
        max_list_pages=r.integer("max_list_pages"),
        max_list_bytes=r.integer("max_list_bytes"),
        max_response_bytes=r.integer("max_response_bytes"),
    )
    if not credentials:
        _check_credential(r, settings.principals[0], arm)
    return settings


_CREDENTIAL_KEYS = ("credential", "tenant_id", "client_id", "client_secret", "static_token")
"""The keys that say how to sign in: in [azure] for one credential, or in each
[[azure.credentials]] entry."""
_ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _credential_keys(
    r: SectionReader,
    *,
    name: str = "default",
    secret_env: str | None = None,
    subscriptions: tuple[str, ...] = ("*",),
) -> CredentialSettings:
    """The credential keys of [azure] or of one [[azure.credentials]] entry, checked."""
    tenant_id = r.optional_text("tenant_id")
    if tenant_id is not None and not (_GUID.fullmatch(tenant_id) or _DOMAIN.fullmatch(tenant_id)):
        raise r.error("tenant_id", f"must be a GUID or a domain name, got {tenant_id!r}")
    client_id = r.optional_text("client_id")
    if client_id is not None and not _GUID.fullmatch(client_id):
        raise r.error("client_id", f"must be a GUID, got {client_id!r}")
    return CredentialSettings(
        name=name,
        credential=r.choice("credential", get_args(CredentialKind)),
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=r.optional_text("client_secret"),
        client_secret_env=secret_env,
        static_token=r.optional_text("static_token"),
        subscriptions=subscriptions,
    )


def _check_credential(r: SectionReader, s: CredentialSettings, arm_endpoint: str) -> None:
    where = r.path("credential")
    if s.credential == "static":
        host = urlsplit(arm_endpoint).hostname or ""
        if not is_loopback_host(host):
            raise r.error(
                "credential",
                f"'static' is refused unless azure.arm_endpoint is a loopback host, got {host!r}",
            )
        if s.static_token is None:
            raise r.error("static_token", f"required when {where} = 'static'")
    elif s.credential == "client_secret":
        for key in ("tenant_id", "client_id"):
            if getattr(s, key) is None:
                raise r.error(key, f"required when {where} = 'client_secret'")
        if s.client_secret is None and s.client_secret_env is None:
            either = "" if where == "azure.credential" else " (or client_secret_env)"
            raise r.error("client_secret", f"required{either} when {where} = 'client_secret'")


def _parse_credentials(value: object, arm_endpoint: str) -> tuple[CredentialSettings, ...]:
    """`[[azure.credentials]]` (None or empty: absent) into settings, in order.

    Raises:
        ConfigError: not an array of tables; an entry without a name or with one another entry
            has, an unknown key, a bad value, a credential missing what it needs, or a
            subscription that two entries list.
    """
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(
            "azure.credentials", "must be an array of tables ([[azure.credentials]] entries)"
        )
    known = tuple(f.name for f in dataclasses.fields(CredentialSettings))
    entries: list[CredentialSettings] = []
    owners: dict[str, str] = {}
    for index, table in enumerate(cast("list[Mapping[str, object]]", value)):
        section = f"azure.credentials[{index}]"
        for key in table:
            if key not in known:
                raise ConfigError(
                    f"{section}.{shown(key)}", "unknown key" + suggest(str(key), known)
                )
        r = SectionReader(section, table, CredentialSettings)
        if "name" not in table:
            raise r.error("name", "required: every entry is named (in logs, metrics, errors)")
        name = r.text("name")
        if not _ENTRY_NAME.fullmatch(name):
            raise r.error(
                "name", f"must be 1-32 letters, digits, '-' or '_', starting alike, got {name!r}"
            )
        if any(e.name.lower() == name.lower() for e in entries):  # budget scopes fold case
            raise r.error("name", f"{name!r} is the name of an earlier entry")
        secret_env = r.optional_text("client_secret_env")
        if secret_env is not None and not _ENV_NAME.fullmatch(secret_env):
            raise r.error(
                "client_secret_env", f"must be an environment variable name, got {secret_env!r}"
            )
        if secret_env is not None and "client_secret" in table:
            raise r.error("client_secret_env", "set client_secret or client_secret_env, not both")
        subscriptions = r.texts("subscriptions")
        if not subscriptions:
            raise r.error("subscriptions", "must name at least one subscription, or be ['*']")
        if "*" in subscriptions and len(subscriptions) > 1:
            raise r.error("subscriptions", "'*' (every subscription it lists) must be alone")
        for i, sub in enumerate(subscriptions):
            if sub == "*":
                continue
            if not _GUID.fullmatch(sub):
                raise r.error(
                    f"subscriptions[{i}]", f"must be a subscription GUID or '*', got {sub!r}"
                )
            other = owners.setdefault(sub.lower(), name)
            if other != name:
                raise r.error(f"subscriptions[{i}]", f"{sub} is watched by entry {other!r} already")
        entry = _credential_keys(
            r,
            name=name,
            secret_env=secret_env,
            subscriptions=tuple(s.lower() for s in subscriptions),
        )
        _check_credential(r, entry, arm_endpoint)
        entries.append(entry)
    return tuple(entries)


def _parse_discovery(table: Mapping[str, object]) -> DiscoverySettings:
    r = SectionReader("discovery", table)
    vaults = r.texts("vaults")
    for i, vault in enumerate(vaults):
        match = _VAULT_ID.fullmatch(vault)
        if not match:
            raise r.error(f"vaults[{i}]", f"must look like {_VAULT_ID_SHAPE}, got {vault!r}")
        if not _GUID.fullmatch(match.group("sub")):
            raise r.error(f"vaults[{i}]", f"subscription must be a GUID, got {match['sub']!r}")
        try:  # the names go into URL paths: the same check as for the vaults ARM lists
            parse_vault_id(vault.rstrip("/"))
        except ParseError as exc:
            raise r.error(f"vaults[{i}]", exc.problem) from None
    vaults = tuple(v.rstrip("/") for v in vaults)
    # Derived default: with vaults listed, only they are watched (); else the field's ('*',).
    subscriptions = r.texts("subscriptions", default=()) if vaults else r.texts("subscriptions")
    if "*" in subscriptions and len(subscriptions) > 1:
        raise r.error("subscriptions", "'*' (all visible subscriptions) must be the only entry")
    for i, sub in enumerate(subscriptions):
        if sub != "*" and not _GUID.fullmatch(sub):
            raise r.error(f"subscriptions[{i}]", f"must be a subscription GUID or '*', got {sub!r}")
    if not subscriptions and not vaults:
        raise r.error("subscriptions", "nothing to watch: empty, and discovery.vaults is empty")
    kinds = r.texts("vault_kinds")
    allowed = get_args(VaultKindName)
    for i, kind in enumerate(kinds):
        if kind not in allowed:
            raise r.error(
                f"vault_kinds[{i}]",
                f"must be one of {', '.join(map(repr, allowed))}, got {kind!r}"
                + suggest(kind, allowed),
            )
    if not kinds:
        raise r.error("vault_kinds", f"must name at least one of {', '.join(map(repr, allowed))}")
    if len(set(kinds)) != len(kinds):
        raise r.error("vault_kinds", f"names a kind twice: {list(kinds)!r}")
    return DiscoverySettings(
        subscriptions=tuple(s.lower() for s in subscriptions),
        vaults=vaults,
        include=r.texts("include"),
        exclude=r.texts("exclude"),
        vault_kinds=cast(tuple[VaultKindName, ...], kinds),
        interval_s=r.seconds("interval_s"),
        startup_timeout_s=r.seconds("startup_timeout_s"),
    )


def _parse_poll(table: Mapping[str, object]) -> PollSettings:
    r = SectionReader("poll", table)
    active = r.seconds("active_interval_s")
    idle = r.seconds("idle_interval_s")
    if active > idle:
        raise r.error(
            "active_interval_s",
            f"must be <= poll.idle_interval_s ({figure(idle)}), got {figure(active)}",
        )
    return PollSettings(
        active_interval_s=active,
        idle_interval_s=idle,
        lookback_s=r.seconds("lookback_s"),
        overlap_s=r.seconds("overlap_s"),
        max_concurrency=r.integer("max_concurrency"),
        max_concurrency_per_subscription=r.integer("max_concurrency_per_subscription"),
        backfill=r.boolean("backfill"),
        backfill_details=r.choice("backfill_details", get_args(BackfillDetails)),
        detail_on_terminal=r.boolean("detail_on_terminal"),
        details_when_budget_binds=r.choice("details_when_budget_binds", get_args(BoundDetails)),
        detail_retry_s=r.seconds("detail_retry_s"),
    )


def _parse_backup_vaults(table: Mapping[str, object]) -> BackupVaultSettings:
    r = SectionReader("backup_vaults", table)
    return BackupVaultSettings(
        jobs_from=r.choice("jobs_from", get_args(JobsFrom)),
        resource_graph_refresh_s=r.seconds("resource_graph_refresh_s"),
        resource_graph_margin_s=r.seconds("resource_graph_margin_s"),
        backstop_interval_s=r.seconds("backstop_interval_s"),
        subscriptions_per_query=r.integer("subscriptions_per_query"),
    )


def _parse_protection(table: Mapping[str, object]) -> ProtectionSettings:
    r = SectionReader("protection", table)
    return ProtectionSettings(
        enabled=r.boolean("enabled"),
        items_interval_s=r.seconds("items_interval_s"),
        policies_interval_s=r.seconds("policies_interval_s"),
        grace_s=r.seconds("grace_s"),
        grace_fraction=r.number("grace_fraction"),
        early_s=r.seconds("early_s"),
        long_running_after_s=r.seconds("long_running_after_s"),
        long_running_factor=r.number("long_running_factor"),
        long_running_min_samples=r.integer("long_running_min_samples"),
        recovery_point_metric=r.boolean("recovery_point_metric"),
        max_concurrency=r.integer("max_concurrency"),
    )


def _parse_clock(table: Mapping[str, object]) -> ClockSettings:
    r = SectionReader("clock", table)
    speed = r.number("speed")
    start = r.optional_text("start")
    anchor = None if "anchor" not in table else r.number("anchor")
    if start is not None:
        try:
            moment = datetime.fromisoformat(start)
        except ValueError:
            raise r.error("start", f"must be an ISO 8601 date-time, got {start!r}") from None
        if moment.tzinfo is None:
            raise r.error("start", f"must have a UTC offset (e.g. 'Z'), got {start!r}")
    if speed != 1 and (start is None or anchor is None):
        missing = "start" if start is None else "anchor"
        raise r.error(missing, "must be set when clock.speed is not 1 (the emulator's value)")
    return ClockSettings(speed=speed, start=start, anchor=anchor)


def _parse_budget(table: Mapping[str, object]) -> BudgetSettings:
    r = SectionReader("budget", table)
    fraction = r.number("read_fraction")
    if not 0 < fraction <= 1:
        raise r.error("read_fraction", f"must be in (0, 1], got {fraction:g}")
    reads_per_s = r.number("reads_per_s")
    floor = r.integer("floor")
    bucket_size = r.integer("bucket_size")
    if floor >= bucket_size:
        raise r.error("floor", f"must be < budget.bucket_size ({bucket_size}), got {floor}")
    return BudgetSettings(
        read_fraction=fraction,
        floor=floor,
        reads_per_s=reads_per_s,
        bucket_size=bucket_size,
        spare_fraction=r.number("spare_fraction"),
        spare_polls_per_s=r.number("spare_polls_per_s"),
    )


def _parse_events(table: Mapping[str, object]) -> EventsSettings:
    r = SectionReader("events", table)
    sink = r.text("sink")
    return EventsSettings(
        format=r.choice("format", get_args(EventFormat)),
        sink="stdout" if sink == "stdout" else Path(sink),
    )


def _parse_outbox(table: Mapping[str, object]) -> OutboxSettings:
    r = SectionReader("outbox", table)
    return OutboxSettings(max_age_s=r.seconds("max_age_s"), max_bytes=r.integer("max_bytes"))


def _parse_state(table: Mapping[str, object]) -> StateSettings:
    r = SectionReader("state", table)
    path = r.text("path")
    return StateSettings(path=":memory:" if path == ":memory:" else Path(path))


def _parse_ops(table: Mapping[str, object]) -> OpsSettings:
    r = SectionReader("ops", table)
    listen = r.text("listen")
    try:
        split_listen(listen)
    except ValueError as exc:
        raise r.error("listen", str(exc)) from None
    return OpsSettings(listen=listen, enabled=r.boolean("enabled"))


def _parse_shard(table: Mapping[str, object]) -> ShardSettings:
    r = SectionReader("shard", table)
    count = r.integer("count")
    index = r.optional_integer("index")
    if index is not None and index >= count:
        raise r.error("index", f"must be < shard.count ({count}), got {index}")
    return ShardSettings(index=index, count=count)


def _parse_log(table: Mapping[str, object]) -> LogSettings:
    r = SectionReader("log", table)
    return LogSettings(
        level=r.choice("level", get_args(LogLevel)),
        format=r.choice("format", get_args(LogFormat)),
    )
