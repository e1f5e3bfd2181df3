"""The daemon as a real process against the emulator, judged against the emulator's ground truth."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import anyio
import pytest

from monitor.emulator import (
    Emulator,
    EmulatorSettings,
    FaultSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from tests.daemon import (
    Daemon,
    emulator_stats,
    ground_truth,
    judge,
    wait_for_world,
    wait_until_caught_up,
    write_config,
)


@pytest.fixture
def daemon_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "monitor.toml", tmp_path / "events.jsonl", tmp_path / "stderr.log"


@pytest.fixture
async def estate() -> AsyncIterator[Emulator]:
    """3 subscriptions × 20 vaults with 5 % of ARM requests failing in every way but one."""
    settings = EmulatorSettings(
        world=WorldSettings(seed=21, subscriptions=3, vaults_per_subscription=20),
        faults=FaultSettings.mixed(0.05, latency_s=0.3),
        page_size=5,
    )
    async with running_emulator(settings) as emu:
        yield emu


@pytest.mark.long(seconds=25)
async def test_every_terminal_transition_once_across_restarts(
    estate: Emulator, daemon_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Steady run, SIGTERM restart, SIGKILL restart, 5 % faults: nothing missed or invented."""
    config, events_path, logs = daemon_files
    write_config(config, estate, tmp_path / "state.sqlite")
    daemon = Daemon(config, events_path, logs)
    try:
        # Each run is timed from its own start-up line (the log file collects all three runs),
        # so a slow interpreter start under load shortens no run. Each waits for what it is
        # there for, within the time it used to be given.
        daemon.start()
        await daemon.wait_for_log("scheduler.started", count=1, timeout_s=60)
        await daemon.wait_for_events(51, timeout_s=12)
        assert await daemon.stop(signal.SIGTERM) == 0
        after_sigterm = len(daemon.read_events())
        # The world moves on while the monitor is down: a job ends that it must catch up on.
        await wait_for_world(estate, terminal_after=datetime.now(UTC), timeout_s=30)
        daemon.start()
        await daemon.wait_for_log("scheduler.started", count=2, timeout_s=60)
        # Killed once it has caught up on the downtime (within the 10 s it used to run).
        await wait_until_caught_up(
            daemon.read_events, estate, cutoff=datetime.now(UTC), timeout_s=10
        )
        assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        before_kill = len(daemon.read_events())
        await wait_for_world(estate, terminal_after=datetime.now(UTC), timeout_s=30)
        daemon.start()
        await daemon.wait_for_log("scheduler.started", count=3, timeout_s=60)
        # As before (stopped 14 s after the start, judged up to 10 s before the stop): every
        # terminal transition up to 4 s after the third start, emitted within 14 s of it.
        started = datetime.now(UTC)
        cutoff = started + timedelta(seconds=4)
        await wait_until_caught_up(daemon.read_events, estate, cutoff=cutoff, timeout_s=14)
        # ...and once more than 20 faults have met it over the three runs.
        left_s = (started + timedelta(seconds=14) - datetime.now(UTC)).total_seconds()
        with anyio.move_on_after(left_s):
            await daemon.wait_until(
                lambda: sum(estate.faults.injected.values()) > 20, timeout_s=14, every_s=0.1
            )
        assert await daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.kill_if_running()
    events = daemon.read_events()
    truth = await ground_truth(estate)
    missing, emitted, invented = judge(events, truth, cutoff=cutoff)
    assert after_sigterm > 50
    assert before_kill > after_sigterm
    assert not missing, f"{len(missing)} terminal transitions never emitted"
    assert not invented, invented[:3]
    # Exactly once, SIGKILL included: events written but not checkpointed are read back at start.
    assert max(emitted.values()) == 1, {eid: n for eid, n in emitted.items() if n > 1}
    stats = await emulator_stats(estate)
    assert sum(stats["faults_injected"].values()) > 20  # the faults really happened
    assert stats["foreign_origin"]["tokens_received"] == 0


async def test_sigterm_restart_emits_no_duplicates(
    daemon_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Across a clean stop and restart, no event id is emitted twice."""
    config, events_path, logs = daemon_files
    settings = EmulatorSettings(
        world=WorldSettings(seed=5, subscriptions=1, vaults_per_subscription=6)
    )
    async with running_emulator(settings) as emu:
        write_config(config, emu, tmp_path / "state.sqlite")
        daemon = Daemon(config, events_path, logs)
        try:
            daemon.start()
            # SIGTERM only once the daemon says it runs and has caught up on the world (within
            # the 8 s it used to run), never after a guessed delay.
            await daemon.wait_for_log("scheduler.started", count=1, timeout_s=60)
            await wait_until_caught_up(
                daemon.read_events, emu, cutoff=datetime.now(UTC), timeout_s=8
            )
            assert await daemon.stop(signal.SIGTERM) == 0
            daemon.start()
            await daemon.wait_for_log("scheduler.started", count=2, timeout_s=60)
            # As before (stopped 8 s after the start, judged up to 8 s before the stop): every
            # terminal transition up to the second start, emitted within 8 s of it.
            cutoff = datetime.now(UTC)
            await wait_until_caught_up(daemon.read_events, emu, cutoff=cutoff, timeout_s=8)
            assert await daemon.stop(signal.SIGTERM) == 0
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
    events = daemon.read_events()
    missing, emitted, invented = judge(events, truth, cutoff=cutoff)
    assert events
    assert not missing
    assert not invented
    assert max(emitted.values()) == 1
    assert any(row.get("event") == "shutdown.done" for row in daemon.read_logs())


async def test_arm_failing_at_start_is_waited_out(
    daemon_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Every ARM call answering 5xx at start: the daemon retries discovery instead of exiting,
    and serves the estate once ARM recovers."""
    config, events_path, logs = daemon_files
    settings = EmulatorSettings(
        world=WorldSettings(seed=4, subscriptions=1, vaults_per_subscription=3),
        faults=FaultSettings(server_error=1.0),
    )
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        write_config(
            config,
            emu,
            tmp_path / "state.sqlite",
            sections={"discovery": {"startup_timeout_s": 120}},
        )
        daemon = Daemon(config, events_path, logs)
        try:
            daemon.start()
            retries = await daemon.wait_for_log("discovery.retrying", count=2)
            async with http.put(f"{emu.url}/_emulator/faults", json={"server_error": 0}) as r:
                assert r.status == 200
            await daemon.wait_for_log("scheduler.started", timeout_s=30)
            await daemon.wait_for_events(1, timeout_s=30)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
    assert all("503" in r["error"] or "500" in r["error"] or "504" in r["error"] for r in retries)
    assert [r["attempt"] for r in retries[:2]] == [1, 2]


async def test_arm_failing_past_the_startup_timeout_exits_3(
    daemon_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """ARM answering only 5xx for longer than `discovery.startup_timeout_s`: exit 3, one line."""
    config, events_path, logs = daemon_files
    settings = EmulatorSettings(
        world=WorldSettings(seed=4, subscriptions=1, vaults_per_subscription=1),
        faults=FaultSettings(server_error=1.0),
    )
    async with running_emulator(settings) as emu:
        write_config(
            config, emu, tmp_path / "state.sqlite", sections={"discovery": {"startup_timeout_s": 3}}
        )
        daemon = Daemon(config, events_path, logs)
        daemon.start()
        try:
            code = await daemon.wait(timeout_s=30)
        finally:
            daemon.kill_if_running()
    assert code == 3
    failure = [r["event"] for r in daemon.read_logs() if "startup failed" in str(r.get("event"))]
    assert len(failure) == 1, daemon.read_logs()[-5:]
    assert "gave up after" in failure[0]
    assert "discovery.startup_timeout_s = 3" in failure[0]
    assert not daemon.read_events()


async def test_forbidden_and_deleted_vaults_do_not_disturb_others(
    daemon_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A vault turned 403 and one deleted mid-run are reported; every other vault is served."""
    config, events_path, logs = daemon_files
    settings = EmulatorSettings(
        world=WorldSettings(seed=8, subscriptions=2, vaults_per_subscription=5)
    )
    async with running_emulator(settings) as emu, aiohttp.ClientSession() as http:
        write_config(config, emu, tmp_path / "state.sqlite")
        daemon = Daemon(config, events_path, logs)
        forbidden, deleted = list(emu.world.vaults.values())[:2]
        try:
            daemon.start()
            await daemon.wait_for_log("scheduler.started", timeout_s=60)
            await daemon.wait_for_events(1, timeout_s=5)  # the daemon has polled and emitted
            async with http.post(f"{emu.url}/_emulator/vaults/forbid", json={"id": forbidden.id}):
                pass
            async with http.delete(f"{emu.url}/_emulator/vaults", params={"id": deleted.id}):
                pass
            # As before (stopped 12 s after the change, judged up to 8 s before the stop): the
            # 403 and the deletion met, and every other vault's terminal transitions up to 4 s
            # after the change emitted, within 12 s of it.
            changed = datetime.now(UTC)
            await daemon.wait_for_log(
                "poll.failed",
                where=lambda r: r.get("status") == 403 and r.get("vault") == forbidden.name,
                timeout_s=12,
            )
            await daemon.wait_for_log(
                "vault.dropped", where=lambda r: r.get("vault") == deleted.name, timeout_s=12
            )
            cutoff = changed + timedelta(seconds=4)
            await wait_until_caught_up(
                daemon.read_events,
                emu,
                cutoff=cutoff,
                skip_vaults={forbidden.key, deleted.key},
                timeout_s=max(
                    0.0, (changed + timedelta(seconds=12) - datetime.now(UTC)).total_seconds()
                ),
            )
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
        truth = await ground_truth(emu)
    missing, _, invented = judge(
        daemon.read_events(), truth, cutoff=cutoff, skip_vaults={forbidden.key, deleted.key}
    )
    assert not missing
    assert not invented
    logs_rows = daemon.read_logs()
    assert any(
        r.get("event") == "poll.failed"
        and r.get("status") == 403
        and r.get("vault") == forbidden.name
        for r in logs_rows
    )
    assert any(
        r.get("event") == "vault.dropped" and r.get("vault") == deleted.name for r in logs_rows
    )


async def test_foreign_next_link_is_refused_and_gets_no_token(
    daemon_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A nextLink to another origin is refused with a diagnostic; that origin receives no token."""
    config, events_path, logs = daemon_files
    settings = EmulatorSettings(
        world=WorldSettings(seed=2, subscriptions=1, vaults_per_subscription=3),
        faults=FaultSettings(foreign_next_link=1.0),
        page_size=1,
    )
    async with running_emulator(settings) as emu:
        write_config(config, emu, tmp_path / "state.sqlite")
        daemon = Daemon(config, events_path, logs)
        try:
            daemon.start()
            await daemon.wait_for_log("scheduler.started", timeout_s=60)
            # Until a foreign nextLink was served and the daemon's poll met it (within the 6 s
            # it used to be given).
            await daemon.wait_until(
                lambda: (
                    emu.faults.injected["foreign_next_link"] > 0
                    and any(
                        "ForeignOriginError" in str(r.get("error", ""))
                        or r.get("event") == "poll.failed"
                        for r in daemon.read_logs()
                    )
                ),
                timeout_s=6,
            )
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
        stats = await emulator_stats(emu)
    assert stats["faults_injected"]["foreign_next_link"] > 0
    assert stats["foreign_origin"]["requests"] == 0
    assert stats["foreign_origin"]["tokens_received"] == 0
    assert any(
        "ForeignOriginError" in str(r.get("error", "")) or r.get("event") == "poll.failed"
        for r in daemon.read_logs()
    )


@pytest.mark.parametrize(
    ("vaults", "intervals"),
    [
        (5, {"active_interval_s": 15, "idle_interval_s": 60}),  # the default intervals
        # 500 vaults every 2–4 s want far more than 12.5 reads/s: the budget must bind.
        (500, {"active_interval_s": 2, "idle_interval_s": 4}),
    ],
)
@pytest.mark.long(seconds=24)
async def test_budget_holds_at_default_settings(
    vaults: int,
    intervals: dict[str, float],
    daemon_files: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    """With read_fraction 0.5 of 25/s: peak ≤ 12.5 reads/s over 10 s, no 429, 5 or 500 vaults."""
    config, events_path, logs = daemon_files
    settings = EmulatorSettings(
        world=WorldSettings(seed=4, subscriptions=1, vaults_per_subscription=vaults),
        throttle=ThrottleSettings(),
    )
    async with running_emulator(settings) as emu:
        write_config(config, emu, tmp_path / "state.sqlite", sections={"poll": intervals})
        daemon = Daemon(config, events_path, logs)
        try:
            daemon.start()
            # Timed from the end of discovery, so a slow interpreter start does not count.
            await daemon.wait_for_log("scheduler.started", timeout_s=30)
            await anyio.sleep(20)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
        stats = await emulator_stats(emu)
    sub = next(iter(emu.world.subscriptions))
    row = stats["by_scope"][sub]
    if vaults == 500:
        # The budget was the limit: over 20 s it was used at ≥ 8 reads/s on average...
        assert row["requests"] >= 160
    else:
        assert row["requests"] > 5
    # ...and never above its share.
    assert row["peak_per_s_10s"] <= 12.5
    assert stats["throttled_429"] == 0
