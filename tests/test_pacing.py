"""The budget book: one read budget per subscription and one for the tenant, on a virtual clock."""

from __future__ import annotations

import random

import pytest

from monitor.config import BudgetSettings
from monitor.core.budget import SUBSCRIPTION_READS, TENANT_READS
from monitor.pacing import BudgetBook, core_settings, scope_of_path
from tests.fakes import FakeClock

SUB = "5477101b-5565-4ac2-8e56-6602a898dcbb"


def book(clock: FakeClock, **settings: float) -> BudgetBook:
    return BudgetBook(BudgetSettings(**settings), clock=clock, rng=random.Random(1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/subscriptions", "tenant"),
        (f"/Subscriptions/{SUB.upper()}/resourceGroups/rg", SUB),
        (f"/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults", SUB),
        ("/tenants", "tenant"),
    ],
)
def test_scope_of_path(path: str, scope: str) -> None:
    """A path's scope is its lower-cased subscription id, else the tenant."""
    assert scope_of_path(path) == scope


def test_config_maps_onto_the_core_budget() -> None:
    """reads_per_s and bucket_size become the core's ARM refill and bucket size."""
    settings = BudgetSettings(read_fraction=0.25, floor=10, reads_per_s=4.0, bucket_size=40)
    sub, tenant = core_settings(settings), core_settings(settings, tenant=True)
    for core in (sub, tenant):
        assert (core.arm_refill_per_s, core.arm_bucket_size) == (4.0, 40)
        assert (core.read_fraction, core.floor) == (0.25, 10)
    assert sub.remaining_header == SUBSCRIPTION_READS
    assert tenant.remaining_header == TENANT_READS
    assert tenant.global_header is None


async def test_acquire_waits_on_the_clock_at_the_budget_rate() -> None:
    """After the burst, each read waits 1/rate seconds of clock time."""
    clock = FakeClock()
    budgets = book(clock, read_fraction=0.5, reads_per_s=10.0)
    budget = budgets.budget(SUB)
    capacity, rate = budget.capacity, budget.rate_per_s
    assert capacity == 1.0
    assert rate == pytest.approx(4.9)  # the 5/s share less the burst spread over 10 s
    start = clock.monotonic()
    for _ in range(int(capacity) + 5):  # the burst at once, then 5 more at the rate
        await budgets.acquire(SUB)
    assert clock.monotonic() - start == pytest.approx(5 / rate)
    assert budgets.rate_per_s(SUB) == rate


async def test_a_429_pauses_one_subscription_in_any_case() -> None:
    """A 429 pauses that subscription (whatever the id's case) and no other scope."""
    clock = FakeClock()
    budgets = book(clock)
    assert budgets.throttled(SUB.upper(), 3.0) is True
    assert budgets.throttled(SUB, 3.0) is False
    assert budgets.throttle_count(SUB) == 1
    assert 3.0 <= budgets.delay_s(SUB) <= 4.0 + 1e-9
    assert budgets.delay_s("tenant") == 0.0
    assert budgets.delay_s("0000" + SUB[4:]) == 0.0
    start = clock.monotonic()
    await budgets.acquire(SUB)
    assert clock.monotonic() - start >= 3.0


def test_headers_below_the_floor_slow_the_scope() -> None:
    """A remaining-reads header under the floor pauses until ARM's bucket refills above it."""
    clock = FakeClock()
    budgets = book(clock, floor=50)
    budgets.observe(SUB, {SUBSCRIPTION_READS: "25"})
    assert budgets.delay_s(SUB) == pytest.approx(1.0)


def test_bad_settings_fail_at_construction() -> None:
    """Settings the core budget rejects are reported when the book is built."""
    with pytest.raises(ValueError, match="read_fraction"):
        book(FakeClock(), read_fraction=0.0)
