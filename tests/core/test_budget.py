"""Tests of the per-scope read budget in monitor.core.budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from monitor.core.budget import (
    MAX_RETRY_AFTER_S,
    SPARE_QUIET_S,
    SUBSCRIPTION_GLOBAL_READS,
    SUBSCRIPTION_READS,
    TENANT_READS,
    USER_QUOTA_REMAINING,
    USER_QUOTA_RESETS_AFTER,
    BudgetSettings,
    RateBudget,
    RateModel,
    parse_hms,
    parse_retry_after,
)

EPS = 1e-6


def drain(budget: RateBudget, now: float) -> int:
    """Acquire until refused at `now`; return how many were granted."""
    granted = 0
    while budget.try_acquire(now) == 0.0:
        granted += 1
    return granted


class TestRate:
    def test_defaults_are_half_the_principal_refill(self) -> None:
        """By default the budget spends half of 25/s: 2.5 at once plus 12.25/s, 125 per 10 s."""
        budget = RateBudget()
        assert budget.settings.share_per_s == 12.5
        assert budget.capacity == 2.5
        assert budget.rate_per_s == pytest.approx(12.25)
        assert budget.capacity + budget.rate_per_s * 10 == pytest.approx(125)
        assert budget.model is RateModel.TOKEN_BUCKET

    def test_burst_then_steady_rate(self) -> None:
        """A full bucket grants its capacity at once, then one read per 1/rate seconds."""
        budget = RateBudget(BudgetSettings(burst_s=2.0))  # capacity 25, rate 10
        assert drain(budget, 100.0) == 25
        wait = budget.delay_before_request(100.0)
        assert wait == pytest.approx(1 / 10)
        assert budget.try_acquire(100.0 + wait) == 0.0
        assert drain(budget, 110.0) == 25

    @pytest.mark.parametrize("read_fraction", [0.1, 0.5, 1.0])
    def test_never_more_than_the_share_over_any_window(self, read_fraction: float) -> None:
        """Greedy use for a minute never exceeds read_fraction · 25 reads in any 10 s window."""
        budget = RateBudget(BudgetSettings(read_fraction=read_fraction))
        grants: list[float] = []
        now = 0.0
        while now < 60.0:
            wait = budget.try_acquire(now)
            if wait == 0.0:
                grants.append(now)
            else:
                now += wait
        limit = read_fraction * 25.0 * 10.0
        for i, start in enumerate(grants):
            inside = sum(1 for t in grants[i:] if t < start + 10.0)
            assert inside <= limit + EPS

    def test_delay_does_not_spend(self) -> None:
        """delay_before_request is a pure question."""
        budget = RateBudget(BudgetSettings(burst_s=0.08))  # capacity 1
        assert budget.delay_before_request(0.0) == 0.0
        assert budget.delay_before_request(0.0) == 0.0
        assert budget.try_acquire(0.0) == 0.0
        assert budget.try_acquire(0.0) > 0.0

    def test_spend_creates_debt(self) -> None:
        """Reads spent without asking delay the next grant."""
        budget = RateBudget()
        budget.spend(0.0, reads=50)
        assert budget.delay_before_request(0.0) == pytest.approx(48.5 / 12.25)

    @pytest.mark.parametrize(
        "bad",
        [
            BudgetSettings(read_fraction=0.0),
            BudgetSettings(read_fraction=1.5),
            BudgetSettings(burst_s=0.0),
            BudgetSettings(arm_refill_per_s=math.nan),
        ],
    )
    def test_bad_settings(self, bad: BudgetSettings) -> None:
        """Out-of-range settings raise ValueError."""
        with pytest.raises(ValueError, match="must be"):
            RateBudget(bad)


class TestThrottled:
    def test_pause_honours_retry_after_and_jitter(self) -> None:
        """Nothing is granted before now + Retry-After + jitter, and no burst follows."""
        budget = RateBudget()
        assert budget.observe_throttled("7", now=10.0, jitter_s=0.5) is True
        step = 1 / budget.rate_per_s
        assert budget.delay_before_request(10.0) == pytest.approx(7.5 + step)
        assert budget.try_acquire(17.49) > 0.0
        assert budget.try_acquire(17.5 + step) == 0.0
        assert budget.try_acquire(17.5 + step) > 0.0
        assert budget.throttle_count == 1

    def test_second_429_extends_without_new_pause(self) -> None:
        """A 429 during a pause extends it and reports that no new pause began."""
        budget = RateBudget()
        assert budget.observe_throttled(5, now=0.0) is True
        assert budget.observe_throttled(10, now=1.0) is False
        assert budget.paused_until() == 11.0
        assert budget.throttle_count == 1

    @pytest.mark.parametrize("garbage", [None, "soon", "-3", "nan", "inf", -1.0])
    def test_garbage_retry_after_uses_default(self, garbage: float | str | None) -> None:
        """A missing or garbage Retry-After pauses for the default instead of raising."""
        budget = RateBudget(BudgetSettings(default_retry_after_s=4.0))
        budget.observe_throttled(garbage, now=0.0, jitter_s=math.nan)
        assert budget.paused_until() == 4.0

    def test_a_huge_retry_after_or_jitter_pauses_at_most_an_hour_each(self) -> None:
        """Found by the long fuzz: Retry-After 9e307 plus a jitter of 9e307 paused forever."""
        budget = RateBudget()
        budget.observe_throttled("8.98846567431158e+307", now=10.0, jitter_s=8.98e307)
        assert budget.paused_until() == 10.0 + 2 * MAX_RETRY_AFTER_S
        assert 2 * MAX_RETRY_AFTER_S <= budget.try_acquire(10.0) < 2 * MAX_RETRY_AFTER_S + 1

    @pytest.mark.parametrize(
        ("raw", "seconds"),
        [("30", 30.0), ("0", 0.0), (" 2.5 ", 2.5), ("1e9", MAX_RETRY_AFTER_S), ("inf", None)],
    )
    def test_parse_retry_after(self, raw: str, seconds: float | None) -> None:
        assert parse_retry_after(raw) == seconds


class TestHeaders:
    def test_low_remaining_pauses_until_refilled_above_floor(self) -> None:
        """Remaining 10 under a floor of 50 pauses (50 - 10) / 25 s."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_READS: "10", SUBSCRIPTION_GLOBAL_READS: "3000"}, 5.0)
        assert budget.paused_until() == pytest.approx(5.0 + 40 / 25)
        assert budget.try_acquire(6.0) > 0.0

    def test_low_global_remaining_pauses(self) -> None:
        """The shared bucket's floor is 15× the principal's, refilled at 15× the rate."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_GLOBAL_READS: "0"}, 0.0)
        assert budget.paused_until() == pytest.approx(750 / 375)

    def test_header_names_case_insensitive(self) -> None:
        """Header names match whatever their casing."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_READS.upper(): "0"}, 0.0)
        assert budget.paused_until() == pytest.approx(2.0)

    @pytest.mark.parametrize("value", ["", "abc", "-5", "1.5", "99999999999", " ", "0x10"])
    def test_garbage_ignored(self, value: str) -> None:
        """Garbage header values change nothing and never raise."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_READS: value, SUBSCRIPTION_GLOBAL_READS: value}, 0.0)
        assert budget.paused_until() == -math.inf
        assert budget.model is RateModel.TOKEN_BUCKET

    @pytest.mark.parametrize(("remaining", "limit"), [(11999, 12000), (14999, 15000)])
    def test_hourly_model_recognised(self, remaining: int, limit: int) -> None:
        """Remaining counts above 250 mean the hourly model: pace to half the limit per hour."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_READS: str(remaining)}, 0.0)
        assert budget.model is RateModel.HOURLY
        share = 0.5 * limit / 3600
        assert budget.capacity == 1.0
        assert budget.rate_per_s == pytest.approx(share - 1.0 / 10)
        # Remembered: a later small count (hour nearly spent) does not switch back.
        budget.observe_headers({SUBSCRIPTION_READS: "200"}, 1.0)
        assert budget.model is RateModel.HOURLY

    def test_global_header_means_token_bucket(self) -> None:
        """The global-reads header only exists under the token bucket; it switches back."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_READS: "11999"}, 0.0)
        budget.observe_headers({SUBSCRIPTION_READS: "249", SUBSCRIPTION_GLOBAL_READS: "3749"}, 1.0)
        assert budget.model is RateModel.TOKEN_BUCKET
        assert budget.rate_per_s == pytest.approx(12.25)

    def test_hourly_rate_never_exceeds_token_bucket_rate(self) -> None:
        """A huge hourly count cannot raise the rate above read_fraction of 25/s."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_READS: "9000000"}, 0.0)
        assert budget.rate_per_s <= 12.5

    def test_tenant_budget(self) -> None:
        """The tenant budget reads the tenant header and has no global bucket."""
        budget = RateBudget(BudgetSettings.tenant())
        budget.observe_headers({SUBSCRIPTION_READS: "0", SUBSCRIPTION_GLOBAL_READS: "0"}, 0.0)
        assert budget.paused_until() == -math.inf
        budget.observe_headers({TENANT_READS: "25"}, 0.0)
        assert budget.paused_until() == pytest.approx(1.0)


class TestResourceGraph:
    """Resource Graph's per-user quota: 15 queries per 5 s window, told by `x-ms-user-quota-*`."""

    def test_settings(self) -> None:
        """The quota's own header, floor and refill; no global bucket, no hourly model."""
        s = BudgetSettings.resource_graph()
        assert (s.remaining_header, s.reset_header) == (
            USER_QUOTA_REMAINING,
            USER_QUOTA_RESETS_AFTER,
        )
        assert (s.arm_bucket_size, s.arm_refill_per_s, s.floor) == (15, 3.0, 2)
        assert s.global_header is None
        assert s.detect_hourly is False

    @pytest.mark.parametrize(("resets", "pause"), [("00:00:04", 4.0), ("00:00:00.5", 0.5)])
    def test_below_the_floor_pauses_until_the_reset(self, resets: str, pause: float) -> None:
        """Remaining below the floor with `resets-after` pauses for exactly that long."""
        budget = RateBudget(BudgetSettings.resource_graph())
        budget.observe_headers({USER_QUOTA_REMAINING: "1", USER_QUOTA_RESETS_AFTER: resets}, 7.0)
        assert budget.paused_until() == 7.0 + pause
        assert budget.try_acquire(7.0 + pause - 0.01) > 0.0

    def test_header_names_case_insensitive(self) -> None:
        """Both headers match whatever their casing."""
        budget = RateBudget(BudgetSettings.resource_graph())
        headers = {USER_QUOTA_REMAINING.upper(): "0", "X-Ms-User-Quota-Resets-After": "00:00:03"}
        budget.observe_headers(headers, 0.0)
        assert budget.paused_until() == 3.0

    @pytest.mark.parametrize(
        "garbage", ["", "soon", "4", "00:04", "00:61:00", "-01:00:04", "x:y:z"]
    )
    def test_garbage_reset_falls_back_to_the_refill(self, garbage: str) -> None:
        """An unreadable `resets-after` pauses until the refill lifts remaining to the floor."""
        budget = RateBudget(BudgetSettings.resource_graph())
        budget.observe_headers({USER_QUOTA_REMAINING: "0", USER_QUOTA_RESETS_AFTER: garbage}, 1.0)
        assert budget.paused_until() == pytest.approx(1.0 + 2 / 3.0)

    def test_missing_reset_falls_back_to_the_refill(self) -> None:
        """Without `resets-after`, remaining 1 under the floor of 2 pauses 1 / 3 s."""
        budget = RateBudget(BudgetSettings.resource_graph())
        budget.observe_headers({USER_QUOTA_REMAINING: "1"}, 0.0)
        assert budget.paused_until() == pytest.approx(1 / 3.0)

    def test_at_or_above_the_floor_no_pause(self) -> None:
        """Remaining at the floor does not pause, whatever `resets-after` says."""
        budget = RateBudget(BudgetSettings.resource_graph())
        budget.observe_headers(
            {USER_QUOTA_REMAINING: "2", USER_QUOTA_RESETS_AFTER: "00:00:05"}, 0.0
        )
        assert budget.paused_until() == -math.inf

    @pytest.mark.parametrize("remaining", ["16", "250", "11999"])
    def test_large_remaining_is_not_the_hourly_model(self, remaining: str) -> None:
        """A count above the 15-query window never switches Resource Graph to the hourly model."""
        budget = RateBudget(BudgetSettings.resource_graph())
        budget.observe_headers({USER_QUOTA_REMAINING: remaining}, 0.0)
        assert budget.model is RateModel.TOKEN_BUCKET
        assert budget.rate_per_s == pytest.approx(
            RateBudget(BudgetSettings.resource_graph()).rate_per_s
        )

    def test_arm_headers_ignored(self) -> None:
        """ARM's subscription and global headers say nothing about the Resource Graph quota."""
        budget = RateBudget(BudgetSettings.resource_graph())
        budget.observe_headers({SUBSCRIPTION_READS: "0", SUBSCRIPTION_GLOBAL_READS: "0"}, 0.0)
        assert budget.paused_until() == -math.inf

    def test_arm_budget_ignores_the_reset_header(self) -> None:
        """ARM's subscription budget has no reset header: its refill-based pause stands."""
        budget = RateBudget()
        headers = {SUBSCRIPTION_READS: "10", USER_QUOTA_RESETS_AFTER: "00:10:00"}
        budget.observe_headers(headers, 0.0)
        assert budget.paused_until() == pytest.approx(40 / 25)


class TestParseHms:
    @pytest.mark.parametrize(
        ("raw", "seconds"),
        [
            ("00:00:05", 5.0),
            ("00:02:03.5", 123.5),
            ("01:02:03.5", MAX_RETRY_AFTER_S),  # 3723.5 s: above the hour
            ("00:00:00", 0.0),
            (" 00:00:05 ", 5.0),
            ("0:0:5", 5.0),
            ("00:59:59.999", 3599.999),
            ("01:00:00", 3600.0),
            ("01:00:01", MAX_RETRY_AFTER_S),
            ("999999:00:00", MAX_RETRY_AFTER_S),
        ],
    )
    def test_valid(self, raw: str, seconds: float) -> None:
        """`hh:mm:ss[.fff]` in seconds, capped at MAX_RETRY_AFTER_S."""
        assert parse_hms(raw) == pytest.approx(seconds)

    @pytest.mark.parametrize(
        "raw",
        [
            "",
            "5",
            "00:05",
            "00:00:00:05",
            "a:b:c",
            "00:00:",
            "::",
            "00:60:00",
            "00:00:60",
            "-01:00:00",
            "00:-1:00",
            "00:00:-1",
            "00:00:nan",
            "00:00:inf",
            "1.5:00:00",
            "00:1.5:00",
            None,
            5,
            5.0,
            b"00:00:05",
        ],
    )
    def test_invalid(self, raw: object) -> None:
        """Any other shape, a minute or second of 60 or more, or a negative part is None."""
        assert parse_hms(raw) is None

    @pytest.mark.parametrize(
        "raw",
        ["-00:00:04", "00:-0:05", "+00:00:04", "1_0:00:00", "00:00:1e1", "0 :0 :5", "\u0661:00:00"],
    )
    def test_what_int_and_float_would_take_is_refused(self, raw: str) -> None:
        """Signs, digit separators, inner spaces, exponents, non-ASCII digits: no `hh:mm:ss`
        (found by this test when parse_hms still trusted int() and float())."""
        assert parse_hms(raw) is None

    @given(st.integers(0, 1) | st.integers(0, 2000), st.integers(0, 59), st.integers(0, 59_999))
    def test_round_trip(self, hours: int, minutes: int, millis: int) -> None:
        """Formatted `hh:mm:ss.fff` parses back to its seconds, capped at MAX_RETRY_AFTER_S."""
        raw = f"{hours:02d}:{minutes:02d}:{millis / 1000:06.3f}"
        total = hours * 3600 + minutes * 60 + millis / 1000
        assert parse_hms(raw) == pytest.approx(min(total, MAX_RETRY_AFTER_S))


HEADER_VALUES = st.one_of(
    st.integers(0, 300).map(str),
    st.integers(0, 4000).map(str),
    st.sampled_from(["11999", "14999", "", "x", "-1", "1e3"]),
)


class BudgetMachine(RuleBasedStateMachine):
    """Any sequence of requests, headers and 429s keeps the budget within its rate."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = BudgetSettings()
        self.budget = RateBudget(self.settings)
        self.now = 1000.0
        self.grants: list[float] = []
        self.pauses: list[tuple[float, float]] = []

    @initialize(read_fraction=st.sampled_from([0.1, 0.5, 1.0]), burst_s=st.sampled_from([0.1, 2.0]))
    def configure(self, read_fraction: float, burst_s: float) -> None:
        self.settings = BudgetSettings(read_fraction=read_fraction, burst_s=burst_s)
        self.budget = RateBudget(self.settings)

    @rule(dt=st.floats(0.0, 3.0))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(count=st.integers(1, 30))
    def request(self, count: int) -> None:
        for _ in range(count):
            wait = self.budget.try_acquire(self.now)
            assert wait >= 0.0
            if wait > 0.0:
                break
            for start, end in self.pauses:
                assert not start <= self.now < end - EPS, "granted during a pause"
            self.grants.append(self.now)
            self.check_window()

    @rule()
    def wait_as_told_then_request(self) -> None:
        self.now += self.budget.delay_before_request(self.now)
        self.request(1)

    @rule(reads=st.none() | HEADER_VALUES, global_reads=st.none() | HEADER_VALUES)
    def headers(self, reads: str | None, global_reads: str | None) -> None:
        headers = {}
        if reads is not None:
            headers[SUBSCRIPTION_READS] = reads
        if global_reads is not None:
            headers[SUBSCRIPTION_GLOBAL_READS] = global_reads
        self.budget.observe_headers(headers, self.now)
        if global_reads is not None and global_reads.isdigit():
            floor = self.settings.floor * 15
            if int(global_reads) < floor:
                self.pauses.append((self.now, self.now + (floor - int(global_reads)) / 375))
            if reads is not None and reads.isdigit() and int(reads) < self.settings.floor:
                self.pauses.append((self.now, self.now + (self.settings.floor - int(reads)) / 25))

    @rule(
        retry_after=st.integers(0, 30) | st.sampled_from(["3", "junk", None]),
        jitter=st.floats(0.0, 2.0),
    )
    def throttled(self, retry_after: int | str | None, jitter: float) -> None:
        self.budget.observe_throttled(retry_after, self.now, jitter_s=jitter)
        if isinstance(retry_after, int) or (isinstance(retry_after, str) and retry_after.isdigit()):
            self.pauses.append((self.now, self.now + float(retry_after) + jitter))

    def check_window(self) -> None:
        rate, burst = self.settings.rate_per_s, self.settings.capacity
        last = self.grants[-1]
        n = len(self.grants)
        for i, first in enumerate(self.grants):
            assert n - i <= burst + rate * (last - first) + EPS, "over budget"

    @invariant()
    def rate_never_above_configured(self) -> None:
        assert self.budget.rate_per_s <= self.settings.rate_per_s + EPS
        assert self.budget.capacity <= self.settings.capacity + EPS


BudgetMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBudgetMachine = BudgetMachine.TestCase


class TestCalm:
    def test_a_pause_keeps_it_uncalm_for_five_quiet_minutes(self) -> None:
        """After a 429 the budget is not calm until SPARE_QUIET_S after the pause ended."""
        budget = RateBudget()
        assert budget.calm(0.0)
        budget.observe_throttled("10", now=100.0)
        assert not budget.calm(105.0)
        assert not budget.calm(110.0 + SPARE_QUIET_S - 1)
        assert budget.calm(110.0 + SPARE_QUIET_S)

    @given(remaining=st.integers(0, 250))
    def test_a_falling_remaining_count_is_not_calm(self, remaining: int) -> None:
        """Calm exactly while ARM's last remaining-reads header shows half its bucket or more
        (a lower count that pauses the budget is not calm either)."""
        budget = RateBudget()
        budget.observe_headers({SUBSCRIPTION_READS: str(remaining)}, now=0.0)
        assert budget.calm(1.0) is (remaining * 2 >= 250)
