"""Validating `[[sinks]]` entries into their settings; pure, like config_parse.py."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, get_args
from urllib.parse import urlsplit

from monitor.config import is_loopback_host
from monitor.config_reader import SectionReader, shown, suggest
from monitor.config_sinks import (
    AlertmanagerSinkSettings,
    AzureMonitorLogsSinkSettings,
    EventFormat,
    FileSinkSettings,
    SinkFilter,
    SinkSettings,
    SinkStart,
    StdoutSinkSettings,
    WebhookFormat,
    WebhookSinkSettings,
)
from monitor.errors import ConfigError

__all__ = ["SINK_CLASSES", "parse_sinks"]

SINK_CLASSES: Final[Mapping[str, type[SinkSettings]]] = MappingProxyType(
    {
        "stdout": StdoutSinkSettings,
        "file": FileSinkSettings,
        "webhook": WebhookSinkSettings,
        "alertmanager": AlertmanagerSinkSettings,
        "azure_monitor_logs": AzureMonitorLogsSinkSettings,
    }
)
"""Each `type`'s settings class; its fields are the keys an entry of that type accepts."""

OUTCOMES: Final = ("succeeded", "succeeded_with_warnings", "failed", "cancelled", "none")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RULE_ID = re.compile(r"dcr-[0-9a-f]{32}", re.IGNORECASE)


def parse_sinks(value: object, events_table: Mapping[str, object]) -> tuple[SinkSettings, ...]:
    """`[[sinks]]` (None: absent) into settings, in order.

    Raises:
        ConfigError: `sinks` is not an array of tables; an entry has no or an unknown `type`,
            an unknown key, a bad value, or a name another entry has; `[events] sink` or
            `format` is set beside `[[sinks]]` (say it as a sink instead).
    """
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError("sinks", "must be an array of tables ([[sinks]] entries)")
    if not value:
        raise ConfigError("sinks", "must list at least one sink (or be left out)")
    for key in ("sink", "format"):
        if key in events_table:
            raise ConfigError(
                f"events.{key}",
                "cannot be set beside [[sinks]]: describe that sink as a [[sinks]] entry "
                '(type = "stdout" or "file")',
            )
    types = [entry.get("type") for entry in value]
    parsed: list[SinkSettings] = []
    names: dict[str, int] = {}
    for index, entry in enumerate(value):
        sink = _parse_entry(f"sinks[{index}]", entry, types)
        if sink.name in names:
            raise ConfigError(
                f"sinks[{index}].name",
                f"{sink.name!r} is the name of sinks[{names[sink.name]}] too; each sink needs "
                "its own (it keys the sink's cursor in the state file)",
            )
        names[sink.name] = index
        parsed.append(sink)
    return tuple(parsed)


def _parse_entry(path: str, entry: Mapping[str, Any], types: list[object]) -> SinkSettings:
    kind = entry.get("type")
    if kind is None:
        raise ConfigError(f"{path}.type", "is required: one of " + ", ".join(SINK_CLASSES))
    if not isinstance(kind, str) or kind not in SINK_CLASSES:
        raise ConfigError(
            f"{path}.type",
            f"must be one of {', '.join(map(repr, SINK_CLASSES))}, got {kind!r}"
            + (suggest(kind, SINK_CLASSES) if isinstance(kind, str) else ""),
        )
    cls = SINK_CLASSES[kind]
    known = [f.name for f in dataclasses.fields(cls)]
    for key in entry:
        if key not in known:
            raise ConfigError(
                f"{path}.{shown(key)}",
                f"unknown key for a {kind} sink" + suggest(str(key), known),
            )
    r = SectionReader(path, entry, cls)
    if "name" in entry:
        name = r.text("name")
        if not _NAME.fullmatch(name):
            raise r.error("name", f"must be 1-63 letters, digits, '_', '.' or '-', got {name!r}")
    elif types.count(kind) > 1:
        raise r.error("name", f"is required when more than one sink has type {kind!r}")
    else:
        name = kind
    common: dict[str, Any] = {
        "type": kind,
        "name": name,
        "filter": _parse_filter(f"{path}.filter", entry.get("filter")),
        "start": r.choice("start", get_args(SinkStart)),
        "batch_max_events": r.integer("batch_max_events"),
        "linger_s": r.seconds("linger_s"),
        "timeout_s": r.seconds("timeout_s"),
        "retry_initial_s": r.seconds("retry_initial_s"),
        "retry_max_s": r.seconds("retry_max_s"),
    }
    if common["retry_initial_s"] > common["retry_max_s"]:
        raise r.error("retry_initial_s", "must be <= retry_max_s")
    match kind:
        case "stdout":
            return StdoutSinkSettings(**common, format=r.choice("format", get_args(EventFormat)))
        case "file":
            return FileSinkSettings(
                **common,
                path=Path(r.text("path")) if "path" in entry else _required(r, "path"),
                format=r.choice("format", get_args(EventFormat)),
            )
        case "webhook":
            return WebhookSinkSettings(
                **common,
                url=_url(r, entry, "url", https_only=False),
                format=r.choice("format", get_args(WebhookFormat)),
                secret_env=_env_name(r, "secret_env"),
                portal_url=_url(r, entry, "portal_url", https_only=False, default=True),
                ca_bundle=_optional_path(r, "ca_bundle"),
            )
        case "alertmanager":
            return AlertmanagerSinkSettings(
                **common,
                url=_url(r, entry, "url", https_only=False),
                resolve_after_s=r.seconds("resolve_after_s"),
                resolve_on_success=r.boolean("resolve_on_success"),
                labels=_labels(r, entry.get("labels")),
                generator_url=_url(r, entry, "generator_url", https_only=False, default=True),
                ca_bundle=_optional_path(r, "ca_bundle"),
            )
        case _:
            rule_id = r.text("rule_id") if "rule_id" in entry else _required(r, "rule_id")
            if not _RULE_ID.fullmatch(rule_id):
                raise r.error(
                    "rule_id", f"must be a rule's immutable id (dcr-<32 hex>), got {rule_id!r}"
                )
            audience = r.optional_text("audience")
            if audience is not None:
                _check(r, "audience", audience, https_only=True)
            return AzureMonitorLogsSinkSettings(
                **common,
                endpoint=_url(r, entry, "endpoint", https_only=True),
                rule_id=rule_id,
                stream=_stream(r),
                audience=audience,
            )


def _required(r: SectionReader, key: str) -> Any:
    raise r.error(key, "is required")


def _url(
    r: SectionReader,
    entry: Mapping[str, object],
    key: str,
    *,
    https_only: bool,
    default: bool = False,
) -> str:
    if key not in entry and not default:
        _required(r, key)
    url = r.text(key)
    _check(r, key, url, https_only=https_only)
    return url.rstrip("/") if key != "url" else url


def _check(r: SectionReader, key: str, url: str, *, https_only: bool) -> None:
    # A webhook URL may hold its secret (Slack, Teams): an error never quotes the URL itself.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise r.error(key, "must be an absolute http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.error(key, "must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise r.error(key, "must not contain user info")
    if https_only and parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise r.error(key, f"must use https (plain http only to a loopback host), got {url!r}")


def _env_name(r: SectionReader, key: str) -> str | None:
    name = r.optional_text(key)
    if name is not None and not _ENV_NAME.fullmatch(name):
        raise r.error(key, f"must name an environment variable, got {name!r}")
    return name


def _optional_path(r: SectionReader, key: str) -> Path | None:
    text = r.optional_text(key)
    return None if text is None else Path(text)


def _stream(r: SectionReader) -> str:
    stream = r.text("stream")
    if not re.fullmatch(r"Custom-[A-Za-z0-9_]{1,100}", stream):
        raise r.error("stream", f"must be a custom stream name (Custom-<name>), got {stream!r}")
    return stream


def _labels(r: SectionReader, value: object) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise r.error("labels", "must be a table of label = value strings")
    labels: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            raise r.error(f"labels.{shown(name)}", "must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if not isinstance(text, str) or not text:
            raise r.error(f"labels.{name}", "must be a non-empty string")
        labels[name] = text
    return MappingProxyType(labels)


def _parse_filter(path: str, value: object) -> SinkFilter:
    if value is None:
        return SinkFilter()
    if not isinstance(value, Mapping):
        raise ConfigError(path, "must be a table")
    known = [f.name for f in dataclasses.fields(SinkFilter)]
    for key in value:
        if key not in known:
            raise ConfigError(f"{path}.{shown(key)}", "unknown key" + suggest(str(key), known))
    r = SectionReader(path, value, SinkFilter)
    lists = {key: r.texts(key) for key in known}
    for i, outcome in enumerate(lists["outcomes"]):
        if outcome.lower() not in OUTCOMES:
            raise r.error(
                f"outcomes[{i}]",
                f"must be one of {', '.join(OUTCOMES)}, got {outcome!r}"
                + suggest(outcome, OUTCOMES),
            )
    return SinkFilter(**lists)
