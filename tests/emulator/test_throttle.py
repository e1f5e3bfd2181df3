"""ARM's throttling as the emulator applies it, on a manual clock."""

from __future__ import annotations

import pytest

from monitor.emulator.throttle import Throttle, ThrottleSettings

SUB = "sub-1"


def read(
    throttle: Throttle, now: float, *, scope: str = SUB, principal: str = "p1", wall: float = 0.0
):
    return throttle.check(scope=scope, principal=principal, kind="reads", now=now, wall=wall)


class TestBucket:
    def test_counts_down_then_throttles(self) -> None:
        """250 reads pass with remaining 249..0, the 251st gets 429 with Retry-After ≥ 1."""
        throttle = Throttle(ThrottleSettings())
        seen = [
            int(read(throttle, 0.0).headers["x-ms-ratelimit-remaining-subscription-reads"])
            for _ in range(250)
        ]
        assert seen == list(range(249, -1, -1))
        verdict = read(throttle, 0.0)
        assert not verdict.allowed
        assert verdict.retry_after_s == 1
        assert throttle.stats[(SUB, "p1")].throttled == 1

    def test_refills_at_the_rate(self) -> None:
        """After emptying, two seconds give back 50 reads, not more."""
        throttle = Throttle(ThrottleSettings())
        for _ in range(250):
            read(throttle, 0.0)
        allowed = sum(read(throttle, 2.0).allowed for _ in range(80))
        assert allowed == 50

    def test_principals_have_their_own_buckets_and_share_the_global_one(self) -> None:
        """Another principal is not throttled by the first; both spend the 15× global bucket."""
        throttle = Throttle(ThrottleSettings())
        for _ in range(250):
            read(throttle, 0.0)
        verdict = read(throttle, 0.0, principal="p2")
        assert verdict.allowed
        assert verdict.headers["x-ms-ratelimit-remaining-subscription-global-reads"] == str(
            3750 - 251
        )

    def test_global_bucket_binds_many_principals(self) -> None:
        """Sixteen principals together cannot read more than 15 × 250 at once."""
        throttle = Throttle(ThrottleSettings())
        allowed = sum(
            read(throttle, 0.0, principal=f"p{n}").allowed for n in range(16) for _ in range(250)
        )
        assert allowed == 3750

    def test_tenant_scope_has_its_own_header(self) -> None:
        """Tenant-scoped reads report tenant-reads and no global header."""
        verdict = read(Throttle(ThrottleSettings()), 0.0, scope="tenant")
        assert verdict.headers == {"x-ms-ratelimit-remaining-tenant-reads": "249"}

    def test_tenant_scope_buckets_are_per_principal_and_tenant(self) -> None:
        """One principal's tenant-scoped reads in two tenants spend two buckets; subscription
        buckets do not depend on the tenant (the principal names it)."""
        throttle = Throttle(ThrottleSettings(reads_bucket=2))

        def tenant_read(tenant: str) -> bool:
            return throttle.check(
                scope="tenant", principal="p1", kind="reads", now=0.0, wall=0.0, tenant=tenant
            ).allowed

        assert [tenant_read("t0") for _ in range(3)] == [True, True, False]
        assert [tenant_read("t1") for _ in range(3)] == [True, True, False]
        sub_reads = [
            throttle.check(
                scope=SUB, principal="p1", kind="reads", now=0.0, wall=0.0, tenant=t
            ).allowed
            for t in ("t0", "t1", "t0")
        ]
        assert sub_reads == [True, True, False]


class TestHourly:
    def test_hourly_counter_counts_from_12000_and_resets_on_the_hour(self) -> None:
        """The legacy model reports 11999 first and throttles until the next clock hour."""
        throttle = Throttle(ThrottleSettings(model="hourly", hourly_reads=3))
        wall = 7200.0 + 3000
        values = [read(throttle, 0.0, wall=wall).headers for _ in range(3)]
        assert [v["x-ms-ratelimit-remaining-subscription-reads"] for v in values] == ["2", "1", "0"]
        assert "x-ms-ratelimit-remaining-subscription-global-reads" not in values[0]
        verdict = read(throttle, 0.0, wall=wall)
        assert not verdict.allowed
        assert verdict.retry_after_s == 600
        assert read(throttle, 0.0, wall=10800.0).allowed

    def test_default_hourly_limit(self) -> None:
        """The default hourly model starts at 11999 remaining."""
        throttle = Throttle(ThrottleSettings(model="hourly"))
        assert read(throttle, 0.0).headers["x-ms-ratelimit-remaining-subscription-reads"] == "11999"


class TestStats:
    def test_peak_rates(self) -> None:
        """Peaks over 1 s and 10 s windows are what the busiest window held."""
        throttle = Throttle(ThrottleSettings())
        for n in range(30):  # 30 requests in the first 0.3 s
            read(throttle, n * 0.01)
        for n in range(20):  # then 2 per second for 10 s
            read(throttle, 1.0 + n * 0.5)
        stats = throttle.stats_json()
        row = stats["by_scope"][SUB]  # type: ignore[index]
        assert row["peak_per_s_1s"] == 30
        assert row["peak_per_s_10s"] == pytest.approx(4.8)  # (-0.5, 9.5] holds 30 + 18
        assert row["requests"] == 50
        assert row["throttled_429"] == 0
