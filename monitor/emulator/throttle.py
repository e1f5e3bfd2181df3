"""ARM's request throttling as the emulator applies it: token buckets or hourly counters.

ARM (public cloud, since 2024) keeps a bucket per (subscription, principal) for reads — 250 tokens,
25 per second — plus a subscription-wide bucket 15 times as large shared by every principal, and a
tenant bucket per (principal, tenant) for tenant-scoped reads. Sovereign clouds keep hourly counters
(12,000 reads per hour). Every response reports what is left in `x-ms-ratelimit-remaining-*`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleSettings:
    """Limits the emulator enforces; defaults are ARM's public-cloud read limits."""

    model: Literal["bucket", "hourly"] = "bucket"
    reads_bucket: int = 250
    reads_per_s: float = 25.0
    writes_bucket: int = 200
    writes_per_s: float = 10.0
    global_multiplier: int = 15
    hourly_reads: int = 12_000
    hourly_writes: int = 1_200


class TokenBucket:
    """A bucket of `capacity` tokens refilled at `rate_per_s`; starts full."""

    __slots__ = ("_at", "_tokens", "capacity", "rate_per_s")

    def __init__(self, capacity: float, rate_per_s: float, now: float) -> None:
        self.capacity, self.rate_per_s = capacity, rate_per_s
        self._tokens, self._at = float(capacity), now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now

    def remaining(self, now: float) -> int:
        """Whole tokens left now."""
        self._refill(now)
        return math.floor(self._tokens)

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available (0 when one is)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate_per_s

    def take(self, now: float) -> None:
        """Spend one token; the caller checked `wait_s` first."""
        self._refill(now)
        self._tokens -= 1


class HourlyCounter:
    """The legacy model: `limit` requests per clock hour, reset on the hour."""

    __slots__ = ("_hour", "_used", "capacity")

    def __init__(self, limit: int) -> None:
        self.capacity = limit
        self._hour, self._used = -1, 0

    def _roll(self, wall: float) -> None:
        hour = int(wall // 3600)
        if hour != self._hour:
            self._hour, self._used = hour, 0

    def remaining(self, wall: float) -> int:
        self._roll(wall)
        return self.capacity - self._used

    def wait_s(self, wall: float) -> float:
        self._roll(wall)
        return 0.0 if self._used < self.capacity else (self._hour + 1) * 3600 - wall

    def take(self, wall: float) -> None:
        self._roll(wall)
        self._used += 1


Limiter = TokenBucket | HourlyCounter


@dataclass(slots=True)
class RateWindow:
    """Arrivals in the trailing 1 s and 10 s, and the highest of each seen so far."""

    last_1s: deque[float] = field(default_factory=deque)
    last_10s: deque[float] = field(default_factory=deque)
    peak_1s: int = 0
    peak_10s: int = 0

    def hit(self, now: float) -> None:
        for window, span in ((self.last_1s, 1.0), (self.last_10s, 10.0)):
            window.append(now)
            while window[0] <= now - span:
                window.popleft()
        self.peak_1s = max(self.peak_1s, len(self.last_1s))
        self.peak_10s = max(self.peak_10s, len(self.last_10s))


@dataclass(slots=True)
class Counters:
    """What one (scope, principal) pair asked for and got."""

    requests: int = 0
    served: int = 0
    throttled: int = 0
    rate: RateWindow = field(default_factory=RateWindow)

    def as_json(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "served": self.served,
            "throttled_429": self.throttled,
            "peak_per_s_1s": float(self.rate.peak_1s),
            "peak_per_s_10s": self.rate.peak_10s / 10.0,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The throttle's answer for one request: allowed or not, and the headers to send."""

    allowed: bool
    retry_after_s: int
    headers: dict[str, str]


class Throttle:
    """Every bucket of the emulator, keyed by scope and principal, with per-key statistics.

    Args:
        settings: the limits.
    """

    def __init__(self, settings: ThrottleSettings) -> None:
        self.settings = settings
        self._limiters: dict[tuple[str, ...], Limiter] = {}
        self.stats: dict[tuple[str, str], Counters] = {}  # (scope, principal)
        self.scope_stats: dict[str, Counters] = {}  # scope, all principals together

    def _limiter(self, key: tuple[str, ...], kind: str, now: float) -> Limiter:
        limiter = self._limiters.get(key)
        if limiter is None:
            s = self.settings
            scale = s.global_multiplier if key[0] == "global" else 1
            if s.model == "hourly":
                limiter = HourlyCounter(
                    (s.hourly_writes if kind == "writes" else s.hourly_reads) * scale
                )
            elif kind == "writes":
                limiter = TokenBucket(s.writes_bucket * scale, s.writes_per_s * scale, now)
            else:
                limiter = TokenBucket(s.reads_bucket * scale, s.reads_per_s * scale, now)
            self._limiters[key] = limiter
        return limiter

    def check(
        self,
        *,
        scope: str,
        principal: str,
        kind: Literal["reads", "writes"],
        now: float,
        wall: float,
        tenant: str = "",
    ) -> Verdict:
        """Count one request against its buckets and say whether ARM would serve it.

        Args:
            scope: a subscription id, or "tenant" for tenant-scoped calls.
            principal: who asked (from the bearer token).
            kind: "reads" or "writes".
            now: monotonic seconds (token buckets).
            wall: epoch seconds (hourly counters reset on the clock hour).
            tenant: the token's tenant: a tenant-scoped read spends the bucket of
                (principal, tenant); subscription reads spend (principal, subscription).
        """
        hourly = self.settings.model == "hourly"
        at = wall if hourly else now
        tenant_scope = scope == "tenant"
        key = (
            ("principal", scope, tenant, principal, kind)
            if tenant_scope
            else ("principal", scope, principal, kind)
        )
        own = self._limiter(key, kind, at)
        limiters: list[tuple[str, Limiter]] = [
            (f"{'tenant' if tenant_scope else 'subscription'}-{kind}", own)
        ]
        if not tenant_scope and not hourly:
            limiters.append(
                (f"subscription-global-{kind}", self._limiter(("global", scope, kind), kind, at))
            )
        counters = self.stats.setdefault((scope, principal), Counters())
        scope_counters = self.scope_stats.setdefault(scope, Counters())
        for c in (counters, scope_counters):
            c.requests += 1
            c.rate.hit(now)
        wait = max(limiter.wait_s(at) for _, limiter in limiters)
        allowed = wait <= 0
        if allowed:
            for _, limiter in limiters:
                limiter.take(at)
            counters.served += 1
            scope_counters.served += 1
        else:
            counters.throttled += 1
            scope_counters.throttled += 1
        headers = {
            f"x-ms-ratelimit-remaining-{name}": str(max(0, lim.remaining(at)))
            for name, lim in limiters
        }
        return Verdict(allowed=allowed, retry_after_s=max(1, math.ceil(wait)), headers=headers)

    def stats_json(self) -> dict[str, object]:
        """Requests, 429s and peak rates per scope and per (scope, principal)."""
        return {
            "by_scope": {scope: c.as_json() for scope, c in sorted(self.scope_stats.items())},
            "by_principal": [
                {"scope": scope, "principal": principal, **c.as_json()}
                for (scope, principal), c in sorted(self.stats.items())
            ],
            "throttled_429": sum(c.throttled for c in self.scope_stats.values()),
            "requests": sum(c.requests for c in self.scope_stats.values()),
        }

    def reset_stats(self) -> None:
        """Forget the counters (not the buckets)."""
        self.stats.clear()
        self.scope_stats.clear()


class ActionLimiter:
    """A resource provider's per-action limit: `limit` requests per trailing `window_s` per scope.

    Recovery Services throttles some actions on their own (protected-item reads answer 429
    `ResourceRequestsThrottled` with a `Retry-After` of minutes) apart from ARM's buckets. A
    `limit` of 0 turns it off. Times are world epoch seconds.
    """

    def __init__(self, limit: int = 0, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._hits: dict[str, deque[float]] = {}
        self.throttled = 0

    def configure(self, limit: int, window_s: float) -> None:
        """Change the limit and window (the history of requests is kept).

        Raises:
            ValueError: a negative limit or a window that is not positive.
        """
        if limit < 0 or not window_s > 0:
            raise ValueError("limit must be 0 or more and window_s positive")
        self.limit, self.window_s = limit, window_s

    def check(self, scope: str, wall: float) -> int:
        """Count one request of `scope`; 0 when it is served, else the seconds to wait."""
        if self.limit <= 0:
            return 0
        hits = self._hits.setdefault(scope, deque())
        while hits and hits[0] <= wall - self.window_s:
            hits.popleft()
        if len(hits) < self.limit:
            hits.append(wall)
            return 0
        self.throttled += 1
        return max(1, math.ceil(hits[0] + self.window_s - wall))

    def as_json(self) -> dict[str, float]:
        return {"limit": self.limit, "window_s": self.window_s, "throttled_429": self.throttled}
