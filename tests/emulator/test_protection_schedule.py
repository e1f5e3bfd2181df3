"""The emulator's own schedule arithmetic (protection.py) and its scaled clock.

Expectations are computed here with `zoneinfo` directly, and by hand for known DST dates.
Naive datetimes are local wall-clock times on purpose (and hypothesis' bounds must be naive).
"""

# ruff: noqa: DTZ001

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.emulator.clock import ScaledClock
from monitor.emulator.protection import (
    WINDOWS_ZONES,
    EveryMinutes,
    HourlyWindow,
    TimesOfDay,
    due_times,
    next_due,
    resolve_local,
    vault_policies,
)

VAULT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v"
POLICIES = vault_policies(VAULT)


def z(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


class TestResolveLocal:
    @settings(max_examples=300, deadline=None)
    @given(
        zone_name=st.sampled_from(sorted(set(WINDOWS_ZONES.values()))),
        local=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)),
    )
    def test_earliest_instant_at_or_past_the_wall_time(
        self, zone_name: str, local: datetime
    ) -> None:
        """The run is the first instant whose wall clock reads `local` or later: an existing
        time at its first occurrence, a time in a gap at the gap's end."""
        zone = ZoneInfo(zone_name)
        local = local.replace(second=0, microsecond=0)
        got = resolve_local(local, zone)
        assert got.tzinfo is not None
        assert wall(got, zone) >= local
        assert wall(got - timedelta(minutes=1), zone) < local
        plain = local.replace(tzinfo=zone)
        if wall(plain.astimezone(UTC), zone) == local:  # the time exists
            assert got == plain.astimezone(UTC)  # fold=0: the earlier of two

    def test_known_gap_and_fold(self) -> None:
        """By hand: 02:30 in Sydney's 2026-10-04 gap runs at 03:00 AEDT; 01:30 on Los Angeles'
        2026-11-01 fall-back runs at 01:30 PDT; 02:30 on Berlin's 2026-10-25 at 02:30 CEST."""
        sydney, la, berlin = (
            ZoneInfo("Australia/Sydney"),
            ZoneInfo("America/Los_Angeles"),
            ZoneInfo("Europe/Berlin"),
        )
        assert resolve_local(datetime(2026, 10, 4, 2, 30), sydney) == z("2026-10-03T16:00:00Z")
        assert resolve_local(datetime(2026, 11, 1, 1, 30), la) == z("2026-11-01T08:30:00Z")
        assert resolve_local(datetime(2026, 10, 25, 2, 30), berlin) == z("2026-10-25T00:30:00Z")
        assert resolve_local(datetime(2027, 3, 28, 2, 30), berlin) == z("2027-03-28T01:00:00Z")


class TestDueTimes:
    def test_pacific_daily_across_fall_back(self) -> None:
        """01:30 Pacific: PDT (08:30Z) up to and on 2026-11-01, PST (09:30Z) from 11-02."""
        p = POLICIES["vm_daily"]
        got = due_times(
            p.parts[0].cadence, p.zone, z("2026-10-30T12:00:00Z"), z("2026-11-03T12:00:00Z")
        )
        assert got == [
            z("2026-10-31T08:30:00Z"),
            z("2026-11-01T08:30:00Z"),
            z("2026-11-02T09:30:00Z"),
            z("2026-11-03T09:30:00Z"),
        ]

    def test_west_europe_weekly_across_fall_back(self) -> None:
        """02:30 W. Europe on Wednesdays and Sundays; 2026-10-25 is a Sunday and the fall-back
        day: its first 02:30 is CEST (00:30Z)."""
        p = POLICIES["vm_weekly"]
        got = due_times(
            p.parts[0].cadence, p.zone, z("2026-10-20T00:00:00Z"), z("2026-11-02T00:00:00Z")
        )
        assert got == [
            z("2026-10-21T00:30:00Z"),
            z("2026-10-25T00:30:00Z"),
            z("2026-10-28T01:30:00Z"),
            z("2026-11-01T01:30:00Z"),
        ]

    def test_aus_eastern_daily_across_spring_forward(self) -> None:
        """02:30 AUS Eastern: AEST (16:30Z the day before), the gap day 2026-10-04 at 03:00
        AEDT (16:00Z), then AEDT (15:30Z)."""
        p = POLICIES["files"]
        got = due_times(
            p.parts[0].cadence, p.zone, z("2026-10-02T00:00:00Z"), z("2026-10-05T00:00:00Z")
        )
        assert got == [
            z("2026-10-02T16:30:00Z"),
            z("2026-10-03T16:00:00Z"),
            z("2026-10-04T15:30:00Z"),
        ]

    def test_india_hourly_window_excludes_its_end(self) -> None:
        """06:00 + 4 h while before 22:00 IST (+05:30): 06, 10, 14, 18 local."""
        p = POLICIES["vm_hourly"]
        got = due_times(
            p.parts[0].cadence, p.zone, z("2026-10-01T00:00:00Z"), z("2026-10-02T00:00:00Z")
        )
        assert got == [z(f"2026-10-01T{h}:30:00Z") for h in ("00", "04", "08", "12")]

    def test_sql_full_and_log(self) -> None:
        """Full at 23:00 Eastern (EDT 03:00Z, EST 04:00Z after 2026-11-01); log every 60 min
        at whole hours since the epoch."""
        full, log = (part.cadence for part in POLICIES["sql"].parts)
        zone = POLICIES["sql"].zone
        got = due_times(full, zone, z("2026-10-31T00:00:00Z"), z("2026-11-03T00:00:00Z"))
        assert got == [
            z("2026-10-31T03:00:00Z"),
            z("2026-11-01T03:00:00Z"),
            z("2026-11-02T04:00:00Z"),
        ]
        logs = due_times(log, zone, z("2026-11-01T00:30:00Z"), z("2026-11-01T03:00:00Z"))
        assert logs == [
            z("2026-11-01T01:00:00Z"),
            z("2026-11-01T02:00:00Z"),
            z("2026-11-01T03:00:00Z"),
        ]

    @settings(max_examples=100, deadline=None)
    @given(
        zone_name=st.sampled_from(sorted(WINDOWS_ZONES)),
        day=st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31)),
        hour=st.integers(0, 23),
        minute=st.sampled_from((0, 15, 30, 45)),
    )
    def test_daily_matches_zoneinfo_where_the_time_exists(
        self, zone_name: str, day: date, hour: int, minute: int
    ) -> None:
        """Every daily run is the zoneinfo instant of the local time, one per local day."""
        zone = ZoneInfo(WINDOWS_ZONES[zone_name])
        local = datetime(day.year, day.month, day.day, hour, minute)
        cadence = TimesOfDay(times=(local.time(),))
        start = datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
        got = due_times(cadence, zone, start - timedelta(seconds=1), start + timedelta(hours=25))
        instant = local.replace(tzinfo=zone).astimezone(UTC)
        if wall(instant, zone) == local:
            assert got[0] == instant
        assert len({wall(g, zone).date() for g in got}) == len(got)

    @settings(max_examples=100, deadline=None)
    @given(
        after=st.datetimes(
            min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
        ),
        minutes=st.sampled_from((15, 30, 60, 120, 240)),
    )
    def test_log_at_multiples_since_the_epoch(self, after: datetime, minutes: int) -> None:
        got = next_due(EveryMinutes(minutes=minutes), ZoneInfo("UTC"), after)
        assert got > after
        assert got - after <= timedelta(minutes=minutes)
        assert int(got.timestamp()) % (minutes * 60) == 0

    def test_two_gap_times_give_one_run(self) -> None:
        """02:00 and 02:30 inside Berlin's 2027-03-28 gap both run at 03:00 CEST, once."""
        from datetime import time as tod

        berlin = ZoneInfo("Europe/Berlin")
        cadence = TimesOfDay(times=(tod(2, 0), tod(2, 30)))
        got = due_times(cadence, berlin, z("2027-03-27T12:00:00Z"), z("2027-03-28T12:00:00Z"))
        assert got == [z("2027-03-28T01:00:00Z")]

    def test_hourly_window_steps_in_wall_clock_hours(self) -> None:
        """A Berlin window 00:00 + 1 h for 4 h on the spring-forward day: 00, 01, 03 (02:00 is
        the gap and resolves to 03:00, once)."""
        from datetime import time as tod

        berlin = ZoneInfo("Europe/Berlin")
        cadence = HourlyWindow(start=tod(0, 0), interval_h=1, duration_h=4)
        got = due_times(cadence, berlin, z("2027-03-27T22:30:00Z"), z("2027-03-28T03:00:00Z"))
        assert got == [
            z("2027-03-27T23:00:00Z"),
            z("2027-03-28T00:00:00Z"),
            z("2027-03-28T01:00:00Z"),
        ]

    def test_naive_bounds_are_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            due_times(
                EveryMinutes(minutes=60),
                ZoneInfo("UTC"),
                datetime(2026, 1, 1),
                z("2026-01-02T00:00:00Z"),
            )


class TestScaledClock:
    def test_world_time_runs_speed_times_faster_from_start(self) -> None:
        """World time is start + (now - anchor) * speed; monotonic is real monotonic * speed."""
        start = z("2026-10-25T00:00:00Z")
        anchor = time.time() - 10.0  # the anchor was 10 real seconds ago
        clock = ScaledClock(60.0, start, anchor)
        now = clock.utcnow()
        assert start + timedelta(seconds=600) <= now <= start + timedelta(seconds=660)
        m0 = clock.monotonic()
        time.sleep(0.05)
        assert 60 * 0.05 <= clock.monotonic() - m0 < 60 * 1.0

    def test_two_clocks_with_the_same_numbers_agree(self) -> None:
        start, anchor = z("2026-11-01T08:00:00Z"), time.time()
        a, b = ScaledClock(1000.0, start, anchor), ScaledClock(1000.0, start, anchor)
        assert abs((a.utcnow() - b.utcnow()).total_seconds()) < 5.0  # 5 ms of real time

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="speed"):
            ScaledClock(0.0, z("2026-01-01T00:00:00Z"), 0.0)
        with pytest.raises(ValueError, match="timezone-aware"):
            ScaledClock(2.0, datetime(2026, 1, 1), 0.0)
