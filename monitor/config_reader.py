"""Typed access to one section's table: `SectionReader`, whose every error names `section.key`,
and the helpers the section parsers share (unknown-key checks, suggestions, figures in errors)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TypeVar, cast

from monitor.config import SECTIONS, section_keys
from monitor.errors import ConfigError

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


def suggest(word: str, known: Collection[str]) -> str:
    """An error's hint: `; did you mean 'x'?` for a close match in `known`, else them all."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; known: " + ", ".join(known)


def shown(name: object) -> str:
    """A section or key name as it appears in an error: bare when plain, else quoted."""
    text = str(name)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else repr(text)


def _describe(value: object) -> str:
    name = type(value).__name__
    if isinstance(value, dict | list):
        return name
    text = repr(value)
    return f"{name} {text if len(text) <= 40 else text[:37] + '...'}"


def section_table(name: str, value: object) -> Mapping[str, object]:
    """Section `name`'s table, checked to be a table of known keys; absent (None): empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"must be a table, got {_describe(value)}")
    known = section_keys(name)
    for key in value:
        if key not in known:
            raise ConfigError(f"{name}.{shown(key)}", "unknown key" + suggest(str(key), known))
    return cast(Mapping[str, object], value)


class SectionReader:
    """Typed access to one section's table; every error names `section.key`.

    An absent key takes the default of its field in the section's settings class
    (`SECTIONS[section]`), so each default is written once, on the field. A caller passes
    `default=` only for a derived default, one that depends on another key, and says so in a
    comment (tests/test_config.py lists the keys that may).
    """

    def __init__(
        self, section: str, table: Mapping[str, object], settings_class: type | None = None
    ) -> None:
        """`settings_class` gives the defaults and bounds; default: `SECTIONS[section]`'s (a
        `[[sinks]]` entry passes its type's class, its `section` being `sinks[i]`)."""
        self._section, self._table = section, table
        self._class = SECTIONS[section] if settings_class is None else settings_class
        self._fields = {f.name: f for f in dataclasses.fields(self._class)}
        self._defaults = {f.name: f.default for f in self._fields.values()}

    def path(self, key: str) -> str:
        return f"{self._section}.{key}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path(key), problem)

    def field_default(self, key: str) -> object:
        """The default declared on the field `key` of the section's settings class."""
        default = self._defaults.get(key, dataclasses.MISSING)
        if default is dataclasses.MISSING:
            cls = self._class.__name__
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
            found = self._fields.get(key)
            secret = found is not None and bool(found.metadata.get("secret"))
            got = type(value).__name__ if secret else _describe(value)
            raise self.error(key, f"must be {what}, got {got}")
        return value

    def boolean(self, key: str) -> bool:
        return cast(bool, self._get(key, lambda v: isinstance(v, bool), "true or false"))

    def _in_bounds(self, key: str, value: _N) -> _N:
        """`value` if it is within the key's `BOUNDS` entry, else a ConfigError naming both."""
        minimum, maximum = self._bounds(key)
        if value < minimum:
            raise self.error(key, f"must be >= {figure(minimum)}, got {figure(value)}")
        if value > maximum:
            raise self.error(key, f"must be <= {figure(maximum)}, got {figure(value)}")
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
        found = self._fields.get(key)
        return self._in_bounds(key, value) if found and "minimum" in found.metadata else value

    def _bounds(self, key: str) -> tuple[float, float]:
        meta = self._fields[key].metadata
        return cast(float, meta["minimum"]), cast(float, meta["maximum"])

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
        hint = suggest(value, [cast(str, c) for c in choices])
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


def figure(value: float) -> str:
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
