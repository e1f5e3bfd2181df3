"""Tests of the poll planner, monitor.core.plan, and its interval rule, monitor.core.intervals."""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.budget import BudgetSettings, RateBudget
from monitor.core.intervals import PlanSettings, plan_intervals
from monitor.core.plan import Planner
from monitor.core.vaults import VaultRef, parse_vault_id

EPS = 1e-6
DEFAULTS = PlanSettings()


def vault(sub: int, n: int) -> VaultRef:
    return parse_vault_id(
        f"/subscriptions/{sub:08d}-0000-0000-0000-000000000000/resourceGroups/rg"
        f"/providers/Microsoft.RecoveryServices/vaults/v{n}"
    )


def sub_id(sub: int) -> str:
    return f"{sub:08d}-0000-0000-0000-000000000000"


class TestIntervals:
    def test_configured_when_rate_allows(self) -> None:
        """Within budget, vaults poll at 15 s running and 60 s idle."""
        assert plan_intervals(
            DEFAULTS, running=10, idle=100, rate_per_s=12.5, reads_per_poll=1
        ) == (
            15.0,
            60.0,
        )

    def test_idle_only_stretches_to_round_robin(self) -> None:
        """10,000 idle vaults at 12.5 reads/s poll every 800 s: round robin at the rate."""
        assert plan_intervals(
            DEFAULTS, running=0, idle=10_000, rate_per_s=12.5, reads_per_poll=1
        ) == (
            15.0,
            800.0,
        )

    def test_idle_stretch_first(self) -> None:
        """Idle vaults absorb the shortage while running ones keep 15 s."""
        active, idle = plan_intervals(
            DEFAULTS, running=30, idle=1000, rate_per_s=12.5, reads_per_poll=1
        )
        assert active == 15.0
        assert idle == pytest.approx(1000 / (12.5 - 2))

    def test_idle_keeps_minimum_share(self) -> None:
        """Even with many running vaults, idle ones keep a quarter of the rate."""
        active, idle = plan_intervals(
            DEFAULTS, running=300, idle=1000, rate_per_s=12.5, reads_per_poll=1
        )
        assert 300 / active + 1000 / idle == pytest.approx(12.5)
        assert idle == pytest.approx(1000 / (0.25 * 12.5))
        assert active <= idle

    def test_shared_interval_when_running_would_lag(self) -> None:
        """If running vaults would poll less often than idle ones, all share one interval."""
        active, idle = plan_intervals(
            DEFAULTS, running=1000, idle=10, rate_per_s=12.5, reads_per_poll=1
        )
        assert active == idle == pytest.approx(1010 / 12.5)

    @given(
        running=st.integers(0, 5000),
        idle=st.integers(0, 5000),
        rate=st.floats(0.01, 100),
        reads=st.floats(1, 10),
    )
    def test_never_over_rate_never_below_configured(
        self, running: int, idle: int, rate: float, reads: float
    ) -> None:
        """Planned reads/s ≤ rate (or the configured intervals), active ≤ idle, no shortening."""
        active, idle_s = plan_intervals(
            DEFAULTS, running=running, idle=idle, rate_per_s=rate, reads_per_poll=reads
        )
        assert active >= 15.0
        assert idle_s >= 60.0
        assert active <= idle_s + EPS
        assert reads * (running / active + idle / idle_s) <= rate * (1 + EPS)

    @given(
        running=st.integers(0, 500),
        idle=st.integers(0, 500),
        rate=st.floats(0.01, 100),
        reads=st.floats(1, 10),
        spare=st.floats(0, 100),
    )
    def test_spare_reads_only_use_what_the_intervals_leave(
        self, running: int, idle: int, rate: float, reads: float, spare: float
    ) -> None:
        """With spare reads granted, the plan still never spends more than the rate, adds at
        most `spare_per_s` to it, leaves running vaults their interval, and polls idle vaults
        no more often than the active interval; when the budget binds it changes nothing."""
        base = plan_intervals(
            DEFAULTS, running=running, idle=idle, rate_per_s=rate, reads_per_poll=reads
        )
        active, idle_s = plan_intervals(
            DEFAULTS,
            running=running,
            idle=idle,
            rate_per_s=rate,
            reads_per_poll=reads,
            spare_per_s=spare,
        )
        assert active == base[0]
        assert 15.0 - EPS <= idle_s <= base[1] + EPS
        spent = reads * (running / active + idle / idle_s)
        before = reads * (running / base[0] + idle / base[1])
        assert spent <= max(rate, before) * (1 + EPS)
        assert spent - before <= spare * (1 + EPS) + EPS
        if before > rate * (1 - EPS) or base != (15.0, 60.0):
            assert (active, idle_s) == base  # a binding budget has nothing to spare
        elif idle and min(spare, rate - before) > 1e-3:
            assert idle_s < 60.0  # room and a grant: idle vaults are polled more often

    def test_spare_reads_fill_the_room_down_to_the_active_interval(self) -> None:
        """40 idle vaults at 1.4 reads per poll spend 0.93 of 12.5 reads/s at 60 s; 2 spare
        reads/s bring them to 19.8 s; 6.25 would allow 7.6 s, so the active 15 s holds."""

        def idle_s(spare: float) -> float:
            return plan_intervals(
                DEFAULTS,
                running=0,
                idle=40,
                rate_per_s=12.5,
                reads_per_poll=1.4,
                spare_per_s=spare,
            )[1]

        assert idle_s(2.0) == pytest.approx(40 * 1.4 / (40 * 1.4 / 60 + 2.0))
        assert idle_s(6.25) == 15.0
        assert idle_s(0.0) == 60.0

    def test_bad_rate(self) -> None:
        """A non-positive rate raises ValueError."""
        with pytest.raises(ValueError, match="rate_per_s"):
            plan_intervals(DEFAULTS, running=1, idle=1, rate_per_s=0.0, reads_per_poll=1)


class TestPlanner:
    def test_first_polls_spread_over_first_interval(self) -> None:
        """60 idle vaults added at t=0 come due at distinct times spread over [0, 60)."""
        planner = Planner()
        planner.add_vaults([vault(1, n) for n in range(60)], now=0.0)
        dues = []
        now = 0.0
        while (due := planner.next_due()) is not None:
            now = due.at
            assert planner.take_due(now) == due.vault
            dues.append(now)
        assert len(dues) == 60
        assert min(dues) >= 0.0
        assert max(dues) < 60.0
        assert max(dues) - min(dues) > 40.0  # spread, not a herd
        assert dues == sorted(dues)

    def test_spreading_is_deterministic(self) -> None:
        """Two planners given the same estate plan the same order at the same times."""
        orders = []
        for _ in range(2):
            planner = Planner()
            planner.add_vaults([vault(1, n) for n in range(20)], now=5.0)
            order = []
            while (due := planner.next_due()) is not None:
                planner.take_due(due.at)
                order.append((due.vault.key, due.at))
            orders.append(order)
        assert orders[0] == orders[1]

    def test_first_polls_spread_over_stretched_interval(self) -> None:
        """A large estate added in one call spreads its first polls over the stretched interval."""
        planner = Planner()
        planner.add_vaults([vault(1, n) for n in range(2000)], now=0.0)
        assert planner.plan_for(sub_id(1)).idle_interval_s == pytest.approx(160.0)
        due = planner.next_due()
        assert due is not None
        assert due.at < 1.0
        first_minute = 0
        while (d := planner.next_due()) is not None and d.at < 60.0:
            planner.take_due(d.at)
            first_minute += 1
        assert 600 < first_minute < 900  # about 2000 * 60 / 160 = 750, not 2000

    def test_a_paced_first_round_spreads_the_second_over_the_interval(self) -> None:
        """50 vaults paced over their 4 s first round: their second polls are due across the
        second half of the 60 s interval (each half an interval to an interval after its
        first), not again within 4 s."""
        planner = Planner()
        planner.set_rate(sub_id(1), 12.5)
        vs = [vault(1, n) for n in range(50)]
        planner.add_vaults(vs, now=0.0, paced=True)
        first: dict[str, float] = {}
        while len(first) < 50:
            due = planner.next_due()
            assert due is not None
            taken = planner.take_due(due.at)
            assert taken is not None
            first[taken.key] = due.at
            planner.mark_polled(taken.key, due.at)
        assert max(first.values()) <= 50 / 12.5
        second: dict[str, float] = {}
        while len(second) < 50:
            due = planner.next_due()
            assert due is not None
            taken = planner.take_due(due.at)
            assert taken is not None
            second[taken.key] = due.at
            planner.mark_polled(taken.key, due.at)
        gaps = [second[k] - first[k] for k in first]
        assert min(gaps) >= 30.0 - EPS
        assert max(gaps) <= 60.0 + EPS
        assert max(second.values()) - min(second.values()) > 0.4 * 60.0
        # From then on every vault keeps its point: the third round is the second plus 60 s.
        due = planner.next_due()
        assert due is not None
        assert due.at == pytest.approx(min(second.values()) + 60.0)

    def test_an_unpaced_first_round_keeps_its_spread(self) -> None:
        """Vaults spread over the whole interval at once are next due a whole interval later."""
        planner = Planner()
        planner.add_vaults([vault(1, n) for n in range(10)], now=0.0)
        first: dict[str, float] = {}
        while len(first) < 10:
            due = planner.next_due()
            assert due is not None
            assert planner.take_due(due.at) == due.vault
            first[due.vault.key] = due.at
            planner.mark_polled(due.vault.key, due.at)
        for _ in range(10):
            due = planner.next_due()
            assert due is not None
            assert due.at == pytest.approx(first[due.vault.key] + 60.0)
            planner.take_due(due.at)
            planner.mark_polled(due.vault.key, due.at)

    def test_take_due_respects_time_and_in_flight(self) -> None:
        """Nothing is handed out early, and an in-flight vault is not handed out twice."""
        planner = Planner()
        v = vault(1, 1)
        planner.add_vault(v, now=0.0)
        due = planner.next_due()
        assert due is not None
        assert planner.take_due(due.at - 0.001) is None
        assert planner.take_due(due.at) == v
        assert planner.next_due() is None
        assert planner.take_due(1e9) is None
        assert planner.mark_polled(v.key, 100.0)
        due = planner.next_due()
        assert due is not None
        assert due.at == 160.0

    def test_running_vault_due_sooner_and_first_on_ties(self) -> None:
        """A running vault is due 15 s after its poll; on equal due times it comes first."""
        planner = Planner()
        a, b = vault(1, 1), vault(1, 2)
        planner.add_vaults([a, b], now=0.0)
        for _ in range(2):
            due = planner.next_due()
            assert due is not None
            planner.take_due(due.at)
        planner.mark_polled(a.key, 100.0)
        planner.mark_polled(b.key, 145.0, running=True)
        due = planner.next_due()
        assert due is not None
        assert (due.vault, due.at, due.running) == (b, 160.0, True)
        planner.take_due(160.0)
        planner.mark_polled(b.key, 145.0)  # same due time as a: running wins the tie
        due = planner.next_due()
        assert due is not None
        assert due.vault == b

    def test_set_running_moves_due_time(self) -> None:
        """A vault that starts running is due an active interval after its last poll."""
        planner = Planner()
        v = vault(1, 1)
        planner.add_vault(v, now=0.0)
        planner.take_due(100.0)
        planner.mark_polled(v.key, 100.0)
        planner.set_running(v.key, True)
        due = planner.next_due()
        assert due is not None
        assert due.at == 115.0
        planner.set_running(v.key, False)
        due = planner.next_due()
        assert due is not None
        assert due.at == 160.0

    def test_remove_and_release(self) -> None:
        """Removed vaults are never handed out; a released one is due again as before."""
        planner = Planner()
        a, b = vault(1, 1), vault(1, 2)
        planner.add_vaults([a, b], now=0.0)
        assert planner.remove_vault(a.key)
        assert not planner.remove_vault(a.key)
        due = planner.next_due()
        assert due is not None
        assert due.vault == b
        assert planner.take_due(due.at) == b
        assert planner.release(b.key)
        again = planner.next_due()
        assert again is not None
        assert again.at == due.at
        assert planner.take_due(due.at) == b
        assert planner.remove_vault(b.key)
        assert not planner.mark_polled(b.key, 10.0)
        assert len(planner) == 0

    def test_hold_pauses_one_subscription_only(self) -> None:
        """A held subscription hands out nothing before the hold ends; others carry on."""
        planner = Planner()
        a, b = vault(1, 1), vault(2, 1)
        planner.add_vaults([a, b], now=0.0)
        planner.hold(sub_id(1), 500.0)
        due = planner.next_due()
        assert due is not None
        assert due.vault == b
        planner.take_due(due.at)
        due = planner.next_due()
        assert due is not None
        assert (due.vault, due.at) == (a, 500.0)

    def test_rate_change_restretches(self) -> None:
        """A lower rate (e.g. hourly model) stretches intervals at once."""
        planner = Planner()
        planner.add_vaults([vault(1, n) for n in range(100)], now=0.0)
        assert planner.plan_for(sub_id(1)).idle_interval_s == 60.0
        planner.set_rate(sub_id(1), 12000 * 0.5 / 3600)
        assert planner.plan_for(sub_id(1)).idle_interval_s == pytest.approx(60.0)
        planner.set_rate(sub_id(1), 0.5)
        plan = planner.plan_for(sub_id(1))
        assert plan.idle_interval_s == pytest.approx(200.0)
        assert plan.planned_rate_per_s == pytest.approx(0.5)

    def test_reads_per_poll_estimate(self) -> None:
        """Polls costing several reads stretch the intervals to keep within the rate."""
        planner = Planner()
        vs = [vault(1, n) for n in range(700)]
        planner.add_vaults(vs, now=0.0)
        for v in vs[:50]:
            planner.take_due(1e6)
            planner.mark_polled(v.key, 0.0, reads=3)
        plan = planner.plan_for(sub_id(1))
        assert plan.reads_per_poll > 2.5
        assert plan.planned_rate_per_s <= 12.5 + EPS

    def test_bad_settings(self) -> None:
        """Inconsistent settings raise ValueError."""
        with pytest.raises(ValueError, match="interval"):
            Planner(PlanSettings(active_interval_s=90.0))
        with pytest.raises(ValueError, match="share"):
            Planner(PlanSettings(min_idle_share=1.0))


def simulate(
    estate: dict[int, tuple[int, int]],
    rates: dict[int, float],
    duration_s: float,
    flip_seed: int | None,
    *,
    paced: bool = False,
) -> tuple[
    Planner, dict[str, list[float]], dict[str, bool], dict[int, list[float]], dict[int, RateBudget]
]:
    """Drive a planner with one RateBudget per subscription, as the scheduler will.

    estate maps subscription → (running vaults, idle vaults). A vault that is due while its
    budget has no read is released and its subscription held until the budget has one.
    """
    planner = Planner()
    budgets: dict[int, RateBudget] = {}
    running_of: dict[str, bool] = {}
    sub_of: dict[str, int] = {}
    for sub, (running, idle) in estate.items():
        budget = RateBudget(BudgetSettings(read_fraction=rates[sub] / 25, burst_s=1.0))
        budgets[sub] = budget
        planner.set_rate(sub_id(sub), budget.rate_per_s)
        vs = [vault(sub, n) for n in range(running + idle)]
        planner.add_vaults(vs[:running], now=0.0, running=True, paced=paced)
        planner.add_vaults(vs[running:], now=0.0, paced=paced)
        for n, v in enumerate(vs):
            running_of[v.key] = n < running
            sub_of[v.key] = sub
    rng = random.Random(flip_seed)
    polls: dict[str, list[float]] = defaultdict(list)
    grants: dict[int, list[float]] = defaultdict(list)
    now = 0.0
    steps = 0
    while (due := planner.next_due()) is not None and due.at <= duration_s:
        steps += 1
        assert steps < 200_000, "the planner keeps handing out vaults without time passing"
        now = max(now, due.at)
        taken = planner.take_due(now)
        assert taken is not None
        sub = sub_of[taken.key]
        wait = budgets[sub].try_acquire(now)
        if wait > 0.0:
            planner.release(taken.key)
            planner.hold(sub_id(sub), now + wait)
            continue
        grants[sub].append(now)
        polls[taken.key].append(now)
        running = running_of[taken.key]
        if flip_seed is not None and rng.random() < 0.1:
            running = not running
            running_of[taken.key] = running
        planner.mark_polled(taken.key, now, running=running, reads=1)
        plan = planner.plan_for(sub_id(sub))
        assert plan.planned_rate_per_s <= plan.rate_per_s * (1 + EPS) + EPS or (
            plan.planned_rate_per_s
            <= (plan.running_vaults / 15 + plan.idle_vaults / 60) * plan.reads_per_poll + EPS
        )
    return planner, polls, running_of, grants, budgets


def assert_within_rate(times: list[float], budget: RateBudget) -> None:
    """Any window [t_i, t_j] holds at most capacity + rate · (t_j - t_i) grants (O(n) check)."""
    rate, capacity = budget.rate_per_s, budget.capacity
    lowest = math.inf
    for k, at in enumerate(times):
        level = k - rate * at  # grants i..j = j - i + 1 ≤ capacity + rate (t_j - t_i)
        lowest = min(lowest, level)
        assert level - lowest + 1 <= capacity + EPS


estates = st.dictionaries(
    st.integers(1, 3), st.tuples(st.integers(0, 15), st.integers(0, 60)), min_size=1, max_size=3
)


class TestPlannerSimulation:
    @settings(max_examples=25, deadline=None)
    @given(
        estate=estates,
        rate=st.sampled_from([0.25, 1.0, 12.5]),
        seed=st.none() | st.integers(0, 9),
        paced=st.booleans(),
    )
    def test_budget_kept_and_no_vault_starved(
        self, estate: dict[int, tuple[int, int]], rate: float, seed: int | None, paced: bool
    ) -> None:
        """Polls stay within each budget and every vault is polled within its bound, whether
        the first round is paced (and its second polls respread) or not."""
        rates = dict.fromkeys(estate, rate)
        duration = 1200.0
        planner, polls, _, grants, budgets = simulate(estate, rates, duration, seed, paced=paced)
        for sub, times in grants.items():
            assert_within_rate(times, budgets[sub])
        for sub, (running, idle) in estate.items():
            bound = planner.plan_for(sub_id(sub)).poll_bound_s
            for n in range(running + idle):
                times = [0.0, *polls[vault(sub, n).key], duration]
                gaps = [b - a for a, b in itertools.pairwise(times)]
                assert max(gaps) <= bound + EPS, (sub, n, max(gaps), bound)

    @settings(max_examples=10, deadline=None)
    @given(
        running=st.integers(1, 20), idle=st.integers(1, 80), rate=st.sampled_from([0.5, 2.0, 12.5])
    )
    def test_running_vaults_polled_more_often(self, running: int, idle: int, rate: float) -> None:
        """Vaults with running jobs are polled at least as often as idle ones."""
        _, polls, running_of, _, _ = simulate({1: (running, idle)}, {1: rate}, 1800.0, None)
        counts_running = [len(polls[k]) for k, r in running_of.items() if r]
        counts_idle = [len(polls[k]) for k, r in running_of.items() if not r]
        assert min(counts_running) >= max(counts_idle) - 1
        assert sum(counts_running) / len(counts_running) >= sum(counts_idle) / len(counts_idle)

    def test_binding_budget_approaches_round_robin(self) -> None:
        """Under a binding budget the subscription polls at (almost) its full rate."""
        _, _, _, grants, budgets = simulate({1: (0, 500)}, {1: 2.0}, 3600.0, None)
        times = grants[1]
        steady = [t for t in times if t >= 600.0]
        # The budget's sustained rate: its 2.0/s share less the burst spread over 10 s.
        assert len(steady) / 3000.0 == pytest.approx(budgets[1].rate_per_s, rel=0.05)
        assert not math.isnan(times[0])


class TestTerminalSteeredShare:
    """Where the terminal transitions are seen steers idle vaults' share of a binding rate."""

    BOUND: ClassVar[dict[str, float]] = {
        "running": 10,
        "idle": 30,
        "rate_per_s": 12.5,
        "reads_per_poll": 1.5,
    }
    ONE_S = PlanSettings(active_interval_s=1.0, idle_interval_s=1.0)

    def test_unknown_or_running_ends_keep_the_minimum_share(self) -> None:
        """With no count yet, or every end seen by a running vault's poll, idle vaults keep
        `min_idle_share`: the plan of a real estate (backups of tens of minutes) is unchanged."""
        legacy = plan_intervals(self.ONE_S, **self.BOUND)  # type: ignore[arg-type]
        running_ends = plan_intervals(self.ONE_S, **self.BOUND, idle_terminal_share=0.0)  # type: ignore[arg-type]
        assert legacy == running_ends
        assert 30 * 1.5 / legacy[1] == pytest.approx(0.25 * 12.5)

    def test_idle_ends_tend_to_round_robin(self) -> None:
        """When idle vaults' polls find most ends, the split tends to one shared interval:
        V·c/r, the round robin that minimises the mean lag of evenly spread transitions."""
        active, idle = plan_intervals(self.ONE_S, **self.BOUND, idle_terminal_share=0.9)  # type: ignore[arg-type]
        assert active == idle == pytest.approx(40 * 1.5 / 12.5)

    def test_the_square_root_split(self) -> None:
        """In between, each class's rate is proportional to √(its share of the ends × its
        vaults): half the ends on 10 running and 30 idle vaults give idle √30/(√10+√30)."""
        active, idle = plan_intervals(self.ONE_S, **self.BOUND, idle_terminal_share=0.5)  # type: ignore[arg-type]
        share = math.sqrt(30) / (math.sqrt(10) + math.sqrt(30))
        assert 30 * 1.5 / idle == pytest.approx(share * 12.5)
        assert 10 * 1.5 / active == pytest.approx((1 - share) * 12.5)

    @given(
        running=st.integers(0, 2000),
        idle=st.integers(0, 2000),
        rate=st.floats(0.01, 100),
        reads=st.floats(1, 10),
        low=st.floats(0, 1),
        high=st.floats(0, 1),
    )
    def test_within_the_rate_and_monotonic(
        self, running: int, idle: int, rate: float, reads: float, low: float, high: float
    ) -> None:
        """Whatever the share: never over the rate, never below the configured intervals,
        active ≤ idle, either class keeps `min_idle_share` of a binding rate (or what it
        needs), and more of the ends seen by idle vaults never polls them less often."""
        low, high = sorted((low, high))

        def plan(share: float) -> tuple[float, float]:
            return plan_intervals(
                DEFAULTS,
                running=running,
                idle=idle,
                rate_per_s=rate,
                reads_per_poll=reads,
                idle_terminal_share=share,
            )

        (active, idle_s), (_, idle_more) = plan(low), plan(high)
        assert active >= 15.0
        assert idle_s >= 60.0
        assert active <= idle_s + EPS
        assert reads * (running / active + idle / idle_s) <= rate * (1 + EPS)
        assert idle_more <= idle_s * (1 + EPS)
        need_idle, need_active = idle * reads / 60.0, running * reads / 15.0
        shared = active == pytest.approx(idle_s)  # one interval for all: no class favoured
        assert shared or idle * reads / idle_s >= min(need_idle, 0.25 * rate) * (1 - EPS)
        assert shared or running * reads / active >= min(need_active, 0.25 * rate) * (1 - EPS)

    def test_the_planner_counts_ends_by_the_class_polled(self) -> None:
        """`mark_polled(terminals=…)` counts for the class the vault was in when polled; the
        share steers the split once 20 are counted, and a first poll's history never counts."""
        planner = Planner(self.ONE_S)
        sub = sub_id(1)
        planner.set_rate(sub, 12.5)
        running = [vault(1, n) for n in range(10)]
        idle = [vault(1, n) for n in range(10, 40)]
        planner.add_vaults(running, 0.0, running=True)
        planner.add_vaults(idle, 0.0)
        for v in running + idle:  # first polls: history, not counted
            assert planner.take_due(1e9) is not None
            planner.mark_polled(v.key, 1.0, reads=1.5, terminals=5)
        assert planner.plan_for(sub).idle_terminal_share is None
        before = planner.plan_for(sub)
        for v in idle[:19]:
            planner.mark_polled(v.key, 2.0, terminals=1)
        assert planner.plan_for(sub).idle_terminal_share is None
        assert planner.plan_for(sub).idle_interval_s == before.idle_interval_s
        planner.mark_polled(running[0].key, 2.0, terminals=1)
        plan = planner.plan_for(sub)
        assert plan.idle_terminal_share == pytest.approx(19 / 20)
        assert plan.idle_interval_s < before.idle_interval_s
        for _ in range(400):  # the window forgets: ends now seen by running vaults only
            planner.mark_polled(running[1].key, 3.0, terminals=1)
        plan = planner.plan_for(sub)
        assert plan.idle_terminal_share is not None
        assert plan.idle_terminal_share < 0.05
        assert plan.idle_interval_s == pytest.approx(before.idle_interval_s, rel=0.05)


class TestBinds:
    """`binds`: whether the rate, not the configured intervals, sets a subscription's polls."""

    def test_binds_only_when_an_interval_is_stretched(self) -> None:
        planner = Planner(PlanSettings(spare_fraction=0.5))
        assert not planner.binds(sub_id(1))  # unknown
        planner.set_rate(sub_id(1), 12.5, spare=True)
        planner.add_vaults([vault(1, n) for n in range(10)], now=0.0)
        assert planner.plan_for(sub_id(1)).idle_interval_s < 60.0  # spare reads: not bound
        assert not planner.binds(sub_id(1))
        planner.add_vaults([vault(1, n) for n in range(10, 1000)], now=0.0)
        assert planner.binds(sub_id(1))  # 1,000 vaults at 60 s need 16.7 reads/s
        assert planner.binds(sub_id(1).upper())
        planner.set_rate(sub_id(1), 20.0)
        assert not planner.binds(sub_id(1))
        planner.set_running(vault(1, 0).key, True)
        planner.set_rate(sub_id(1), 16.0)
        plan = planner.plan_for(sub_id(1))
        assert planner.binds(sub_id(1)) is (
            plan.idle_interval_s > 60.0 or plan.active_interval_s > 15.0
        )

    @settings(max_examples=60, deadline=None)
    @given(
        running=st.integers(0, 100),
        idle=st.integers(0, 400),
        rate=st.floats(0.1, 50.0),
        reads=st.floats(1.0, 3.0),
    )
    def test_binds_means_the_configured_intervals_need_more_than_the_rate(
        self, running: int, idle: int, rate: float, reads: float
    ) -> None:
        planner = Planner(PlanSettings(reads_per_poll=reads))
        planner.set_rate(sub_id(1), rate)
        vs = [vault(1, n) for n in range(running + idle)]
        planner.add_vaults(vs[:running], now=0.0, running=True)
        planner.add_vaults(vs[running:], now=0.0)
        need = reads * (running / 15.0 + idle / 60.0)
        if abs(need - rate) > 1e-6 * rate:
            assert planner.binds(sub_id(1)) is (need > rate)


class TestSpareReads:
    SPARE = PlanSettings(spare_fraction=0.5, spare_polls_per_s=4.0)

    def test_a_calm_budget_polls_idle_vaults_sooner_and_a_hold_stops_it(self) -> None:
        """Idle vaults of a calm subscription are polled at the active interval when the spare
        allows; a 429's hold stops the spare reads at once, and a calm `set_rate` brings them
        back."""
        planner = Planner(self.SPARE)
        planner.set_rate(sub_id(1), 12.5, spare=True)
        planner.add_vaults([vault(1, n) for n in range(10)], now=0.0)
        assert planner.plan_for(sub_id(1)).idle_interval_s == 15.0  # 10/15 s < 4 extra polls/s
        planner.hold(sub_id(1), 30.0)
        assert planner.plan_for(sub_id(1)).idle_interval_s == 60.0
        planner.set_rate(sub_id(1), 12.5, spare=False)  # still not calm: no change
        assert planner.plan_for(sub_id(1)).idle_interval_s == 60.0
        planner.set_rate(sub_id(1), 12.5, spare=True)
        assert planner.plan_for(sub_id(1)).idle_interval_s == 15.0

    def test_the_process_cap_is_shared_by_the_subscriptions(self) -> None:
        """`spare_polls_per_s` bounds the extra polls of all subscriptions together: with two
        subscriptions of 200 idle vaults each, every one adds at most 2 polls/s."""
        planner = Planner(self.SPARE)
        for sub in (1, 2):
            planner.set_rate(sub_id(sub), 12.5, spare=True)
            planner.add_vaults([vault(sub, n) for n in range(200)], now=0.0)
        extra = 0.0
        for sub in (1, 2):
            plan = planner.plan_for(sub_id(sub))
            extra += 200 / plan.idle_interval_s - 200 / 60.0
        assert extra == pytest.approx(4.0)
        planner.remove_vault(vault(2, 0).key)
        for n in range(1, 200):
            planner.remove_vault(vault(2, n).key)
        alone = planner.plan_for(sub_id(1))
        assert 200 / alone.idle_interval_s - 200 / 60.0 == pytest.approx(4.0)

    def test_spare_is_off_without_a_fraction(self) -> None:
        """The default settings (spare_fraction 0) never shorten the idle interval."""
        planner = Planner()
        planner.set_rate(sub_id(1), 12.5, spare=True)
        planner.add_vaults([vault(1, n) for n in range(10)], now=0.0)
        assert planner.plan_for(sub_id(1)).idle_interval_s == 60.0


class TestInFlightLimit:
    def test_a_subscription_at_its_limit_lets_the_others_through(self) -> None:
        """With a limit of 2, a third due vault of one subscription waits; another's goes first."""
        planner = Planner(PlanSettings(max_in_flight_per_subscription=2))
        a = [vault(1, n) for n in range(5)]
        b = vault(2, 1)
        planner.add_vaults(a, now=0.0)
        planner.add_vault(b, now=0.0)
        taken = [planner.take_due(1e6) for _ in range(3)]
        assert None not in taken
        assert sum(1 for v in taken if v is not None and v.subscription_id == sub_id(1)) == 2
        assert b in taken
        assert planner.take_due(1e6) is None  # subscription 1 is full, 2 has nothing left
        first = next(v for v in taken if v is not None and v != b)
        planner.mark_polled(first.key, 1e6)
        again = planner.take_due(1e6)
        assert again is not None
        assert again.subscription_id == sub_id(1)

    def test_removing_an_in_flight_vault_frees_its_place(self) -> None:
        """A vault dropped while in flight does not keep its subscription's slot."""
        planner = Planner(PlanSettings(max_in_flight_per_subscription=1))
        vs = [vault(1, n) for n in range(3)]
        planner.add_vaults(vs, now=0.0)
        taken = planner.take_due(1e6)
        assert taken is not None
        assert planner.take_due(1e6) is None
        planner.remove_vault(taken.key)
        assert planner.take_due(1e6) is not None
        assert not planner.mark_polled(taken.key, 1e6)  # gone: nothing to put back

    def test_zero_limit_is_refused(self) -> None:
        """A limit below one is a programming error."""
        with pytest.raises(ValueError, match="max_in_flight_per_subscription"):
            Planner(PlanSettings(max_in_flight_per_subscription=0))

    @settings(max_examples=60, deadline=None)
    @given(
        limit=st.integers(1, 4),
        sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
        ops=st.lists(st.tuples(st.sampled_from("tmrd"), st.integers(0, 1000)), max_size=200),
    )
    def test_in_flight_never_exceeds_the_limit_and_never_stalls(
        self, limit: int, sizes: list[int], ops: list[tuple[str, int]]
    ) -> None:
        """Any mix of take, put back, release and remove keeps each subscription within its limit,
        and a subscription below its limit with a due vault always hands one out."""
        planner = Planner(PlanSettings(max_in_flight_per_subscription=limit))
        for sub, size in enumerate(sizes, start=1):
            planner.add_vaults([vault(sub, n) for n in range(size)], now=0.0)
        in_flight: dict[str, set[str]] = defaultdict(set)
        known = {
            vault(sub, n).key: vault(sub, n)
            for sub, size in enumerate(sizes, 1)
            for n in range(size)
        }
        now = 0.0
        for op, pick in ops:
            now += 1.0
            flying = sorted(k for keys in in_flight.values() for k in keys)
            if op == "t":
                taken = planner.take_due(now + 1e4)
                if taken is not None:
                    in_flight[taken.subscription_id].add(taken.key)
                else:
                    # Nothing handed out (everything is due by now + 1e4): every subscription
                    # is at its limit or has all of its vaults in flight.
                    for sub_key in {v.subscription_id for v in known.values()}:
                        keys = in_flight[sub_key]
                        mine = [k for k, v in known.items() if v.subscription_id == sub_key]
                        assert len(keys) >= limit or len(mine) == len(keys), (sub_key, keys)
            elif flying:
                key = flying[pick % len(flying)]
                in_flight[known[key].subscription_id].discard(key)
                if op == "m":
                    assert planner.mark_polled(key, now)
                elif op == "r":
                    assert planner.release(key)
                else:
                    assert planner.remove_vault(key)
                    del known[key]
            for keys in in_flight.values():
                assert len(keys) <= limit


class TestPacedFirstPolls:
    def test_paced_first_polls_spread_over_one_budget_round(self) -> None:
        """100 vaults at 12.5 reads/s, paced: all due within 100/12.5 = 8 s, still spread."""
        planner = Planner()
        planner.add_vaults([vault(1, n) for n in range(100)], now=0.0, paced=True)
        dues = []
        while (due := planner.next_due()) is not None:
            assert planner.take_due(due.at) == due.vault
            dues.append(due.at)
        assert len(dues) == 100
        assert max(dues) < 8.0
        assert max(dues) - min(dues) > 6.0  # spread over the round, not a herd at t=0

    def test_pacing_never_spreads_wider_than_the_interval(self) -> None:
        """When one round takes longer than the interval, the interval bounds the spread."""
        planner = Planner()
        planner.add_vaults([vault(1, n) for n in range(2000)], now=0.0, paced=True)
        interval = planner.plan_for(sub_id(1)).idle_interval_s
        last = 0.0
        while (due := planner.next_due()) is not None:
            planner.take_due(due.at)
            last = due.at
        assert last < interval

    def test_a_stretch_of_the_intervals_does_not_push_back_vaults_never_polled(self) -> None:
        """Early first polls that find running jobs stretch the idle interval (40 s → 160 s);
        the vaults not polled yet still come due within the round they were paced over."""
        planner = Planner(PlanSettings(active_interval_s=2, idle_interval_s=4))
        vs = [vault(1, n) for n in range(500)]
        planner.set_rate(sub_id(1), 12.5)
        planner.add_vaults(vs, now=0.0, paced=True)
        first_poll: dict[str, float] = {}
        while (due := planner.next_due()) is not None and due.at <= 60.0:
            taken = planner.take_due(due.at)
            assert taken is not None
            first_poll.setdefault(taken.key, due.at)
            # One vault in four turns out to have a running job.
            running = int(taken.name[1:]) % 4 == 0
            planner.mark_polled(taken.key, due.at, running=running)
        assert planner.plan_for(sub_id(1)).idle_interval_s > 100.0  # the stretch happened
        assert len(first_poll) == 500
        assert max(first_poll.values()) < 500 / 12.5  # every first poll within its round


class _RefreshEverything(Planner):
    """The planner as it was: every `mark_polled` re-publishes all three classes of the
    subscription (the reference the narrower refresh must match)."""

    __slots__ = ()

    def mark_polled(
        self,
        vault_key: str,
        polled_at: float,
        *,
        running: bool | None = None,
        reads: float | None = None,
        terminals: int = 0,
    ) -> bool:
        state = self._vaults.get(vault_key)
        put_back = super().mark_polled(
            vault_key, polled_at, running=running, reads=reads, terminals=terminals
        )
        if state is not None:
            self._refresh_all(state.sub)
        return put_back


class TestNarrowRefresh:
    @settings(max_examples=150, deadline=None)
    @given(
        limit=st.sampled_from([None, 1, 2, 3]),
        sizes=st.lists(st.integers(1, 8), min_size=1, max_size=3),
        ops=st.lists(
            st.tuples(
                st.sampled_from("ttttmmmrhsud"),
                st.integers(0, 1000),
                st.floats(0.0, 120.0),
                st.sampled_from([None, False, True]),
                st.integers(0, 3),
            ),
            max_size=150,
        ),
    )
    def test_same_decisions_as_refreshing_every_class(
        self,
        limit: int | None,
        sizes: list[int],
        ops: list[tuple[str, int, float, bool | None, int]],
    ) -> None:
        """`mark_polled` re-publishes only the class the vault went back to: any mix of takes,
        polls (running or not, reads, terminal ends), releases, holds, rate and running
        changes and removals hands out the same vaults at the same times, with the same
        plans, as re-publishing every class of the subscription."""
        s = PlanSettings(max_in_flight_per_subscription=limit, spare_fraction=0.5)
        narrow, full = Planner(s), _RefreshEverything(s)
        vaults = [vault(sub, n) for sub, size in enumerate(sizes, 1) for n in range(size)]
        for p in (narrow, full):
            p.add_vaults(vaults, now=0.0, paced=True)
        now = 0.0
        flying: list[str] = []
        for op, pick, x, running, terminals in ops:
            now += x / 10
            if op == "t":
                got = [p.take_due(now + x) for p in (narrow, full)]
                assert got[0] == got[1]
                if got[0] is not None:
                    flying.append(got[0].key)
            elif op in "mr" and flying:
                key = flying.pop(pick % len(flying))
                if op == "m":
                    reads = None if terminals == 3 else 1.0 + x / 60
                    for p in (narrow, full):
                        p.mark_polled(key, now, running=running, reads=reads, terminals=terminals)
                else:
                    assert narrow.release(key) == full.release(key)
            elif op == "h":
                sub = sub_id(1 + pick % len(sizes))
                for p in (narrow, full):
                    p.hold(sub, now + x)
            elif op == "s":
                sub = sub_id(1 + pick % len(sizes))
                for p in (narrow, full):
                    p.set_rate(sub, 0.5 + x, spare=running is True)
            elif op == "u":
                key = vaults[pick % len(vaults)].key
                for p in (narrow, full):
                    p.set_running(key, running is True)
            elif op == "d" and len(narrow) > 1:
                key = vaults[pick % len(vaults)].key
                assert narrow.remove_vault(key) == full.remove_vault(key)
                if key in flying:
                    flying.remove(key)
            assert narrow.next_due() == full.next_due()
            due = narrow.next_due()
            assert narrow.next_due_at() == (None if due is None else due.at)
            for n in range(1, len(sizes) + 1):
                assert narrow.plan_for(sub_id(n)) == full.plan_for(sub_id(n))
