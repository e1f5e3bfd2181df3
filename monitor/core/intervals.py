"""How often the vaults of one subscription are polled: the planner's settings and interval rule."""

# Rule: pure arithmetic; nothing here awaits, sleeps or reads the clock.
#
# Intervals per subscription are computed from counts in O(1): at the configured intervals when
# the subscription's rate allows; otherwise idle vaults stretch first, running vaults stretch only
# as far as needed to leave idle vaults `min_idle_share` of the rate (no starvation), and if
# running vaults would end up polled less often than idle ones, every vault shares one interval.
# Which share idle vaults keep when the budget binds follows where terminal transitions are seen
# (`idle_terminal_share`): polling class k's n_k vaults with ρ_k reads/s gives its transitions a
# mean lag of n_k·c/(2ρ_k), so the split that minimises the mean over all of them gives each
# class ρ_k ∝ √(f_k·n_k), f_k being the class's share of the transitions (the square-root rule).
# Where running vaults see nearly every end (backups of tens of minutes) that is the minimum
# share; where jobs start and end between two polls of an idle vault it tends to round robin.
# Either class keeps at least `min_idle_share` of the rate.
# When the rate leaves room and the caller grants spare reads (`spare_per_s`), idle vaults are
# polled more often than `idle_interval_s`, never more often than `active_interval_s`: only
# what the configured intervals leave unspent is used, so running vaults never lose a read.

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PlanSettings", "SubscriptionPlan", "plan_intervals"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSettings:
    """Planner parameters.

    Attributes:
        active_interval_s: poll interval of a vault with a running job (15 s).
        idle_interval_s: poll interval of a vault without one (60 s); at least the active one.
        reads_per_poll: initial estimate of reads one poll costs (pages, detail fetches); the
            planner refines it per subscription from `mark_polled(reads=…)`.
        min_idle_share: the share of a subscription's rate kept for idle vaults when running
            vaults alone would use more, so that no vault starves (0 < share < 1); idle vaults
            get more when they see enough of the terminal transitions, up to leaving running
            vaults this share (see `plan_intervals`).
        default_rate_per_s: a subscription's usable reads/s until `set_rate` says otherwise.
        reads_ewma_weight: weight of the newest observation in the reads-per-poll estimate.
        max_in_flight_per_subscription: most vaults of one subscription handed out and not yet
            put back; a subscription at the limit hands out nothing until one returns (None:
            no limit). Its budget paces the reads; this keeps one subscription from taking
            every worker while the others wait.
        spare_fraction: the most of a subscription's rate spent on polling idle vaults more
            often than `idle_interval_s` when the configured intervals leave it unspent (0:
            never), and only while the subscription's budget is calm (`Planner.set_rate`).
        spare_polls_per_s: the most extra polls per second that spending adds over the whole
            process, shared equally by the subscriptions with vaults (it bounds the CPU that
            spare reads cost; `math.inf`: no bound).
    """

    active_interval_s: float = 15.0
    idle_interval_s: float = 60.0
    reads_per_poll: float = 1.0
    min_idle_share: float = 0.25
    default_rate_per_s: float = 12.5
    reads_ewma_weight: float = 0.2
    max_in_flight_per_subscription: int | None = None
    spare_fraction: float = 0.0
    spare_polls_per_s: float = math.inf


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionPlan:
    """The current plan of one subscription: counts, rate and the effective intervals."""

    subscription_id: str
    rate_per_s: float
    reads_per_poll: float
    running_vaults: int
    idle_vaults: int
    active_interval_s: float
    idle_interval_s: float
    poll_bound_s: float
    """Every vault of the subscription is polled at most this long after its previous poll
    (or after being added), whatever the split between running and idle vaults: the longest
    interval the plan can reach, V·c/(share·r) or the configured idle interval, plus the time
    to serve every vault once at the rate, V·c/r, for the queue in front of a due vault."""
    idle_terminal_share: float | None = None
    """The fraction of recent terminal transitions found by polls of idle vaults (None: too
    few seen yet); it steers the idle share of a binding rate (`plan_intervals`)."""

    @property
    def planned_rate_per_s(self) -> float:
        """Reads per second the plan spends when every vault is polled at its interval."""
        return self.reads_per_poll * (
            self.running_vaults / self.active_interval_s + self.idle_vaults / self.idle_interval_s
        )


def plan_intervals(
    settings: PlanSettings,
    *,
    running: int,
    idle: int,
    rate_per_s: float,
    reads_per_poll: float,
    spare_per_s: float = 0.0,
    idle_terminal_share: float | None = None,
) -> tuple[float, float]:
    """Effective (active, idle) intervals for one subscription; see the module comment.

    The returned intervals never spend more than `rate_per_s`, and the active one never
    exceeds the idle one. They are never shorter than the configured ones, except the idle one
    when the configured intervals spend less than `rate_per_s` and `spare_per_s` (reads/s) is
    granted: then idle vaults also get up to `spare_per_s` of what is left, down to an
    interval of `active_interval_s`.

    When the budget binds with vaults in both classes, idle vaults keep `min_idle_share` of
    the rate, or more when `idle_terminal_share` (the fraction of recent terminal transitions
    that polls of idle vaults found; None: not known yet) says they see enough of them: the
    square-root split of the module comment, never leaving running vaults less than
    `min_idle_share` either.

    Raises:
        ValueError: `rate_per_s` or `reads_per_poll` is not a positive finite number.
    """
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    if not (reads_per_poll > 0 and math.isfinite(reads_per_poll)):
        raise ValueError(f"reads_per_poll must be positive, got {reads_per_poll}")
    t_active, t_idle = settings.active_interval_s, settings.idle_interval_s
    need_active = running * reads_per_poll / t_active
    need_idle = idle * reads_per_poll / t_idle
    if need_active + need_idle <= rate_per_s:
        extra = min(max(spare_per_s, 0.0), rate_per_s - need_active - need_idle)
        if idle == 0 or extra <= 0:
            return t_active, t_idle
        return t_active, max(t_active, min(t_idle, idle * reads_per_poll / (need_idle + extra)))
    if idle == 0:
        active = max(t_active, running * reads_per_poll / rate_per_s)
        return active, max(t_idle, active)
    if running == 0:
        return t_active, max(t_idle, idle * reads_per_poll / rate_per_s)
    # Idle vaults stretch first; running ones keep all they need but idle's share.
    share = _idle_share(settings.min_idle_share, running, idle, idle_terminal_share)
    rate_active = min(need_active, rate_per_s - min(need_idle, share * rate_per_s))
    rate_idle = rate_per_s - rate_active
    active = max(t_active, running * reads_per_poll / rate_active)
    idle_s = max(t_idle, idle * reads_per_poll / rate_idle)
    if active > idle_s:
        # Running vaults would be polled less often than idle ones: share one interval.
        shared = (running + idle) * reads_per_poll / rate_per_s
        return shared, shared
    return active, idle_s


def _idle_share(floor: float, running: int, idle: int, terminal_share: float | None) -> float:
    """Idle vaults' share of a binding rate: √(f·n) of each class, within [floor, 1 − floor]."""
    if terminal_share is None or not 0 <= terminal_share <= 1:
        return floor
    weight_idle = math.sqrt(terminal_share * idle)
    weight_running = math.sqrt((1 - terminal_share) * running)
    if weight_idle + weight_running <= 0:
        return floor
    return min(max(weight_idle / (weight_idle + weight_running), floor), max(floor, 1 - floor))
