"""The fault matrix and the kill loop: the daemon under faults, judged by the ground truth.

Each fault runs for a while against a live daemon, is lifted, and the daemon must then catch up:
every terminal transition emitted once, nothing the world never made. The short form (default)
runs a few seconds per fault; RELIABILITY_LONG=1 runs longer and kills more often.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
import pytest

from monitor.emulator import (
    EmulatorSettings,
    FaultSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.throttle import Throttle
from tests.reliability.harness import LONG, now, reliability_daemon, wait_until_caught_up

pytestmark = pytest.mark.reliability

FAULT_S = 20.0 if LONG else 5.0
KILLS = 12 if LONG else 3


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: FaultSettings = field(default_factory=FaultSettings)
    storm: ThrottleSettings | None = None  # ARM's limits while the fault lasts


SCENARIOS = [
    Scenario("5xx_bursts", FaultSettings(server_error=0.3)),
    Scenario("dropped_connections", FaultSettings(drop=0.25)),
    Scenario("latency_spikes", FaultSettings(latency=0.3, latency_s=2.0)),
    Scenario("token_expiry", FaultSettings(expired_token=0.3)),
    Scenario("malformed_and_truncated", FaultSettings(malformed=0.15, truncate=0.15)),
    # Tiny buckets: ARM itself throttles far below what the budget assumes (a 429 storm).
    Scenario("429_storm", storm=ThrottleSettings(reads_bucket=1, reads_per_s=0.1)),
    Scenario("all_mixed_5pct", FaultSettings.mixed(0.05, latency_s=0.5)),
]
SHORT = {"5xx_bursts", "malformed_and_truncated", "429_storm"}


def _settings(seed: int, scenario: Scenario) -> EmulatorSettings:
    return EmulatorSettings(
        world=WorldSettings(seed=seed, subscriptions=1, vaults_per_subscription=4),
        page_size=3,
    )


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(
            s,
            id=s.name,
            marks=() if LONG or s.name in SHORT else pytest.mark.skip("RELIABILITY_LONG=1"),
        )
        for s in SCENARIOS
    ],
)
@pytest.mark.long(seconds=13)
async def test_fault_then_catch_up(scenario: Scenario, tmp_path: Path) -> None:
    """Under the fault and after it: nothing missed, nothing duplicated, nothing wrong."""
    async with running_emulator(_settings(31, scenario)) as emu:
        daemon = reliability_daemon(tmp_path, emu)
        try:
            daemon.start()
            # The fault starts once the daemon polls, not after a guessed start-up time.
            await daemon.wait_for_log("scheduler.started", this_run=True, timeout_s=30)
            emu.arm.faults.settings = scenario.faults
            if scenario.storm is not None:
                emu.arm.throttle = Throttle(scenario.storm)
            await anyio.sleep(FAULT_S)
            throttled = int(emu.throttle.stats_json()["throttled_429"])  # type: ignore[call-overload]
            emu.arm.faults.settings = FaultSettings()
            emu.arm.throttle = Throttle(ThrottleSettings())
            lifted = now()
            verdict = await wait_until_caught_up(daemon, emu, cutoff=lifted)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
    assert sum(emu.faults.injected.values()) + throttled > 0, "the fault never happened"
    assert not verdict.missing, verdict.describe()
    assert not verdict.duplicates, verdict.describe()
    assert not verdict.wrong, verdict.wrong[:2]


async def test_vaults_deleted_and_forbidden_mid_run(tmp_path: Path) -> None:
    """A vault turned 403 and one deleted mid-run: every other vault stays exact."""
    settings = _settings(32, Scenario("x"))
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        daemon = reliability_daemon(tmp_path, emu)
        forbidden, deleted = list(emu.world.vaults.values())[:2]
        skip = frozenset({forbidden.key, deleted.key})
        try:
            daemon.start()
            # The vaults change once the daemon has polled and emitted, not after a guessed delay.
            await daemon.wait_for_events(1, timeout_s=30)
            async with http.post(f"{emu.url}/_emulator/vaults/forbid", json={"id": forbidden.id}):
                pass
            async with http.delete(f"{emu.url}/_emulator/vaults", params={"id": deleted.id}):
                pass
            # Until the daemon has met both: the 403 and the vault gone.
            await daemon.wait_for_log(
                "poll.failed",
                where=lambda r: r.get("status") == 403 and r.get("vault") == forbidden.name,
                timeout_s=30,
            )
            await daemon.wait_for_log(
                "vault.dropped", where=lambda r: r.get("vault") == deleted.name, timeout_s=60
            )
            verdict = await wait_until_caught_up(daemon, emu, cutoff=now(), skip_vaults=skip)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
    assert not verdict.missing, verdict.describe()
    assert not verdict.duplicates, verdict.describe()
    assert not verdict.wrong, verdict.wrong[:2]


@pytest.mark.long(seconds=16)
async def test_kill_loop(tmp_path: Path) -> None:
    """SIGKILL at random moments, restart each time: nothing missed, duplicated or wrong.

    A kill between a batch's emit and its checkpoint leaves events the checkpoint lacks; the
    restart reads them back from the events file (monitor/recovery.py), so none is repeated.
    """
    rng = random.Random(6)
    settings = EmulatorSettings(
        world=WorldSettings(seed=33, subscriptions=1, vaults_per_subscription=12), page_size=3
    )
    async with running_emulator(settings) as emu:
        daemon = reliability_daemon(tmp_path, emu)
        try:
            for _ in range(KILLS):
                daemon.start()
                await anyio.sleep(rng.uniform(1.0, 5.0))
                assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
                await anyio.sleep(rng.uniform(0.0, 1.0))
            daemon.start()
            last_kill = now()
            await daemon.wait_for_log("scheduler.started", this_run=True, timeout_s=30)
            verdict = await wait_until_caught_up(daemon, emu, cutoff=last_kill)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
    print(f"kill loop, {KILLS} SIGKILLs: {verdict.describe()}")  # noqa: T201
    assert not verdict.missing, verdict.describe()
    assert not verdict.wrong, verdict.wrong[:2]
    assert not verdict.duplicates, verdict.describe()
