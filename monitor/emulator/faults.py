"""Seeded fault injection: which ARM request fails, and how.

Faults apply to the ARM surface only, never to the token endpoints or `/_emulator`. The same
seed and the same sequence of requests give the same faults.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any


class Fault(StrEnum):
    """One way a request can go wrong."""

    SERVER_ERROR = "server_error"  # 500, 503 or 504 with an ARM error body
    LATENCY = "latency"  # the answer comes `latency_s` late
    DROP = "drop"  # the connection closes without an answer
    TRUNCATE = "truncate"  # the body stops half-way (Content-Length promises more)
    MALFORMED = "malformed"  # the body is not JSON
    EXPIRED_TOKEN = "expired_token"  # 401 ExpiredAuthenticationToken for a valid token
    FOREIGN_NEXT_LINK = "foreign_next_link"  # a page's nextLink points at another origin


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSettings:
    """The probability of each fault per ARM request (0 to 1), and the injected latency."""

    server_error: float = 0.0
    latency: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    malformed: float = 0.0
    expired_token: float = 0.0
    foreign_next_link: float = 0.0
    latency_s: float = 0.5

    @classmethod
    def mixed(cls, total: float, *, latency_s: float = 0.5) -> FaultSettings:
        """Spread a total fault rate over every kind but foreign nextLinks (tested alone)."""
        kinds = [f for f in Fault if f is not Fault.FOREIGN_NEXT_LINK]
        share = total / len(kinds)
        return cls(latency_s=latency_s, **{k.value: share for k in kinds})

    def updated(self, changes: dict[str, Any]) -> FaultSettings:
        """These settings with `changes` applied.

        Raises:
            ValueError: an unknown name, or a value outside its range.
        """
        names = {f.name for f in fields(self)}
        clean: dict[str, float] = {}
        for name, value in changes.items():
            if name not in names:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: must be a number, got {value!r}")
            if name != "latency_s" and not 0 <= value <= 1:
                raise ValueError(f"{name}: must be between 0 and 1, got {value}")
            if name == "latency_s" and not 0 <= value <= 120:
                raise ValueError(f"latency_s: must be between 0 and 120, got {value}")
            clean[name] = float(value)
        return replace(self, **clean)

    def as_json(self) -> dict[str, float]:
        return asdict(self)


class FaultInjector:
    """Draws faults from one seeded stream and counts what it injected."""

    def __init__(self, settings: FaultSettings, seed: int) -> None:
        self.settings = settings
        self._rng = random.Random(seed)
        self.injected: dict[str, int] = {f.value: 0 for f in Fault}

    def draw(self, fault: Fault) -> bool:
        """Whether this request suffers `fault`; counts it when it does."""
        rate: float = getattr(self.settings, fault.value)
        if rate <= 0:
            return False
        hit: bool = self._rng.random() < rate
        if hit:
            self.injected[fault.value] += 1
        return hit

    def server_status(self) -> int:
        """Which 5xx to send for a SERVER_ERROR fault."""
        return self._rng.choice((500, 503, 504))
