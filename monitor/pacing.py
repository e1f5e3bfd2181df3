"""The read budgets of every ARM throttling scope in one book: one per subscription, one tenant."""

# Rule: every coroutine that reads a subscription shares that subscription's RateBudget, so a
# 429 seen by one pauses them all. Time comes from the injected Clock, jitter from the injected
# random.Random; nothing here does I/O.

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Mapping
from typing import Final

from monitor.clock import Clock
from monitor.config import BudgetSettings
from monitor.core import budget as core_budget
from monitor.core.budget import RateBudget

__all__ = [
    "RESOURCE_GRAPH_SCOPE",
    "TENANT_SCOPE",
    "BudgetBook",
    "action_scope",
    "scope_of_path",
]

TENANT_SCOPE: Final = "tenant"
"""The scope of tenant-level reads (`GET /subscriptions`)."""
RESOURCE_GRAPH_SCOPE: Final = "resource-graph"
"""The scope of Resource Graph queries: its per-user quota, apart from ARM's read buckets."""

# The most jitter added to a 429's Retry-After, in seconds (DESIGN §6: "Retry-After plus jitter").
MAX_THROTTLE_JITTER_S: Final = 1.0

_SUBSCRIPTION_IN_PATH: Final = re.compile(r"/subscriptions/([^/?#]+)", re.IGNORECASE)


def scope_of_path(path: str) -> str:
    """The budget scope of an ARM path: its lower-cased subscription id, or `"tenant"`.

    `/Subscriptions/ABC/...` and `/subscriptions/abc/...` are the same scope; `/subscriptions`
    alone (the subscription list) is tenant-scoped.
    """
    match = _SUBSCRIPTION_IN_PATH.search(path)
    return match.group(1).lower() if match else TENANT_SCOPE


def action_scope(subscription_id: str, action: str) -> str:
    """The pause scope of one resource provider action in one subscription
    (`"<subscription>|protectedItems/read"`): a per-action throttle (Recovery Services'
    `ResourceRequestsThrottled`) pauses it alone, never the subscription's other reads."""
    return f"{subscription_id.lower()}|{action}"


def core_settings(settings: BudgetSettings, *, tenant: bool = False) -> core_budget.BudgetSettings:
    """Translate the `[budget]` settings into the core budget's parameters.

    `reads_per_s` → `arm_refill_per_s`, `bucket_size` → `arm_bucket_size`; `read_fraction` and
    `floor` keep their names. The tenant budget reads `x-ms-ratelimit-remaining-tenant-reads`
    and has no subscription-wide bucket.
    """
    base = (
        core_budget.BudgetSettings.tenant(read_fraction=settings.read_fraction)
        if tenant
        else core_budget.BudgetSettings(read_fraction=settings.read_fraction)
    )
    return dataclasses.replace(
        base,
        arm_refill_per_s=settings.reads_per_s,
        arm_bucket_size=settings.bucket_size,
        floor=settings.floor,
    )


class BudgetBook:
    """One `RateBudget` per subscription (by lower-cased id), one for tenant reads and one for
    Resource Graph queries (`RESOURCE_GRAPH_SCOPE`).

    Budgets are created on first use. `acquire(scope)` waits until the scope's budget grants a
    read; `observe` feeds it a response's headers; `throttled` pauses the whole scope after a
    429 for Retry-After plus up to `MAX_THROTTLE_JITTER_S` of jitter.

    Args:
        settings: the `[budget]` settings.
        clock: where `now` comes from and how waiting is done.
        rng: draws the 429 jitter.
    """

    __slots__ = (
        "_actions",
        "_budgets",
        "_clock",
        "_graph",
        "_rng",
        "_subscription",
        "_tenant",
    )

    def __init__(self, settings: BudgetSettings, *, clock: Clock, rng: random.Random) -> None:
        """Store the settings; no budget exists until a scope is used.

        Raises:
            ValueError: the settings are out of the core budget's range.
        """
        self._subscription = core_settings(settings)
        self._tenant = core_settings(settings, tenant=True)
        self._graph = core_budget.BudgetSettings.resource_graph(
            read_fraction=settings.read_fraction
        )
        # Validate once here rather than on the first request.
        RateBudget(self._subscription)
        RateBudget(self._tenant)
        RateBudget(self._graph)
        self._clock = clock
        self._rng = rng
        self._budgets: dict[str, RateBudget] = {}
        self._actions: dict[str, float] = {}  # action scope → monotonic end of its pause

    def __repr__(self) -> str:
        return f"BudgetBook(scopes={len(self._budgets)})"

    def budget(self, scope: str) -> RateBudget:
        """The budget of `scope` (a subscription id in any case, `"tenant"`, `"resource-graph"`,
        or one of those two followed by `:<principal>`), made on demand."""
        key = scope.lower()
        found = self._budgets.get(key)
        if found is None:
            base = key.partition(":")[0]  # `tenant:<principal>`: one principal's tenant reads
            if base == TENANT_SCOPE:
                found = RateBudget(self._tenant)
            elif base == RESOURCE_GRAPH_SCOPE:
                found = RateBudget(self._graph)
            else:
                found = RateBudget(self._subscription)
            self._budgets[key] = found
        return found

    async def acquire(self, scope: str) -> None:
        """Wait until `scope`'s budget grants one read, and spend it; cancellable."""
        budget = self.budget(scope)
        while wait := budget.try_acquire(self._clock.monotonic()):
            await self._clock.sleep(wait)

    def observe(self, scope: str, headers: Mapping[str, str]) -> None:
        """Feed one response's headers (any status) to `scope`'s budget."""
        self.budget(scope).observe_headers(headers, self._clock.monotonic())

    def throttled(self, scope: str, retry_after_s: float | None) -> bool:
        """Pause all of `scope` after a 429 for `retry_after_s` + jitter.

        `retry_after_s` is the answer's Retry-After as `parse_retry_after` read it (ArmClient
        parses each answer's header once); None pauses for `default_retry_after_s`.
        Returns True when this starts a new pause (log it once), False when it extends one.
        """
        jitter_s = self._rng.uniform(0.0, MAX_THROTTLE_JITTER_S)
        now = self._clock.monotonic()
        return self.budget(scope).observe_throttled(retry_after_s, now, jitter_s)

    def calm(self, scope: str) -> bool:
        """Whether `scope`'s budget is calm enough for spare reads (`RateBudget.calm`)."""
        return self.budget(scope).calm(self._clock.monotonic())

    def delay_s(self, scope: str) -> float:
        """Seconds before `scope` would grant a read now (0.0: at once); spends nothing."""
        return self.budget(scope).delay_before_request(self._clock.monotonic())

    def rate_per_s(self, scope: str) -> float:
        """The sustained read rate `scope` is granted now (planners size poll intervals on it)."""
        return self.budget(scope).rate_per_s

    def throttle_count(self, scope: str) -> int:
        """How many 429s started a new pause of `scope`."""
        return self.budget(scope).throttle_count

    def pause_action(self, scope: str, retry_after_s: float | None) -> bool:
        """Pause one action scope (`action_scope`) for `retry_after_s` + jitter (None: the
        subscription default); its subscription's budget is untouched. Returns True when this
        starts a new pause, False when it extends one."""
        now = self._clock.monotonic()
        pause = self._subscription.default_retry_after_s if retry_after_s is None else retry_after_s
        until = now + max(pause, 0.0) + self._rng.uniform(0.0, MAX_THROTTLE_JITTER_S)
        before = self._actions.get(scope)
        self._actions[scope] = max(until, before or until)
        return before is None or before <= now

    def action_pause_s(self, scope: str) -> float:
        """Seconds left of an action scope's pause (0.0: not paused)."""
        until = self._actions.get(scope)
        if until is None:
            return 0.0
        left = until - self._clock.monotonic()
        if left <= 0:
            del self._actions[scope]
            return 0.0
        return left

    def default_retry_after_s(self, scope: str) -> float:
        """The pause a 429 without a usable Retry-After gets."""
        return self.budget(scope).settings.default_retry_after_s
