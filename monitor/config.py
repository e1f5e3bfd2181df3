"""Typed, frozen settings parsed once from a TOML file plus `BACKUP_MONITOR_*` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar, cast, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from monitor.core.vaults import parse_vault_id
from monitor.errors import ConfigError, ParseError

# Rule: nothing here reads os.environ or the clock; the environment arrives as a mapping.

CloudName = Literal["AzureCloud", "AzureUSGovernment", "AzureChinaCloud"]
CredentialKind = Literal[
    "default", "managed_identity", "workload_identity", "client_secret", "azure_cli", "static"
]
EventFormat = Literal["json", "cloudevents"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
BackfillDetails = Literal["all", "not_succeeded", "none"]

ENV_PREFIX = "BACKUP_MONITOR_"
"""Environment variables `BACKUP_MONITOR_<SECTION>__<KEY>` override the file's `[section] key`."""

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

_SECRET = MappingProxyType({"secret": True})

DAY_S = 86400
"""One day in seconds: the upper bound of most intervals and timeouts."""
MIB = 1024 * 1024


def _bounds(minimum: float, maximum: float) -> Mapping[str, object]:
    """Field metadata: the inclusive range `_Reader` enforces (see `BOUNDS`)."""
    return MappingProxyType({"minimum": minimum, "maximum": maximum})


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
    client_secret: str | None = field(default=None, repr=False, metadata=_SECRET)
    """Client secret for credential 'client_secret'; prefer BACKUP_MONITOR_AZURE__CLIENT_SECRET."""
    static_token: str | None = field(default=None, repr=False, metadata=_SECRET)
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
    request_timeout_s: float = field(default=30.0, metadata=_bounds(1, 600))
    """Total timeout of one ARM request, in seconds."""
    max_list_pages: int = field(default=500, metadata=_bounds(1, 100_000))
    """Most pages one list call (jobs, vaults, subscriptions) follows before it fails."""
    max_list_bytes: int = field(default=64 * MIB, metadata=_bounds(MIB, 4096 * MIB))
    """Most bytes of answers one list call reads, over all its pages, before it fails."""
    max_response_bytes: int = field(default=32 * MIB, metadata=_bounds(64 * 1024, 1024 * MIB))
    """Most bytes of one ARM answer; reading stops, and the call fails, past it."""


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
    interval_s: float = field(default=300.0, metadata=_bounds(1, DAY_S))
    """Seconds between two rediscoveries of subscriptions and vaults."""
    startup_timeout_s: float = field(default=300.0, metadata=_bounds(0, DAY_S))
    """Seconds the first discovery keeps retrying while ARM answers only with 5xx, 429 or
    transport failures; after that the daemon exits with code 3. 0: give up at the first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PollSettings:
    """`[poll]`: how often each vault's job list is read and how far back it looks."""

    active_interval_s: float = field(default=15.0, metadata=_bounds(1, DAY_S))
    """Target seconds between polls of a vault with a running job (≤ idle_interval_s)."""
    idle_interval_s: float = field(default=60.0, metadata=_bounds(1, DAY_S))
    """Target seconds between polls of a vault with no running job."""
    lookback_s: float = field(default=86400.0, metadata=_bounds(60, 30 * DAY_S))
    """How far back the first poll of a vault looks, in seconds; at most the 30 days that
    Azure's own tools allow one job-list window (reference: Window limits)."""
    overlap_s: float = field(default=300.0, metadata=_bounds(0, DAY_S))
    """Seconds subtracted from the window start so that late or long jobs are not missed."""
    max_concurrency: int = field(default=256, metadata=_bounds(1, 4096))
    """Most vault polls in flight at once, over all subscriptions."""
    max_concurrency_per_subscription: int = field(default=8, metadata=_bounds(1, 256))
    """Most polls of one subscription's vaults in flight at once (its budget paces them)."""
    backfill: bool = True
    """On first start, emit jobs already in the lookback window (false: record them silently)."""
    backfill_details: BackfillDetails = "not_succeeded"
    """Which finished jobs a vault's first poll reads the details of: 'all', 'not_succeeded'
    (failed, cancelled, with warnings, unknown: the ones whose errors matter) or 'none'."""
    detail_on_terminal: bool = True
    """Fetch a job's details once when it reaches a terminal state."""
    detail_retry_s: float = field(default=60.0, metadata=_bounds(0, 3600))
    """Seconds a failed detail read is retried (in the poll, then on the next polls) before the
    terminal event goes out without details; 0: never retried."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSettings:
    """`[budget]`: how much of ARM's per-subscription read budget the monitor may spend."""

    read_fraction: float = 0.5
    """Fraction of the per-principal refill rate the monitor spends, in (0, 1]."""
    floor: int = field(default=50, metadata=_bounds(0, 99_999))
    """When ARM's remaining-reads header falls under this, slow down (others share the bucket)."""
    reads_per_s: float = field(default=25.0, metadata=_bounds(0.01, 1000))
    """ARM's per-principal refill rate, reads per second; lower it for hourly-model clouds."""
    bucket_size: int = field(default=250, metadata=_bounds(1, 100_000))
    """ARM's per-principal bucket size, in reads (must exceed floor)."""


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
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return _split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardSettings:
    """`[shard]`: this process's share of the estate, split by subscription."""

    index: int | None = field(default=None, metadata=_bounds(0, 1023))
    """This shard's index in [0, count); unset = taken from the pod's ordinal (or 0)."""
    count: int = field(default=1, metadata=_bounds(1, 1024))
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
    events: EventsSettings = EventsSettings()
    state: StateSettings = StateSettings()
    ops: OpsSettings = OpsSettings()
    shard: ShardSettings = ShardSettings()
    log: LogSettings = LogSettings()

    def redacted(self) -> dict[str, dict[str, object]]:
        """A JSON-ready copy of the settings, safe to print: secrets that are set read '***'."""
        out: dict[str, dict[str, object]] = {}
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            table: dict[str, object] = {}
            for f in dataclasses.fields(value):
                item = getattr(value, f.name)
                if f.metadata.get("secret") and item is not None:
                    item = REDACTED
                elif isinstance(item, Path):
                    item = str(item)
                elif isinstance(item, tuple):
                    item = list(item)
                table[f.name] = item
            out[section.name] = table
        return out


SECTIONS: Mapping[str, type] = MappingProxyType(
    {
        "azure": AzureSettings,
        "discovery": DiscoverySettings,
        "poll": PollSettings,
        "budget": BudgetSettings,
        "events": EventsSettings,
        "state": StateSettings,
        "ops": OpsSettings,
        "shard": ShardSettings,
        "log": LogSettings,
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


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_settings(mapping: Mapping[str, object]) -> Settings:
    """Validate a TOML-shaped mapping (section → key → value) into `Settings`; pure.

    Missing sections and keys take their defaults.

    Raises:
        ConfigError: an unknown section or key, a wrong type, a value out of range, a bad enum
            value or an inconsistent combination; `key` is the dotted key path.
    """
    for name in mapping:
        if name not in SECTIONS:
            raise ConfigError(_shown(name), "unknown section" + _suggest(str(name), SECTIONS))
    tables = {name: _table(name, mapping.get(name)) for name in SECTIONS}
    return Settings(
        azure=_parse_azure(tables["azure"]),
        discovery=_parse_discovery(tables["discovery"]),
        poll=_parse_poll(tables["poll"]),
        budget=_parse_budget(tables["budget"]),
        events=_parse_events(tables["events"]),
        state=_parse_state(tables["state"]),
        ops=_parse_ops(tables["ops"]),
        shard=_parse_shard(tables["shard"]),
        log=_parse_log(tables["log"]),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownVariable:
    """A `BACKUP_MONITOR_*` environment variable that names no setting; it was not applied."""

    variable: str
    """The variable's name (its value is never kept: it may be a secret)."""
    suggestion: str | None
    """The known variable whose name is closest to it, when one is close."""

    def __str__(self) -> str:
        hint = (
            f"did you mean {self.suggestion}?"
            if self.suggestion
            else f"settings are {ENV_PREFIX}<SECTION>__<KEY>"
        )
        return f"{self.variable}: names no setting, ignored; {hint}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedSettings:
    """What `load_settings_with_warnings` found: the settings, and what the caller should log."""

    settings: Settings
    unknown_variables: tuple[UnknownVariable, ...] = ()
    """Prefixed environment variables that name no setting, in name order."""


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """`load_settings_with_warnings(path, environ).settings`, for callers that log nothing."""
    return load_settings_with_warnings(path, environ).settings


def load_settings_with_warnings(path: Path | None, environ: Mapping[str, str]) -> LoadedSettings:
    """Read the TOML file at `path` (None: no file), apply environment overrides, and validate.

    An override `BACKUP_MONITOR_<SECTION>__<KEY>=value` replaces `[section] key`. Its value is
    taken verbatim for text keys; for list keys it is a TOML array or comma-separated text; for
    other keys it is parsed as a TOML value (`10`, `0.5`, `true`), else kept as text (and then
    rejected by validation). A variable with the prefix that names no known section and key
    (`BACKUP_MONITOR_POLL_ACTIVE`, a misspelt key, an unknown section) is not applied; it is
    returned in `unknown_variables`, with the closest known variable, for the caller to warn
    about. Nothing here logs: config stays pure.

    Raises:
        ConfigError: the file is missing, unreadable or not TOML (the key is the file path), an
            override variable is malformed (`BACKUP_MONITOR_POLL__`, `BACKUP_MONITOR_A__B__C`:
            the key is the variable), or validation fails (the key is the dotted key path, and
            the problem names the variable when one set it).
    """
    data: dict[str, object] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(str(path), "config file not found") from None
        except IsADirectoryError:
            raise ConfigError(str(path), "is a directory, not a config file") from None
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(str(path), "not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    sources, unknown = _apply_environment(data, environ)
    try:
        return LoadedSettings(settings=parse_settings(data), unknown_variables=unknown)
    except ConfigError as exc:
        var = next(
            (v for k, v in sources.items() if k == exc.key or k.startswith(exc.key + ".")), None
        )
        if var is None:
            raise
        raise ConfigError(exc.key, f"{exc.problem} (set by {var})") from None


def shard_from_hostname(name: str) -> int | None:
    """The StatefulSet ordinal at the end of a pod hostname (`monitor-3` → 3), else None.

    Only the first DNS label is considered, so `monitor-3.monitor.ns.svc` also gives 3.
    """
    match = re.search(r"-(\d+)$", name.split(".", 1)[0])
    return int(match.group(1)) if match else None


def _apply_environment(
    data: dict[str, object], environ: Mapping[str, str]
) -> tuple[dict[str, str], tuple[UnknownVariable, ...]]:
    """Merge overrides into `data` in place; returns dotted key → variable name, and the
    prefixed variables that name no setting."""
    sources: dict[str, str] = {}
    unknown: list[UnknownVariable] = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :]
        parts = name.split("__")
        if len(parts) > 1 and (len(parts) != 2 or not all(parts)):
            raise ConfigError(var, f"expected {ENV_PREFIX}<SECTION>__<KEY>")
        section, key = parts[0].lower(), parts[-1].lower()
        if len(parts) == 1 or section not in SECTIONS or key not in section_keys(section):
            unknown.append(UnknownVariable(variable=var, suggestion=_closest_variable(name)))
            continue
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # the file's own value for this section is not a table; validation says so
        table[key] = _env_value(section, key, environ[var])
        sources[f"{section}.{key}"] = var
    return sources, tuple(unknown)


def _closest_variable(name: str) -> str | None:
    """The known override variable closest to `name` (the part after the prefix), if any.

    Compared without case and underscores, so a single `_` for `__`, or a shortened key
    (`POLL_ACTIVE`), still finds its variable.
    """
    known = {
        (section + key).replace("_", ""): f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
        for section in SECTIONS
        for key in section_keys(section)
    }
    close = difflib.get_close_matches(name.lower().replace("_", ""), known, n=1, cutoff=0.6)
    return known[close[0]] if close else None


def _env_value(section: str, key: str, raw: str) -> object:
    kind = _env_kind(section, key)
    if kind == "text":
        return raw
    if kind == "list" and not raw.lstrip().startswith("["):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if "\n" in raw or "\r" in raw:
        return raw
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    return parsed["v"] if list(parsed) == ["v"] else raw


def _env_kind(section: str, key: str) -> Literal["text", "list", "toml"]:
    cls = SECTIONS.get(section)
    if cls is None:
        return "toml"
    hint = get_type_hints(cls).get(key)
    if hint is None:
        return "toml"
    if get_origin(hint) is tuple:
        return "list"
    options = (hint,) if get_origin(hint) is Literal else (get_args(hint) or (hint,))
    if any(o is str or o is Path or get_origin(o) is Literal for o in options):
        return "text"
    return "toml"


# ---------------------------------------------------------------------------------------------
# One section at a time

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


def _suggest(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; known: " + ", ".join(known)


def _shown(name: object) -> str:
    """A section or key name as it appears in an error: bare when plain, else quoted."""
    text = str(name)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else repr(text)


def _describe(value: object) -> str:
    name = type(value).__name__
    if isinstance(value, dict | list):
        return name
    text = repr(value)
    return f"{name} {text if len(text) <= 40 else text[:37] + '...'}"


def _table(name: str, value: object) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"must be a table, got {_describe(value)}")
    known = section_keys(name)
    for key in value:
        if key not in known:
            raise ConfigError(f"{name}.{_shown(key)}", "unknown key" + _suggest(str(key), known))
    return cast(Mapping[str, object], value)


class _Reader:
    """Typed access to one section's table; every error names `section.key`.

    An absent key takes the default of its field in the section's settings class
    (`SECTIONS[section]`), so each default is written once, on the field. A caller passes
    `default=` only for a derived default, one that depends on another key, and says so in a
    comment (tests/test_config.py lists the keys that may).
    """

    def __init__(self, section: str, table: Mapping[str, object]) -> None:
        self._section, self._table = section, table
        self._defaults = {f.name: f.default for f in dataclasses.fields(SECTIONS[section])}

    def path(self, key: str) -> str:
        return f"{self._section}.{key}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path(key), problem)

    def field_default(self, key: str) -> object:
        """The default declared on the field `key` of the section's settings class."""
        default = self._defaults.get(key, dataclasses.MISSING)
        if default is dataclasses.MISSING:
            cls = SECTIONS[self._section].__name__
            raise TypeError(f"{self.path(key)}: {cls} has no field {key!r} with a default")
        return default

    def _get(
        self, key: str, check: Callable[[object], bool], what: str, default: object = None
    ) -> object:
        """The table's value for `key`, checked; absent: `default`, or the field's if None."""
        if key not in self._table:
            return self.field_default(key) if default is None else default
        value = self._table[key]
        if not check(value):
            secret = _is_secret_key(self._section, key)
            got = type(value).__name__ if secret else _describe(value)
            raise self.error(key, f"must be {what}, got {got}")
        return value

    def boolean(self, key: str) -> bool:
        return cast(bool, self._get(key, lambda v: isinstance(v, bool), "true or false"))

    def _in_bounds(self, key: str, value: _N) -> _N:
        """`value` if it is within the key's `BOUNDS` entry, else a ConfigError naming both."""
        minimum, maximum = BOUNDS[self.path(key)]
        if value < minimum:
            raise self.error(key, f"must be >= {_figure(minimum)}, got {_figure(value)}")
        if value > maximum:
            raise self.error(key, f"must be <= {_figure(maximum)}, got {_figure(value)}")
        return value

    def integer(self, key: str) -> int:
        """An integer within the key's bounds."""
        return self._in_bounds(key, cast(int, self._get(key, _is_int, "an integer")))

    def optional_integer(self, key: str) -> int | None:
        """An integer within the key's bounds; absent: the field's default (None)."""
        if key not in self._table:
            return cast("int | None", self.field_default(key))
        return self.integer(key)

    def seconds(self, key: str) -> float:
        """A finite number of seconds within the key's bounds."""
        value = self._finite(key, self._get(key, _is_number, "a number of seconds"))
        return self._in_bounds(key, value)

    def number(self, key: str) -> float:
        """A finite number; within the key's bounds when it has an entry in `BOUNDS`."""
        value = self._finite(key, self._get(key, _is_number, "a number"))
        return self._in_bounds(key, value) if self.path(key) in BOUNDS else value

    def _finite(self, key: str, value: object) -> float:
        try:
            number = float(cast(float, value))
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.error(key, f"must be a finite number, got {number}")
        return number

    def text(self, key: str, *, default: str | None = None) -> str:
        """A non-blank string; absent: `default`, else the field's (a Path default as text)."""
        value = self._get(key, lambda v: isinstance(v, str), "a string", default)
        value = str(value) if isinstance(value, Path) else cast(str, value)
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def optional_text(self, key: str) -> str | None:
        """A non-blank string; absent: the field's default (None)."""
        if key not in self._table:
            return cast("str | None", self.field_default(key))
        return self.text(key)

    def choice(self, key: str, choices: tuple[_T, ...]) -> _T:
        """One of `choices`, matched without case; absent: the field's default."""
        value = self.text(key)
        for option in choices:
            if cast(str, option).lower() == value.lower():
                return option
        listed = ", ".join(repr(c) for c in choices)
        hint = _suggest(value, [cast(str, c) for c in choices])
        if hint.startswith("; known"):
            hint = ""
        raise self.error(key, f"must be one of {listed}, got {value!r}{hint}")

    def texts(self, key: str, *, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A list of non-blank strings, stripped; absent: `default`, else the field's."""
        value = self._get(key, _is_text_list, "a list of strings", default)
        items = tuple(cast("list[str] | tuple[str, ...]", value))
        for i, item in enumerate(items):
            if not item.strip():
                raise self.error(f"{key}[{i}]", "must not be empty")
        return tuple(item.strip() for item in items)


def _figure(value: float) -> str:
    """A number as an error shows it: whole numbers without '.0', others as Python writes
    them (1e-09, 1e+300), and integers too long to read in scientific notation."""
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 20 else f"{Decimal(value):.3e}"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text_list(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def _is_secret_key(section: str, key: str) -> bool:
    return any(
        f.name == key and f.metadata.get("secret") for f in dataclasses.fields(SECTIONS[section])
    )


_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.I)
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_VAULT_ID = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/[^/]+"
    r"/providers/Microsoft\.RecoveryServices/vaults/[^/]+/?",
    re.IGNORECASE,
)
_VAULT_ID_SHAPE = (
    "/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.RecoveryServices/vaults/<name>"
)


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(r: _Reader, key: str, url: str, *, allow_http_loopback: bool) -> str:
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
    r = _Reader("azure", table)
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
    credential = r.choice("credential", get_args(CredentialKind))
    tenant_id = r.optional_text("tenant_id")
    if tenant_id is not None and not (_GUID.fullmatch(tenant_id) or _DOMAIN.fullmatch(tenant_id)):
        raise r.error("tenant_id", f"must be a GUID or a domain name, got {tenant_id!r}")
    client_id = r.optional_text("client_id")
    if client_id is not None and not _GUID.fullmatch(client_id):
        raise r.error("client_id", f"must be a GUID, got {client_id!r}")
    client_secret = r.optional_text("client_secret")
    static_token = r.optional_text("static_token")
    ca_bundle = r.optional_text("ca_bundle")
    versions = {}
    for key in ("api_version", "vaults_api_version", "subscriptions_api_version"):
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
        credential=credential,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        static_token=static_token,
        ca_bundle=Path(ca_bundle) if ca_bundle is not None else None,
        allow_http_loopback=allow_http,
        api_version=versions["api_version"],
        vaults_api_version=versions["vaults_api_version"],
        subscriptions_api_version=versions["subscriptions_api_version"],
        request_timeout_s=r.seconds("request_timeout_s"),
        max_list_pages=r.integer("max_list_pages"),
        max_list_bytes=r.integer("max_list_bytes"),
        max_response_bytes=r.integer("max_response_bytes"),
    )
    _check_credential(r, settings)
    return settings


def _check_credential(r: _Reader, s: AzureSettings) -> None:
    if s.credential == "static":
        host = urlsplit(s.arm_endpoint).hostname or ""
        if not is_loopback_host(host):
            raise r.error(
                "credential",
                f"'static' is refused unless azure.arm_endpoint is a loopback host, got {host!r}",
            )
        if s.static_token is None:
            raise r.error("static_token", "required when azure.credential = 'static'")
    elif s.credential == "client_secret":
        for key in ("tenant_id", "client_id", "client_secret"):
            if getattr(s, key) is None:
                raise r.error(key, "required when azure.credential = 'client_secret'")


def _parse_discovery(table: Mapping[str, object]) -> DiscoverySettings:
    r = _Reader("discovery", table)
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
    return DiscoverySettings(
        subscriptions=tuple(s.lower() for s in subscriptions),
        vaults=vaults,
        include=r.texts("include"),
        exclude=r.texts("exclude"),
        interval_s=r.seconds("interval_s"),
        startup_timeout_s=r.seconds("startup_timeout_s"),
    )


def _parse_poll(table: Mapping[str, object]) -> PollSettings:
    r = _Reader("poll", table)
    active = r.seconds("active_interval_s")
    idle = r.seconds("idle_interval_s")
    if active > idle:
        raise r.error(
            "active_interval_s",
            f"must be <= poll.idle_interval_s ({_figure(idle)}), got {_figure(active)}",
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
        detail_retry_s=r.seconds("detail_retry_s"),
    )


def _parse_budget(table: Mapping[str, object]) -> BudgetSettings:
    r = _Reader("budget", table)
    fraction = r.number("read_fraction")
    if not 0 < fraction <= 1:
        raise r.error("read_fraction", f"must be in (0, 1], got {fraction:g}")
    reads_per_s = r.number("reads_per_s")
    floor = r.integer("floor")
    bucket_size = r.integer("bucket_size")
    if floor >= bucket_size:
        raise r.error("floor", f"must be < budget.bucket_size ({bucket_size}), got {floor}")
    return BudgetSettings(
        read_fraction=fraction, floor=floor, reads_per_s=reads_per_s, bucket_size=bucket_size
    )


def _parse_events(table: Mapping[str, object]) -> EventsSettings:
    r = _Reader("events", table)
    sink = r.text("sink")
    return EventsSettings(
        format=r.choice("format", get_args(EventFormat)),
        sink="stdout" if sink == "stdout" else Path(sink),
    )


def _parse_state(table: Mapping[str, object]) -> StateSettings:
    r = _Reader("state", table)
    path = r.text("path")
    return StateSettings(path=":memory:" if path == ":memory:" else Path(path))


def _split_listen(listen: str) -> tuple[str, int]:
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


def _parse_ops(table: Mapping[str, object]) -> OpsSettings:
    r = _Reader("ops", table)
    listen = r.text("listen")
    try:
        _split_listen(listen)
    except ValueError as exc:
        raise r.error("listen", str(exc)) from None
    return OpsSettings(listen=listen, enabled=r.boolean("enabled"))


def _parse_shard(table: Mapping[str, object]) -> ShardSettings:
    r = _Reader("shard", table)
    count = r.integer("count")
    index = r.optional_integer("index")
    if index is not None and index >= count:
        raise r.error("index", f"must be < shard.count ({count}), got {index}")
    return ShardSettings(index=index, count=count)


def _parse_log(table: Mapping[str, object]) -> LogSettings:
    r = _Reader("log", table)
    return LogSettings(
        level=r.choice("level", get_args(LogLevel)),
        format=r.choice("format", get_args(LogFormat)),
    )
