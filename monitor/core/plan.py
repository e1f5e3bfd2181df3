"""Which vault to poll next and when, given intervals, running jobs and each subscription's rate."""

# Rule: nothing here awaits, sleeps or reads the clock; `now` is a monotonic reading in seconds.
#
# How it works (DESIGN §7). Vaults of one subscription fall in two classes, running (a job is
# in progress) and idle. Within a class every vault has the same interval, so ordering the class
# by last-poll time orders it by due time, whatever the interval is: each class is a heap keyed
# by last-poll time, and the interval is applied when the class's head is read. A vault never
# polled yet sits in a third class, fresh, keyed by the absolute time its first poll is due: a
# stretch of the intervals (say, early first polls found running jobs) never pushes back a vault
# nobody has polled. A small top-level heap holds one entry per (subscription, class), keyed by
# the head's due time; entries are invalidated by version numbers and skipped lazily. Every
# decision is O(log n + log s). The intervals themselves come from `plan_intervals`
# (core/intervals.py), recomputed whenever a subscription's counts, rate or reads per poll change,
# or where its polls see terminal transitions: each subscription counts those its polls of
# running and of idle vaults found (`mark_polled(terminals=…)`), over about the last
# `_TERMINAL_WINDOW` of them, and the idle class's fraction steers its share of a binding rate.

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from monitor.core.intervals import PlanSettings, SubscriptionPlan, plan_intervals
from monitor.core.vaults import VaultRef

__all__ = ["Due", "Planner"]

_IDLE: Final = 0
_RUNNING: Final = 1
_FRESH: Final = 2  # never polled: keyed by the due time itself (its class interval is 0)
_CLASSES: Final = (_IDLE, _RUNNING, _FRESH)
_TERMINAL_WINDOW: Final = 200.0  # terminal transitions the per-class counts remember, about
_TERMINAL_MIN: Final = 20.0  # counted before they steer the split (until then: min_idle_share)


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    """The vault to poll next, the monotonic time it is due at, and whether it is running."""

    vault: VaultRef
    at: float
    running: bool


@dataclass(slots=True, kw_only=True)
class _Vault:
    vault: VaultRef
    sub: _Subscription
    running: bool
    key: float  # last poll start (due = key + interval); while fresh, the first poll's due time
    seq: int = 0
    in_flight: bool = False
    fresh: bool = True  # not polled yet (counted as running or idle all the same)
    respread: bool = False  # first poll paced ahead of its slot: spread the next over the interval


@dataclass(slots=True, kw_only=True)
class _Subscription:
    id: str
    rate_per_s: float
    reads_per_poll: float
    counts: list[int] = field(default_factory=lambda: [0, 0])
    heaps: tuple[list[tuple[float, int, str]], ...] = field(default_factory=lambda: ([], [], []))
    versions: list[int] = field(default_factory=lambda: [0, 0, 0])
    intervals: tuple[float, float, float] = (math.inf, math.inf, 0.0)  # (idle, running, fresh)
    hold_until: float = -math.inf
    in_flight: int = 0  # vaults handed out and not yet put back
    spare: bool = False  # its budget is calm: idle vaults may spend spare reads
    terminals: list[float] = field(default_factory=lambda: [0.0, 0.0])  # seen by (idle, running)


class Planner:
    """Decides which vault is due next; O(log n) per decision, sized for 10,000+ vaults.

    Use from one task: `take_due(now)` hands out a due vault (now in flight, not handed out again)
    or None; `next_due()` says when the next one is due, to sleep until then; `mark_polled` puts
    a vault back with the time its poll started and what it learned (running jobs, reads spent).
    Feed each subscription's usable rate with `set_rate` and pauses (429) with `hold`.
    """

    __slots__ = ("_global", "_seq", "_settings", "_sharing", "_subs", "_vaults")

    def __init__(self, settings: PlanSettings | None = None) -> None:
        """Create an empty planner.

        Raises:
            ValueError: intervals not positive, active above idle, or a share not in (0, 1).
        """
        s = settings or PlanSettings()
        if not 0 < s.active_interval_s <= s.idle_interval_s < math.inf:
            raise ValueError("need 0 < active_interval_s <= idle_interval_s")
        if not 0 < s.min_idle_share < 1 or not 0 < s.reads_ewma_weight <= 1:
            raise ValueError("min_idle_share must be in (0, 1), reads_ewma_weight in (0, 1]")
        if not (s.reads_per_poll > 0 and s.default_rate_per_s > 0):
            raise ValueError("reads_per_poll and default_rate_per_s must be positive")
        limit = s.max_in_flight_per_subscription
        if limit is not None and limit < 1:
            raise ValueError("max_in_flight_per_subscription must be at least 1 (or None)")
        if not (0 <= s.spare_fraction < 1 and s.spare_polls_per_s >= 0):
            raise ValueError("spare_fraction must be in [0, 1), spare_polls_per_s at least 0")
        self._settings = s
        self._vaults: dict[str, _Vault] = {}
        self._subs: dict[str, _Subscription] = {}
        # (due_at, class priority: running first, version, subscription id, class)
        self._global: list[tuple[float, int, int, str, int]] = []
        self._seq = 0
        self._sharing = 0  # subscriptions with vaults: they share `spare_polls_per_s`

    def __len__(self) -> int:
        return len(self._vaults)

    def __contains__(self, vault_key: object) -> bool:
        return vault_key in self._vaults

    # ----------------------------------------------------------------------------------- vaults

    def add_vault(self, vault: VaultRef, now: float, *, running: bool = False) -> None:
        """Start planning one vault; see `add_vaults`."""
        self.add_vaults((vault,), now, running=running)

    def add_vaults(
        self,
        vaults: Iterable[VaultRef],
        now: float,
        *,
        running: bool = False,
        paced: bool = False,
    ) -> None:
        """Start planning vaults; their first polls are spread over their first interval.

        The intervals are computed once all of `vaults` are counted, so add a discovery round
        in one call: the first polls then spread over the interval the whole estate will have.
        Each vault's offset in the interval is a hash of its key, so the same estate always
        spreads the same way and a restart causes no thundering herd. Adding a known vault only
        refreshes its ref.

        With `paced`, the first polls spread over the time the subscription's rate needs to
        poll each of its vaults once (V·c/r), when that is shorter than the interval: vaults
        nobody has polled for a while are served as fast as the budget allows, in the same
        stable order, and still not all at once. Each such vault that is idle after its first
        poll is then next due at its own point of the second half of the interval (the same
        stable fraction), not a whole interval later: otherwise the first round's cluster
        would come back every interval, each round at the budget's full rate, with reads
        waiting for tokens while the rest of the interval has none. Half an interval at least,
        so that second polls do not take reads from a first round still under way.
        """
        fresh: dict[str, VaultRef] = {}
        for vault in vaults:
            known = self._vaults.get(vault.key)
            if known is not None:
                known.vault = vault
            else:
                fresh[vault.key] = vault
        if not fresh:
            return
        cls = _RUNNING if running else _IDLE
        touched: dict[str, _Subscription] = {}
        states: list[_Vault] = []
        for vault in fresh.values():
            sub = self._subscription(vault.subscription_id)
            sub.counts[cls] += 1
            touched[sub.id] = sub
            state = _Vault(vault=vault, sub=sub, running=running, key=now)  # key set below
            self._vaults[vault.key] = state
            states.append(state)
        self._reshare()
        for sub in touched.values():
            self._replan(sub)
        for state in states:
            spread = interval = state.sub.intervals[cls]
            if paced:
                spread = min(spread, self._one_round_s(state.sub))
                state.respread = spread < interval
            state.key = now + spread * _phase(state.vault.key)
            self._push(state)
        for sub in touched.values():
            self._refresh_all(sub)

    def remove_vault(self, vault_key: str) -> bool:
        """Stop planning a vault (e.g. it was deleted); returns whether it was known."""
        state = self._vaults.pop(vault_key, None)
        if state is None:
            return False
        state.seq = -1
        sub = state.sub
        sub.counts[_RUNNING if state.running else _IDLE] -= 1
        if state.in_flight:
            sub.in_flight -= 1  # its poll's mark_polled will find it gone
        self._reshare()
        self._replan(sub)
        self._refresh_all(sub)
        return True

    def set_running(self, vault_key: str, running: bool) -> None:
        """Move a vault between the running and idle classes (no-op if unknown or unchanged).

        Its last poll time is kept, so a vault that starts running is due
        `active_interval_s` after its last poll, which may be at once.
        """
        state = self._vaults.get(vault_key)
        if state is None or state.running == running:
            return
        sub = state.sub
        sub.counts[_RUNNING if state.running else _IDLE] -= 1
        sub.counts[_RUNNING if running else _IDLE] += 1
        state.running = running
        if not state.in_flight:
            self._push(state)
        self._replan(sub)
        self._refresh_all(sub)

    # ---------------------------------------------------------------------------- subscriptions

    def set_rate(self, subscription_id: str, rate_per_s: float, *, spare: bool = False) -> None:
        """Set a subscription's usable reads/s (from its budget) and whether its budget is calm
        enough to spend spare reads on idle vaults (`PlanSettings.spare_fraction`); intervals
        follow.

        Raises:
            ValueError: the rate is not a positive finite number.
        """
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        sub = self._subscription(subscription_id)
        if sub.rate_per_s != rate_per_s or sub.spare != spare:
            sub.rate_per_s, sub.spare = rate_per_s, spare
            self._replan(sub)

    def hold(self, subscription_id: str, until: float) -> None:
        """Hand out no vault of this subscription before `until` (e.g. a 429 pause), and stop
        its spare reads at once (until `set_rate` says its budget is calm again)."""
        sub = self._subscription(subscription_id)
        sub.hold_until = until
        if sub.spare:
            sub.spare = False
            self._replan(sub)
        self._refresh_all(sub)

    def plan_for(self, subscription_id: str) -> SubscriptionPlan:
        """The current plan of a subscription (for metrics, logs and tests)."""
        sub = self._subscription(subscription_id)
        return SubscriptionPlan(
            subscription_id=sub.id,
            rate_per_s=sub.rate_per_s,
            reads_per_poll=sub.reads_per_poll,
            running_vaults=sub.counts[_RUNNING],
            idle_vaults=sub.counts[_IDLE],
            active_interval_s=sub.intervals[_RUNNING],
            idle_interval_s=sub.intervals[_IDLE],
            poll_bound_s=self._poll_bound_s(sub),
            idle_terminal_share=_idle_terminal_share(sub),
        )

    def binds(self, subscription_id: str) -> bool:
        """Whether the subscription's rate, not the configured intervals, decides how often its
        vaults are polled now: an interval was stretched past its configured value."""
        sub = self._subs.get(subscription_id.lower())
        if sub is None:
            return False
        s = self._settings
        return sub.intervals[_IDLE] > s.idle_interval_s or sub.intervals[_RUNNING] > (
            s.active_interval_s
        )

    def _poll_bound_s(self, sub: _Subscription) -> float:
        one_round_s = self._one_round_s(sub)
        return max(self._settings.idle_interval_s, one_round_s / self._settings.min_idle_share) + (
            one_round_s
        )

    @staticmethod
    def _one_round_s(sub: _Subscription) -> float:
        """Seconds the subscription's rate needs to poll each of its vaults once."""
        return (sub.counts[_RUNNING] + sub.counts[_IDLE]) * sub.reads_per_poll / sub.rate_per_s

    # -------------------------------------------------------------------------------- decisions

    def next_due(self) -> Due | None:
        """The vault due soonest and when (possibly in the past); None when none is waiting.

        Does not hand the vault out; on equal due times running vaults come first.
        """
        top = self._peek()
        if top is None:
            return None
        at, state = top
        return Due(vault=state.vault, at=at, running=state.running)

    def next_due_at(self) -> float | None:
        """`next_due().at` without building a `Due` (the dispatcher asks after every poll)."""
        top = self._peek()
        return None if top is None else top[0]

    def take_due(self, now: float) -> VaultRef | None:
        """Hand out the vault due soonest if it is due at `now`, marking it in flight.

        An in-flight vault is not handed out again until `mark_polled` (or `release`).
        """
        top = self._peek()
        if top is None or top[0] > now:
            return None
        state = top[1]
        cls = _class_of(state)
        heapq.heappop(state.sub.heaps[cls])
        state.in_flight = True
        state.seq = -1
        state.sub.in_flight += 1
        if self._at_limit(state.sub):
            self._refresh_all(state.sub)
        else:
            self._refresh(state.sub, cls)
        return state.vault

    def mark_polled(
        self,
        vault_key: str,
        polled_at: float,
        *,
        running: bool | None = None,
        reads: float | None = None,
        terminals: int = 0,
    ) -> bool:
        """Put a vault back after a poll that started at `polled_at`.

        Args:
            vault_key: the vault's `VaultRef.key`.
            polled_at: when the poll started (monotonic seconds); the next is due an interval later.
            running: whether the vault now has a running job (None: unchanged).
            reads: reads the poll cost, to refine the subscription's reads-per-poll estimate.
            terminals: terminal transitions the poll saw (not a first poll's history), counted
                for the class the vault was in when it was polled.

        Returns:
            False when the vault was removed meanwhile (nothing to put back).
        """
        state = self._vaults.get(vault_key)
        if state is None:
            return False
        sub = state.sub
        # Before its place is given back: a subscription at its limit published nothing.
        only_its_class = state.in_flight and not self._at_limit(sub)
        changed = False
        if terminals > 0 and not state.fresh:
            seen = sub.terminals
            seen[_RUNNING if state.running else _IDLE] += terminals
            total = seen[0] + seen[1]
            if total > _TERMINAL_WINDOW:
                seen[0], seen[1] = (n * _TERMINAL_WINDOW / total for n in seen)
            changed = True
        if running is not None and running != state.running:
            sub.counts[_RUNNING if state.running else _IDLE] -= 1
            sub.counts[_RUNNING if running else _IDLE] += 1
            state.running = running
            changed = True
        if reads is not None and reads > 0 and math.isfinite(reads):
            weight = self._settings.reads_ewma_weight
            sub.reads_per_poll += weight * (max(reads, 1.0) - sub.reads_per_poll)
            changed = True
        if state.in_flight:
            state.in_flight = False
            sub.in_flight -= 1
        state.key = polled_at
        if state.fresh and state.respread and not state.running:
            # A paced first poll of a vault now idle: the next is due at the vault's own point
            # of the second half of its interval (half an interval at least, so that the
            # second polls do not take reads from the first round still under way).
            interval = sub.intervals[_IDLE]
            if math.isfinite(interval):
                state.key = polled_at - interval * (1.0 - _phase(state.vault.key)) / 2
        state.fresh = state.respread = False
        self._push(state)
        if changed:
            self._replan(sub)
        if only_its_class:
            # It came back from flight (it sat in no heap): only the class it joins has a new
            # entry. The other classes' heads, the hold and the limit are as they were, and
            # `_replan` re-published the classes whose interval changed.
            self._refresh(sub, _class_of(state))
        else:
            self._refresh_all(sub)
        return True

    def release(self, vault_key: str) -> bool:
        """Put an in-flight vault back unpolled (e.g. the poll was cancelled); due as before."""
        state = self._vaults.get(vault_key)
        if state is None or not state.in_flight:
            return False
        state.in_flight = False
        state.sub.in_flight -= 1
        self._push(state)
        self._refresh_all(state.sub)
        return True

    # -------------------------------------------------------------------------------- internals

    def _subscription(self, subscription_id: str) -> _Subscription:
        key = subscription_id.lower()
        sub = self._subs.get(key)
        if sub is None:
            s = self._settings
            sub = _Subscription(
                id=key, rate_per_s=s.default_rate_per_s, reads_per_poll=s.reads_per_poll
            )
            self._subs[key] = sub
            self._replan(sub)
        return sub

    def _replan(self, sub: _Subscription) -> None:
        active, idle = plan_intervals(
            self._settings,
            running=sub.counts[_RUNNING],
            idle=sub.counts[_IDLE],
            rate_per_s=sub.rate_per_s,
            reads_per_poll=sub.reads_per_poll,
            spare_per_s=self._spare_per_s(sub),
            idle_terminal_share=_idle_terminal_share(sub),
        )
        if (idle, active) != sub.intervals[:2]:
            sub.intervals = (idle, active, 0.0)
            self._refresh(sub, _IDLE)
            self._refresh(sub, _RUNNING)

    def _spare_per_s(self, sub: _Subscription) -> float:
        """The spare reads/s `sub`'s idle vaults may spend: its share of the rate, and its
        equal part of the process's extra polls, in reads."""
        s = self._settings
        if not sub.spare or s.spare_fraction <= 0:
            return 0.0
        polls = s.spare_polls_per_s / max(1, self._sharing)
        return min(s.spare_fraction * sub.rate_per_s, polls * sub.reads_per_poll)

    def _reshare(self) -> None:
        """Recount the subscriptions with vaults; when the count changes, every subscription's
        part of `spare_polls_per_s` changes: replan them all (discovery-time only)."""
        sharing = sum(1 for sub in self._subs.values() if sub.counts[_RUNNING] + sub.counts[_IDLE])
        if sharing == self._sharing:
            return
        self._sharing = sharing
        if self._settings.spare_fraction > 0 and math.isfinite(self._settings.spare_polls_per_s):
            for sub in self._subs.values():
                self._replan(sub)

    def _push(self, state: _Vault) -> None:
        self._seq += 1
        state.seq = self._seq
        heap = state.sub.heaps[_class_of(state)]
        heapq.heappush(heap, (state.key, self._seq, state.vault.key))
        if len(heap) > 64 + 4 * len(self._vaults):
            self._compact(heap)

    def _compact(self, heap: list[tuple[float, int, str]]) -> None:
        live = [e for e in heap if self._live(e)]
        heap[:] = live
        heapq.heapify(heap)

    def _live(self, entry: tuple[float, int, str]) -> bool:
        state = self._vaults.get(entry[2])
        return state is not None and state.seq == entry[1]

    def _at_limit(self, sub: _Subscription) -> bool:
        limit = self._settings.max_in_flight_per_subscription
        return limit is not None and sub.in_flight >= limit

    def _refresh_all(self, sub: _Subscription) -> None:
        for cls in _CLASSES:
            self._refresh(sub, cls)

    def _refresh(self, sub: _Subscription, cls: int) -> None:
        """Re-publish the due time of a class's head in the top-level heap.

        A subscription at its in-flight limit publishes nothing: the old entries go stale, and
        the vault that comes back (`mark_polled`, `release`) republishes both classes.
        """
        heap = sub.heaps[cls]
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        sub.versions[cls] += 1
        if heap and not self._at_limit(sub):
            due = max(heap[0][0] + sub.intervals[cls], sub.hold_until)
            entry = (due, 1 - cls, sub.versions[cls], sub.id, cls)
            heapq.heappush(self._global, entry)
            if len(self._global) > 64 + 8 * len(self._subs):
                self._global = [e for e in self._global if self._subs[e[3]].versions[e[4]] == e[2]]
                heapq.heapify(self._global)

    def _peek(self) -> tuple[float, _Vault] | None:
        glob = self._global
        while glob:
            due, _, version, sub_id, cls = glob[0]
            sub = self._subs[sub_id]
            if sub.versions[cls] != version:
                heapq.heappop(glob)
                continue
            heap = sub.heaps[cls]
            if not heap or not self._live(heap[0]):
                self._refresh(sub, cls)  # the head went stale: republish, then look again
                continue
            return due, self._vaults[heap[0][2]]
        return None


def _idle_terminal_share(sub: _Subscription) -> float | None:
    """The fraction of `sub`'s recent terminal transitions found by polls of idle vaults."""
    total = sub.terminals[_IDLE] + sub.terminals[_RUNNING]
    return sub.terminals[_IDLE] / total if total >= _TERMINAL_MIN else None


def _class_of(state: _Vault) -> int:
    if state.fresh:
        return _FRESH
    return _RUNNING if state.running else _IDLE


def _phase(vault_key: str) -> float:
    """A stable fraction in [0, 1) from the vault key (not `hash()`, which is salted)."""
    digest = hashlib.blake2b(vault_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
