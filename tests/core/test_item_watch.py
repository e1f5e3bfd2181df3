"""One protected item's round: missed runs, recovery-point age, protection, long-running jobs.

The property tests replay random histories (a schedule, which of its runs got a job, stray
jobs that never count) cut into random rounds, with the state stored as JSON or not between
them, and compare with the history's truth and with one round at the end.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.item_watch import (
    BackupMissed,
    Evaluation,
    ItemHealth,
    ItemState,
    LongRunning,
    LongRunningSettings,
    ProtectionChanged,
    RpoBreached,
    RpoRestored,
    WatchSettings,
    evaluate,
    item_event_id,
    long_running_jobs,
    window_start,
)
from monitor.core.jobs import BackupJob, JobKey, JobStatus
from monitor.core.protection import BackupPolicy, ProtectedItem
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
    windows_zone,
)
from monitor.core.vaults import VaultKind
from monitor.errors import ParseError
from tests.core.strategies import json_values

VAULT = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/"
    "microsoft.recoveryservices/vaults/v"
)
SETTINGS = WatchSettings()
LONG = LongRunningSettings()
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def make_item(
    state: str | None = "Protected",
    health: str | None = "Passed",
    last_recovery_point: datetime | None = None,
) -> ProtectedItem:
    return ProtectedItem(
        id=f"{VAULT}/backupFabrics/Azure/protectionContainers/c/protectedItems/VM;c;rg;vm1",
        vault_key=VAULT,
        kind=VaultKind.RECOVERY_SERVICES,
        name="VM;c;rg;vm1",
        friendly_name="vm1",
        datasource_type="VM",
        datasource_id=None,
        backup_management_type="AzureIaasVM",
        policy_id=f"{VAULT}/backupPolicies/p",
        policy_name="p",
        protection_state=state,
        health_status=health,
        last_backup_time=None,
        last_recovery_point=last_recovery_point,
    )


def make_policy(*parts: SubSchedule, zone: str = "UTC") -> BackupPolicy:
    schedule = Schedule(time_zone=zone, zone=windows_zone(zone), parts=parts)
    return BackupPolicy(
        id=f"{VAULT}/backupPolicies/p", vault_key=VAULT, name="p", schedule=schedule
    )


def daily_at(*hours: int, zone: str = "UTC") -> BackupPolicy:
    return make_policy(
        SubSchedule(RunKind.BACKUP, TimesOfDay(tuple(time(h) for h in hours))), zone=zone
    )


def job(
    name: str,
    start: datetime,
    operation: str = "Backup",
    status: JobStatus = JobStatus.COMPLETED,
    duration_s: float | None = 600.0,
) -> BackupJob:
    return BackupJob(
        key=JobKey(vault_key=VAULT, job_name=name.lower()),
        name=name,
        resource_id=f"{VAULT}/backupJobs/{name}",
        job_type="AzureIaaSVMJob",
        operation=operation,
        backup_management_type="AzureIaasVM",
        entity="vm1",
        status=status,
        start_at=start,
        end_at=None if duration_s is None else start + timedelta(seconds=duration_s),
        duration_raw=None if duration_s is None else f"PT{duration_s}S",
        actions=(),
        activity_id=None,
        properties={},
    )


def run_round(
    item: ProtectedItem,
    policy: BackupPolicy | None,
    state: ItemState | None,
    jobs: list[BackupJob],
    seen_until: datetime,
    now: datetime | None = None,
    watch: WatchSettings = SETTINGS,
    long_running: LongRunningSettings = LONG,
) -> Evaluation:
    """What the shell does: list the jobs of the window up to `now`, then evaluate."""
    now = now or seen_until
    start = window_start(state, policy, now=now, settings=watch)
    listed = [j for j in jobs if j.start_at is not None and start <= j.start_at <= now]
    return evaluate(
        item,
        policy,
        state,
        listed,
        seen_until=seen_until,
        now=now,
        settings=watch,
        long_running=long_running,
    )


def missed_of(result: Evaluation) -> list[ExpectedRun]:
    return [c.run for c in result.changes if isinstance(c, BackupMissed)]


# --------------------------------------------------------------------------------------------
# Random histories


@st.composite
def histories(draw: st.DrawFn, overlap: bool = False) -> dict[str, Any]:
    """A schedule, which of its runs got a job, stray jobs, and a first sight followed by
    rounds (seen_until increasing, now a little later). The runs' windows do not overlap and
    strays never count, unless `overlap`: then times of day may be minutes apart and strays
    may be backups (so that runs compete for jobs)."""
    zone = draw(st.sampled_from(["UTC", "W. Europe Standard Time", "Pacific Standard Time"]))
    shape = draw(st.sampled_from(["daily", "hourly", "workload", "repeating"]))
    first_day = utc(2026, 1, 1).replace(tzinfo=None).date()
    minute = draw(st.sampled_from([0, 15, 30, 45]))
    parts: tuple[SubSchedule, ...]
    if overlap and shape != "workload":  # times of day 15 to 45 minutes apart
        base = datetime.combine(first_day, time(draw(st.integers(0, 22))))
        steps = draw(st.lists(st.sampled_from([15, 30, 45]), min_size=1, max_size=3))
        times = {base.time()}
        for step in steps:
            base += timedelta(minutes=step)
            times.add(base.time())
        parts = (SubSchedule(RunKind.BACKUP, TimesOfDay(tuple(sorted(times)))),)
    elif shape == "daily":
        hours = draw(
            st.lists(st.sampled_from(range(0, 24, 4)), min_size=1, max_size=4, unique=True)
        )
        parts = (
            SubSchedule(RunKind.BACKUP, TimesOfDay(tuple(sorted(time(h, minute) for h in hours)))),
        )
    elif shape == "hourly":
        interval = draw(st.sampled_from([1, 2, 4, 6]))
        parts = (
            SubSchedule(
                RunKind.BACKUP,
                HourlyWindow(
                    time(draw(st.integers(0, 23)), minute), interval, draw(st.integers(1, 24))
                ),
            ),
        )
    elif shape == "workload":
        parts = (
            SubSchedule(RunKind.FULL, TimesOfDay((time(draw(st.integers(0, 23)), minute),))),
            SubSchedule(RunKind.LOG, EveryMinutes(draw(st.sampled_from([30, 60, 120])))),
        )
    else:
        period = draw(st.sampled_from([timedelta(hours=4), timedelta(hours=12), timedelta(days=1)]))
        parts = (SubSchedule(RunKind.BACKUP, Repeating(utc(2026, 3, 1, 22, minute), period)),)
    policy = make_policy(*parts, zone=zone)
    # Around Europe's and America's spring and fall changes of 2026.
    centre = draw(
        st.sampled_from([utc(2026, 3, 29), utc(2026, 3, 8), utc(2026, 10, 25), utc(2026, 11, 1)])
    )
    first = centre - timedelta(minutes=draw(st.integers(0, 2 * 1440)))
    end = first + timedelta(minutes=draw(st.integers(60, 4 * 1440)))
    # Rounds at random minutes, and some exactly at (or just around) a run's deadline.
    assert policy.schedule is not None
    deadlines = [
        run.at + grace for run, grace in timed(policy, first, end) if first < run.at + grace < end
    ]
    picks = st.integers(1, int((end - first).total_seconds() // 60)).map(
        lambda m: first + timedelta(minutes=m)
    )
    if deadlines:
        picks = picks | st.tuples(st.sampled_from(deadlines), st.sampled_from([-60, 0, 0, 1])).map(
            lambda pair: pair[0] + timedelta(seconds=pair[1])
        )
    rounds = sorted({at for at in draw(st.lists(picks, max_size=8)) if first < at < end})
    rounds.append(end)
    lags = [timedelta(seconds=draw(st.integers(0, 900))) for _ in rounds]
    stored = [draw(st.booleans()) for _ in rounds]
    # Jobs: each run, from well before the first sight, gets one or not.
    jobs: list[BackupJob] = []
    skipped: set[tuple[datetime, RunKind]] = set()
    for part in parts:
        one = Schedule(time_zone=zone, zone=policy.schedule.zone, parts=(part,))
        grace = (
            timedelta(seconds=SETTINGS.grace_s)
            if isinstance(part.cadence, TimesOfDay)
            or (isinstance(part.cadence, Repeating) and part.cadence.on_the_wall_clock)
            else part.interval * SETTINGS.grace_fraction
        )
        early = min(timedelta(seconds=SETTINGS.early_s), part.interval / 2)
        for index, run in enumerate(
            expected_runs(one, first - timedelta(days=2), end + timedelta(days=1))
        ):
            if draw(st.integers(0, 3)) == 0 or (overlap and draw(st.booleans())):
                skipped.add((run.at, run.kind))
                continue
            span = int((grace + early).total_seconds())
            offset = timedelta(seconds=draw(st.integers(0, span))) - early
            operation = (
                "Log Backup"
                if run.kind is RunKind.LOG
                else draw(st.sampled_from(["Backup", "Backup (Full)", "ScheduledBackup"]))
            )
            jobs.append(job(f"{part.kind.value}-{index}", run.at + offset, operation))
    stray_operations = ["Restore", "CrossRegionRestore", "ConfigureBackup"]
    if overlap:
        stray_operations += ["Backup", "AdhocBackup", "Log Backup"]
    near = [run.at for run, _ in timed(policy, first, end)]
    for index in range(draw(st.integers(0, 12 if overlap else 5))):
        if overlap and near and draw(st.booleans()):  # close to a run: where runs compete
            at = draw(st.sampled_from(near)) + timedelta(minutes=draw(st.integers(-20, 70)))
        else:
            at = first + timedelta(minutes=draw(st.integers(-1440, 4 * 1440)))
        jobs.append(job(f"stray-{index}", at, draw(st.sampled_from(stray_operations))))
    return {
        "policy": policy,
        "first": first,
        "rounds": rounds,
        "lags": lags,
        "stored": stored,
        "jobs": jobs,
        "skipped": skipped,
    }


def replay(
    history: dict[str, Any], rounds: list[datetime], lags: list[timedelta], stored: list[bool]
) -> tuple[list[ExpectedRun], ItemState]:
    item, policy, jobs = make_item(), history["policy"], history["jobs"]
    first = run_round(item, policy, None, jobs, history["first"])
    assert missed_of(first) == []
    state = first.state
    reported: list[ExpectedRun] = []
    for seen_until, lag, store in zip(rounds, lags, stored, strict=True):
        if store:
            state = ItemState.from_json(json.loads(json.dumps(state.to_json())))
        result = run_round(item, policy, state, jobs, seen_until, seen_until + lag)
        reported.extend(missed_of(result))
        state = result.state
    return reported, state


class TestHistories:
    @settings(PROPERTY, max_examples=100)
    @given(history=histories())
    def test_every_skipped_run_is_reported_once_and_no_other(self, history: dict[str, Any]) -> None:
        """Whatever the rounds, the reports are the skipped runs due after the first sight."""
        reported, state = replay(history, history["rounds"], history["lags"], history["stored"])
        assert len(reported) == len(set(reported))
        first, end = history["first"], history["rounds"][-1]
        due = {(run.at, run.kind) for run in reported}
        expected = set()
        for run, grace in timed(history["policy"], first, end):
            if first < run.at + grace <= end and (run.at, run.kind) in history["skipped"]:
                expected.add((run.at, run.kind))
        assert due == expected
        assert state.decided_through == end

    @settings(PROPERTY, max_examples=300)
    @given(history=histories() | histories(overlap=True) | histories(overlap=True))
    def test_rounds_give_what_one_round_at_the_end_gives(self, history: dict[str, Any]) -> None:
        """The same reports (and last-run flag) as one round at the end, stored or not."""
        split, split_state = replay(history, history["rounds"], history["lags"], history["stored"])
        end = history["rounds"][-1]
        whole, whole_state = replay(history, [end], [history["lags"][-1]], [False])
        assert sorted(split) == sorted(whole)
        assert split_state.last_run_missed == whole_state.last_run_missed
        assert split_state.decided_through == whole_state.decided_through


def timed(
    policy: BackupPolicy, first: datetime, end: datetime
) -> list[tuple[ExpectedRun, timedelta]]:
    """The runs of the policy with their grace, straight from the settings' rules."""
    assert policy.schedule is not None
    found: dict[tuple[datetime, RunKind], tuple[ExpectedRun, timedelta]] = {}
    for part in policy.schedule.parts:
        one = replace(policy.schedule, parts=(part,))
        cadence = part.cadence
        daily = isinstance(cadence, TimesOfDay) or (
            isinstance(cadence, Repeating) and cadence.on_the_wall_clock
        )
        grace = (
            timedelta(seconds=SETTINGS.grace_s)
            if daily
            else part.interval * SETTINGS.grace_fraction
        )
        for run in expected_runs(one, first - timedelta(days=2), end):
            found[(run.at, run.kind)] = (run, grace)
    return list(found.values())


# --------------------------------------------------------------------------------------------
# Missed runs: examples


class TestMissedRuns:
    def test_first_sight_decides_silently(self) -> None:
        """Runs due before the first round are not reported; the next day's is."""
        policy = daily_at(2)
        first = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12))
        assert first.changes == ()
        assert first.state.decided_through == utc(2026, 5, 10, 12)
        assert first.health is ItemHealth.FRESH
        second = run_round(make_item(), policy, first.state, [], utc(2026, 5, 11, 3))
        (missed,) = second.changes
        assert isinstance(missed, BackupMissed)
        assert missed.run == ExpectedRun(utc(2026, 5, 11, 2), RunKind.BACKUP)
        assert missed.deadline == utc(2026, 5, 11, 3)
        assert missed.event_id == item_event_id(
            make_item().id, "backup_missed", "2026-05-11T02:00:00Z", "backup"
        )
        assert second.health is ItemHealth.MISSED
        assert second.state.last_run_missed

    def test_a_run_is_decided_at_its_deadline_not_before(self) -> None:
        """seen_until one second before the deadline decides nothing."""
        policy = daily_at(2)
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12)).state
        early = run_round(make_item(), policy, state, [], utc(2026, 5, 11, 2, 59))
        assert early.changes == ()
        late = run_round(make_item(), policy, early.state, [], utc(2026, 5, 11, 3))
        assert len(missed_of(late)) == 1

    def test_a_job_in_the_window_meets_the_run(self) -> None:
        """From early_s before the run to its deadline, both included; restores never count."""
        policy = daily_at(2)
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12)).state
        for start, operation, met in [
            (utc(2026, 5, 11, 1, 50), "Backup", True),
            (utc(2026, 5, 11, 3), "Backup (Full)", True),
            (utc(2026, 5, 11, 1, 49), "Backup", False),
            (utc(2026, 5, 11, 2, 5), "Restore", False),
            (utc(2026, 5, 11, 2, 5), "Log Backup", False),
            (utc(2026, 5, 11, 2, 5), "AdhocBackup", True),
        ]:
            result = run_round(
                make_item(), policy, state, [job("j", start, operation)], utc(2026, 5, 11, 4)
            )
            assert (missed_of(result) == []) is met, (start, operation)

    def test_one_job_meets_one_run(self) -> None:
        """Two runs 30 minutes apart and one job between them: the second is missed."""
        policy = make_policy(SubSchedule(RunKind.BACKUP, TimesOfDay((time(2), time(2, 30)))))
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12)).state
        result = run_round(
            make_item(), policy, state, [job("j", utc(2026, 5, 11, 2, 10))], utc(2026, 5, 11, 6)
        )
        assert missed_of(result) == [ExpectedRun(utc(2026, 5, 11, 2, 30), RunKind.BACKUP)]

    def test_a_job_taken_in_one_round_is_not_taken_again(self) -> None:
        """02:00 takes the 02:10 job in the round that decides it; 02:15, decided in the next
        round (its window also holds 02:10), is missed, as in one round, and across a restart."""
        policy = make_policy(SubSchedule(RunKind.BACKUP, TimesOfDay((time(2), time(2, 15)))))
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12)).state
        jobs = [job("j", utc(2026, 5, 11, 2, 10))]
        first = run_round(make_item(), policy, state, jobs, utc(2026, 5, 11, 3))
        assert missed_of(first) == []
        assert first.state.used == ("j",)
        stored = ItemState.from_json(json.loads(json.dumps(first.state.to_json())))
        second = run_round(make_item(), policy, stored, jobs, utc(2026, 5, 11, 3, 15))
        assert missed_of(second) == [ExpectedRun(utc(2026, 5, 11, 2, 15), RunKind.BACKUP)]
        whole = run_round(make_item(), policy, state, jobs, utc(2026, 5, 11, 3, 15))
        assert missed_of(whole) == missed_of(second)
        assert second.state.used == ()  # 02:10 is before the next window

    def test_a_run_due_at_seen_until_is_decided_once(self) -> None:
        """A round exactly at the deadline decides the run; the next does not again."""
        policy = daily_at(2)
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12)).state
        first = run_round(make_item(), policy, state, [], utc(2026, 5, 11, 3))
        assert len(missed_of(first)) == 1
        assert missed_of(run_round(make_item(), policy, first.state, [], utc(2026, 5, 11, 4))) == []

    def test_log_runs_take_log_jobs(self) -> None:
        """A workload's log run is met by a log job, its full run by a backup job."""
        policy = make_policy(
            SubSchedule(RunKind.FULL, TimesOfDay((time(2),))),
            SubSchedule(RunKind.LOG, EveryMinutes(60)),
        )
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 11, 1, 31)).state
        jobs = [
            job("full", utc(2026, 5, 11, 2, 1), "Backup (Full)"),
            job("log", utc(2026, 5, 11, 2, 2), "Log Backup"),
        ]
        result = run_round(make_item(), policy, state, jobs, utc(2026, 5, 11, 3, 1))
        assert missed_of(result) == []
        result = run_round(make_item(), policy, state, jobs[:1], utc(2026, 5, 11, 3, 1))
        assert ExpectedRun(utc(2026, 5, 11, 2), RunKind.LOG) in missed_of(result)
        assert ExpectedRun(utc(2026, 5, 11, 2), RunKind.FULL) not in missed_of(result)

    def test_hourly_grace_is_a_fraction_of_the_interval(self) -> None:
        """Every 4 hours: the deadline is 2 hours after the run."""
        policy = make_policy(SubSchedule(RunKind.BACKUP, HourlyWindow(time(8), 4, 12)))
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 11, 7)).state
        result = run_round(make_item(), policy, state, [], utc(2026, 5, 11, 10))
        (missed,) = result.changes
        assert isinstance(missed, BackupMissed)
        assert missed.deadline == utc(2026, 5, 11, 10)

    def test_no_reports_while_protection_is_stopped_nor_after(self) -> None:
        """A run during a protection stop is never reported, even once protected again."""
        policy = daily_at(2)
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12)).state
        stopped = run_round(make_item("ProtectionStopped"), policy, state, [], utc(2026, 5, 12, 12))
        assert missed_of(stopped) == []
        assert stopped.health is ItemHealth.UNPROTECTED
        assert not stopped.state.last_run_missed
        again = run_round(make_item(), policy, stopped.state, [], utc(2026, 5, 13, 12))
        assert missed_of(again) == [ExpectedRun(utc(2026, 5, 13, 2), RunKind.BACKUP)]

    @pytest.mark.parametrize(
        "policy",
        [
            None,
            BackupPolicy(
                id="p", vault_key=VAULT, name="p", schedule=None, problem="no backup schedule"
            ),
        ],
    )
    def test_without_a_schedule_nothing_is_due(self, policy: BackupPolicy | None) -> None:
        """No policy, or one without a schedule: unprotected, no reports."""
        state = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12)).state
        result = run_round(make_item(), policy, state, [], utc(2026, 5, 20))
        assert result.changes == ()
        assert result.health is ItemHealth.UNPROTECTED

    def test_a_dst_day_in_berlin(self) -> None:
        """02:30 local on the spring-forward day runs at 03:00 CEST (01:00 UTC), due 02:00 UTC."""
        policy = make_policy(
            SubSchedule(RunKind.BACKUP, TimesOfDay((time(2, 30),))), zone="W. Europe Standard Time"
        )
        state = run_round(make_item(), policy, None, [], utc(2026, 3, 28, 12)).state
        result = run_round(make_item(), policy, state, [], utc(2026, 3, 29, 2))
        assert missed_of(result) == [ExpectedRun(utc(2026, 3, 29, 1), RunKind.BACKUP)]


# --------------------------------------------------------------------------------------------
# Recovery points, protection, long-running jobs


class TestRecoveryPoint:
    def test_breached_once_then_restored(self) -> None:
        """Daily: allowed 1 day + 1 hour; one breach, one restore."""
        policy = daily_at(2)
        now = utc(2026, 5, 11, 12)
        fresh = run_round(
            make_item(last_recovery_point=now - timedelta(hours=10)), policy, None, [], now
        )
        assert fresh.changes == ()
        assert not fresh.state.rpo_breached
        stale_item = make_item(last_recovery_point=now - timedelta(hours=10))
        later = now + timedelta(hours=16)
        stale = run_round(stale_item, policy, fresh.state, [job("j", utc(2026, 5, 12, 2))], later)
        (breach,) = stale.changes
        assert isinstance(breach, RpoBreached)
        assert breach.allowed_s == 25 * 3600
        assert breach.breached_at == stale_item.last_recovery_point + timedelta(hours=25)  # type: ignore[operator]
        assert stale.health is ItemHealth.OVERDUE
        again = run_round(stale_item, policy, stale.state, [], later + timedelta(minutes=5))
        assert again.changes == ()
        restored_item = make_item(last_recovery_point=later)
        restored = run_round(restored_item, policy, again.state, [], later + timedelta(minutes=10))
        (restore,) = restored.changes
        assert isinstance(restore, RpoRestored)
        assert restored.health is ItemHealth.FRESH

    def test_weekly_allows_the_longest_gap(self) -> None:
        """Monday and Thursday: the gap Thursday → Monday (4 days) plus the grace."""
        policy = make_policy(SubSchedule(RunKind.BACKUP, TimesOfDay((time(2),), frozenset({0, 3}))))
        now = utc(2026, 5, 11, 12)
        item = make_item(last_recovery_point=now - timedelta(days=4))
        assert run_round(item, policy, None, [], now).changes == ()
        item = make_item(last_recovery_point=now - timedelta(days=4, hours=1, minutes=1))
        (breach,) = run_round(item, policy, None, [], now).changes
        assert isinstance(breach, RpoBreached)
        assert breach.allowed_s == (4 * 24 + 1) * 3600

    def test_an_unprotected_item_keeps_its_flag(self) -> None:
        """Stopping protection neither restores nor re-reports a breach."""
        policy = daily_at(2)
        now = utc(2026, 5, 11, 12)
        item = make_item(last_recovery_point=now - timedelta(days=3))
        breached = run_round(item, policy, None, [], now)
        assert breached.state.rpo_breached
        stopped = run_round(
            replace(item, protection_state="ProtectionStopped"),
            policy,
            breached.state,
            [],
            now + timedelta(hours=1),
        )
        assert [type(c) for c in stopped.changes] == [ProtectionChanged]
        assert stopped.state.rpo_breached


class TestProtection:
    def test_a_change_is_reported_with_its_sequence(self) -> None:
        """Protected → ProtectionError → Protected: seq 1, 2; none on first sight."""
        policy = daily_at(2)
        first = run_round(make_item(), policy, None, [], utc(2026, 5, 10, 12))
        assert first.changes == ()
        error = run_round(
            make_item("ProtectionError", "ActionRequired"),
            policy,
            first.state,
            [],
            utc(2026, 5, 10, 13),
        )
        (change,) = error.changes
        assert isinstance(change, ProtectionChanged)
        assert (change.previous_state, change.previous_health, change.seq) == (
            "Protected",
            "Passed",
            1,
        )
        assert change.event_id == item_event_id(make_item().id, "protection_changed", "1")
        back = run_round(make_item(), policy, error.state, [], utc(2026, 5, 10, 14))
        (change,) = back.changes
        assert isinstance(change, ProtectionChanged)
        assert change.seq == 2
        assert run_round(make_item(), policy, back.state, [], utc(2026, 5, 10, 15)).changes == ()
        recased = run_round(
            make_item("protected", "PASSED"), policy, back.state, [], utc(2026, 5, 10, 16)
        )
        assert recased.changes == ()

    def test_changes_come_in_order(self) -> None:
        """Protection, then missed runs by start, then RPO, then long-running jobs."""
        policy = daily_at(2, 6)
        item = make_item(last_recovery_point=utc(2026, 5, 1))
        state = replace(
            run_round(item, policy, None, [], utc(2026, 5, 10, 12)).state, rpo_breached=False
        )
        hung = job("hung", utc(2026, 5, 10, 13), "Backup", JobStatus.IN_PROGRESS, None)
        error = replace(item, protection_state="ProtectionError")
        result = run_round(error, policy, state, [hung], utc(2026, 5, 11, 12), utc(2026, 5, 11, 14))
        kinds = [type(c) for c in result.changes]
        assert kinds == [ProtectionChanged, BackupMissed, BackupMissed, RpoBreached, LongRunning]
        runs = missed_of(result)
        assert runs == sorted(runs)


class TestLongRunning:
    def test_absolute_threshold_once(self) -> None:
        """After after_s, one report; the name stays flagged while it runs, then goes."""
        hung = job("hung", utc(2026, 5, 10), "Backup", JobStatus.IN_PROGRESS, None)
        found, flagged = long_running_jobs(
            [hung],
            item=None,
            vault_key=VAULT,
            durations=[],
            flagged=[],
            now=utc(2026, 5, 11, 0, 1),
            settings=LONG,
        )
        (event,) = found
        assert (event.reason, event.threshold_s, event.median_s) == ("absolute", 86400.0, None)
        assert event.event_id == item_event_id(f"{VAULT}/hung", "long_running")
        assert flagged == ("hung",)
        again, flagged = long_running_jobs(
            [hung],
            item=None,
            vault_key=VAULT,
            durations=[],
            flagged=flagged,
            now=utc(2026, 5, 11, 1),
            settings=LONG,
        )
        assert again == ()
        assert flagged == ("hung",)
        done = replace(hung, status=JobStatus.COMPLETED)
        _, flagged = long_running_jobs(
            [done],
            item=None,
            vault_key=VAULT,
            durations=[],
            flagged=flagged,
            now=utc(2026, 5, 11, 2),
            settings=LONG,
        )
        assert flagged == ()

    def test_median_threshold_needs_samples(self) -> None:
        """3 × the median of 5 durations of 10 minutes: past 30 minutes; with 4, no median."""
        running = job("r", utc(2026, 5, 10), "Backup", JobStatus.IN_PROGRESS, None)
        now = utc(2026, 5, 10, 0, 31)
        found, _ = long_running_jobs(
            [running],
            item=None,
            vault_key=VAULT,
            durations=[600.0] * 5,
            flagged=[],
            now=now,
            settings=LONG,
        )
        (event,) = found
        assert (event.reason, event.threshold_s, event.median_s, event.samples) == (
            "median",
            1800.0,
            600.0,
            5,
        )
        found, _ = long_running_jobs(
            [running],
            item=None,
            vault_key=VAULT,
            durations=[600.0] * 4,
            flagged=[],
            now=now,
            settings=LONG,
        )
        assert found == ()
        off = LongRunningSettings(after_s=0, factor=0)
        found, _ = long_running_jobs(
            [running],
            item=None,
            vault_key=VAULT,
            durations=[1.0] * 9,
            flagged=[],
            now=utc(2027, 1, 1),
            settings=off,
        )
        assert found == ()

    def test_evaluate_learns_durations_and_remembers_running_jobs(self) -> None:
        """Finished jobs add their durations (unique, newest kept); running ones reach back."""
        policy = daily_at(2)
        jobs = [job(f"d{i}", utc(2026, 5, 10, 1, i), duration_s=60.0 * (i + 1)) for i in range(4)]
        jobs.append(job("run", utc(2026, 5, 10, 3), "Backup", JobStatus.IN_PROGRESS, None))
        small = LongRunningSettings(history=3)
        first = evaluate(
            make_item(),
            policy,
            None,
            jobs,
            seen_until=utc(2026, 5, 10, 4),
            now=utc(2026, 5, 10, 4),
            settings=SETTINGS,
            long_running=small,
        )
        assert first.state.durations == (("d1", 120.0), ("d2", 180.0), ("d3", 240.0))
        assert first.state.running == (("run", utc(2026, 5, 10, 3)),)
        again = run_round(
            make_item(), policy, first.state, jobs, utc(2026, 5, 12, 4), long_running=small
        )
        assert again.state.durations == first.state.durations
        assert window_start(again.state, policy, now=utc(2026, 5, 12, 5), settings=SETTINGS) <= utc(
            2026, 5, 10, 3
        )


# --------------------------------------------------------------------------------------------
# The job window


class TestWindowStart:
    def test_first_sight(self) -> None:
        """now − the largest grace − early_s."""
        assert window_start(None, daily_at(2), now=utc(2026, 5, 10, 12), settings=SETTINGS) == utc(
            2026, 5, 10, 10, 50
        )
        hourly = make_policy(SubSchedule(RunKind.BACKUP, HourlyWindow(time(0), 8, 24)))
        assert window_start(None, hourly, now=utc(2026, 5, 10, 12), settings=SETTINGS) == utc(
            2026, 5, 10, 7, 50
        )

    def test_reaches_back_to_the_oldest_undecided_run(self) -> None:
        """decided through 02:30: the 02:00 run (due 03:00) is open from 01:50."""
        state = ItemState(
            decided_through=utc(2026, 5, 11, 2, 30),
            protection_state="Protected",
            health_status=None,
        )
        assert window_start(
            state, daily_at(2), now=utc(2026, 5, 11, 2, 40), settings=SETTINGS
        ) == utc(2026, 5, 11, 1, 50)
        state = replace(state, decided_through=utc(2026, 5, 11, 5))
        assert window_start(
            state, daily_at(2), now=utc(2026, 5, 11, 5, 10), settings=SETTINGS
        ) == utc(2026, 5, 11, 5)
        state = replace(state, running=(("r", utc(2026, 5, 9)),))
        assert window_start(
            state, daily_at(2), now=utc(2026, 5, 11, 5, 10), settings=SETTINGS
        ) == utc(2026, 5, 9)


# --------------------------------------------------------------------------------------------
# State as JSON

names = st.text(min_size=1, max_size=12)
instants = st.datetimes(
    utc(2001, 1, 1).replace(tzinfo=None),
    utc(2100, 1, 1).replace(tzinfo=None),
    timezones=st.just(UTC),
)
states = st.builds(
    ItemState,
    decided_through=instants,
    protection_state=st.none() | names,
    health_status=st.none() | names,
    protection_seq=st.integers(0, 10**6),
    rpo_breached=st.booleans(),
    last_run_missed=st.booleans(),
    durations=st.lists(st.tuples(names, st.floats(0, 1e7)), max_size=5).map(tuple),
    flagged=st.lists(names, max_size=3).map(tuple),
    running=st.lists(st.tuples(names, instants), max_size=3).map(tuple),
    used=st.lists(names, max_size=3).map(tuple),
)


class TestStateJson:
    @PROPERTY
    @given(state=states)
    def test_round_trip(self, state: ItemState) -> None:
        """to_json is plain JSON that from_json reads back equal."""
        text = json.dumps(state.to_json())
        assert ItemState.from_json(json.loads(text)) == state

    def test_times_are_iso_z(self) -> None:
        state = ItemState(
            decided_through=utc(2026, 3, 29, 1), protection_state=None, health_status=None
        )
        assert state.to_json()["decided_through"] == "2026-03-29T01:00:00Z"

    @pytest.mark.parametrize(
        ("edit", "path"),
        [
            (lambda d: d.update(v=2), "v"),
            (lambda d: d.update(decided_through="2026-03-29T01:00:00"), "decided_through"),
            (lambda d: d.update(decided_through=17), "decided_through"),
            (lambda d: d.update(protection_seq=-1), "protection_seq"),
            (lambda d: d.update(rpo_breached="yes"), "rpo_breached"),
            (lambda d: d.update(durations=[["a", "NaN"]]), "durations[0][1]"),
            (lambda d: d.update(durations=[["a"]]), "durations[0]"),
            (lambda d: d.update(running=[["a", "soon"]]), "running[0][1]"),
            (lambda d: d.update(flagged="a"), "flagged"),
            (lambda d: d.update(used=[3]), "used[0]"),
        ],
    )
    def test_malformed_states_name_their_path(self, edit: Any, path: str) -> None:
        stored = ItemState(
            decided_through=utc(2026, 3, 29, 1), protection_state=None, health_status=None
        ).to_json()
        edit(stored)
        with pytest.raises(ParseError) as caught:
            ItemState.from_json(stored)
        assert caught.value.path == path

    @PROPERTY
    @given(value=json_values)
    def test_anything_else_raises_parse_error_only(self, value: object) -> None:
        with contextlib.suppress(ParseError):
            ItemState.from_json(value)


guids = st.uuids().map(str)
job_names = guids | guids.map(str.upper) | names
rows_of_names = st.lists(job_names, max_size=25) | st.lists(guids, max_size=25)
durations_rows = st.lists(
    st.tuples(job_names, st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 10**6)),
    max_size=25,
) | st.lists(st.tuples(guids, st.floats(0, 1e9)), max_size=25)
# Wall times of any zone, except those in a gap or a fold: their offset depends on `fold`, so
# (PEP 495) they never compare equal to another zone's datetime, even of the same instant.
zoned_instants = st.datetimes(timezones=st.timezones()).filter(
    lambda at: at.replace(fold=1 - at.fold).utcoffset() == at.utcoffset()
)
starts_rows = st.lists(st.tuples(job_names, instants), max_size=5) | st.lists(
    st.tuples(guids, instants | zoned_instants), max_size=5
)

# Written by ItemState.to_json before the sequences were packed (at 150c167), one all-GUID and
# one with names of other shapes.
STORED_BEFORE_PACKING = [
    '{"v":1,"decided_through":"2026-12-03T23:59:45.123456Z","protection_state":"Protected",'
    '"health_status":"Healthy","protection_seq":2,"rpo_breached":false,"last_run_missed":true,'
    '"durations":[["0b9e6f1c-3a2d-4c8e-9f10-2b7d5e4a6c81",1234.5],'
    '["5f2c8a90-1e4b-4d7a-8c3f-6a9b0d2e7f14",61.0]],'
    '"flagged":["5f2c8a90-1e4b-4d7a-8c3f-6a9b0d2e7f14"],'
    '"running":[["c1d2e3f4-a5b6-4789-9abc-def012345678","2026-12-03T23:10:00.000005Z"]],'
    '"used":["0b9e6f1c-3a2d-4c8e-9f10-2b7d5e4a6c81","c1d2e3f4-a5b6-4789-9abc-def012345678"]}',
    '{"v":1,"decided_through":"2026-12-03T23:59:45.123456Z","protection_state":"Protected",'
    '"health_status":"Healthy","protection_seq":2,"rpo_breached":false,"last_run_missed":true,'
    '"durations":[["0b9e6f1c-3a2d-4c8e-9f10-2b7d5e4a6c81",1234.5],'
    '["5f2c8a90-1e4b-4d7a-8c3f-6a9b0d2e7f14",61.0],["Backup-Job-7",3.25],'
    '["E3A1B2C4-D5E6-4F70-8192-A3B4C5D6E7F8",0.0]],'
    '"flagged":["5f2c8a90-1e4b-4d7a-8c3f-6a9b0d2e7f14"],'
    '"running":[["c1d2e3f4-a5b6-4789-9abc-def012345678","2026-12-03T23:10:00Z"]],'
    '"used":["0b9e6f1c-3a2d-4c8e-9f10-2b7d5e4a6c81","c1d2e3f4-a5b6-4789-9abc-def012345678"]}',
]


def flat(rows: Any) -> list[object]:
    """Every value of `rows` (names, or the values of each pair)."""
    return [v for row in rows for v in (row if isinstance(row, tuple) else (row,))]


class TestPackedState:
    @PROPERTY
    @given(durations=durations_rows, flagged=rows_of_names, running=starts_rows, used=rows_of_names)
    def test_packed_sequences_give_back_what_was_given(
        self,
        durations: list[tuple[str, float]],
        flagged: list[str],
        running: list[tuple[str, datetime]],
        used: list[str],
    ) -> None:
        """Whether packed or not, each sequence reads back as the tuple it was given (the same
        names, numbers and instants, of the same types), equal to it, hashing alike, and the
        JSON is that of the unpacked rows."""
        state = ItemState(
            decided_through=utc(2026, 1, 1),
            protection_state=None,
            health_status=None,
            durations=durations,
            flagged=flagged,
            running=running,
            used=used,
        )
        given: dict[str, list[Any]] = {
            "durations": durations,
            "flagged": flagged,
            "running": running,
            "used": used,
        }
        for name, rows in given.items():
            kept: Any = getattr(state, name)
            assert kept == tuple(rows)
            assert tuple(rows) == kept
            assert hash(kept) == hash(tuple(rows))
            assert len(kept) == len(rows)
            assert list(kept) == rows
            assert [type(v) for v in flat(kept)] == [type(v) for v in flat(rows)]
            if rows:
                assert kept[-1] == rows[-1]
                assert kept[:2] == tuple(rows[:2])
        stored: Any = state.to_json()
        assert stored["durations"] == [[n, s] for n, s in durations]
        assert stored["flagged"] == flagged
        assert stored["used"] == used
        assert [n for n, _ in stored["running"]] == [n for n, _ in running]
        again = ItemState.from_json(json.loads(json.dumps(stored)))
        assert again == state
        assert hash(again) == hash(state)
        assert replace(state, protection_seq=1) == replace(again, protection_seq=1)

    def test_lower_case_guids_are_packed(self) -> None:
        """Rows of lower-case GUIDs (as ARM names jobs) are kept in one bytes object."""
        name = "0b9e6f1c-3a2d-4c8e-9f10-2b7d5e4a6c81"
        state = ItemState(
            decided_through=utc(2026, 1, 1),
            protection_state=None,
            health_status=None,
            durations=[(name, 1.5)] * 20,
            used=(name,),
            running=((name, utc(2026, 1, 1, 1)),),
        )
        assert not isinstance(state.durations, tuple)
        assert not isinstance(state.used, tuple)
        assert not isinstance(state.running, tuple)
        assert state.durations[0] == (name, 1.5)
        assert state.running[0] == (name, utc(2026, 1, 1, 1))
        assert state.running[0][1].tzinfo is UTC

    def test_other_names_are_kept_as_given(self) -> None:
        """A sequence with any name that is not a lower-case GUID is kept as its tuple."""
        state = ItemState(
            decided_through=utc(2026, 1, 1),
            protection_state=None,
            health_status=None,
            used=["0b9e6f1c-3a2d-4c8e-9f10-2b7d5e4a6c81", "Job-7"],
        )
        assert state.used == ("0b9e6f1c-3a2d-4c8e-9f10-2b7d5e4a6c81", "Job-7")
        assert isinstance(state.used, tuple)

    @pytest.mark.parametrize("text", STORED_BEFORE_PACKING)
    def test_a_state_stored_before_packing_loads_equal(self, text: str) -> None:
        """A state the unpacked code stored loads into a state equal to the one it stored (the
        same rows), and is stored again as the same JSON."""
        value = json.loads(text)
        loaded = ItemState.from_json(value)
        expected = ItemState(
            decided_through=datetime.fromisoformat(value["decided_through"]),
            protection_state=value["protection_state"],
            health_status=value["health_status"],
            protection_seq=value["protection_seq"],
            rpo_breached=value["rpo_breached"],
            last_run_missed=value["last_run_missed"],
            durations=tuple((n, float(s)) for n, s in value["durations"]),
            flagged=tuple(value["flagged"]),
            running=tuple((n, datetime.fromisoformat(t)) for n, t in value["running"]),
            used=tuple(value["used"]),
        )
        assert loaded == expected
        assert tuple(loaded.durations) == expected.durations
        assert tuple(loaded.running) == tuple(expected.running)
        assert json.dumps(loaded.to_json(), separators=(",", ":")) == text
