"""Backup policies of the "policies" profile: their schedules, due times and ARM shapes.

The emulator computes due times on its own, with `zoneinfo` and a table of the few Windows zones
its policies use, so that a mistake in the client's schedule code cannot hide on both sides.
Rules (the same the client is specified to follow):

- Run times are wall-clock times in the policy's zone. A local time inside a spring-forward gap
  runs at the first instant after the gap; a local time that occurs twice runs once, at its first
  occurrence (`fold=0`). Two local times that resolve to one instant give one run.
- An hourly window runs at its start, start + interval, ... while before start + duration (the
  window's end excluded), stepping in local wall-clock hours.
- Log backups run every N minutes of elapsed time, at multiples of N minutes since the Unix epoch.

Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# The emulator's own table for the zones its policies use (never shared with the client).
WINDOWS_ZONES: dict[str, str] = {
    "Pacific Standard Time": "America/Los_Angeles",
    "W. Europe Standard Time": "Europe/Berlin",
    "India Standard Time": "Asia/Kolkata",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "Eastern Standard Time": "America/New_York",
    "UTC": "UTC",
}

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Any date will do: only the time of day of a run time counts (the service writes one like this).
_RUN_TIME_DATE = "2021-08-15"


def resolve_local(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive local wall-clock time runs at in `zone`.

    A time in a spring-forward gap gives the first instant after the gap; a repeated time gives
    its first occurrence.
    """
    first = local.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant  # exists (fold=0 is the first occurrence of a repeated time)
    # In a gap: zoneinfo read it with the offset before the gap, which lands after the
    # transition. The transition is the earliest instant whose offset is the later one; walk
    # back minute by minute (gaps are at most a few hours long, transitions on whole minutes).
    after = instant.astimezone(zone).utcoffset()
    probe = instant.replace(second=0, microsecond=0)
    while (probe - timedelta(minutes=1)).astimezone(zone).utcoffset() == after:
        probe -= timedelta(minutes=1)
    return probe


@dataclass(frozen=True, slots=True, kw_only=True)
class TimesOfDay:
    """Runs at `times` (local) on every day, or only on `weekdays` (0 = Monday) when set."""

    times: tuple[time, ...]
    weekdays: frozenset[int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HourlyWindow:
    """Runs every `interval_h` local hours from `start` while before `start + duration_h`."""

    start: time
    interval_h: int
    duration_h: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EveryMinutes:
    """Runs at every multiple of `minutes` minutes since the Unix epoch (elapsed time)."""

    minutes: int


Cadence = TimesOfDay | HourlyWindow | EveryMinutes


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePart:
    """One schedule of a policy: a VM or file-share policy has one, a SQL policy Full + Log.

    Attributes:
        kind: what a run is, as `/_emulator/expected` writes it: "backup", "full" or "log".
        operation: the job operation a run starts ("Backup", "Backup (Full)", "Backup (Log)").
        cadence: when it runs.
        duration_s: range of a run's job duration.
    """

    kind: str
    operation: str
    cadence: Cadence
    duration_s: tuple[float, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A backup policy of one vault: its schedules in `zone_name` and its ARM properties."""

    vault_id: str
    name: str
    zone_name: str
    parts: tuple[SchedulePart, ...]
    properties: dict[str, Any] = field(compare=False)

    @property
    def id(self) -> str:
        return f"{self.vault_id}/backupPolicies/{self.name}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(WINDOWS_ZONES[self.zone_name])


def _local_runs(cadence: TimesOfDay | HourlyWindow, day: date) -> list[datetime]:
    """The naive local run times a day's schedule names (hourly windows may pass midnight)."""
    if isinstance(cadence, TimesOfDay):
        if cadence.weekdays is not None and day.weekday() not in cadence.weekdays:
            return []
        return [datetime.combine(day, t) for t in cadence.times]
    begin = datetime.combine(day, cadence.start)
    end = begin + timedelta(hours=cadence.duration_h)
    out, at = [], begin
    while at < end:
        out.append(at)
        at += timedelta(hours=cadence.interval_h)
    return out


def due_times(cadence: Cadence, zone: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """Every due instant (UTC) of `cadence` in `zone` inside (after, until], in order.

    Raises:
        ValueError: `after` or `until` is naive.
    """
    if after.tzinfo is None or until.tzinfo is None:
        raise ValueError("after and until must be timezone-aware")
    if until <= after:
        return []
    if isinstance(cadence, EveryMinutes):
        step = cadence.minutes * 60
        first = (int(after.timestamp()) // step + 1) * step
        last = int(until.timestamp())
        return [datetime.fromtimestamp(t, UTC) for t in range(first, last + 1, step)]
    found: set[datetime] = set()
    day = after.astimezone(zone).date() - timedelta(days=2)
    last_day = until.astimezone(zone).date() + timedelta(days=1)
    while day <= last_day:
        for local in _local_runs(cadence, day):
            instant = resolve_local(local, zone)
            if after < instant <= until:
                found.add(instant)
        day += timedelta(days=1)
    return sorted(found)


def next_due(cadence: Cadence, zone: ZoneInfo, after: datetime) -> datetime:
    """The first due instant strictly after `after`."""
    span = timedelta(days=2)
    while True:
        found = due_times(cadence, zone, after, after + span)
        if found:
            return found[0]
        span *= 2  # a weekly schedule may need more than two days


# ------------------------------------------------------------------------ the ARM shapes


def _run_time(t: time) -> str:
    return f"{_RUN_TIME_DATE}T{t:%H:%M:%S}Z"


def _retention(days: int) -> dict[str, Any]:
    return {
        "retentionPolicyType": "LongTermRetentionPolicy",
        "dailySchedule": {
            "retentionTimes": None,
            "retentionDuration": {"count": days, "durationType": "Days"},
        },
    }


def _weekly_retention(times: tuple[time, ...], days: frozenset[int]) -> dict[str, Any]:
    return {
        "retentionPolicyType": "LongTermRetentionPolicy",
        "weeklySchedule": {
            "daysOfTheWeek": [WEEKDAYS[d] for d in sorted(days)],
            "retentionTimes": [_run_time(t) for t in times],
            "retentionDuration": {"count": 12, "durationType": "Weeks"},
        },
    }


def _vm_daily(vault_id: str) -> Policy:
    runs = (time(1, 30),)
    zone = "Pacific Standard Time"
    return Policy(
        vault_id=vault_id,
        name="VmDailyPacific",
        zone_name=zone,
        parts=(
            SchedulePart(
                kind="backup",
                operation="Backup",
                cadence=TimesOfDay(times=runs),
                duration_s=(1200.0, 5400.0),
            ),
        ),
        properties={
            "backupManagementType": "AzureIaasVM",
            "policyType": "V2",
            "instantRPDetails": {},
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicyV2",
                "scheduleRunFrequency": "Daily",
                "dailySchedule": {"scheduleRunTimes": [_run_time(t) for t in runs]},
            },
            "retentionPolicy": _retention(30),
            "instantRpRetentionRangeInDays": 2,
            "timeZone": zone,
            "protectedItemsCount": 0,
        },
    )


def _vm_weekly(vault_id: str) -> Policy:
    runs, days = (time(2, 30),), frozenset({2, 6})  # Wednesday and Sunday
    zone = "W. Europe Standard Time"
    return Policy(
        vault_id=vault_id,
        name="VmWeeklyWEurope",
        zone_name=zone,
        parts=(
            SchedulePart(
                kind="backup",
                operation="Backup",
                cadence=TimesOfDay(times=runs, weekdays=days),
                duration_s=(1200.0, 5400.0),
            ),
        ),
        properties={
            "backupManagementType": "AzureIaasVM",
            "instantRPDetails": {},
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Weekly",
                "scheduleRunDays": [WEEKDAYS[d] for d in sorted(days)],
                "scheduleRunTimes": [_run_time(t) for t in runs],
                "scheduleWeeklyFrequency": 0,
            },
            "retentionPolicy": _weekly_retention(runs, days),
            "instantRpRetentionRangeInDays": 5,
            "timeZone": zone,
            "protectedItemsCount": 0,
        },
    )


def _vm_hourly(vault_id: str) -> Policy:
    window = HourlyWindow(start=time(6, 0), interval_h=4, duration_h=16)
    zone = "India Standard Time"
    return Policy(
        vault_id=vault_id,
        name="VmHourlyIndia",
        zone_name=zone,
        parts=(
            SchedulePart(
                kind="backup", operation="Backup", cadence=window, duration_s=(1200.0, 5400.0)
            ),
        ),
        properties={
            "backupManagementType": "AzureIaasVM",
            "policyType": "V2",
            "instantRPDetails": {},
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicyV2",
                "scheduleRunFrequency": "Hourly",
                "hourlySchedule": {
                    "interval": window.interval_h,
                    "scheduleWindowStartTime": _run_time(window.start),
                    "scheduleWindowDuration": window.duration_h,
                },
            },
            "retentionPolicy": _retention(30),
            "instantRpRetentionRangeInDays": 7,
            "timeZone": zone,
            "protectedItemsCount": 0,
        },
    )


def _files_daily(vault_id: str) -> Policy:
    runs = (time(2, 30),)
    zone = "AUS Eastern Standard Time"
    return Policy(
        vault_id=vault_id,
        name="FilesDailyAusEast",
        zone_name=zone,
        parts=(
            SchedulePart(
                kind="backup",
                operation="Backup",
                cadence=TimesOfDay(times=runs),
                duration_s=(120.0, 900.0),
            ),
        ),
        properties={
            "backupManagementType": "AzureStorage",
            "workLoadType": "AzureFileShare",
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Daily",
                "scheduleRunTimes": [_run_time(t) for t in runs],
                "scheduleWeeklyFrequency": 0,
            },
            "retentionPolicy": _retention(30),
            "timeZone": zone,
            "protectedItemsCount": 0,
        },
    )


def _sql(vault_id: str) -> Policy:
    full, log_every = (time(23, 0),), 60
    zone = "Eastern Standard Time"
    return Policy(
        vault_id=vault_id,
        name="SqlFullDailyLogHourly",
        zone_name=zone,
        parts=(
            SchedulePart(
                kind="full",
                operation="Backup (Full)",
                cadence=TimesOfDay(times=full),
                duration_s=(900.0, 3600.0),
            ),
            SchedulePart(
                kind="log",
                operation="Backup (Log)",
                cadence=EveryMinutes(minutes=log_every),
                duration_s=(60.0, 300.0),
            ),
        ),
        properties={
            "backupManagementType": "AzureWorkload",
            "workLoadType": "SQLDataBase",
            "settings": {"timeZone": zone, "issqlcompression": False, "isCompression": False},
            "subProtectionPolicy": [
                {
                    "policyType": "Full",
                    "schedulePolicy": {
                        "schedulePolicyType": "SimpleSchedulePolicy",
                        "scheduleRunFrequency": "Daily",
                        "scheduleRunTimes": [_run_time(t) for t in full],
                        "scheduleWeeklyFrequency": 0,
                    },
                    "retentionPolicy": _retention(30),
                },
                {
                    "policyType": "Log",
                    "schedulePolicy": {
                        "schedulePolicyType": "LogSchedulePolicy",
                        "scheduleFrequencyInMins": log_every,
                    },
                    "retentionPolicy": {
                        "retentionPolicyType": "SimpleRetentionPolicy",
                        "retentionDuration": {"count": 15, "durationType": "Days"},
                    },
                },
            ],
            "protectedItemsCount": 0,
        },
    )


def vault_policies(vault_id: str) -> dict[str, Policy]:
    """The policies every vault of the "policies" profile has, by role.

    Roles: "vm_daily", "vm_weekly", "vm_hourly", "files", "sql".
    """
    return {
        "vm_daily": _vm_daily(vault_id),
        "vm_weekly": _vm_weekly(vault_id),
        "vm_hourly": _vm_hourly(vault_id),
        "files": _files_daily(vault_id),
        "sql": _sql(vault_id),
    }


def policy_json(policy: Policy, protected_items: int) -> dict[str, Any]:
    """A `backupPolicies` row as `BackupPolicies_List` returns it."""
    return {
        "id": policy.id,
        "name": policy.name,
        "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
        "properties": {**policy.properties, "protectedItemsCount": protected_items},
    }
