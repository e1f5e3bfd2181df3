"""Both kinds of vault in one feed, end to end: the daemon against the emulator's ground truth.

Recovery Services vaults and Backup vaults (Microsoft.DataProtection) in the same subscriptions,
5 % of ARM requests failing in every way but foreign nextLinks, and a SIGKILL restart: every
terminal transition of both kinds once, nothing invented. Backup vault jobs come from Resource
Graph (rows 30 s late, so most running jobs are found by ARM reads and the backstop), or, as
the naive peer, from a full ARM listing on every poll.
"""

from __future__ import annotations

import signal
import statistics
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.emulator import (
    Emulator,
    EmulatorSettings,
    FaultSettings,
    ResourceGraphSettings,
    WorldSettings,
    running_emulator,
)
from tests.daemon import (
    Daemon,
    emulator_stats,
    ground_truth,
    judge,
    wait_until_caught_up,
    write_config,
)

KINDS = ("recovery_services", "backup_vault")


STALENESS_S = 30.0


def emulator_settings() -> EmulatorSettings:
    """2 subscriptions × (6 Recovery Services + 4 Backup vaults), 5 % faults, Resource Graph
    rows 30 s late."""
    return EmulatorSettings(
        world=WorldSettings(
            seed=12, subscriptions=2, vaults_per_subscription=6, backup_vaults_per_subscription=4
        ),
        faults=FaultSettings.mixed(0.05, latency_s=0.3),
        page_size=5,
        resource_graph=ResourceGraphSettings(staleness_s=STALENESS_S),
    )


@pytest.fixture
async def estate() -> AsyncIterator[Emulator]:
    async with running_emulator(emulator_settings()) as emu:
        yield emu


def lags(events: list[dict[str, Any]], watched_from: datetime) -> dict[str, list[float]]:
    """Detection lag of each terminal event of a job that ended once the monitor watched (not
    the first poll's backfill), by vault kind."""
    out: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for event in events:
        end = event["job"]["end_time"]
        if end is None or "detection_lag_s" not in event:
            continue
        if datetime.fromisoformat(end.replace("Z", "+00:00")) > watched_from:
            out[event["vault"]["kind"]].append(float(event["detection_lag_s"]))
    return out


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"n={len(values)} mean={statistics.fmean(values):.1f}s p95={p95:.1f}s"


async def run_across_a_kill(
    estate: Emulator, tmp_path: Path, backup_vaults: dict[str, object]
) -> tuple[list[dict[str, Any]], datetime, datetime]:
    """Run, SIGKILL, run again until caught up; the events, when the first run had polled
    every vault once, and the judging cutoff."""
    config = write_config(
        tmp_path / "monitor.toml",
        estate,
        tmp_path / "state.sqlite",
        sections={"backup_vaults": backup_vaults},
    )
    daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log")
    try:
        daemon.start()
        await daemon.wait_for_log("scheduler.started", count=1, timeout_s=60)
        watched_from = datetime.now(UTC) + timedelta(seconds=5)
        await wait_until_caught_up(
            daemon.read_events,
            estate,
            kinds=KINDS,
            cutoff=datetime.now(UTC) + timedelta(seconds=5),
            timeout_s=40,
        )
        assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        daemon.start()
        await daemon.wait_for_log("scheduler.started", count=2, timeout_s=60)
        cutoff = datetime.now(UTC) + timedelta(seconds=10)
        missing = await wait_until_caught_up(
            daemon.read_events, estate, kinds=KINDS, cutoff=cutoff, timeout_s=75
        )
        assert await daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.kill_if_running()
    assert not missing, f"{len(missing)} terminal transitions not emitted in time"
    return daemon.read_events(), watched_from, cutoff


@pytest.mark.long(seconds=90)
@pytest.mark.parametrize("jobs_from", ["resource_graph", "listing"])
async def test_both_kinds_once_across_a_kill(
    estate: Emulator, tmp_path: Path, jobs_from: str
) -> None:
    """0 missed, 0 duplicated, 0 invented over both kinds, with 5 % faults and a SIGKILL."""
    events, watched_from, cutoff = await run_across_a_kill(
        estate,
        tmp_path,
        {"jobs_from": jobs_from, "backstop_interval_s": 60, "resource_graph_refresh_s": 2},
    )
    truth = await ground_truth(estate, kinds=KINDS)
    missing, emitted, invented = judge(events, truth, cutoff=cutoff)
    assert not missing
    assert not invented, invented[:3]
    assert max(emitted.values()) == 1, {eid: n for eid, n in emitted.items() if n > 1}
    graph = (await emulator_stats(estate))["resource_graph"]
    if jobs_from == "resource_graph":
        assert graph["answered_200"] > 0  # the windows came from Resource Graph
    else:
        assert graph["requests"] == 0
    by_kind = lags(events, watched_from)
    assert by_kind["backup_vault"], "no Backup vault job was seen to end"
    assert by_kind["recovery_services"]
    rs, bv = summary(by_kind["recovery_services"]), summary(by_kind["backup_vault"])
    print(  # noqa: T201
        f"\n{jobs_from}: {graph['answered_200']} Resource Graph answers; detection lag, "
        f"recovery_services {rs}; backup_vault {bv}"
    )
