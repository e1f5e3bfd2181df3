"""A read budget for one ARM throttling scope: a token bucket fed by rate-limit headers and 429s."""

# Rule: nothing here awaits, sleeps, reads the clock or draws random numbers. `now` is a
# monotonic reading in seconds passed by the caller; jitter is passed in.
#
# The model (DESIGN §6): ARM refills each principal's read bucket at 25/s (250 deep), with a
# subscription-wide bucket 15× that shared by every principal. The monitor spends at most
# `read_fraction` of the per-principal refill from its own bucket of `burst_s` seconds' worth, so
# it never empties ARM's bucket on its own. Remaining-count headers below `floor` mean others
# spend the same bucket: the budget then pauses until ARM's bucket would have refilled above the
# floor. Sovereign clouds still count reads per hour; header values above ARM's bucket size reveal
# that model, and the budget then paces at `read_fraction` of the hourly limit spread over the
# hour. A 429 pauses the whole scope for Retry-After plus jitter.

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "SPARE_QUIET_S",
    "SUBSCRIPTION_GLOBAL_READS",
    "SUBSCRIPTION_READS",
    "TENANT_READS",
    "USER_QUOTA_REMAINING",
    "USER_QUOTA_RESETS_AFTER",
    "BudgetSettings",
    "RateBudget",
    "RateModel",
    "parse_hms",
]

SUBSCRIPTION_READS: Final = "x-ms-ratelimit-remaining-subscription-reads"
SUBSCRIPTION_GLOBAL_READS: Final = "x-ms-ratelimit-remaining-subscription-global-reads"
TENANT_READS: Final = "x-ms-ratelimit-remaining-tenant-reads"
USER_QUOTA_REMAINING: Final = "x-ms-user-quota-remaining"
USER_QUOTA_RESETS_AFTER: Final = "x-ms-user-quota-resets-after"

# Float slack: a wait this short is no wait, a bucket this close to one read holds one.
_SLACK: Final = 1e-9
# A remaining count this large is not a count (or not ARM's); ignore it.
_MAX_REMAINING: Final = 10_000_000
SPARE_QUIET_S: Final = 300.0
"""A budget is not calm (`RateBudget.calm`) until this long after any pause ended: spare reads
come back only after five quiet minutes."""
MAX_RETRY_AFTER_S: Final = 3600.0
"""The longest pause a `Retry-After` can ask for; ARM's longest window is an hour, and a larger
value (a broken proxy, a typo) would otherwise silence a subscription for days."""


class RateModel(StrEnum):
    """How ARM counts reads for this scope, as recognised from the headers."""

    TOKEN_BUCKET = "token_bucket"
    """Public cloud since 2024: a bucket refilled continuously (remaining ≤ bucket size)."""
    HOURLY = "hourly"
    """Sovereign clouds and the legacy model: a counter per hour (remaining e.g. 11999)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSettings:
    """Parameters of one budget; the defaults are the public-cloud subscription-read limits.

    Attributes:
        arm_refill_per_s: ARM's per-principal refill rate (25 reads/s).
        arm_bucket_size: ARM's per-principal bucket (250); larger remaining values mean hourly.
        read_fraction: the share of `arm_refill_per_s` the monitor may spend (0 < f ≤ 1).
        burst_s: the monitor's own bucket holds this many seconds of its share (at least 1 read).
        window_s: over any window this long the monitor spends at most `read_fraction` of ARM's
            refill: the burst is paid for out of the sustained rate (`rate_per_s`), so ARM's
            meters (and our emulator's 10-second peak) never see more than the share.
        floor: below this many remaining reads in ARM's bucket, pause until it refills above it.
        global_multiplier: the subscription-wide bucket's size and refill relative to one
            principal's (15×); its floor scales the same way.
        hourly_default_limit: the hourly read limit assumed until headers show a larger one.
        default_retry_after_s: the pause after a 429 whose Retry-After is missing or garbage.
        remaining_header: the header carrying this scope's remaining reads.
        global_header: the header carrying the shared bucket's remaining reads, if any.
        reset_header: a header saying when the quota refills (`hh:mm:ss`, Resource Graph's
            `x-ms-user-quota-resets-after`); below the floor, the pause lasts until then.
        detect_hourly: whether a remaining count above `arm_bucket_size` means ARM's hourly
            model (Resource Graph's quota is a fixed window: it never does).
    """

    arm_refill_per_s: float = 25.0
    arm_bucket_size: int = 250
    read_fraction: float = 0.5
    burst_s: float = 0.2
    window_s: float = 10.0
    floor: int = 50
    global_multiplier: float = 15.0
    hourly_default_limit: int = 12_000
    default_retry_after_s: float = 5.0
    remaining_header: str = SUBSCRIPTION_READS
    global_header: str | None = SUBSCRIPTION_GLOBAL_READS
    reset_header: str | None = None
    detect_hourly: bool = True

    @classmethod
    def tenant(cls, *, read_fraction: float = 0.5) -> BudgetSettings:
        """Settings for tenant-scoped reads (`GET /subscriptions`): 250 / 25 per s, no global."""
        return cls(read_fraction=read_fraction, remaining_header=TENANT_READS, global_header=None)

    @classmethod
    def resource_graph(cls, *, read_fraction: float = 0.5) -> BudgetSettings:
        """Settings for Resource Graph queries: a per-user quota of 15 queries per 5 s window,
        told by `x-ms-user-quota-remaining` and `-resets-after` (reference e.2)."""
        return cls(
            arm_refill_per_s=3.0,
            arm_bucket_size=15,
            read_fraction=read_fraction,
            floor=2,
            remaining_header=USER_QUOTA_REMAINING,
            global_header=None,
            reset_header=USER_QUOTA_RESETS_AFTER,
            detect_hourly=False,
        )

    @property
    def share_per_s(self) -> float:
        """`read_fraction` of ARM's refill: what the monitor may spend per second on average."""
        return self.arm_refill_per_s * self.read_fraction

    @property
    def capacity(self) -> float:
        """The monitor's own bucket size under the token-bucket model (never below one read)."""
        return max(1.0, self.share_per_s * self.burst_s)

    @property
    def rate_per_s(self) -> float:
        """The sustained refill: the share less the burst spread over `window_s`.

        So `capacity + rate_per_s · window_s == share_per_s · window_s`.
        """
        return max(self.share_per_s - self.capacity / self.window_s, self.share_per_s / 2)


class RateBudget:
    """One scope's read budget (a subscription for one principal, or the tenant).

    Use `try_acquire(now)` before each request: 0.0 means go (one read was spent), anything
    else is how long to wait before asking again. Feed every response's headers to
    `observe_headers` and every 429 to `observe_throttled`. Over any window of T seconds it
    grants at most `capacity + rate_per_s · T` reads, and none while paused.
    """

    __slots__ = (
        "_capacity",
        "_hourly_limit",
        "_model",
        "_paused_until",
        "_rate",
        "_remaining",
        "_settings",
        "_throttle_count",
        "_tokens",
        "_updated_at",
    )

    def __init__(self, settings: BudgetSettings | None = None) -> None:
        """Start with a full (small) bucket at the first call's `now`.

        Raises:
            ValueError: a setting is out of range (read_fraction not in (0, 1], a rate, size or
                burst not positive).
        """
        s = settings or BudgetSettings()
        if not 0.0 < s.read_fraction <= 1.0:
            raise ValueError(f"read_fraction must be in (0, 1], got {s.read_fraction}")
        for name in (
            "arm_refill_per_s",
            "arm_bucket_size",
            "burst_s",
            "window_s",
            "global_multiplier",
        ):
            value = getattr(s, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        self._settings = s
        self._rate = s.rate_per_s
        self._capacity = s.capacity
        self._tokens = self._capacity
        self._updated_at: float | None = None
        self._paused_until = -math.inf
        self._model = RateModel.TOKEN_BUCKET
        self._hourly_limit = s.hourly_default_limit
        self._throttle_count = 0
        self._remaining: int | None = None  # the last remaining-reads header seen

    @property
    def settings(self) -> BudgetSettings:
        """The settings this budget was built with."""
        return self._settings

    @property
    def rate_per_s(self) -> float:
        """The sustained rate this budget grants now (planners size poll intervals on it)."""
        return self._rate

    @property
    def capacity(self) -> float:
        """The most reads this budget grants back to back."""
        return self._capacity

    @property
    def model(self) -> RateModel:
        """The throttling model recognised from the headers so far."""
        return self._model

    @property
    def throttle_count(self) -> int:
        """How many 429s started a new pause."""
        return self._throttle_count

    def paused_until(self) -> float:
        """The monotonic time before which nothing is granted (-inf when never paused)."""
        return self._paused_until

    def calm(self, now: float) -> bool:
        """Whether spare reads may be spent (the planner's `spare_fraction`): no pause (a 429,
        or a remaining count under the floor) ended less than `SPARE_QUIET_S` ago, and ARM's
        last remaining-reads header, if any, still shows at least half its bucket (half the
        hourly limit in the hourly model): a count that falls means another client spends the
        same bucket, and the spare reads stop at once."""
        if now < self._paused_until + SPARE_QUIET_S:
            return False
        if self._remaining is None:
            return True
        full = (
            self._hourly_limit
            if self._model is RateModel.HOURLY
            else self._settings.arm_bucket_size
        )
        return self._remaining * 2 >= full

    def delay_before_request(self, now: float) -> float:
        """Seconds to wait before one read may be made; 0.0 means now. Spends nothing."""
        self._refill(now)
        # Nothing refills during a pause, so the token wait starts when the pause ends.
        wait = self._paused_until - now if self._paused_until > now else 0.0
        if self._tokens < 1.0 - _SLACK:
            wait += (1.0 - self._tokens) / self._rate
        # A caller that sleeps exactly the wait it was told must be served, despite rounding.
        return wait if wait > _SLACK else 0.0

    def try_acquire(self, now: float) -> float:
        """Spend one read if one is available now and return 0.0; else return the wait in s."""
        wait = self.delay_before_request(now)
        if wait == 0.0:
            self._tokens -= 1.0
        return wait

    def spend(self, now: float, reads: int = 1) -> None:
        """Record reads made without asking (e.g. pages of a list already under way).

        The bucket may go negative; later requests then wait until the debt is repaid.
        """
        self._refill(now)
        self._tokens -= reads

    def observe_headers(self, headers: Mapping[str, str], now: float) -> None:
        """Adjust to a response's remaining-count headers; unknown or garbage values are ignored.

        Header names are matched case-insensitively. A remaining count below the floor pauses
        until ARM's bucket would have refilled above it; a count above ARM's bucket size
        switches to the hourly model, and a global-reads header switches back.
        """
        s = self._settings
        remaining = _remaining(headers, s.remaining_header)
        global_remaining = None if s.global_header is None else _remaining(headers, s.global_header)
        if global_remaining is not None:
            # Only the token-bucket model sends the global header.
            self._set_model(RateModel.TOKEN_BUCKET, now)
            global_floor = s.floor * s.global_multiplier
            if global_remaining < global_floor:
                refill = s.arm_refill_per_s * s.global_multiplier
                self._pause(now + (global_floor - global_remaining) / refill)
        if remaining is None:
            return
        self._remaining = remaining
        if s.detect_hourly and remaining > s.arm_bucket_size and global_remaining is None:
            self._hourly_limit = max(self._hourly_limit, remaining + 1)
            self._set_model(RateModel.HOURLY, now)
        resets_s = None if s.reset_header is None else _hms(headers, s.reset_header)
        if remaining < s.floor and resets_s is not None:
            self._pause(now + resets_s)
        elif remaining < s.floor:
            if self._model is RateModel.HOURLY:
                refill = self._hourly_limit / 3600.0
            else:
                refill = s.arm_refill_per_s
            self._pause(now + (s.floor - remaining) / refill)

    def observe_throttled(
        self, retry_after_s: float | str | None, now: float, jitter_s: float = 0.0
    ) -> bool:
        """Pause the whole scope until `now + retry_after_s + jitter_s` after a 429.

        `retry_after_s` may be the raw header text; missing, negative or garbage values use
        `default_retry_after_s`. The bucket is emptied and earns nothing while paused, so the
        pause does not end in a burst.
        Returns True when this starts a new pause (log it), False when it extends one.
        """
        delay = parse_retry_after(retry_after_s)
        if delay is None:
            delay = self._settings.default_retry_after_s
        jitter = min(jitter_s, MAX_RETRY_AFTER_S) if jitter_s > 0.0 else 0.0  # False for NaN
        self._refill(now)
        is_new = now >= self._paused_until
        self._pause(now + delay + jitter)
        self._tokens = min(self._tokens, 0.0)
        if is_new:
            self._throttle_count += 1
        return is_new

    def _pause(self, until: float) -> None:
        if until > self._paused_until:
            self._paused_until = until

    def _set_model(self, model: RateModel, now: float) -> None:
        if model is self._model and model is RateModel.TOKEN_BUCKET:
            return
        self._refill(now)
        s = self._settings
        self._model = model
        if model is RateModel.HOURLY:
            hourly = s.read_fraction * self._hourly_limit / 3600.0
            self._capacity = min(s.capacity, max(1.0, hourly * s.burst_s))
            self._rate = min(s.rate_per_s, max(hourly - self._capacity / s.window_s, hourly / 2))
        else:
            self._rate, self._capacity = s.rate_per_s, s.capacity
        self._tokens = min(self._tokens, self._capacity)

    def _refill(self, now: float) -> None:
        last = self._updated_at
        if last is None or not math.isfinite(now):
            if last is None and math.isfinite(now):
                self._updated_at = now
            return
        if now > last:
            # Paused time earns nothing, so a pause never ends in a burst.
            start = last if last >= self._paused_until else min(now, self._paused_until)
            tokens = self._tokens + (now - start) * self._rate
            self._tokens = tokens if tokens < self._capacity else self._capacity
            self._updated_at = now


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, matched case-insensitively; None when absent."""
    raw = headers.get(name)
    if raw is not None:
        return raw
    lower = name.lower()
    return next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == lower), None)


def _remaining(headers: Mapping[str, str], name: str) -> int | None:
    raw = _header(headers, name)
    if raw is None:
        return None
    try:
        count = int(str(raw).strip())
    except ValueError:
        return None
    return count if 0 <= count <= _MAX_REMAINING else None


_HMS: Final = re.compile(r"([0-9]{1,6}):([0-9]{1,2}):([0-9]{1,2}(?:\.[0-9]{1,9})?)", re.ASCII)


def _hms(headers: Mapping[str, str], name: str) -> float | None:
    """A `hh:mm:ss` header in seconds (at most `MAX_RETRY_AFTER_S`); None when absent or
    unreadable."""
    return parse_hms(_header(headers, name))


def parse_hms(raw: object) -> float | None:
    """`hh:mm:ss` (Resource Graph's `x-ms-user-quota-resets-after`; fractional seconds allowed)
    in seconds, at most `MAX_RETRY_AFTER_S`; None when it is not that shape."""
    if not isinstance(raw, str):
        return None
    match = _HMS.fullmatch(raw.strip())
    if match is None:
        return None
    hours, minutes, seconds = int(match[1]), int(match[2]), float(match[3])
    if minutes >= 60 or seconds >= 60.0:
        return None
    return min(hours * 3600.0 + minutes * 60.0 + seconds, MAX_RETRY_AFTER_S)


def parse_retry_after(raw: float | str | None) -> float | None:
    """A `Retry-After` in seconds, at most `MAX_RETRY_AFTER_S`; None when missing, negative,
    infinite or not a number (ARM sends delta-seconds, never an HTTP date)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value < 0.0:
        return None
    return min(value, MAX_RETRY_AFTER_S)
