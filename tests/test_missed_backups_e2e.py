"""A simulated week of scheduled backups, some of them silently skipped: the daemon reports every
skipped run once, and no run that happened, across a SIGTERM and a SIGKILL restart.

The emulator (`--profile policies`) runs its policies' schedules in their Windows zones on an
accelerated clock (`ScaledClock`); the daemon runs on the same clock (`[clock]`), so a week of
world time passes in a few real minutes. The week crosses the end of daylight-saving time in
North America (2026-11-01: the daily policy's "Pacific Standard Time" and the SQL policy's
"Eastern Standard Time"). Ground truth is `/_emulator/expected`: every scheduled run, the job
it made or why it made none.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import jsonschema

from monitor.emulator import EmulatorSettings, WorldSettings, running_emulator
from monitor.emulator.catalogue import PROFILES
from monitor.emulator.clock import ScaledClock
from monitor.events import event_schema
from tests.daemon import Daemon, write_config

SPEED = 2400.0  # world seconds per real second: a week in 252 real seconds
START = datetime(2026, 10, 29, 0, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
ITEMS_INTERVAL_S = 900.0
GRACE_S = 3600.0
GRACE_FRACTION = 0.5
LONGEST_GRACE = timedelta(hours=2)  # the 4-hourly window's: 0.5 × 4 h
SETTLE = timedelta(seconds=15)  # item_watcher.LIST_SETTLE_S
MISSED = "backup_item.backup_missed"


def world_at(real: float, anchor: float) -> datetime:
    return START + timedelta(seconds=(real - anchor) * SPEED)


def logged_at(row: dict[str, Any], anchor: float) -> datetime:
    """The world time of a daemon log row (its `timestamp` is real time; the daemon's clock is
    the test's)."""
    return world_at(parse_time(row["timestamp"]).timestamp(), anchor)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


async def expected_runs(emu_url: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    since = 0
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{emu_url}/_emulator/expected?since={since}") as answer:
                answer.raise_for_status()
                page = await answer.json()
            runs += page["runs"]
            if not page["runs"]:
                return runs
            since = page["next"]


def run_key(item_id: str, due: datetime, kind: str) -> tuple[str, datetime, str]:
    return (item_id.lower(), due.replace(microsecond=0), kind.lower())


async def test_a_week_of_skipped_runs_is_reported_once_each(tmp_path: Path) -> None:
    anchor = time.time()
    clock = ScaledClock(SPEED, START, anchor)
    settings = EmulatorSettings(
        world=WorldSettings(
            seed=13,
            subscriptions=1,
            vaults_per_subscription=2,
            profile=PROFILES["policies"],
            skip_rate=0.12,
        ),
    )
    async with running_emulator(settings, clock=clock) as emu:
        config = write_config(
            tmp_path / "monitor.toml",
            emu,
            tmp_path / "state.sqlite",
            sections={
                "clock": {"speed": SPEED, "start": START.isoformat(), "anchor": anchor},
                "protection": {
                    "enabled": True,
                    "items_interval_s": ITEMS_INTERVAL_S,
                    "grace_s": GRACE_S,
                    "grace_fraction": GRACE_FRACTION,
                },
                # World seconds: at 2,400× a 30 s rediscovery would be 80 a real minute.
                "discovery": {"interval_s": 86400},
                "azure": {"request_timeout_s": 600},
            },
            active_interval_s=900,
            idle_interval_s=3600,
        )
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "daemon.log")
        downtimes: list[tuple[datetime, datetime]] = []
        try:
            daemon.start()
            # The daemon's first start is when it has read every vault's items, not when its
            # process began: at 2,400x a loaded machine's 2 s of imports are 80 world minutes,
            # in which runs pass their deadlines unseen (decided silently at first sight) and
            # jobs change with no index to name their item yet.
            first_rounds = await daemon.wait_for_log("items.first_round", count=2, timeout_s=60)
            first_start = max(logged_at(row, anchor) for row in first_rounds)
            for sig, day in ((signal.SIGTERM, 2.5), (signal.SIGKILL, 5.0)):
                await sleep_until(clock, START + timedelta(days=day))
                stopped = clock.utcnow()
                if sig is signal.SIGKILL:
                    assert daemon.process is not None
                    daemon.process.send_signal(sig)
                    await daemon.wait(timeout_s=30)
                else:
                    assert await daemon.stop(sig) == 0
                daemon.start()
                await daemon.wait_for_log("items.first_round", this_run=True, timeout_s=60)
                downtimes.append((stopped, clock.utcnow()))
            end = START + WEEK + LONGEST_GRACE + timedelta(seconds=ITEMS_INTERVAL_S) * 2
            await sleep_until(clock, end)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
        stopped_at = clock.utcnow()
        runs = await expected_runs(emu.url)

    events = daemon.read_events()
    validator = jsonschema.Draft202012Validator(
        event_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for event in events:
        validator.validate(event)
    ids = Counter(e["event_id"] for e in events)
    assert [i for i, n in ids.items() if n > 1] == [], "an event_id was written twice"

    missed = [e for e in events if e["event"] == MISSED]
    reported = Counter(
        run_key(
            e["item"]["id"], parse_time(e["expected_run"]["due_time"]), e["expected_run"]["kind"]
        )
        for e in missed
    )
    assert [k for k, n in reported.items() if n > 1] == []

    # Judged: runs whose whole grace lies after the daemon's first start (earlier ones it may
    # decide silently at first sight) and that ended early enough to be decided before the stop.
    judged_from = first_start + timedelta(minutes=5)
    judged_until = stopped_at - LONGEST_GRACE - timedelta(seconds=ITEMS_INTERVAL_S) - SETTLE
    truth = {run_key(r["item_id"], parse_time(r["due"]), r["kind"]): r for r in runs}
    assert len(truth) == len(runs), "two runs of one item, time and kind"
    happened = {k for k, r in truth.items() if r["job_id"] is not None}
    skipped = {
        k for k, r in truth.items() if r["job_id"] is None and judged_from <= k[1] <= judged_until
    }
    assert len(skipped) >= 20, f"too few skipped runs to judge: {len(skipped)}"
    wrong = sorted(set(reported) & happened)
    assert wrong == [], f"{len(wrong)} runs that made a job were reported missed: {wrong[:3]}"
    unknown = sorted(set(reported) - set(truth))
    assert unknown == [], f"reports of runs no schedule made: {unknown[:3]}"
    lost = sorted(skipped - set(reported))
    assert lost == [], f"{len(lost)} of {len(skipped)} skipped runs were not reported: {lost[:3]}"

    # Job events carry their item once the vault's items were read: every scheduled job whose
    # state changed an hour after the daemon's first start names the item that made it.
    made_by = {r["job_id"].lower(): r["item_id"].lower() for r in runs if r["job_id"]}
    named = [
        e
        for e in events
        if e["event"] == "backup_job.state_changed"
        and e["job"]["id"].lower() in made_by
        and parse_time(e["time"]) > first_start + timedelta(hours=1)
    ]
    assert len(named) >= 100
    unnamed = [
        (e["time"], e["job"]["status"], e["job"]["id"], e["job"]["protected_item_id"])
        for e in named
        if (e["job"]["protected_item_id"] or "").lower() != made_by[e["job"]["id"].lower()]
    ]
    assert unnamed == [], (
        f"{len(unnamed)} of {len(named)} job events without their item (the items' first "
        f"rounds ended at {first_start} world time): {unnamed[:3]}"
    )

    # How late: within the grace plus one items interval (and the settle), except for runs
    # whose deadline passed while the daemon was down: those come with its first round.
    late: list[float] = []
    for event in missed:
        deadline = parse_time(event["expected_run"]["deadline"])
        emitted = parse_time(event["time"])
        if any(down <= deadline <= up for down, up in downtimes):
            continue
        late.append((emitted - deadline).total_seconds())
    # + 300 s of world time: 125 ms of real time for the event loop's wake-up and the round's
    # first reads on a loaded machine (rounds are due an interval after the last one began).
    bound = ITEMS_INTERVAL_S + SETTLE.total_seconds() + 300.0
    assert late, "no report outside a downtime"
    assert max(late) <= bound, f"latest report {max(late):.0f} s after its deadline"
    kinds = Counter(e["expected_run"]["kind"] for e in missed)
    print(  # noqa: T201 - the figures of the run, for the closing note (pytest -s)
        f"\nweek: {len(truth)} scheduled runs, {len(skipped)} skipped and judged, "
        f"{len(missed)} reported ({dict(kinds)}); report delay after deadline: "
        f"max {max(late):.0f} s, mean {sum(late) / len(late):.0f} s (world); "
        f"downtimes {[round((b - a).total_seconds()) for a, b in downtimes]} s"
    )


async def sleep_until(clock: ScaledClock, moment: datetime) -> None:
    left = (moment - clock.utcnow()).total_seconds()
    if left > 0:
        await anyio.sleep(left / SPEED)
