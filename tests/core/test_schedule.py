"""Expected runs of policy schedules, against zoneinfo, in every Windows zone the map knows.

The oracle here finds each zone's transitions by scanning its offsets (not through the module),
then says where every scheduled local time runs: at its instant when it exists (the first one
when it occurs twice), at the transition when it falls in a gap. The property tests compare the
module's runs with it around the transitions and on random dates; the examples use the shapes
of the REST spec's policy examples.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tzlocal.windows_tz import win_tz

from monitor.core.schedule import (
    EveryMinutes,
    ExpectedRun,
    HourlyWindow,
    Repeating,
    RunKind,
    Schedule,
    SubSchedule,
    TimesOfDay,
    expected_runs,
    parse_policy_schedule,
    parse_repeating_interval,
    resolve_local,
    windows_zone,
)
from monitor.errors import ParseError

WINDOWS_ZONES = sorted(win_tz)
DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def naive(year: int, month: int, day: int, hour: int = 0) -> datetime:
    """A local wall time (no zone): what a policy's schedule names."""
    return datetime.combine(date(year, month, day), time(hour))


# --------------------------------------------------------------------------------------------
# The oracle: transitions found by scanning zoneinfo's offsets


@cache
def transitions(iana: str, year: int) -> tuple[tuple[datetime, timedelta, timedelta], ...]:
    """Every offset change of `iana` in `year` (UTC): (instant, offset before, offset after)."""
    zone = ZoneInfo(iana)

    def offset(ts: int) -> timedelta:
        value = datetime.fromtimestamp(ts, zone).utcoffset()
        assert value is not None
        return value

    found = []
    ts = int(utc(year, 1, 1).timestamp())
    stop = int(utc(year + 1, 1, 1).timestamp())
    step = 3 * 3600
    while ts < stop:
        if offset(ts) != offset(ts + step):
            low, high = ts, ts + step
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(ts) else (low, middle)
            found.append((datetime.fromtimestamp(high, UTC), offset(low), offset(high)))
        ts += step
    return tuple(found)


def oracle_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Where a scheduled local wall time runs, by the documented rules."""
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    for year in (wall.year - 1, wall.year, wall.year + 1):
        for at, before, after in transitions(zone.key, year):
            naive = at.replace(tzinfo=None)
            if after > before and naive + before <= wall < naive + after:
                return at
    raise AssertionError(f"{wall} neither exists nor falls in a gap of {zone.key}")


def wall_times(policy: dict[str, Any], day: date) -> list[datetime]:
    """The scheduled local wall times of `day`, read straight from the policy JSON."""
    sched = policy["schedulePolicy"]
    if sched["scheduleRunFrequency"] == "Hourly":
        hourly = sched["hourlySchedule"]
        start = datetime.fromisoformat(hourly["scheduleWindowStartTime"]).time()
        opening = datetime.combine(day, start.replace(tzinfo=None))
        count = -(-hourly["scheduleWindowDuration"] // hourly["interval"])
        return [opening + timedelta(hours=k * hourly["interval"]) for k in range(count)]
    if sched["schedulePolicyType"] == "SimpleSchedulePolicyV2":
        inner = sched[
            "dailySchedule" if sched["scheduleRunFrequency"] == "Daily" else "weeklySchedule"
        ]
    else:
        inner = sched
    if (
        sched["scheduleRunFrequency"] == "Weekly"
        and DAY_NAMES[day.weekday()] not in inner["scheduleRunDays"]
    ):
        return []
    times = [
        datetime.fromisoformat(t).time().replace(tzinfo=None) for t in inner["scheduleRunTimes"]
    ]
    return [datetime.combine(day, t) for t in times]


def oracle_runs(
    policy: dict[str, Any], zone: ZoneInfo, start: datetime, end: datetime
) -> set[datetime]:
    day = start.astimezone(zone).date() - timedelta(days=2)
    last = end.astimezone(zone).date() + timedelta(days=2)
    found = set()
    while day <= last:
        for wall in wall_times(policy, day):
            at = oracle_instant(wall, zone)
            if start <= at < end:
                found.add(at)
        day += timedelta(days=1)
    return found


# --------------------------------------------------------------------------------------------
# Strategies


def iso_time(moment: time) -> str:
    return f"2021-12-17T{moment.hour:02d}:{moment.minute:02d}:00Z"


# Quarter-hour times of day, the early hours (where transitions happen) drawn more often.
TIMES = st.one_of(
    st.sampled_from([time(h, m) for h in (0, 1, 2, 3, 23) for m in (0, 30)]),
    st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])),
)
RUN_DAYS = st.lists(st.sampled_from(DAY_NAMES), min_size=1, max_size=7, unique=True)


@cache
def zones_with_changes() -> list[str]:
    """The Windows zones whose IANA zone changes its offset in 2025."""
    return [name for name in WINDOWS_ZONES if transitions(win_tz[name], 2025)]


def affected_times(at: datetime, before: timedelta, after: timedelta) -> list[time]:
    """The quarter-hour wall times a transition skips (a gap) or repeats (a fold)."""
    naive = at.replace(tzinfo=None)
    low, high = naive + min(before, after), naive + max(before, after)
    found: list[time] = []
    moment = low
    while moment < high and len(found) < 96:
        found.append(moment.time())
        moment += timedelta(minutes=15)
    return found


Case = tuple[dict[str, Any], datetime, datetime]


@st.composite
def cases(draw: st.DrawFn, frequency: str | None = None, max_days: int = 4) -> Case:
    """A VM or file-share policy (V1 or V2) in a Windows zone, and a UTC range of up to
    `max_days`; most often in a zone with daylight saving, around one of its transitions, with
    a run time that the transition skips or repeats."""
    zone_name = draw(st.sampled_from(zones_with_changes()) | st.sampled_from(WINDOWS_ZONES))
    year = draw(st.integers(2000, 2037))
    changes = transitions(win_tz[zone_name], year)
    near_a_change = draw(st.integers(0, 3)) > 0
    times = TIMES
    if changes and near_a_change:
        at, before, after = draw(st.sampled_from(changes))
        centre = at
        times = st.sampled_from(affected_times(at, before, after)) | TIMES
    else:
        centre = utc(year, 1, 1) + timedelta(seconds=draw(st.integers(0, 365 * 86400)))
    start = centre - timedelta(minutes=draw(st.integers(0, max_days * 1440)))
    end = start + timedelta(minutes=draw(st.integers(0, max_days * 1440)))
    run_times = draw(st.lists(times, min_size=1, max_size=3, unique=True))
    iso_times = [iso_time(t) for t in run_times]

    frequency = frequency or draw(st.sampled_from(["Daily", "Weekly", "Hourly"]))
    v2 = draw(st.booleans())
    sched: dict[str, Any] = {
        "schedulePolicyType": "SimpleSchedulePolicyV2" if v2 else "SimpleSchedulePolicy",
        "scheduleRunFrequency": frequency,
    }
    if frequency == "Hourly":
        sched["hourlySchedule"] = {
            "interval": draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 24])),
            "scheduleWindowStartTime": iso_times[0],
            "scheduleWindowDuration": draw(st.integers(1, 24)),
        }
    elif v2 and frequency == "Daily":
        sched["dailySchedule"] = {"scheduleRunTimes": iso_times}
    elif v2:
        sched["weeklySchedule"] = {"scheduleRunDays": draw(RUN_DAYS), "scheduleRunTimes": iso_times}
    else:
        sched["scheduleRunTimes"] = iso_times
        if frequency == "Weekly":
            sched["scheduleRunDays"] = draw(RUN_DAYS)
            sched["scheduleWeeklyFrequency"] = 0
    policy = {"backupManagementType": "AzureIaasVM", "timeZone": zone_name, "schedulePolicy": sched}
    return policy, start, end


# --------------------------------------------------------------------------------------------
# Properties


class TestAgainstZoneinfo:
    @PROPERTY
    @given(case=cases())
    def test_runs_are_where_the_oracle_puts_them(self, case: Case) -> None:
        """Every run, and no other, is a scheduled local time's instant or its gap's end."""
        policy, start, end = case
        schedule = parse_policy_schedule(policy)
        runs = [run.at for run in expected_runs(schedule, start, end)]
        assert all(later > earlier for earlier, later in itertools.pairwise(runs))
        assert set(runs) == oracle_runs(policy, schedule.zone, start, end)

    @PROPERTY
    @given(case=cases(max_days=8), cut=st.floats(0, 1))
    def test_ranges_add_up(self, case: Case, cut: float) -> None:
        """The runs of [a, c) are those of [a, b) followed by those of [b, c)."""
        policy, start, end = case
        schedule = parse_policy_schedule(policy)
        middle = start + (end - start) * cut
        whole = expected_runs(schedule, start, end)
        assert whole == expected_runs(schedule, start, middle) + expected_runs(
            schedule, middle, end
        )

    @PROPERTY
    @given(case=cases("Daily"))
    def test_daily_runs_once_a_day_per_run_time(self, case: Case) -> None:
        """Each whole local day in range has one run per existing run time, at its first instant."""
        policy, start, end = case
        schedule = parse_policy_schedule(policy)
        zone = schedule.zone
        runs = [run.at.astimezone(zone) for run in expected_runs(schedule, start, end)]
        day = start.astimezone(zone).date()
        while day <= end.astimezone(zone).date():
            midnight = datetime.combine(day, time())
            whole = start <= oracle_instant(midnight, zone)
            whole = whole and oracle_instant(midnight + timedelta(days=1), zone) <= end
            day += timedelta(days=1)
            if not whole:
                continue
            for wall in wall_times(policy, midnight.date()):
                if oracle_instant(wall, zone).astimezone(zone).replace(tzinfo=None) != wall:
                    continue  # in a gap: its substitute is checked by the oracle test
                same = [r for r in runs if r.replace(tzinfo=None) == wall]
                assert len(same) == 1, (wall, same)
                assert same[0].fold == 0, (wall, same)

    @PROPERTY
    @given(case=cases("Weekly", max_days=15))
    def test_weekly_runs_only_on_its_days(self, case: Case) -> None:
        """A weekly schedule's runs fall on its days (a gap's substitute counts from the gap)."""
        policy, start, end = case
        schedule = parse_policy_schedule(policy)
        (part,) = schedule.parts
        assert isinstance(part.cadence, TimesOfDay)
        assert part.cadence.weekdays is not None
        for run in expected_runs(schedule, start, end):
            local = run.at.astimezone(schedule.zone)
            before = (run.at - timedelta(seconds=1)).astimezone(schedule.zone)
            days = {local.weekday()}
            if before.utcoffset() != local.utcoffset():  # at a transition: the gap's day too
                days.add(before.weekday())
            assert days & part.cadence.weekdays, (run, policy)

    @settings(max_examples=60, deadline=None)
    @given(
        zone_name=st.sampled_from(WINDOWS_ZONES),
        minutes=st.sampled_from([15, 30, 60, 120, 480]),
        start=st.datetimes(naive(2000, 1, 1), naive(2037, 1, 1), timezones=st.just(UTC)),
        span=st.integers(0, 3 * 1440),
    )
    def test_log_runs_are_an_even_cadence(
        self, zone_name: str, minutes: int, start: datetime, span: int
    ) -> None:
        """Log runs are every `minutes` of elapsed time, in any zone, DST or not."""
        schedule = parse_policy_schedule(workload(zone_name, log_minutes=minutes))
        runs = [r.at for r in expected_runs(schedule, start, start + timedelta(minutes=span))]
        assert all(b - a == timedelta(minutes=minutes) for a, b in itertools.pairwise(runs))
        assert all(int(r.timestamp()) % (minutes * 60) == 0 for r in runs)
        assert len(runs) in (span // minutes, span // minutes + 1)


def test_every_windows_zone_of_the_map_loads() -> None:
    """Each name the tzlocal table knows maps to zone data that zoneinfo can load."""
    for name in WINDOWS_ZONES:
        assert windows_zone(name).key == win_tz[name]


# --------------------------------------------------------------------------------------------
# Examples: the spec's policy shapes (Microsoft.RecoveryServices backup, stable 2024-04-01)

IAAS_WEEKLY: dict[
    str, Any
] = {  # AzureIaasVm/ProtectionPolicies_CreateOrUpdate_Complex.json, the response
    "backupManagementType": "AzureIaasVM",
    "schedulePolicy": {
        "schedulePolicyType": "SimpleSchedulePolicy",
        "scheduleRunFrequency": "Weekly",
        "scheduleRunDays": ["Monday", "Wednesday", "Thursday"],
        "scheduleRunTimes": ["2018-01-24T10:00:00Z"],
        "scheduleWeeklyFrequency": 0,
    },
    "timeZone": "Pacific Standard Time",
    "protectedItemsCount": 0,
}
IAAS_V2_HOURLY: dict[str, Any] = {  # AzureIaasVm/V2Policy/IaaS_v2_hourly.json, the response
    "backupManagementType": "AzureIaasVM",
    "instantRpRetentionRangeInDays": 30,
    "policyType": "V2",
    "schedulePolicy": {
        "hourlySchedule": {
            "interval": 4,
            "scheduleWindowDuration": 16,
            "scheduleWindowStartTime": "2021-12-17T08:00:00Z",
        },
        "schedulePolicyType": "SimpleSchedulePolicyV2",
        "scheduleRunFrequency": "Hourly",
    },
    "timeZone": "India Standard Time",
}
FILE_SHARE_HOURLY: dict[
    str, Any
] = {  # AzureStorage/ProtectionPolicies_CreateOrUpdate_Hourly.json, the request
    "backupManagementType": "AzureStorage",
    "workLoadType": "AzureFileShare",
    "schedulePolicy": {
        "schedulePolicyType": "SimpleSchedulePolicy",
        "scheduleRunFrequency": "Hourly",
        "hourlySchedule": {
            "interval": 4,
            "scheduleWindowStartTime": "2021-09-29T08:00:00.000Z",
            "scheduleWindowDuration": 12,
        },
    },
    "timeZone": "UTC",
}
WORKLOAD_COMPLEX: dict[
    str, Any
] = {  # AzureWorkload/ProtectionPolicies_CreateOrUpdate_Complex.json (no retention)
    "backupManagementType": "AzureWorkload",
    "workLoadType": "SQLDataBase",
    "settings": {"timeZone": "Pacific Standard Time", "issqlcompression": False},
    "subProtectionPolicy": [
        {
            "policyType": "Full",
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Weekly",
                "scheduleRunDays": ["Sunday", "Tuesday"],
                "scheduleRunTimes": ["2018-01-24T10:00:00Z"],
                "scheduleWeeklyFrequency": 0,
            },
        },
        {
            "policyType": "Differential",
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Weekly",
                "scheduleRunDays": ["Friday"],
                "scheduleRunTimes": ["2018-01-24T10:00:00Z"],
                "scheduleWeeklyFrequency": 0,
            },
        },
        {
            "policyType": "Log",
            "schedulePolicy": {
                "schedulePolicyType": "LogSchedulePolicy",
                "scheduleFrequencyInMins": 60,
            },
        },
    ],
    "protectedItemsCount": 0,
}


def workload(zone_name: str, *, log_minutes: int) -> dict[str, Any]:
    """AzureWorkload/BackupPolicies_List.json's shape: a daily Full and a Log sub-policy."""
    return {
        "backupManagementType": "AzureWorkload",
        "workLoadType": "SQLDataBase",
        "settings": {"timeZone": zone_name, "issqlcompression": False},
        "subProtectionPolicy": [
            {
                "policyType": "Log",
                "schedulePolicy": {
                    "schedulePolicyType": "LogSchedulePolicy",
                    "scheduleFrequencyInMins": log_minutes,
                },
            }
        ],
    }


def daily(zone_name: str, *run_times: str) -> dict[str, Any]:
    return {
        "timeZone": zone_name,
        "schedulePolicy": {
            "schedulePolicyType": "SimpleSchedulePolicy",
            "scheduleRunFrequency": "Daily",
            "scheduleRunTimes": [f"2018-01-24T{t}:00Z" for t in run_times],
        },
    }


class TestSpecExamples:
    def test_weekly_vm_policy_in_pacific_time(self) -> None:
        """Monday, Wednesday and Thursday at 10:00 Pacific: 18:00 UTC in January."""
        schedule = parse_policy_schedule(IAAS_WEEKLY)
        assert schedule.zone.key == "America/Los_Angeles"
        runs = expected_runs(schedule, utc(2018, 1, 22), utc(2018, 1, 29))
        assert runs == [ExpectedRun(utc(2018, 1, day, 18), RunKind.BACKUP) for day in (22, 24, 25)]

    def test_v2_hourly_window_in_india(self) -> None:
        """Every 4 hours for 16 hours from 08:00 IST: 08, 12, 16 and 20 IST, the end excluded."""
        schedule = parse_policy_schedule(IAAS_V2_HOURLY)
        (part,) = schedule.parts
        assert part.cadence == HourlyWindow(time(8), 4, 16)
        assert part.interval == timedelta(hours=4)
        runs = expected_runs(schedule, utc(2021, 12, 17), utc(2021, 12, 18))
        assert [r.at for r in runs] == [utc(2021, 12, 17, h, 30) for h in (2, 6, 10, 14)]

    def test_file_share_hourly_v1(self) -> None:
        """The file share's hourly SimpleSchedulePolicy: 08, 12 and 16 UTC in a 12-hour window."""
        runs = expected_runs(
            parse_policy_schedule(FILE_SHARE_HOURLY), utc(2021, 9, 29), utc(2021, 9, 30)
        )
        assert [r.at.hour for r in runs] == [8, 12, 16]

    def test_workload_full_differential_and_log(self) -> None:
        """Full on Sunday and Tuesday, Differential on Friday, Log hourly, in Pacific time."""
        schedule = parse_policy_schedule(WORKLOAD_COMPLEX)
        assert schedule.time_zone == "Pacific Standard Time"
        assert [p.kind for p in schedule.parts] == [RunKind.FULL, RunKind.DIFFERENTIAL, RunKind.LOG]
        assert schedule.parts[2].cadence == EveryMinutes(60)
        runs = expected_runs(schedule, utc(2018, 1, 21), utc(2018, 1, 28))
        backups = [r for r in runs if r.kind is not RunKind.LOG]
        assert backups == [
            ExpectedRun(utc(2018, 1, 21, 18), RunKind.FULL),
            ExpectedRun(utc(2018, 1, 23, 18), RunKind.FULL),
            ExpectedRun(utc(2018, 1, 26, 18), RunKind.DIFFERENTIAL),
        ]
        assert len([r for r in runs if r.kind is RunKind.LOG]) == 7 * 24

    def test_workload_list_policy_in_utc(self) -> None:
        """BackupPolicies_List: a daily Full at 19:00 UTC and a log backup every hour."""
        policy = workload("UTC", log_minutes=60)
        policy["subProtectionPolicy"].insert(
            0,
            {
                "policyType": "Full",
                "schedulePolicy": {
                    "schedulePolicyType": "SimpleSchedulePolicy",
                    "scheduleRunFrequency": "Daily",
                    "scheduleRunTimes": ["2017-12-05T19:00:00Z"],
                    "scheduleWeeklyFrequency": 0,
                },
            },
        )
        runs = expected_runs(
            parse_policy_schedule(policy), utc(2017, 12, 5, 18, 30), utc(2017, 12, 5, 20)
        )
        assert runs == [
            ExpectedRun(utc(2017, 12, 5, 19), RunKind.FULL),
            ExpectedRun(utc(2017, 12, 5, 19), RunKind.LOG),
        ]


class TestDaylightSaving:
    def test_spring_forward_runs_at_the_end_of_the_gap(self) -> None:
        """02:00 and 02:30 in Berlin on 29 March 2026 both run once, at 03:00 CEST (01:00 UTC)."""
        schedule = parse_policy_schedule(daily("W. Europe Standard Time", "02:00", "02:30"))
        runs = expected_runs(schedule, utc(2026, 3, 28), utc(2026, 3, 30))
        assert [r.at for r in runs] == [
            utc(2026, 3, 28, 1),
            utc(2026, 3, 28, 1, 30),
            utc(2026, 3, 29, 1),
        ]

    def test_fall_back_runs_once_at_the_first_occurrence(self) -> None:
        """01:30 Pacific on 1 November 2026 occurs twice; it runs at the first (08:30 UTC)."""
        schedule = parse_policy_schedule(daily("Pacific Standard Time", "01:30"))
        runs = expected_runs(schedule, utc(2026, 10, 31), utc(2026, 11, 3))
        assert [r.at for r in runs] == [
            utc(2026, 10, 31, 8, 30),
            utc(2026, 11, 1, 8, 30),
            utc(2026, 11, 2, 9, 30),
        ]

    def test_hourly_window_keeps_its_wall_clock_hours(self) -> None:
        """Over Berlin's fall-back night a window from 00:00 every 2 hours keeps even hours."""
        policy = copy.deepcopy(FILE_SHARE_HOURLY)
        policy["timeZone"] = "W. Europe Standard Time"
        policy["schedulePolicy"]["hourlySchedule"] = {
            "interval": 2,
            "scheduleWindowStartTime": "2021-09-29T00:00:00Z",
            "scheduleWindowDuration": 6,
        }
        schedule = parse_policy_schedule(policy)
        runs = expected_runs(schedule, utc(2026, 10, 24, 20), utc(2026, 10, 25, 12))
        local = [r.at.astimezone(schedule.zone) for r in runs]
        assert [(t.hour, t.utcoffset()) for t in local] == [
            (0, timedelta(hours=2)),
            (2, timedelta(hours=2)),
            (4, timedelta(hours=1)),
        ]

    def test_resolve_local_in_a_whole_skipped_day(self) -> None:
        """Samoa skipped 30 December 2011: its times run at the start of 31 December."""
        zone = windows_zone("Samoa Standard Time")
        at = resolve_local(naive(2011, 12, 30, 10), zone)
        assert at.astimezone(zone).replace(tzinfo=None) == naive(2011, 12, 31)


class TestParsing:
    def test_zone_names_match_without_regard_to_case(self) -> None:
        """'w. europe standard time' is Berlin, as Windows matches zone IDs."""
        assert windows_zone("w. europe standard time").key == "Europe/Berlin"

    def test_a_policy_without_a_zone_is_read_in_utc(self) -> None:
        """The zone is optional in the spec; without one the schedule is UTC."""
        policy = daily("UTC", "10:00")
        del policy["timeZone"]
        schedule = parse_policy_schedule(policy)
        assert schedule.time_zone == "UTC"
        assert schedule.zone.key == "Etc/UTC"

    def test_a_policy_without_a_schedule_has_no_runs(self) -> None:
        """An AzureSql policy (retention only) expects nothing."""
        schedule = parse_policy_schedule(
            {"backupManagementType": "AzureSql", "retentionPolicy": {}}
        )
        assert schedule.parts == ()
        assert expected_runs(schedule, utc(2026, 1, 1), utc(2026, 2, 1)) == []

    def test_an_offset_run_time_is_read_in_utc(self) -> None:
        """'10:00+02:00' is stored as 08:00: the time of day is taken after conversion to UTC."""
        policy = daily("UTC", "10:00")
        policy["schedulePolicy"]["scheduleRunTimes"] = ["2018-01-24T10:00:00+02:00"]
        (part,) = parse_policy_schedule(policy).parts
        assert part.cadence == TimesOfDay((time(8),))

    def test_seven_fractional_digits_are_read(self) -> None:
        """ARM's .NET date-times carry seven fractional digits: '08:00:00.0000000Z' is 08:00."""
        policy = daily("UTC", "10:00")
        policy["schedulePolicy"]["scheduleRunTimes"] = ["2021-09-29T08:00:00.0000000Z"]
        (part,) = parse_policy_schedule(policy).parts
        assert part.cadence == TimesOfDay((time(8),))

    def test_a_window_runs_past_midnight(self) -> None:
        """A window from 22:00 for 6 hours every 2 hours runs at 22:00, 00:00 and 02:00."""
        policy = copy.deepcopy(FILE_SHARE_HOURLY)
        policy["schedulePolicy"]["hourlySchedule"] = {
            "interval": 2,
            "scheduleWindowStartTime": "2021-09-29T22:00:00Z",
            "scheduleWindowDuration": 6,
        }
        runs = expected_runs(
            parse_policy_schedule(policy), utc(2026, 5, 1, 12), utc(2026, 5, 2, 12)
        )
        assert [r.at for r in runs] == [utc(2026, 5, 1, 22), utc(2026, 5, 2), utc(2026, 5, 2, 2)]

    def test_naive_range_is_refused(self) -> None:
        """expected_runs needs aware datetimes."""
        with pytest.raises(ValueError, match="aware"):
            expected_runs(
                parse_policy_schedule(daily("UTC", "10:00")), naive(2026, 1, 1), utc(2026, 1, 2)
            )

    def test_schedule_is_a_value(self) -> None:
        """Parsing the same JSON twice gives equal schedules."""
        assert parse_policy_schedule(WORKLOAD_COMPLEX) == parse_policy_schedule(WORKLOAD_COMPLEX)
        assert isinstance(parse_policy_schedule(IAAS_WEEKLY), Schedule)

    @pytest.mark.parametrize(
        ("edit", "path"),
        [
            (lambda p: p.update(timeZone="Mars Standard Time"), "properties.timeZone"),
            (lambda p: p.update(timeZone=5), "properties.timeZone"),
            (
                lambda p: p["schedulePolicy"].update(scheduleRunFrequency="Monthly"),
                "properties.schedulePolicy.scheduleRunFrequency",
            ),
            (
                lambda p: p["schedulePolicy"].update(scheduleRunDays=["Funday"]),
                "properties.schedulePolicy.scheduleRunDays[0]",
            ),
            (
                lambda p: p["schedulePolicy"].update(scheduleWeeklyFrequency=2),
                "properties.schedulePolicy.scheduleWeeklyFrequency",
            ),
            (
                lambda p: p["schedulePolicy"].update(scheduleRunTimes=[]),
                "properties.schedulePolicy.scheduleRunTimes",
            ),
            (
                lambda p: p["schedulePolicy"].update(scheduleRunTimes=["ten o'clock"]),
                "properties.schedulePolicy.scheduleRunTimes[0]",
            ),
            (
                lambda p: p["schedulePolicy"].update(schedulePolicyType="CronPolicy"),
                "properties.schedulePolicy.schedulePolicyType",
            ),
            (lambda p: p.update(schedulePolicy=[]), "properties.schedulePolicy"),
        ],
    )
    def test_bad_vm_policies_name_their_path(self, edit: Any, path: str) -> None:
        """Each bad field raises ParseError at its JSON path."""
        policy = copy.deepcopy(IAAS_WEEKLY)
        edit(policy)
        with pytest.raises(ParseError) as caught:
            parse_policy_schedule(policy)
        assert caught.value.path == path

    @pytest.mark.parametrize(
        ("edit", "path"),
        [
            (lambda p: p["settings"].update(timeZone="Nowhere"), "properties.settings.timeZone"),
            (lambda p: p.update(settings="UTC"), "properties.settings"),
            (lambda p: p.update(subProtectionPolicy={}), "properties.subProtectionPolicy"),
            (
                lambda p: p["subProtectionPolicy"][1].update(policyType="Nightly"),
                "properties.subProtectionPolicy[1].policyType",
            ),
            (
                lambda p: p["subProtectionPolicy"][2]["schedulePolicy"].update(
                    scheduleFrequencyInMins=0
                ),
                "properties.subProtectionPolicy[2].schedulePolicy.scheduleFrequencyInMins",
            ),
            (
                lambda p: p["subProtectionPolicy"][2].update(policyType="Full"),
                "properties.subProtectionPolicy[2].schedulePolicy",
            ),
        ],
    )
    def test_bad_workload_policies_name_their_path(self, edit: Any, path: str) -> None:
        """Each bad field of a workload policy raises ParseError at its JSON path."""
        policy = copy.deepcopy(WORKLOAD_COMPLEX)
        edit(policy)
        with pytest.raises(ParseError) as caught:
            parse_policy_schedule(policy)
        assert caught.value.path == path

    @pytest.mark.parametrize(
        ("hourly", "field"),
        [
            ({"interval": 0, "scheduleWindowDuration": 12}, "interval"),
            ({"interval": 4, "scheduleWindowDuration": 25}, "scheduleWindowDuration"),
            ({"interval": True, "scheduleWindowDuration": 12}, "interval"),
            (
                {"interval": 4, "scheduleWindowDuration": 12, "scheduleWindowStartTime": None},
                "scheduleWindowStartTime",
            ),
        ],
    )
    def test_bad_hourly_windows_name_their_field(self, hourly: dict[str, Any], field: str) -> None:
        """An hourly window's interval and duration are 1–24 hours; its start is a date-time."""
        policy = copy.deepcopy(IAAS_V2_HOURLY)
        policy["schedulePolicy"]["hourlySchedule"] = {
            "scheduleWindowStartTime": "2021-12-17T08:00:00Z",
            **hourly,
        }
        with pytest.raises(ParseError) as caught:
            parse_policy_schedule(policy)
        assert caught.value.path == f"properties.schedulePolicy.hourlySchedule.{field}"


# --------------------------------------------------------------------------------------------
# Every Windows zone of the map, at its transitions (the acceptance item)


def one_part(zone_name: str, cadence: TimesOfDay | Repeating) -> Schedule:
    return Schedule(
        time_zone=zone_name,
        zone=windows_zone(zone_name),
        parts=(SubSchedule(RunKind.BACKUP, cadence),),
    )


@st.composite
def near_a_transition(draw: st.DrawFn, iana: str) -> tuple[datetime, list[time]]:
    """An instant near one of the zone's transitions in a random year (or a random instant,
    when that year has none), and the quarter-hour wall times it skips or repeats."""
    year = draw(st.integers(2000, 2037))
    changes = transitions(iana, year)
    if not changes:
        return utc(year, 1, 1) + timedelta(minutes=draw(st.integers(0, 365 * 1440))), []
    at, before, after = draw(st.sampled_from(changes))
    return at + timedelta(minutes=draw(st.integers(-1440, 1440))), affected_times(at, before, after)


@pytest.mark.parametrize("zone_name", WINDOWS_ZONES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), repeating=st.booleans())
def test_daily_runs_in_every_windows_zone(
    zone_name: str, data: st.DataObject, repeating: bool
) -> None:
    """In every zone of the map, around its transitions, a daily run (a policy's time of day,
    or a Backup vault's P1D interval) is at the requested local time, or at the end of the gap
    that skips it, once on each local day; and no local time runs twice."""
    zone = ZoneInfo(win_tz[zone_name])
    centre, affected = data.draw(near_a_transition(zone.key))
    wall = data.draw(st.sampled_from(affected) | TIMES if affected else TIMES)
    if repeating:
        anchor_day = centre.astimezone(zone).date() - timedelta(days=data.draw(st.integers(3, 400)))
        anchor = oracle_instant(datetime.combine(anchor_day, wall), zone)
        schedule = one_part(zone_name, Repeating(anchor, timedelta(days=1), wall=wall))
    else:
        schedule = one_part(zone_name, TimesOfDay((wall,)))
    start, end = centre - timedelta(days=2), centre + timedelta(days=2)
    runs = [run.at for run in expected_runs(schedule, start, end)]
    local = [at.astimezone(zone).replace(tzinfo=None) for at in runs]
    assert len(set(local)) == len(local), local  # no local time twice
    assert len(set(runs)) == len(runs)
    wanted = set()
    day = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date() + timedelta(days=1):
        at = oracle_instant(datetime.combine(day, wall), zone)
        if start <= at < end:
            wanted.add(at)
        day += timedelta(days=1)
    assert set(runs) == wanted
    for at, seen in zip(runs, local, strict=True):
        if seen.time() != wall:  # moved: only by a gap, to the first instant after it
            before = (at - timedelta(seconds=1)).astimezone(zone)
            assert before.utcoffset() != at.astimezone(zone).utcoffset(), (at, wall)
        else:
            assert at.astimezone(zone).fold == 0, (at, wall)  # a repeated time: the first


# --------------------------------------------------------------------------------------------
# Repeating ISO 8601 intervals (Backup vault policies)


class TestRepeating:
    def test_the_spec_examples(self) -> None:
        """PT4H, P1D and P1W of the Data Protection BackupPolicies_List examples."""
        hourly = parse_repeating_interval("R/2021-08-15T22:00:00+00:00/PT4H")
        assert hourly == Repeating(utc(2021, 8, 15, 22), timedelta(hours=4))
        daily_ = parse_repeating_interval("R/2021-08-15T06:30:00+00:00/P1D")
        assert daily_ == Repeating(utc(2021, 8, 15, 6, 30), timedelta(days=1))
        weekly = parse_repeating_interval("R/2019-11-20T08:00:00-08:00/P1W")
        assert weekly == Repeating(utc(2019, 11, 20, 16), timedelta(weeks=1))
        assert not hourly.on_the_wall_clock
        assert daily_.on_the_wall_clock

    def test_sub_day_periods_step_elapsed_time(self) -> None:
        """PT4H from 22:00 UTC steps 4 elapsed hours across Berlin's spring-forward night."""
        schedule = one_part(
            "W. Europe Standard Time", parse_repeating_interval("R/2021-08-15T22:00:00+00:00/PT4H")
        )
        runs = [r.at for r in expected_runs(schedule, utc(2026, 3, 28, 20), utc(2026, 3, 29, 12))]
        assert runs == [
            utc(2026, 3, 28, 22),
            utc(2026, 3, 29, 2),
            utc(2026, 3, 29, 6),
            utc(2026, 3, 29, 10),
        ]

    def test_daily_keeps_the_wall_clock_time(self) -> None:
        """P1D anchored at 08:30 CEST stays at 08:30 local in winter (07:30 UTC)."""
        schedule = one_part(
            "W. Europe Standard Time", parse_repeating_interval("R/2021-08-15T06:30:00+00:00/P1D")
        )
        runs = [r.at for r in expected_runs(schedule, utc(2026, 3, 27), utc(2026, 3, 30))]
        assert runs == [utc(2026, 3, 27, 7, 30), utc(2026, 3, 28, 7, 30), utc(2026, 3, 29, 6, 30)]

    def test_weekly_keeps_its_weekday(self) -> None:
        """P1W from a Wednesday runs on Wednesdays only."""
        schedule = one_part(
            "Pacific Standard Time", parse_repeating_interval("R/2019-11-20T08:00:00-08:00/P1W")
        )
        runs = expected_runs(schedule, utc(2026, 1, 1), utc(2026, 3, 1))
        assert len(runs) == 8
        assert {r.at.astimezone(schedule.zone).weekday() for r in runs} == {2}
        assert {r.at.astimezone(schedule.zone).hour for r in runs} == {8}

    def test_with_a_zone_the_start_is_its_wall_clock(self) -> None:
        """Given the policy's zone, the written date and time are local and the offset is
        ignored; in a gap, the gap's end."""
        berlin = windows_zone("W. Europe Standard Time")
        cadence = parse_repeating_interval("R/2022-05-31T23:30:00+01:00/P1D", zone=berlin)
        assert cadence.anchor == utc(2022, 5, 31, 21, 30)
        cadence = parse_repeating_interval("R/2026-03-29T02:30:00+00:00/PT4H", zone=berlin)
        assert cadence.anchor == utc(2026, 3, 29, 1)

    def test_an_anchor_in_a_gap_keeps_its_written_time(self) -> None:
        """P1D written at 02:30 on Berlin's spring-forward day: 03:00 that day, 02:30 after."""
        berlin = windows_zone("W. Europe Standard Time")
        cadence = parse_repeating_interval("R/2026-03-29T02:30:00+01:00/P1D", zone=berlin)
        schedule = one_part("W. Europe Standard Time", cadence)
        runs = [r.at for r in expected_runs(schedule, utc(2026, 3, 28), utc(2026, 3, 31))]
        assert runs == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]

    def test_nothing_before_the_anchor_and_counts_end(self) -> None:
        """Runs start at the anchor; R3 stops after three."""
        schedule = one_part("UTC", parse_repeating_interval("R3/2026-01-01T00:00:00Z/PT6H"))
        runs = [r.at for r in expected_runs(schedule, utc(2025, 12, 31), utc(2026, 1, 3))]
        assert runs == [utc(2026, 1, 1), utc(2026, 1, 1, 6), utc(2026, 1, 1, 12)]
        schedule = one_part("UTC", parse_repeating_interval("R2/2026-01-01T05:00:00Z/P1D"))
        runs = [r.at for r in expected_runs(schedule, utc(2025, 12, 31), utc(2026, 1, 9))]
        assert runs == [utc(2026, 1, 1, 5), utc(2026, 1, 2, 5)]

    @pytest.mark.parametrize(
        "text",
        [
            5,
            "",
            "R/2021-08-15T22:00:00Z",
            "R/not-a-time/PT4H",
            "R/2021-08-15T22:00:00Z/P1M",
            "R/2021-08-15T22:00:00Z/P1Y",
            "R/2021-08-15T22:00:00Z/P1DT2H",
            "R/2021-08-15T22:00:00Z/PT0H",
            "R/2021-08-15T22:00:00Z/PT24H",
            "R0/2021-08-15T22:00:00Z/P1D",
            "2021-08-15T22:00:00Z/P1D",
        ],
    )
    def test_refused(self, text: object) -> None:
        """Anything but R[n]/start/period with a fixed period is a ParseError at the path."""
        with pytest.raises(ParseError) as caught:
            parse_repeating_interval(text, path="here")
        assert caught.value.path == "here"

    @PROPERTY
    @given(
        anchor=st.datetimes(naive(2000, 1, 1), naive(2037, 1, 1), timezones=st.just(UTC)),
        minutes=st.integers(1, 1439),
        start=st.datetimes(naive(2000, 1, 1), naive(2037, 1, 1), timezones=st.just(UTC)),
        span=st.integers(0, 3 * 1440),
        cut=st.floats(0, 1),
    )
    def test_sub_day_runs_are_an_even_cadence_from_the_anchor(
        self, anchor: datetime, minutes: int, start: datetime, span: int, cut: float
    ) -> None:
        """Sub-day runs are the anchor plus whole periods, never before it; ranges add up."""
        period = timedelta(minutes=minutes)
        schedule = one_part("Pacific Standard Time", Repeating(anchor, period))
        end = start + timedelta(minutes=span)
        runs = [r.at for r in expected_runs(schedule, start, end)]
        assert all(start <= r < end and r >= anchor for r in runs)
        assert all((r - anchor) % period == timedelta(0) for r in runs)
        assert all(b - a == period for a, b in itertools.pairwise(runs))
        first = max(start, anchor)
        if first < end:
            assert (runs[0] if runs else end) - first < period
        middle = start + (end - start) * cut
        assert expected_runs(schedule, start, end) == expected_runs(
            schedule, start, middle
        ) + expected_runs(schedule, middle, end)

    @PROPERTY
    @given(
        zone_name=st.sampled_from(zones_with_changes()),
        days=st.sampled_from([1, 2, 7, 14]),
        anchor=st.datetimes(naive(2000, 1, 1), naive(2030, 1, 1), timezones=st.just(UTC)),
        offset_days=st.integers(0, 3000),
        span=st.integers(0, 20 * 1440),
    )
    def test_whole_days_are_at_the_anchor_wall_time(
        self, zone_name: str, days: int, anchor: datetime, offset_days: int, span: int
    ) -> None:
        """Whole-day periods run every n-th local day from the anchor's, at its wall time (or
        the gap's end), as the oracle puts it."""
        zone = windows_zone(zone_name)
        schedule = one_part(zone_name, Repeating(anchor, timedelta(days=days)))
        start = anchor + timedelta(days=offset_days)
        end = start + timedelta(minutes=span)
        runs = [r.at for r in expected_runs(schedule, start, end)]
        local_anchor = anchor.astimezone(zone)
        wall = local_anchor.time().replace(tzinfo=None, fold=0)
        wanted = set()
        day = start.astimezone(zone).date() - timedelta(days=2)
        while day <= end.astimezone(zone).date() + timedelta(days=1):
            if (day - local_anchor.date()).days % days == 0:
                at = oracle_instant(datetime.combine(day, wall), zone)
                if start <= at < end and at >= anchor:
                    wanted.add(at)
            day += timedelta(days=1)
        assert set(runs) == wanted
        assert runs == sorted(runs)
