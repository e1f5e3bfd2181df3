"""What the settings dataclasses share: units, and the field metadata of a key's bounds."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DAY_S", "MIB", "SECRET", "bounds"]

DAY_S = 86400
"""One day in seconds: the upper bound of most intervals and timeouts."""
MIB = 1024 * 1024

SECRET: Mapping[str, object] = MappingProxyType({"secret": True})
"""Field metadata of a secret: `Settings.redacted` shows it as '***', errors never quote it."""


def bounds(minimum: float, maximum: float) -> Mapping[str, object]:
    """Field metadata: the inclusive range `SectionReader` enforces (see `config.BOUNDS`)."""
    return MappingProxyType({"minimum": minimum, "maximum": maximum})
