"""Loading settings: the TOML file, then `BACKUP_MONITOR_*` environment overrides, then
`parse_settings`; the prefixed variables that name no setting come back as `UnknownVariable`s."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

from monitor.config import SECTIONS, Settings, section_keys
from monitor.config_parse import parse_settings
from monitor.errors import ConfigError

# Rule: nothing here reads os.environ or the clock, or logs; the environment arrives as a mapping.

ENV_PREFIX = "BACKUP_MONITOR_"
"""Environment variables `BACKUP_MONITOR_<SECTION>__<KEY>` override the file's `[section] key`."""


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
